// One 1v1 service: a link to one device and what runs on it (a pull, a talk session, a
// download), with its msgCallback. The browser's counterpart of src/xp2p/viewer/service.py.

import { ErrorCode, XP2PError } from './errors.js';
import { LogLevel, NotifySubtype, XP2PEvent } from './events.js';
import { LinkError } from './link.js';

/**
 * @typedef {(event: string, subtype: string, detail: any) => void} MsgCallback
 * @typedef {(data: ArrayBuffer) => void} DataCallback
 */

/** Printable ASCII but the space travels as it is; the rest percent-encoded (UTF-8), as
 * Python's quote(safe=printable) does: a raw space or control byte in a target would make the
 * device refuse the request head. @param {string} text */
export function quoteTarget(text) {
  return Array.from(text, (c) => (c >= '!' && c <= '~' ? c : encodeURIComponent(c))).join('');
}

/** Python's parse_qsl(strict_parsing=True) as far as the SDK needs it: `null` when a field
 * has no `=`. @param {string} query @returns {Map<string, string> | null} */
export function parseQuery(query) {
  const out = new Map();
  for (const field of query.split('&')) {
    if (!field) continue;
    const at = field.indexOf('=');
    if (at < 0) return null;
    try {
      out.set(decodeURIComponent(field.slice(0, at).replaceAll('+', ' ')), decodeURIComponent(field.slice(at + 1).replaceAll('+', ' ')));
    } catch {
      return null;
    }
  }
  return out;
}

/** A response's reason: the text body of an error answer (at most 4 KiB).
 * @param {import('./link.js').Exchange} exchange */
export async function readReason(exchange) {
  try {
    const body = await exchange.read(4096);
    return new TextDecoder().decode(body).trim();
  } catch {
    return '';
  }
}

export class Service {
  /**
   * @param {string} id
   * @param {{productId: string, deviceName: string, flv?: {filename: string, params: string} | null}} info
   * @param {import('./link.js').Link} link
   * @param {MsgCallback | null} msgCallback
   * @param {'direct' | 'relay'} linkMode
   */
  constructor(id, info, link, msgCallback, linkMode) {
    this.id = id;
    this.info = info;
    this.link = link;
    this.msgCallback = msgCallback;
    this.linkMode = linkMode;
    /** @type {import('./link.js').Exchange | null} */
    this.pull = null;
    /** @type {{stop: () => Promise<void>} | null} */
    this.voice = null;
    /** @type {{stop: () => Promise<void>} | null} */
    this.download = null;
    this.stopped = false;
    /** why the SDK closed the link itself (a finished download), '' otherwise */
    this.closedBySdk = '';
    link.onClose((reason) => {
      if (!this.stopped) this.notify(NotifySubtype.DISCONNECT, { reason });
    });
  }

  /** @param {string} subtype @param {any} [detail] */
  notify(subtype, detail = null) {
    this._emit(XP2PEvent.NOTIFY, subtype, detail);
  }

  /** @param {string} level @param {string} text */
  log(level, text) {
    this._emit(XP2PEvent.LOG, level, text);
  }

  /** @param {string} event @param {string} subtype @param {any} detail */
  _emit(event, subtype, detail) {
    try {
      this.msgCallback?.(event, subtype, detail);
    } catch (err) {
      // An app's callback never breaks the service; say so where a developer looks.
      console.error(`xp2p: msgCallback of ${this.id} threw`, err);
    }
  }

  /** @param {number} code */
  lostLink(code) {
    return new XP2PError(code, `service ${this.id} lost its link (${this.link.closeReason})`);
  }

  /**
   * Opens the pull and resolves once the device answered 200; the bytes then go to
   * `dataCallback` in order. Rejects XP2PError -2402 otherwise (after a `fail` notify).
   * @param {string} target
   * @param {DataCallback} dataCallback
   */
  async startPull(target, dataCallback) {
    if (this.pull) throw new XP2PError(ErrorCode.START_STREAM_FAILED, `service ${this.id} already has a pull running`);
    if (this.link.closed) throw this.lostLink(ErrorCode.START_STREAM_FAILED);
    this.notify(NotifySubtype.REQUEST, { target });
    const exchange = this.link.request('GET', target);
    this.pull = exchange;
    let head;
    try {
      head = await exchange.response;
    } catch (err) {
      this.pull = null;
      const reason = err instanceof Error ? err.message : String(err);
      this.notify(NotifySubtype.FAIL, { reason });
      throw new XP2PError(ErrorCode.START_STREAM_FAILED, `stream request failed: ${reason}`);
    }
    this.notify(NotifySubtype.PARSED, head);
    if (head.status !== 200) {
      const reason = await readReason(exchange);
      this.pull = null;
      this.notify(NotifySubtype.FAIL, { status: head.status, reason });
      throw new XP2PError(ErrorCode.START_STREAM_FAILED, `device refused the stream (${head.status}): ${reason || 'no reason given'}`);
    }
    this._pump(exchange, dataCallback);
  }

  /** @param {import('./link.js').Exchange} exchange @param {DataCallback} dataCallback */
  async _pump(exchange, dataCallback) {
    try {
      for await (const chunk of exchange.body()) {
        try {
          dataCallback(/** @type {ArrayBuffer} */ (chunk.buffer.byteLength === chunk.length ? chunk.buffer : chunk.slice().buffer));
        } catch (err) {
          exchange.cancel();
          this.notify(NotifySubtype.FAIL, { reason: `dataCallback raised: ${err}` });
          return;
        }
      }
      if (this.pull === exchange) this.notify(NotifySubtype.EOF);
    } catch (err) {
      // Cancelled by stopStream (which notifies close itself) or lost with the link
      // (`disconnect`); a request reset alone by the device is a failure of the pull.
      if (err instanceof LinkError && err.reason !== 'cancelled' && !this.link.closed && this.pull === exchange) {
        this.notify(NotifySubtype.FAIL, { reason: err.message });
      }
    } finally {
      if (this.pull === exchange) this.pull = null;
    }
  }

  stopPull() {
    const pull = this.pull;
    if (!pull) return;
    this.pull = null;
    pull.cancel();
    this.notify(NotifySubtype.CLOSE);
  }

  /** Closes the link but keeps the service, as the seed does after a download: the app gets
   * `disconnect` with `reason`; no network check follows (the network did not change).
   * @param {string} reason */
  closeLink(reason) {
    if (this.stopped || this.link.closed) return;
    this.closedBySdk = reason;
    this.link.close(reason);
  }

  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.stopPull();
    await Promise.allSettled([this.voice?.stop(), this.download?.stop()]);
    this.link.close('service stopped');
    this.log(LogLevel.INFO, `service ${this.id} stopped`);
  }
}
