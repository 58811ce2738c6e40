// A WebRTC link to a device: one RTCPeerConnection, each request on its own data channel
// labelled `req` (docs/protocol.md §7 WebRTC offers, §8b framing). The browser's half of
// src/xp2p/link/webrtc.py: offer with every candidate (no trickle), check the answer's DTLS
// fingerprint against xp2pInfo before using it, then requests as exchanges of a head, binary
// body messages and an end marker.

import { checkAnswerFingerprint } from './sdp.js';

/** The channel the offer opens so that it negotiates SCTP; it carries nothing. */
export const CONTROL_LABEL = 'xp2p';
export const REQUEST_LABEL = 'req';
export const BODY_MESSAGE_BYTES = 16 * 1024;
export const MAX_MESSAGE_BYTES = 64 * 1024;
export const MAX_HEAD_BYTES = 8 * 1024;
/** A writer waits while more than this is queued on its channel, until it drains to LOW. */
export const HIGH_WATER = 256 * 1024;
export const LOW_WATER = 64 * 1024;
/** Gathering is bounded, and ends this soon after the first relayed candidate (as QUIC's). */
export const GATHER_TIMEOUT_MS = 3000;
export const GATHER_AFTER_RELAY_MS = 300;
/** A link whose ICE stays `disconnected` this long is lost (consent checks stopped). */
export const DISCONNECTED_GRACE_MS = 5000;
const END = '{"end":true}';

/** A failure of the link or of one request; `reason` is one word, as Python's LinkError. */
export class LinkError extends Error {
  /** @param {string} reason @param {string} message */
  constructor(reason, message) {
    super(message);
    this.name = 'LinkError';
    this.reason = reason;
  }
}

/**
 * @typedef {{status: number, headers: Record<string, string>}} ResponseHead
 * @typedef {{urls: string | string[], username?: string, credential?: string}} IceServer
 * @typedef {(offer: object) => Promise<any>} Signaller
 */

/** @param {string} text @returns {Record<string, unknown>} */
function control(text) {
  if (new TextEncoder().encode(text).length > MAX_HEAD_BYTES) {
    throw new LinkError('bad_framing', `a control message is over ${MAX_HEAD_BYTES} bytes`);
  }
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new LinkError('bad_framing', 'a control message is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new LinkError('bad_framing', 'a control message is not a JSON object');
  }
  return doc;
}

/** The device's response head (src/xp2p/link/datachannel_framing.py parse_response_head).
 * @param {string} text @returns {ResponseHead} */
export function parseResponseHead(text) {
  const doc = control(text);
  const status = doc.status;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599) {
    throw new LinkError('bad_framing', 'the response status is not an integer 100-599');
  }
  /** @type {Record<string, string>} */
  const headers = {};
  const raw = doc.headers ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || Object.keys(raw).length > 32) {
    throw new LinkError('bad_framing', 'the response headers are not an object of at most 32 names');
  }
  for (const [name, value] of Object.entries(raw)) {
    if (typeof value !== 'string' || !/^[\x21-\x7e]+$/.test(name) || name.startsWith(':') || /[\r\n\0]/.test(value)) {
      throw new LinkError('bad_framing', 'a response header is malformed');
    }
    headers[name.toLowerCase()] = value;
  }
  return { status, headers };
}

/** One request on its own channel: the request body goes out with `write`/`end`, the
 * response comes as `response` (the head) and `body()` (the bytes, until the end marker). */
export class Exchange {
  /** @param {RTCDataChannel} channel @param {string} head */
  constructor(channel, head) {
    this.channel = channel;
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = LOW_WATER;
    /** @type {Uint8Array[]} */
    this._chunks = [];
    /** @type {(() => void) | null} */
    this._wake = null;
    this._ended = false;
    /** @type {LinkError | null} */
    this._error = null;
    this._sentEnd = false;
    this.bytesReceived = 0;
    /** @type {(head: ResponseHead) => void} */
    let resolve = () => {};
    /** @type {(err: LinkError) => void} */
    let reject = () => {};
    /** @type {Promise<ResponseHead>} */
    this.response = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.response.catch(() => {}); // read through body() or awaited by the caller
    this._resolveHead = resolve;
    this._rejectHead = reject;
    this._gotHead = false;
    this.opened = new Promise((res) => {
      if (channel.readyState === 'open') res(undefined);
      else channel.addEventListener('open', () => res(undefined), { once: true });
    });
    this.opened.then(() => this._sendNow(head));
    channel.onmessage = (event) => this._onMessage(event.data);
    channel.onclose = () => this._fail(new LinkError('closed', 'the request was closed before its end'));
  }

  /** @param {string | ArrayBuffer} data */
  _sendNow(data) {
    if (this.channel.readyState !== 'open') return;
    this.channel.send(/** @type {any} */ (data));
  }

