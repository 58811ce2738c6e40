// The one check of a WebRTC answer the SDK makes itself (docs/protocol.md §7, WebRTC offers):
// the device's DTLS certificate must be the one its xp2pInfo names, so the cloud or a relay in
// the middle cannot answer in the camera's place. Mirrors
// src/xp2p/link/webrtc_sdp.py:check_answer_fingerprint rule for rule; the browser then makes
// DTLS prove the peer holds that certificate's key.

import { ErrorCode, XP2PError } from './errors.js';
import { base64urlDecode } from './xp2pinfo.js';

/** Python's str.splitlines() separators: a superset of any SDP parser's line breaks, so no
 * line can hide inside another. */
const LINE_BREAKS = /\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]/;
/** Python's str.isspace() set (what strip() trims). */
const PY_SPACE = /^[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;
const FINGERPRINT_LINE = /^a=fingerprint:([A-Za-z0-9-]+) ([0-9A-Fa-f:]+)$/;

/** @param {string} reason */
function badIdentity(reason) {
  const error = new XP2PError(ErrorCode.BAD_XP2P_INFO, reason);
  error.reason = 'bad_identity';
  return error;
}

/**
 * xp2pInfo's base64url SHA-256 as SDP writes it (`AB:CD:...`).
 * @param {string} fingerprint
 */
export function sdpFingerprint(fingerprint) {
  const digest = base64urlDecode(fingerprint);
  if (digest === null) throw badIdentity("xp2pInfo's DTLS fingerprint is malformed");
  if (digest.length !== 32) throw badIdentity("xp2pInfo's DTLS fingerprint is not SHA-256");
  return Array.from(digest, (b) => b.toString(16).toUpperCase().padStart(2, '0')).join(':');
}

/** Lines as Python's splitlines() gives them (no trailing empty line).
 * @param {string} sdp */
function lines(sdp) {
  const out = sdp.split(LINE_BREAKS);
  if (out.length && out[out.length - 1] === '') out.pop();
  return out;
}

/**
 * Throws XP2PError -2001 (`reason` 'bad_identity') unless the answer names exactly the
 * certificate `fingerprint` (xp2pInfo's `w`) in every `a=fingerprint` line.
 * @param {string} answerSdp
 * @param {string} fingerprint
 */
export function checkAnswerFingerprint(answerSdp, fingerprint) {
  if (!fingerprint) throw badIdentity('xp2pInfo names no DTLS certificate (device too old?)');
  const expected = sdpFingerprint(fingerprint);
  const candidates = lines(answerSdp).filter((line) =>
    line.replace(PY_SPACE, '').toLowerCase().startsWith('a=fingerprint'),
  );
  const found = candidates.map((line) => FINGERPRINT_LINE.exec(line)).filter((m) => m !== null);
  if (!found.length || found.length !== candidates.length) {
    throw badIdentity("the device's answer has no well-formed DTLS fingerprint");
  }
  for (const match of found) {
    if (match[1].toLowerCase() !== 'sha-256' || match[2].toUpperCase() !== expected) {
      throw badIdentity("the device's DTLS certificate does not match xp2pInfo (stale xp2pInfo?)");
    }
  }
}
