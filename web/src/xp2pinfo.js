// xp2pInfo, the string a device publishes on sign-in (docs/protocol.md §2). Mirrors
// src/xp2p/link/xp2pinfo.py: every refusal is XP2PError -2001 (-2005 for an SDK below 2.0),
// tests/browser/test_sdk_link.py runs the same vectors through both.

import { ErrorCode, XP2PError } from './errors.js';

export const MAX_LENGTH = 2048;
const PREFIX = 'XP2P';
const VERSION_RE = /^[0-9]+(\.[0-9]+){0,3}$/;
const FINGERPRINT_RE = /^[A-Za-z0-9_-]{43}$/;

/**
 * @typedef {object} Xp2pInfo
 * @property {string} productId
 * @property {string} deviceName
 * @property {string} fingerprint SHA-256 of the device's QUIC link certificate (base64url)
 * @property {string} session random per device sign-in
 * @property {string} sdkVersion
 * @property {string} dtlsFingerprint SHA-256 of the device's DTLS certificate (base64url;
 *   '' for a device without WebRTC)
 */

/** @param {string} reason */
function bad(reason) {
  return new XP2PError(ErrorCode.BAD_XP2P_INFO, `bad xp2pInfo: ${reason}`);
}

/**
 * Decodes unpadded base64url; null when it is not base64url.
 * @param {string} text
 * @returns {Uint8Array | null}
 */
export function base64urlDecode(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return null;
  const binary = atob(text.replaceAll('-', '+').replaceAll('_', '/') + '='.repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/**
 * Parses and validates an xp2pInfo string.
 * @param {unknown} text
 * @returns {Xp2pInfo}
 */
export function parseXp2pInfo(text) {
  if (typeof text !== 'string' || !text) throw bad('empty');
  if (text.length > MAX_LENGTH) throw bad(`longer than ${MAX_LENGTH} characters`);
  if (!text.startsWith(PREFIX)) throw bad("does not start with 'XP2P'");
  const rest = text.slice(PREFIX.length);
  const cut = rest.indexOf('%');
  const body = cut < 0 ? rest : rest.slice(0, cut);
  const version = cut < 0 ? '' : rest.slice(cut + 1);
  if (cut < 0 || !VERSION_RE.test(version)) throw bad("missing or malformed '%<sdk version>' suffix");
  const raw = base64urlDecode(body);
  /** @type {any} */
  let payload;
  try {
    if (raw === null) throw new Error('not base64url');
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch {
    throw bad('payload is not base64url JSON');
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload) || payload.v !== 1) {
    throw bad('unknown payload version');
  }
  const fields = ['p', 'd', 'f', 's'].map((k) => payload[k]);
  if (!fields.every((v) => typeof v === 'string' && v)) {
    throw bad('payload lacks product, device, fingerprint or session');
  }
  const [productId, deviceName, fingerprint, session] = /** @type {string[]} */ (fields);
  if (!FINGERPRINT_RE.test(fingerprint)) throw bad('fingerprint is malformed');
  const dtls = payload.w ?? '';
  if (typeof dtls !== 'string' || (dtls && !FINGERPRINT_RE.test(dtls))) {
    throw bad('DTLS fingerprint is malformed');
  }
  const [major, minor = 0] = version.split('.').slice(0, 2).map(Number);
  if (major < 2 || (major === 2 && minor < 0)) {
    throw new XP2PError(ErrorCode.DEVICE_VERSION_TOO_LOW, `device SDK ${version} is older than 2.0`);
  }
  return { productId, deviceName, fingerprint, session, sdkVersion: version, dtlsFingerprint: dtls };
}