  /** @param {unknown} data */
  _onMessage(data) {
    if (this._ended || this._error) return;
    try {
      if (typeof data === 'string') {
        if (!this._gotHead) {
          this._gotHead = true;
          this._resolveHead(parseResponseHead(data));
          return;
        }
        const doc = control(data);
        if (Object.keys(doc).length !== 1 || doc.end !== true) {
          throw new LinkError('bad_framing', 'after the head only binary body and the end marker');
        }
        this._ended = true;
      } else if (data instanceof ArrayBuffer) {
        if (!this._gotHead) throw new LinkError('bad_framing', 'body before the response head');
        if (data.byteLength > MAX_MESSAGE_BYTES) throw new LinkError('bad_framing', 'a body message is over 64 KiB');
        this._chunks.push(new Uint8Array(data));
        this.bytesReceived += data.byteLength;
      }
    } catch (err) {
      this._fail(err instanceof LinkError ? err : new LinkError('bad_framing', String(err)));
      this.channel.close();
      return;
    }
    this._wake?.();
  }

  /** @param {LinkError} error */
  _fail(error) {
    if (this._ended) return;
    this._error ??= error;
    this._rejectHead(this._error);
    this._wake?.();
  }

  /** Sends request body bytes, waiting while the channel's buffer is above the high water.
   * @param {Uint8Array | ArrayBuffer} bytes */
  async write(bytes) {
    await this.opened;
    const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    for (let i = 0; i < data.length; i += BODY_MESSAGE_BYTES) {
      if (this._error) throw this._error;
      if (this.channel.readyState !== 'open') throw new LinkError('closed', 'the request was closed');
      if (this.channel.bufferedAmount > HIGH_WATER) {
        await new Promise((res) => {
          const done = () => {
            this.channel.removeEventListener('bufferedamountlow', done);
            this.channel.removeEventListener('close', done);
            res(undefined);
          };
          this.channel.addEventListener('bufferedamountlow', done);
          this.channel.addEventListener('close', done);
        });
        if (this.channel.readyState !== 'open') throw this._error ?? new LinkError('closed', 'the request was closed');
      }
      const piece = data.slice(i, i + BODY_MESSAGE_BYTES);
      this.channel.send(piece.buffer);
    }
  }

  /** Ends the request body (a GET's is ended at once). */
  async end() {
    if (this._sentEnd) return;
    this._sentEnd = true;
    await this.opened;
    this._sendNow(END);
  }

  /** The response body as it arrives; ends at the end marker, throws LinkError when the
   * request was closed first.
   * @returns {AsyncGenerator<Uint8Array>} */
  async *body() {
    await this.response;
    for (;;) {
      while (this._chunks.length) yield /** @type {Uint8Array} */ (this._chunks.shift());
      if (this._ended) return;
      if (this._error) throw this._error;
      await new Promise((res) => {
        this._wake = () => {
          this._wake = null;
          res(undefined);
        };
      });
    }
  }

  /** The whole body, refused beyond `limit` bytes. @param {number} limit */
  async read(limit) {
    /** @type {Uint8Array[]} */
    const parts = [];
    let size = 0;
    for await (const chunk of this.body()) {
      size += chunk.length;
      if (size > limit) {
        this.cancel();
        throw new LinkError('too_large', `the response is over ${limit} bytes`);
      }
      parts.push(chunk);
    }
    const out = new Uint8Array(size);
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  get done() {
    return this._ended;
  }

  /** Abandons the request: the device stops its work (the QUIC reset). */
  cancel() {
    this._fail(new LinkError('cancelled', 'the request was cancelled'));
    if (this.channel.readyState !== 'closed') this.channel.close();
  }
}

export class Link {
  /** @param {RTCPeerConnection} pc */
  constructor(pc) {
    this.pc = pc;
    this.closeReason = '';
    /** @type {((reason: string) => void)[]} */
    this._onClose = [];
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._graceTimer = undefined;
    pc.addEventListener('connectionstatechange', () => this._onState());
  }

  get closed() {
    return this.closeReason !== '';
  }

  /** @param {(reason: string) => void} callback called once, when the link closes */
  onClose(callback) {
    if (this.closed) callback(this.closeReason);
    else this._onClose.push(callback);
  }

  _onState() {
    const state = this.pc.connectionState;
    if (state === 'failed') this.close('the link failed (the device or the network is gone)');
    else if (state === 'closed') this.close('the link closed');
    else if (state === 'disconnected') {
      this._graceTimer ??= setTimeout(() => this.close('the link was lost (no answer from the device)'), DISCONNECTED_GRACE_MS);
    } else if (state === 'connected') {
      clearTimeout(this._graceTimer);
      this._graceTimer = undefined;
    }
  }

  /** Watch SCTP too: a device that closes its peer connection aborts the association,
   * which Chromium reports there before (or instead of) the ICE state. */
  watchSctp() {
    const sctp = this.pc.sctp;
    sctp?.addEventListener('statechange', () => {
      if (sctp.state === 'closed') this.close('the device closed the link');
    });
  }

  /**
   * Opens a request. `end()` must follow the body (a request without one: at once).
   * @param {string} method
   * @param {string} target
   * @param {Record<string, string>} [headers]
   */
  open(method, target, headers = {}) {
    if (this.closed) throw new LinkError('closed', `the link is closed: ${this.closeReason}`);
    const channel = this.pc.createDataChannel(REQUEST_LABEL, { ordered: true });
    return new Exchange(channel, JSON.stringify({ method, target, headers }));
  }

