// The one pull a service runs (a live view at a quality, or a recording's playback) played in
// the page's <video>, and the link's figures under it. One pull per service: switching
// quality or going to a recording stops the current pull before starting the next.

import { createLivePlayer } from '../sdk/index.js';
import { byId, formatBytes, showError } from './ui.js';

/** @typedef {'standard' | 'high' | 'super'} Quality */
/** @typedef {{kind: 'live', quality: Quality} | {kind: 'playback', start: number, end: number}} Pull */

const STATS_MS = 1000;
/** getStreamLinkMode's values (the seed's): a direct path, or through the TURN relay. */
const LINK_DIRECT = 62;
const LINK_RELAY = 63;

/** The request parameters of a pull (docs/protocol.md §9).
 * @param {Pull} pull */
export function pullParams(pull) {
  if (pull.kind === 'live') return `action=live&channel=0&quality=${pull.quality}`;
  // The device wants at least 5 s; a shorter span still plays what it holds.
  const end = Math.max(pull.end, pull.start + 5);
  return `action=playback&channel=0&start_time=${pull.start}&end_time=${end}`;
}

export class StreamView {
  /** @param {import('../sdk/index.js').XP2PModule} p2p */
  constructor(p2p) {
    this.p2p = p2p;
    this.video = /** @type {HTMLVideoElement} */ (byId('video'));
    /** @type {string | null} the service id the view plays from */
    this.id = null;
    /** @type {Pull | null} */
    this.pull = null;
    /** @type {import('../sdk/player.js').LivePlayer | null} */
    this.player = null;
    /** Bumped on every start and stop: bytes and answers of an older pull are dropped. */
    this.generation = 0;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.statsTimer = undefined;
    /** @type {Record<string, string>} the figures now shown, for tests and the badge */
    this.shown = {};
    /** @type {(pull: Pull | null) => void} told when a pull starts or ends */
    this.onChange = () => {};
  }

  /**
   * Plays `pull` from service `id`, after stopping whatever played before. Resolves once the
   * device answered; rejects with the SDK's error (shown by the caller).
   * @param {string} id
   * @param {Pull} pull
   */
  async start(id, pull) {
    this.stop();
    const generation = this.generation;
    this.id = id;
    this.pull = pull;
    const player = createLivePlayer(this.video, { push: true });
    this.player = player;
    this.onChange(pull);
    try {
      await this.p2p.startStream(id, {
        flv: { filename: 'ipc.flv', params: pullParams(pull) },
        dataCallback: (/** @type {ArrayBuffer} */ chunk) => {
          if (generation === this.generation) player.push(chunk);
        },
      });
    } catch (err) {
      if (generation === this.generation) this.stop();
      throw err;
    }
    if (generation !== this.generation) return; // replaced while the device answered
    this.statsTimer = setInterval(() => void this.updateStats(generation), STATS_MS);
    void this.updateStats(generation);
  }

  /** Stops the pull (if any) and frees the player; the service stays. */
  stop() {
    this.generation += 1;
    clearInterval(this.statsTimer);
    if (this.id !== null && this.pull !== null) {
      try {
        this.p2p.stopStream(this.id);
      } catch {
        // Nothing to stop (the link went away first): the pull is over either way.
      }
    }
    this.player?.destroy();
    this.player = null;
    const had = this.pull !== null;
    this.pull = null;
    if (had) this.onChange(null);
  }

  /** The stream ended by itself (a playback's end, a lost link): keep the last picture. */
  ended() {
    this.generation += 1;
    clearInterval(this.statsTimer);
  }

  /** @param {number} generation */
  async updateStats(generation) {
    const id = this.id;
    const player = this.player;
    if (id === null || player === null) return;
    /** @type {Record<string, string>} */
    const figures = {};
    try {
      const mode = this.p2p.getStreamLinkMode(id);
      figures.mode = mode === LINK_DIRECT ? 'direct' : mode === LINK_RELAY ? 'relay' : '-';
      const link = await this.p2p.getLinkStats(id);
      figures.mode = link.mode ?? figures.mode;
      figures.rtt = typeof link.rttMs === 'number' ? `${Math.round(link.rttMs)} ms` : '-';
      figures.received = formatBytes(link.bytesReceived ?? 0);
      figures.candidates = `${link.localCandidateType ?? '?'} → ${link.remoteCandidateType ?? '?'}`;
    } catch (err) {
      // The link went away between two updates: msgCallback's disconnect says so.
      figures.mode = '-';
    }
    if (generation !== this.generation) return;
    const stats = player.stats();
    figures.latency = `${stats.latency.toFixed(2)} s`;
    figures.frames = `${stats.decodedFrames} (${stats.droppedFrames} dropped)`;
    figures.size = stats.width ? `${stats.width}x${stats.height}` : '-';
    if (stats.error) showError('playing the video', stats.error);
    this.render(figures);
  }

  /** @param {Record<string, string>} figures */
  render(figures) {
    this.shown = figures;
    for (const [name, value] of Object.entries(figures)) {
      const cell = document.querySelector(`#stats [data-stat="${name}"]`);
      if (cell) cell.textContent = value;
    }
    const badge = byId('link-badge');
    badge.textContent = figures.mode ?? '-';
    badge.dataset.mode = figures.mode ?? '';
  }
}
