// Prints, as one JSON object, what the SDK's link parsers make of the cases in a JSON file:
// xp2pInfo strings, answer SDPs checked against a DTLS fingerprint, and response heads.
// tests/browser/test_sdk_link_parity.py compares it with the Python parsers they mirror.
// Usage: node web/test/link_dump.mjs CASES
import { readFileSync } from 'node:fs';
import { XP2PError } from '../src/errors.js';
import { LinkError, parseResponseHead } from '../src/link.js';
import { checkAnswerFingerprint } from '../src/sdp.js';
import { parseXp2pInfo } from '../src/xp2pinfo.js';

const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));

/** @param {() => unknown} fn */
function outcome(fn) {
  try {
    return { ok: fn() ?? true };
  } catch (err) {
    if (err instanceof XP2PError) return { error: err.code, reason: err.reason ?? null };
    if (err instanceof LinkError) return { error: err.reason };
    throw err;
  }
}

process.stdout.write(
  JSON.stringify({
    xp2pinfo: cases.xp2pinfo.map((/** @type {string} */ text) => outcome(() => parseXp2pInfo(text))),
    answers: cases.answers.map((/** @type {{sdp: string, fingerprint: string}} */ c) =>
      outcome(() => checkAnswerFingerprint(c.sdp, c.fingerprint)),
    ),
    heads: cases.heads.map((/** @type {string} */ text) => outcome(() => parseResponseHead(text))),
  }) + '\n',
);
