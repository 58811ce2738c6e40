// Talk-back (docs/protocol.md §9, Voice): startVoice sends the microphone as raw PCM
// (s16le, 8 kHz mono by default) through an AudioWorklet; startVoiceData sends FLV/AAC the
// app writes with addChunk. One talk session per service; the device allows one per device
// (409: -2601 "device busy"). The device answers 200 at once and, when the session ends, a JSON
// verdict saying how many bytes it took: the session succeeded when it took every byte sent.

import { ErrorCode, XP2PError } from './errors.js';
import { LogLevel, NotifySubtype } from './events.js';
import { LinkError } from './link.js';
import { parseQuery, readReason } from './service.js';

/** How long the device has to accept a talk session, and to give its verdict at the end. */
export const OPEN_TIMEOUT_MS = 10_000;
export const END_TIMEOUT_MS = 10_000;
/** PCM queued beyond this many seconds (a slow path) drops the oldest: late audio in a
 * conversation is worse than a gap. */
export const PCM_QUEUE_SECONDS = 2;
/** FLV a writer may queue before it fails: addChunk never waits, so this bounds memory. */
export const MAX_WRITER_QUEUE = 2 * 1024 * 1024;

/**
 * @typedef {{status: number, headers: Record<string, string>, data?: any, errcode?: number, errmsg?: string}} VoiceRequestResult
 *   the seed's XP2PRequestResult
 * @typedef {{onStop?: Function, onSuccess?: Function, onFailure?: Function, onError?: Function, onComplete?: Function}} VoiceDataCallbacks
 * @typedef {{onStart?: Function, onPause?: Function, onResume?: Function, onStop?: Function}} VoiceCallbacks
 */

/** @param {string} urlParams @param {boolean} flv */
export function voiceTarget(urlParams, flv) {
  if (typeof urlParams !== 'string') throw new XP2PError(ErrorCode.BAD_PARAM, 'urlParams must be a string');
  const params = parseQuery(urlParams);
  if (!params) throw new XP2PError(ErrorCode.BAD_PARAM, 'urlParams is not a query string');
  if (!flv && params.has('calltype')) {
    throw new XP2PError(ErrorCode.BAD_PARAM, 'startVoice sends raw PCM: urlParams must not set calltype');
  }
  const query = flv && !params.has('calltype') ? `${urlParams}&calltype=audio` : urlParams;
  return `/voice?${query}`;
}

/** @param {Record<string, Function | undefined>} callbacks @param {string} name @param {unknown} [arg] */
function call(callbacks, name, arg) {
  try {
    callbacks[name]?.(arg);
  } catch (err) {
    console.error(`xp2p: voice callback ${name} threw`, err);
  }
}

/** One talk session: the request, its upload queue and its end. */
export class VoiceSession {
  /**
   * @param {import('./service.js').Service} service
   * @param {string} target
   * @param {Record<string, string>} headers
   * @param {VoiceDataCallbacks} callbacks
   */
  constructor(service, target, headers, callbacks) {
    this.service = service;
    this.target = target;
    this.callbacks = callbacks;
    /** @type {Uint8Array[]} */
    this.queue = [];
    this.queued = 0;
    this.sent = 0;
    this.dropped = 0;
    this.ended = false;
    /** @type {(() => void) | null} */
    this._wake = null;
    /** @type {Promise<void> | null} */
    this.done = null;
    this.exchange = service.link.open('POST', target, headers);
  }

