// A live player helper: FLV (an HTTP-FLV URL, or FLV bytes pushed in as they arrive from a
// link) played in a <video> element through mpegts.js (MSE), kept at the live edge so the
// latency does not grow over a long session.
//
// mpegts.js is loaded as the classic script it ships (`dist/mpegts.js`, which sets
// `globalThis.mpegts`), or passed in as `options.mpegts`. This module imports nothing, so a
// page may load it from any one URL (the local player serves it with its token).

/**
 * @typedef {object} LivePlayerOptions
 * @property {any} [mpegts] the mpegts.js module (default: globalThis.mpegts)
 * @property {number} [targetLatency] seconds of buffer to keep ahead of the playing time (0.5)
 * @property {number} [maxLatency] above this, jump to the live edge at once (1.5 s)
 * @property {number} [catchUpRate] playbackRate while between the two (1.1)
 * @property {number} [checkInterval] how often the edge is checked, in ms (250)
 */

/**
 * @typedef {object} LivePlayerStats
 * @property {number} decodedFrames frames the element decoded (getVideoPlaybackQuality)
 * @property {number} droppedFrames
 * @property {number} latency buffered end minus playing time, in seconds (the live latency)
 * @property {number} jumps times the player jumped to the live edge
 * @property {number} width the picture's size (0 before the first frame)
 * @property {number} height
 * @property {number | null} firstFrameAt performance.now() of the first decoded frame: ms
 *   since the page's navigation started
 * @property {string | null} error the last player error, if any
 */

/**
 * @typedef {object} LivePlayer
 * @property {(chunk: ArrayBuffer | Uint8Array) => void} push feed FLV bytes (push mode only)
 * @property {() => LivePlayerStats} stats
 * @property {() => void} destroy
 */

/** @param {HTMLVideoElement} video */
function bufferedEnd(video) {
  const ranges = video.buffered;
  return ranges.length ? ranges.end(ranges.length - 1) : 0;
}

/**
 * Plays `source` in `video`: `{url}` for HTTP-FLV, `{push: true}` for bytes fed by `push()`.
 * @param {HTMLVideoElement} video
 * @param {{url: string} | {push: true}} source
 * @param {LivePlayerOptions} [options]
 * @returns {LivePlayer}
 */
export function createLivePlayer(video, source, options = {}) {
  const mpegts = options.mpegts ?? /** @type {any} */ (globalThis).mpegts;
  if (!mpegts || !mpegts.isSupported()) {
    throw new Error('this browser cannot play FLV (mpegts.js missing or no Media Source Extensions)');
  }
  const target = options.targetLatency ?? 0.5;
  const max = options.maxLatency ?? 1.5;
  const rate = options.catchUpRate ?? 1.1;
  /** @type {LivePlayerStats} */
  const state = {
    decodedFrames: 0, droppedFrames: 0, latency: 0, jumps: 0, width: 0, height: 0,
    firstFrameAt: null, error: null,
  };

  /** @type {Uint8Array[]} bytes pushed before mpegts opened the loader */
  const pending = [];
  /** @type {any} the loader mpegts made (push mode) */
  let loader = null;
  /** @type {any} */
  const config = { enableWorker: false, enableStashBuffer: false, lazyLoad: false, autoCleanupSourceBuffer: true };
  if ('push' in source) {
    // mpegts pulls through a loader; this one is handed whatever push() receives.
    config.customLoader = class PushLoader extends mpegts.BaseLoader {
      constructor() {
        super('xp2p-push');
        this._received = 0;
      }
      open() {
        this._status = 2; // kBuffering
        loader = this;
        for (const chunk of pending.splice(0)) this.feed(chunk);
      }
      /** @param {Uint8Array} chunk */
      feed(chunk) {
        const copy = chunk.slice().buffer; // mpegts keeps the buffer: never share the caller's
        const start = this._received;
        this._received += chunk.byteLength;
        if (this._onDataArrival) this._onDataArrival(copy, start, this._received);
      }
      abort() {
        this._status = 0;
        loader = null;
      }
    };
  }
  const player = mpegts.createPlayer(
    { type: 'flv', isLive: true, hasAudio: undefined, url: 'url' in source ? source.url : 'xp2p:push' },
    config,
  );
  player.on(mpegts.Events.ERROR, (/** @type {string} */ type, /** @type {string} */ detail) => {
    state.error = `${type}: ${detail}`;
  });
  player.attachMediaElement(video);
  player.load();
  video.muted = true; // autoplay policy: a muted live view may start by itself
  void video.play().catch(() => {});

  /** @param {number} now */
  const onFrame = (now) => {
    state.firstFrameAt = now;
  };
  if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(onFrame);

  const timer = setInterval(() => {
    const end = bufferedEnd(video);
    if (!end) return;
    const latency = end - video.currentTime;
    state.latency = latency;
    if (latency > max || video.currentTime < video.buffered.start(0)) {
      // Too far behind (a stall, a background tab): jump; smooth catching up would take long.
      video.currentTime = Math.max(end - target, video.buffered.start(video.buffered.length - 1));
      state.jumps += 1;
      video.playbackRate = 1;
    } else {
      video.playbackRate = latency > target * 2 ? rate : 1;
    }
    if (video.paused) void video.play().catch(() => {});
  }, options.checkInterval ?? 250);

  return {
    push(chunk) {
      const bytes = chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk);
      if (loader) loader.feed(bytes);
      else pending.push(bytes.slice());
    },
    stats() {
      const quality = video.getVideoPlaybackQuality();
      state.decodedFrames = quality.totalVideoFrames;
      state.droppedFrames = quality.droppedVideoFrames;
      state.width = video.videoWidth;
      state.height = video.videoHeight;
      const end = bufferedEnd(video);
      state.latency = end ? Math.max(0, end - video.currentTime) : 0;
      return { ...state };
    },
    destroy() {
      clearInterval(timer);
      player.pause();
      player.unload();
      player.detachMediaElement();
      player.destroy();
    },
  };
}
