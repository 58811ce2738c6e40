// Controls of a recording's playback: pause and resume, a progress bar read from the device
// (playback_progress) that seeks when moved (playback_seek, in ms from the span's start).
// The device paces the recording in real time and steers it on the same pull, so the player
// just goes on receiving (timestamps stay monotonic across seeks, docs/protocol.md §9).

import { byId, describeError, formatDuration } from './ui.js';

const PROGRESS_MS = 1000;

export class PlaybackControls {
  /**
   * @param {import('../sdk/index.js').XP2PModule} p2p
   * @param {() => void} onBackToLive
   */
  constructor(p2p, onBackToLive) {
    this.p2p = p2p;
    /** @type {string | null} */
    this.id = null;
    this.durationMs = 0;
    this.paused = false;
    /** True while the bar is being dragged: the device's progress must not move it. */
    this.dragging = false;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
    this.panel = byId('playback');
    this.pauseButton = /** @type {HTMLButtonElement} */ (byId('playback-pause'));
    this.bar = /** @type {HTMLInputElement} */ (byId('playback-progress'));
    this.time = byId('playback-time');
    this.status = byId('playback-status');
    this.pauseButton.addEventListener('click', () => void this.togglePause());
    this.bar.addEventListener('input', () => {
      this.dragging = true;
      this.showTime(Number(this.bar.value));
    });
    this.bar.addEventListener('change', () => {
      this.dragging = false;
      void this.seek(Number(this.bar.value));
    });
    byId('back-to-live').addEventListener('click', onBackToLive);
  }

  /**
   * A playback of [start, end) began on service `id`.
   * @param {string} id
   * @param {{start: number, end: number}} span
   */
  begin(id, span) {
    this.id = id;
    this.durationMs = Math.max(5, span.end - span.start) * 1000;
    this.paused = false;
    this.bar.max = String(this.durationMs);
    this.bar.value = '0';
    this.showTime(0);
    this.pauseButton.textContent = '❚❚ Pause';
    this.pauseButton.disabled = false;
    this.status.textContent = '';
    this.panel.hidden = false;
    clearInterval(this.timer);
    this.timer = setInterval(() => void this.poll(), PROGRESS_MS);
  }

  /** The playback is over (ended, stopped, or back to live). */
  end() {
    clearInterval(this.timer);
    this.id = null;
    this.panel.hidden = true;
  }

  /** The device sent the whole span: keep the panel, say so. */
  finished() {
    clearInterval(this.timer);
    this.bar.value = String(this.durationMs);
    this.showTime(this.durationMs);
    this.pauseButton.disabled = true;
    this.status.textContent = 'end of the recording';
  }

  /** @param {string} cmd */
  async command(cmd) {
    if (this.id === null) throw new Error('no playback');
    const result = await this.p2p.sendCommand(this.id, `action=inner_define&channel=0&cmd=${cmd}`, { timeout: 5 });
    if (result.type !== 'success') throw new Error(`${cmd.split('&')[0]}: ${result.type} ${result.errcode} ${result.errmsg}`);
    return result.data;
  }

  async poll() {
    if (this.dragging || this.id === null) return;
    try {
      const data = /** @type {any} */ (await this.command('playback_progress'));
      const ms = Number(data?.progress);
      if (Number.isFinite(ms) && !this.dragging) {
        this.bar.value = String(Math.min(ms, this.durationMs));
        this.showTime(ms);
      }
    } catch {
      // A poll that raced the playback's end: the next one, or eof, settles it.
    }
  }

  async togglePause() {
    const pausing = !this.paused;
    try {
      await this.command(pausing ? 'playback_pause' : 'playback_resume');
      this.paused = pausing;
      this.pauseButton.textContent = pausing ? '▶ Resume' : '❚❚ Pause';
      this.status.textContent = pausing ? 'paused' : '';
    } catch (err) {
      this.status.textContent = describeError(err);
    }
  }

  /** @param {number} ms from the span's start */
  async seek(ms) {
    try {
      await this.command(`playback_seek&progress=${Math.round(ms)}`);
      this.status.textContent = this.paused ? 'paused' : '';
    } catch (err) {
      this.status.textContent = describeError(err);
    }
  }

  /** @param {number} ms */
  showTime(ms) {
    this.time.textContent = `${formatDuration(ms)} / ${formatDuration(this.durationMs)}`;
  }
}
