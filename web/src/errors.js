// The seed's error codes (docs/api.md, Error codes) and the one error the SDK throws. Mirrors
// src/xp2p/errors.py exactly: tests/browser/test_sdk_parity.py compares the two.

/** @typedef {typeof ErrorCode[keyof typeof ErrorCode]} ErrorCodeValue */

export const ErrorCode = Object.freeze({
  OK: 0,
  BAD_PARAM: -2000,
  BAD_XP2P_INFO: -2001,
  NOT_INITIALISED: -2002,
  INIT_REPEATED: -2003,
  UNSUPPORTED: -2004,
  DEVICE_VERSION_TOO_LOW: -2005,
  // xp2p's own (the seed has none): the cloud could not be reached or did not answer in time.
  CLOUD_UNREACHABLE: -2006,
  NAT_PROBE_STARTED_TWICE: -2201,
  NAT_PROBE_ERROR: -2202,
  LOCAL_SERVER_ERROR: -2301,
  SERVICE_ALREADY_STARTED: -2401,
  START_STREAM_FAILED: -2402,
  SERVICE_NOT_STARTED: -2403,
  ENVIRONMENT_UNSUPPORTED: -2404,
  ENCRYPT_FAILED: -2501,
  DECRYPT_FAILED: -2502,
  VOICE_FAILED: -2601,
  DOWNLOAD_FAILED: -2701,
  DEVICE_STATE_QUERY_FAILED: -2801,
});

/** The name of a code (`-2000` -> `"BAD_PARAM"`), or undefined for a code the seed lacks.
 * @param {number} code
 * @returns {string | undefined}
 */
export function errorName(code) {
  return Object.keys(ErrorCode).find((k) => ErrorCode[/** @type {keyof typeof ErrorCode} */ (k)] === code);
}

/** An error of the public API; `code` is one of the seed's codes. Messages never carry
 * secrets (tokens, grants): they are safe to log, as in the Python SDK. */
export class XP2PError extends Error {
  /**
   * @param {number} code
   * @param {string} message
   */
  constructor(code, message) {
    super(`${message} (${code})`);
    this.name = 'XP2PError';
    this.code = code;
    /** the message without the code, as Python's XP2PError.message */
    this.detail = message;
    /** Why, in one word, when a lower layer said so: the cloud's error code
     * (`token_expired`, `device_offline`...) or the link's (`bad_identity`, `signal_timeout`).
     * @type {string | undefined} */
    this.reason = undefined;
  }

  /** The seed rejects its promises with `{errcode, errmsg}`: the same fields, by those names. */
  get errcode() {
    return this.code;
  }

  get errmsg() {
    return this.detail;
  }
}