  async open() {
    const { service } = this;
    service.notify(NotifySubtype.VOICE_REQUEST, { kind: 'voice', target: this.target });
    /** @type {import('./link.js').ResponseHead} */
    let head;
    try {
      head = await Promise.race([
        this.exchange.response,
        new Promise((_, reject) => setTimeout(() => reject(new LinkError('timeout', `no answer within ${OPEN_TIMEOUT_MS / 1000} s`)), OPEN_TIMEOUT_MS)),
      ]);
    } catch (err) {
      this.exchange.cancel();
      const errmsg = `talk-back request failed: ${err instanceof Error ? err.message : err}`;
      this._complete('onError', { status: 0, headers: {}, errcode: ErrorCode.VOICE_FAILED, errmsg });
      throw new XP2PError(ErrorCode.VOICE_FAILED, errmsg);
    }
    service.notify(NotifySubtype.VOICE_PARSED, { kind: 'voice', status: head.status, headers: head.headers });
    if (head.status !== 200) {
      const reason = await readReason(this.exchange);
      this.exchange.cancel();
      const errmsg = head.status === 409 ? 'device busy: a talk session is already open' : `device refused talk-back (${head.status}): ${reason || 'no reason given'}`;
      service.log(LogLevel.ERROR, errmsg);
      this._complete('onFailure', { status: head.status, headers: head.headers, data: reason, errcode: ErrorCode.VOICE_FAILED, errmsg });
      throw new XP2PError(ErrorCode.VOICE_FAILED, errmsg);
    }
    this.head = head;
    this.done = this._pump();
    service.log(LogLevel.INFO, `talk session open (${this.target})`);
  }

  /** Queues body bytes (never waits). @param {Uint8Array} bytes */
  put(bytes) {
    if (this.ended) throw new XP2PError(ErrorCode.VOICE_FAILED, 'the talk session has ended');
    this.queue.push(bytes);
    this.queued += bytes.length;
    this._wake?.();
  }

  /** Drops the oldest queued pieces until at most `limit` bytes wait (PCM only: FLV tags
   * cannot be cut). @param {number} limit */
  trim(limit) {
    while (this.queued > limit && this.queue.length > 1) {
      this.queued -= /** @type {Uint8Array} */ (this.queue.shift()).length;
      this.dropped++;
    }
  }

  /** Ends the upload after what is queued. */
  end() {
    this.ended = true;
    this._wake?.();
  }

  async _pump() {
    let error = '';
    try {
      for (;;) {
        while (this.queue.length) {
          const piece = /** @type {Uint8Array} */ (this.queue.shift());
          this.queued -= piece.length;
          await this.exchange.write(piece);
          this.sent += piece.length;
        }
        if (this.ended) break;
        await new Promise((res) => {
          this._wake = () => {
            this._wake = null;
            res(undefined);
          };
        });
      }
      await this.exchange.end();
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
    }
    this.ended = true;
    /** @type {any} */
    let reply = {};
    if (!error) {
      try {
        const raw = await Promise.race([
          this.exchange.read(64 * 1024),
          new Promise((_, reject) => setTimeout(() => reject(new Error(`no reply from the device within ${END_TIMEOUT_MS / 1000} s`)), END_TIMEOUT_MS)),
        ]);
        reply = JSON.parse(new TextDecoder().decode(raw) || '{}');
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
      }
    }
    this.exchange.cancel();
    this._judge(reply && typeof reply === 'object' ? reply : {}, error);
  }

  /** @param {any} reply @param {string} error */
  _judge(reply, error) {
    const base = {
      status: this.head?.status ?? 0,
      headers: this.head?.headers ?? {},
      data: { ...reply, bytesSent: this.sent, dropped: this.dropped },
    };
    const detail = { kind: 'voice', ok: false, reason: '', bytes_sent: this.sent, device_bytes: typeof reply.bytes === 'number' ? reply.bytes : null, seconds: typeof reply.seconds === 'number' ? reply.seconds : null, dropped: this.dropped };
    call(this.callbacks, 'onStop');
    if (error) {
      detail.reason = this.service.link.closed ? `link lost (${this.service.link.closeReason})` : error;
      this._complete('onError', { ...base, errcode: ErrorCode.VOICE_FAILED, errmsg: detail.reason }, detail);
    } else if (reply.result === 'ok' && reply.bytes === this.sent) {
      detail.ok = true;
      detail.reason = 'device took all audio';
      this.service.notify(NotifySubtype.VOICE_SUCCESS, detail);
      this._complete('onSuccess', { ...base, errcode: 0, errmsg: '' }, detail);
    } else {
      detail.reason = reply.result === 'error' ? `device ended talk-back (${reply.status}): ${reply.reason}` : reply.result === 'ok' ? `device took ${reply.bytes} of ${this.sent} bytes` : 'device ended talk-back without a result';
      this._complete('onFailure', { ...base, status: typeof reply.status === 'number' ? reply.status : base.status, errcode: ErrorCode.VOICE_FAILED, errmsg: detail.reason }, detail);
    }
  }

