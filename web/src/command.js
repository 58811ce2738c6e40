// The command codec of sendCommand (docs/protocol.md §10), pure: a command as a request
// target, a device's reply as the seed's CommandResult. Mirrors
// src/xp2p/viewer/command_codec.py case for case; tests/browser/test_sdk_parity.py runs the
// shared vectors of web/test/command_vectors.json through both. See the Python module for
// what each result type means.
//
// Known, deliberate differences from Python (inputs no device sends): a reply of bare
// NaN/Infinity is text here (JSON.parse refuses them), integers beyond 2^53 lose precision,
// and a status string of non-ASCII digits is not a number.

import { ErrorCode, XP2PError } from './errors.js';

/** The largest command, in bytes as sent (after escaping): what the device accepts. */
export const MAX_COMMAND_BYTES = 16 * 1024;
/** A command reply bigger than this is not a command reply. */
export const MAX_REPLY_BYTES = 4 * 1024 * 1024;
export const TIMEOUT_ERRCODE = 408;
export const ERROR_ERRCODE = 502;

/**
 * @typedef {object} CommandResult
 * @property {'success' | 'failure' | 'timeout' | 'error'} type
 * @property {number} status the device's HTTP status (0 when none arrived)
 * @property {unknown} data
 * @property {number} errcode
 * @property {string} errmsg
 */

/** Python's str.isspace() set, so strip() here trims what Python's strip() trims. */
const PY_SPACE = new Set(
  '\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006' +
    '\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000',
);

/**
 * @param {string} text
 * @param {Set<string>} chars
 */
function strip(text, chars) {
  const cps = Array.from(text);
  let start = 0;
  let end = cps.length;
  while (start < end && chars.has(cps[start])) start++;
  while (end > start && chars.has(cps[end - 1])) end--;
  return cps.slice(start, end).join('');
}

/** Printable ASCII but space and `#` stays as written (the app's own %XX, & and = too). */
/** @param {number} c */
function targetSafe(c) {
  return c >= 0x21 && c < 0x7f && c !== 0x23;
}

/**
 * The request target of `command`; XP2PError -2000 if it is not a usable command.
 * @param {unknown} command
 * @returns {string}
 */
export function commandTarget(command) {
  if (typeof command !== 'string') throw new XP2PError(ErrorCode.BAD_PARAM, 'command must be a str');
  let query = strip(command, PY_SPACE);
  if (query.startsWith('?')) query = query.slice(1);
  if (!query) throw new XP2PError(ErrorCode.BAD_PARAM, 'command is empty');
  if (!query.isWellFormed()) throw new XP2PError(ErrorCode.BAD_PARAM, 'command is not valid Unicode');
  // Control characters and spaces cannot travel in a request target; non-ASCII goes as
  // UTF-8 escapes (upper-case hex, as Python's quote). The device decodes them back.
  let escaped = '';
  for (const byte of new TextEncoder().encode(query)) {
    escaped += targetSafe(byte) ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (escaped.length > MAX_COMMAND_BYTES) {
    throw new XP2PError(
      ErrorCode.BAD_PARAM,
      `command too large (${escaped.length} bytes as sent, at most ${MAX_COMMAND_BYTES})`,
    );
  }
  return '/command?' + escaped;
}

/**
 * `timeout` (seconds) as a number; XP2PError -2000 unless it is a positive finite number.
 * @param {unknown} timeout
 * @returns {number}
 */
export function checkTimeout(timeout) {
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0) {
    throw new XP2PError(ErrorCode.BAD_PARAM, `timeout must be a positive number, not ${JSON.stringify(timeout) ?? String(timeout)}`);
  }
  return timeout;
}

/** Python's `f"{x:g}"` (6 significant digits, exponent below 1e-4 and from 1e6) for the
 * positive finite numbers a timeout is. @param {number} x */
function formatG(x) {
  const [mantissa, exponent] = x.toExponential(5).split('e');
  const exp = Number(exponent);
  const trim = (/** @type {string} */ t) => (t.includes('.') ? t.replace(/0+$/, '').replace(/\.$/, '') : t);
  if (exp < -4 || exp >= 6) {
    const digits = String(Math.abs(exp)).padStart(2, '0');
    return `${trim(mantissa)}e${exp < 0 ? '-' : '+'}${digits}`;
  }
  return trim(x.toFixed(Math.max(0, 5 - exp)));
}

/**
 * The result of a command that got no whole reply within `timeout` seconds.
 * @param {number} timeout
 * @returns {CommandResult}
 */
export function timedOut(timeout) {
  return { type: 'timeout', status: 0, data: null, errcode: TIMEOUT_ERRCODE, errmsg: `no reply within ${formatG(timeout)} s` };
}

/** @param {unknown} data @returns {data is Record<string, unknown>} */
function isObject(data) {
  return typeof data === 'object' && data !== null && !Array.isArray(data);
}

/**
 * `3`, `"3"`, `" 3 "` and `3.0` are 3; anything else is null.
 * @param {unknown} value
 * @returns {number | null}
 */
export function lenientInt(value) {
  if (typeof value === 'number') return Number.isInteger(value) ? value : null;
  if (typeof value === 'string') {
    const text = strip(value, PY_SPACE);
    // Python's int(): an optional sign, digits, single underscores between them.
    return /^[+-]?\d+(?:_\d+)*$/.test(text) ? Number(text.replaceAll('_', '')) : null;
  }
  return null;
}

/** @param {unknown} data @param {string} text */
function errmsgOf(data, text) {
  if (isObject(data)) {
    for (const key of ['errmsg', 'message', 'msg', 'reason']) {
      if (typeof data[key] === 'string') return /** @type {string} */ (data[key]);
    }
  }
  return typeof data === 'string' ? Array.from(text).slice(0, 500).join('') : '';
}

const REPLY_PAD = new Set('\x00 \t\r\n');

/**
 * A device's answer (HTTP `status` and body) as the seed's command result.
 * @param {number} status
 * @param {Uint8Array} body
 * @returns {CommandResult}
 */
export function parseReply(status, body) {
  const text = strip(new TextDecoder('utf-8').decode(body), REPLY_PAD);
  /** @type {unknown} */
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    data = text;
  }
  const ownStatus = isObject(data) ? lenientInt(data.status) : null;
  let errmsg = errmsgOf(data, text);
  if (status >= 200 && status < 300) {
    if (isObject(data) && ownStatus !== null && ownStatus !== 0) {
      errmsg = errmsg || `the device answered status ${ownStatus}`;
      return { type: 'failure', status, data, errcode: ownStatus, errmsg };
    }
    return { type: 'success', status, data, errcode: 0, errmsg: '' };
  }
  const errcode = ownStatus !== null && ownStatus !== 0 ? ownStatus : status;
  return { type: 'failure', status, data, errcode, errmsg: errmsg || `HTTP ${status}` };
}