  /** A request without a body. @param {string} method @param {string} target @param {Record<string, string>} [headers] */
  request(method, target, headers = {}) {
    const exchange = this.open(method, target, headers);
    exchange.end();
    return exchange;
  }

  /** The selected candidate pair: direct or relayed, round-trip time, bytes.
   * @returns {Promise<{mode: 'direct' | 'relay', rttMs: number | null, bytesReceived: number, bytesSent: number, localCandidateType: string, remoteCandidateType: string}>} */
  async stats() {
    const report = await this.pc.getStats();
    /** @type {any} */
    let pair = null;
    report.forEach((entry) => {
      if (entry.type === 'transport' && entry.selectedCandidatePairId) pair = report.get(entry.selectedCandidatePairId);
    });
    if (!pair) {
      report.forEach((entry) => {
        if (entry.type === 'candidate-pair' && entry.nominated && entry.state === 'succeeded') pair ??= entry;
      });
    }
    const local = pair ? report.get(pair.localCandidateId) : null;
    const remote = pair ? report.get(pair.remoteCandidateId) : null;
    const localType = local?.candidateType ?? 'unknown';
    const remoteType = remote?.candidateType ?? 'unknown';
    return {
      mode: localType === 'relay' || remoteType === 'relay' ? 'relay' : 'direct',
      rttMs: typeof pair?.currentRoundTripTime === 'number' ? pair.currentRoundTripTime * 1000 : null,
      bytesReceived: pair?.bytesReceived ?? 0,
      bytesSent: pair?.bytesSent ?? 0,
      localCandidateType: localType,
      remoteCandidateType: remoteType,
    };
  }

  /** @param {string} reason */
  close(reason = 'closed by the viewer') {
    if (this.closed) return;
    this.closeReason = reason;
    clearTimeout(this._graceTimer);
    this.pc.close();
    for (const callback of this._onClose.splice(0)) {
      try {
        callback(reason);
      } catch (err) {
        console.error('xp2p: a link close callback failed', err);
      }
    }
  }
}

/** Waits until gathering completes, `GATHER_TIMEOUT_MS` passed, or shortly after the first
 * relayed candidate (a relay is the last resort; waiting longer only delays the offer).
 * @param {RTCPeerConnection} pc */
function gathered(pc) {
  return new Promise((resolve) => {
    /** @type {ReturnType<typeof setTimeout>} */
    let timer;
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve(undefined);
    };
    const onState = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    /** @param {RTCPeerConnectionIceEvent} event */
    const onCandidate = (event) => {
      if (event.candidate?.type === 'relay') {
        clearTimeout(timer);
        timer = setTimeout(done, GATHER_AFTER_RELAY_MS);
      }
    };
    timer = setTimeout(done, GATHER_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
    onState();
  });
}

/**
 * Offers, checks the answer's DTLS fingerprint against `fingerprint` (xp2pInfo's `w`), and
 * resolves once requests can flow. Rejects with LinkError (`bad_identity`, `bad_signal`,
 * `signal_timeout`, `connect_timeout`) or the signaller's own error.
 * @param {{iceServers: IceServer[], signal: Signaller, fingerprint: string, grant: string,
 *   connectTimeout?: number, relayOnly?: boolean}} options
 * @returns {Promise<Link>}
 */
export async function openLink({ iceServers, signal, fingerprint, grant, connectTimeout = 10_000, relayOnly = false }) {
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? 'relay' : 'all' });
  const link = new Link(pc);
  try {
    const control = pc.createDataChannel(CONTROL_LABEL);
    const up = new Promise((resolve, reject) => {
      control.addEventListener('open', resolve, { once: true });
      link.onClose((reason) => reject(new LinkError('connect_failed', reason)));
    });
    up.catch(() => {});
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const sdp = /** @type {RTCSessionDescription} */ (pc.localDescription).sdp;
    const answer = await withTimeout(signal({ v: 1, transport: 'webrtc', sdp, grant }), connectTimeout, () => new LinkError('signal_timeout', 'no answer from the device'));
    if (!answer || typeof answer !== 'object' || answer.transport !== 'webrtc' || typeof answer.sdp !== 'string') {
      throw new LinkError('bad_signal', "the device's answer is not a WebRTC answer");
    }
    try {
      checkAnswerFingerprint(answer.sdp, fingerprint);
    } catch (err) {
      throw new LinkError('bad_identity', err instanceof Error && 'detail' in err ? String(err.detail) : String(err));
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    link.watchSctp();
    await withTimeout(up, connectTimeout, () => new LinkError('connect_timeout', `no path to the device within ${connectTimeout / 1000} s`));
    return link;
  } catch (err) {
    link.close('setup failed');
    throw err;
  }
}

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {() => Error} error
 * @returns {Promise<T>}
 */
function withTimeout(promise, ms, error) {
  /** @type {ReturnType<typeof setTimeout>} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(error()), ms);
  });
  return /** @type {Promise<T>} */ (Promise.race([promise, timeout]).finally(() => clearTimeout(timer)));
}