  /** The last callbacks of a session, once. @param {string} outcome @param {VoiceRequestResult} result @param {any} [detail] */
  _complete(outcome, result, detail) {
    if (this.completed) return;
    this.completed = true;
    if (this.service.voice === this) this.service.voice = null;
    if (detail) {
      if (!detail.ok) this.service.log(LogLevel.ERROR, `talk session failed: ${detail.reason}`);
      this.service.notify(NotifySubtype.VOICE_CLOSE, detail);
    }
    this.result = result;
    call(this.callbacks, outcome, result);
    call(this.callbacks, 'onComplete');
  }

  /** Ends the session after what is queued and waits for the device's verdict. */
  async stop() {
    this.end();
    await this.done;
  }
}

/** The writer startVoiceData resolves to (the seed's XP2PVoiceDataWriter). */
export class VoiceDataWriter {
  /** @param {VoiceSession} session */
  constructor(session) {
    this._session = session;
  }

  /** Queues FLV bytes (split anywhere) for the device; never waits.
   * @param {ArrayBuffer | Uint8Array} chunk */
  addChunk(chunk) {
    const bytes = chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk);
    if (this._session.queued + bytes.length > MAX_WRITER_QUEUE) {
      throw new XP2PError(ErrorCode.VOICE_FAILED, `more than ${MAX_WRITER_QUEUE} bytes of talk-back wait for the link`);
    }
    this._session.put(bytes.slice());
  }

  get closed() {
    return this._session.ended;
  }
}

/** The microphone side of startVoice: a MediaStream through the worklet into the session.
 * @param {VoiceSession} session
 * @param {MediaStream} stream
 * @param {{sampleRate: number, channels: number, ownsStream: boolean}} options
 * @param {VoiceCallbacks} callbacks */
export async function captureMicrophone(session, stream, options, callbacks) {
  const context = new AudioContext();
  const track = stream.getAudioTracks()[0];
  if (!track) throw new XP2PError(ErrorCode.VOICE_FAILED, 'the media stream has no audio track');
  await context.audioWorklet.addModule(new URL('./voice_worklet.js', import.meta.url).href);
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, 'xp2p-pcm', {
    numberOfInputs: 1,
    numberOfOutputs: 1,
    processorOptions: { targetRate: options.sampleRate, channels: options.channels, frameMs: 20 },
  });
  // A silent path to the destination keeps the graph pulling the worklet.
  const mute = context.createGain();
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(context.destination);
  const limit = PCM_QUEUE_SECONDS * options.sampleRate * options.channels * 2;
  let paused = false;
  node.port.onmessage = (event) => {
    if (paused || session.ended) return;
    session.put(new Uint8Array(event.data));
    session.trim(limit);
  };
  track.addEventListener('mute', () => {
    paused = true;
    call(callbacks, 'onPause', { inInterruption: true });
  });
  track.addEventListener('unmute', () => {
    paused = false;
    call(callbacks, 'onResume');
  });
  track.addEventListener('ended', () => session.end());
  await context.resume();
  const stop = async () => {
    node.port.postMessage('stop');
    source.disconnect();
    if (options.ownsStream) for (const t of stream.getTracks()) t.stop();
    await context.close().catch(() => {});
  };
  call(callbacks, 'onStart');
  session.done?.then(async () => {
    await stop();
    call(callbacks, 'onStop', { willRestart: false });
  });
}
