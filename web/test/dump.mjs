// Prints, as one JSON object, what the SDK's pure modules make of the shared vectors
// (web/test/command_vectors.json) and their enums: tests/browser/test_sdk_parity.py
// compares it with the Python modules they mirror. Usage: node web/test/dump.mjs VECTORS
import { readFileSync } from 'node:fs';
import { ErrorCode, XP2PError } from '../src/errors.js';
import { LogLevel, NatEvent, NotifySubtype, XP2PEvent } from '../src/events.js';
import { checkTimeout, commandTarget, lenientInt, parseReply, timedOut } from '../src/command.js';

const vectors = JSON.parse(readFileSync(process.argv[2], 'utf8'));

/** @param {string} command */
function target(command) {
  try {
    return { target: commandTarget(command) };
  } catch (err) {
    if (!(err instanceof XP2PError)) throw err;
    return { error: err.code, message: err.detail };
  }
}

/** @param {unknown} timeout */
function timeoutCheck(timeout) {
  try {
    return checkTimeout(timeout);
  } catch (err) {
    if (!(err instanceof XP2PError)) throw err;
    return { error: err.code };
  }
}

const out = {
  errors: ErrorCode,
  events: { XP2PEvent, NotifySubtype, LogLevel, NatEvent },
  targets: vectors.targets.map((/** @type {any} */ c) =>
    target(c.command ?? c.command_parts.prefix + c.command_parts.repeat.repeat(c.command_parts.times)),
  ),
  replies: vectors.replies.map((/** @type {any} */ c) =>
    parseReply(c.status, Buffer.from(c.body_b64, 'base64')),
  ),
  timeouts: vectors.timeouts.map((/** @type {any} */ c) => timedOut(c.timeout)),
  lenient_ints: vectors.lenient_ints.map((/** @type {any} */ c) => lenientInt(c.value)),
  timeout_checks: [5, 0.5, 0, -1, Infinity, NaN, '5', true, null].map(timeoutCheck),
};
process.stdout.write(JSON.stringify(out));
