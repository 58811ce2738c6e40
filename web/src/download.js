// startLocalDownload: a recorded file from the device, with the seed's six callbacks
// (docs/api.md, startLocalDownload). Mirrors src/xp2p/viewer/download.py: the callbacks fire
// in this order — onHeadersReceived once the device answered; onChunkReceived per piece of a
// 2xx body; exactly one of onSuccess (2xx and every byte content-length promised), onFailure
// (non-2xx) or onError (no answer, link lost, cut short, stopped); onComplete last. Then, as
// in the seed, the service's link closes by itself (`disconnect` notified), unless the app
// passed `{keepLink: true}` or onComplete started the next download.

import { ErrorCode, XP2PError } from './errors.js';
import { LogLevel } from './events.js';
import { parseQuery, quoteTarget, readReason } from './service.js';

export const MAX_QUERY_BYTES = 3000;
export const CALLBACKS = ['onHeadersReceived', 'onChunkReceived', 'onSuccess', 'onFailure', 'onError', 'onComplete'];

/**
 * @typedef {object} LocalDownloadResult the seed's XP2PLocalDownloadResult
 * @property {number} status 0 when the device never answered
 * @property {Record<string, string>} headers
 * @property {number} bytesReceived body bytes given to onChunkReceived
 * @property {number} errcode 0 on success, -2701 otherwise
 * @property {string} errmsg
 * @property {ArrayBuffer} [data] the body of an error answer
 */

/** The request target of `urlParams`; XP2PError -2000 when they cannot name a download.
 * @param {unknown} urlParams */
export function downloadTarget(urlParams) {
  if (typeof urlParams !== 'string' || !urlParams) throw new XP2PError(ErrorCode.BAD_PARAM, 'urlParams must be a non-empty string');
  const params = parseQuery(urlParams);
  if (!params) throw new XP2PError(ErrorCode.BAD_PARAM, 'urlParams is not a query string');
  if (!params.get('file_name')) throw new XP2PError(ErrorCode.BAD_PARAM, 'urlParams needs file_name');
  const action = params.get('action');
  if (action !== undefined && action !== 'download') {
    throw new XP2PError(ErrorCode.BAD_PARAM, `urlParams asks for action=${action}, not download`);
  }
  const query = quoteTarget(action ? urlParams : `action=download&${urlParams}`);
  if (new TextEncoder().encode(query).length > MAX_QUERY_BYTES) {
    throw new XP2PError(ErrorCode.BAD_PARAM, `urlParams longer than ${MAX_QUERY_BYTES} bytes with the action`);
  }
  return `/ipc.flv?${query}`;
}

/** @typedef {Partial<Record<'onHeadersReceived' | 'onChunkReceived' | 'onSuccess' | 'onFailure' | 'onError' | 'onComplete', Function>>} DownloadCallbacks */

/** @param {unknown} callbacks @returns {DownloadCallbacks} */
export function checkCallbacks(callbacks) {
  if (callbacks === undefined || callbacks === null) return {};
  if (typeof callbacks !== 'object') throw new XP2PError(ErrorCode.BAD_PARAM, 'callbacks must be an object');
  for (const [name, value] of Object.entries(callbacks)) {
    if (!CALLBACKS.includes(name)) throw new XP2PError(ErrorCode.BAD_PARAM, `unknown download callback ${name}`);
    if (value !== undefined && typeof value !== 'function') throw new XP2PError(ErrorCode.BAD_PARAM, `${name} must be a function`);
  }
  return /** @type {DownloadCallbacks} */ (callbacks);
}

export class LocalDownload {
  /**
   * @param {import('./service.js').Service} service
   * @param {string} target
   * @param {DownloadCallbacks} callbacks
   * @param {boolean} [keepLink]
   */
  constructor(service, target, callbacks, keepLink = false) {
    this.service = service;
    this.callbacks = callbacks;
    this.keepLink = keepLink;
    this.status = 0;
    /** @type {Record<string, string>} */
    this.headers = {};
    this.received = 0;
    this._stopping = false;
    this.exchange = service.link.request('GET', target);
    this.done = this._run();
  }

  /** @param {string} errmsg @param {ArrayBuffer} [data] @returns {LocalDownloadResult} */
  _result(errmsg, data) {
    const result = {
      status: this.status,
      headers: this.headers,
      bytesReceived: this.received,
      errcode: errmsg ? ErrorCode.DOWNLOAD_FAILED : ErrorCode.OK,
      errmsg,
    };
    return data ? { ...result, data } : result;
  }

  /** @param {string} name @param {unknown} [arg] */
  async _call(name, arg) {
    const callback = this.callbacks[/** @type {keyof DownloadCallbacks} */ (name)];
    if (callback) await callback(arg);
  }

  async _run() {
    /** @type {[string, LocalDownloadResult]} */
    let outcome;
    try {
      outcome = await this._transfer();
    } catch (err) {
      const link = this.service.link;
      const text = this._stopping
        ? 'stopped'
        : link.closed
          ? `link lost after ${this.received} bytes (${link.closeReason})`
          : `${err instanceof Error ? err.message : err} after ${this.received} bytes`;
      outcome = ['onError', this._result(text)];
    } finally {
      this.exchange.cancel(); // a no-op after a clean end
    }
    // The slot is free before the last callbacks, so onComplete may start the next download.
    if (this.service.download === this) this.service.download = null;
    const [name, result] = outcome;
    this.service.log(result.errcode ? LogLevel.WARN : LogLevel.INFO, `download ${result.errcode ? 'failed' : 'done'}: ${result.errmsg || `${result.bytesReceived} bytes`}`);
    for (const step of [() => this._call(name, result), () => this._call('onComplete')]) {
      try {
        await step();
      } catch (err) {
        console.error('xp2p: a download callback threw', err);
      }
    }
    if (!this.keepLink && !this.service.download && !this.service.stopped) {
      this.service.closeLink(`download ${name.slice(2).toLowerCase()}: the link closes after a download`);
    }
  }

  /** @returns {Promise<[string, LocalDownloadResult]>} */
  async _transfer() {
    let head;
    try {
      head = await this.exchange.response;
    } catch (err) {
      return ['onError', this._result(`no response from the device: ${err instanceof Error ? err.message : err}`)];
    }
    this.status = head.status;
    this.headers = head.headers;
    await this._call('onHeadersReceived', { status: head.status, headers: head.headers });
    if (head.status < 200 || head.status >= 300) {
      const reason = await readReason(this.exchange);
      return ['onFailure', this._result(reason || `status ${head.status}`, new TextEncoder().encode(reason).buffer)];
    }
    const length = head.headers['content-length'];
    const expected = length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
    for await (const chunk of this.exchange.body()) {
      this.received += chunk.length;
      if (expected !== null && this.received > expected) return ['onError', this._result(`more than the ${expected} bytes announced`)];
      await this._call('onChunkReceived', chunk.buffer.byteLength === chunk.length ? chunk.buffer : chunk.slice().buffer);
      if (this._stopping) return ['onError', this._result('stopped')];
    }
    if (expected !== null && this.received !== expected) return ['onError', this._result(`ended after ${this.received} of ${expected} bytes`)];
    return ['onSuccess', this._result('')];
  }

  /** Cancels the transfer; resolves once onError ("stopped") and onComplete have run. */
  async stop() {
    this._stopping = true;
    this.exchange.cancel();
    await this.done;
  }
}
