// The recordings calendar: a month's recorded days (get_month_record, a bitmap of UTC days)
// and a chosen day's recorded spans (get_record_index). Days and times are UTC, as the
// device's recordings are indexed (docs/protocol.md §10).

import { byId, describeError, el, formatTime } from './ui.js';

const DAY_S = 86400;

/**
 * @typedef {object} Span
 * @property {number} start unix seconds
 * @property {number} end
 */

/**
 * The days of `bits` (get_month_record's `video_list`): bit d-1 set when day d has recordings.
 * @param {unknown} videoList
 * @returns {Set<number>}
 */
export function recordedDays(videoList) {
  const bits = Number(videoList);
  const days = new Set();
  if (!Number.isInteger(bits) || bits < 0) return days;
  for (let day = 1; day <= 31; day++) if (Math.floor(bits / 2 ** (day - 1)) % 2) days.add(day);
  return days;
}

/** @param {unknown} data get_record_index's reply
 * @returns {Span[]} */
export function spansOf(data) {
  const list = /** @type {any} */ (data)?.video_list;
  if (!Array.isArray(list)) return [];
  return list
    .map((s) => ({ start: Number(s?.start_time), end: Number(s?.end_time) }))
    .filter((s) => Number.isFinite(s.start) && Number.isFinite(s.end) && s.end >= s.start);
}

export class RecordsCalendar {
  /**
   * @param {import('../sdk/index.js').XP2PModule} p2p
   * @param {(day: {start: number, end: number}) => void} onDay a day was chosen
   * @param {(span: Span) => void} onSpan a span was chosen to play back
   */
  constructor(p2p, onDay, onSpan) {
    this.p2p = p2p;
    this.onDay = onDay;
    this.onSpan = onSpan;
    /** @type {string | null} */
    this.id = null;
    const now = new Date();
    this.year = now.getUTCFullYear();
    this.month = now.getUTCMonth(); // 0-11
    /** @type {Set<number>} */
    this.days = new Set();
    /** @type {number | null} */
    this.day = null;
    this.grid = byId('calendar-grid');
    this.title = byId('calendar-month');
    this.status = byId('calendar-status');
    this.spans = byId('day-spans');
    /** Bumped on each query: an answer for a month or day no longer shown is dropped. */
    this.generation = 0;
    byId('calendar-prev').addEventListener('click', () => void this.showMonth(-1));
    byId('calendar-next').addEventListener('click', () => void this.showMonth(1));
  }

  /** @param {string | null} id */
  attach(id) {
    this.id = id;
    this.day = null;
    this.spans.replaceChildren();
    if (id !== null) void this.load();
  }

  /** @param {number} step months forward (or back) */
  async showMonth(step) {
    const date = new Date(Date.UTC(this.year, this.month + step, 1));
    this.year = date.getUTCFullYear();
    this.month = date.getUTCMonth();
    this.day = null;
    this.spans.replaceChildren();
    await this.load();
  }

  /** @param {string} cmd */
  async command(cmd) {
    if (this.id === null) throw new Error('no camera chosen');
    const result = await this.p2p.sendCommand(this.id, `action=inner_define&channel=0&cmd=${cmd}`, { timeout: 7.5 });
    if (result.type !== 'success') {
      throw new Error(`${cmd.split('&')[0]}: ${result.type} ${result.errcode}${result.errmsg ? ` ${result.errmsg}` : ''}`);
    }
    return result.data;
  }

  async load() {
    const generation = ++this.generation;
    const month = `${this.year}${String(this.month + 1).padStart(2, '0')}`;
    this.title.textContent = `${this.year}-${String(this.month + 1).padStart(2, '0')} (UTC)`;
    this.status.textContent = 'loading…';
    this.days = new Set();
    this.render();
    try {
      const data = await this.command(`get_month_record&time=${month}`);
      if (generation !== this.generation) return;
      this.days = recordedDays(/** @type {any} */ (data)?.video_list);
      this.status.textContent = this.days.size ? '' : 'No recordings this month.';
      this.render();
    } catch (err) {
      if (generation === this.generation) this.status.textContent = `Cannot read the calendar: ${describeError(err)}`;
    }
  }

  render() {
    const first = new Date(Date.UTC(this.year, this.month, 1));
    const count = new Date(Date.UTC(this.year, this.month + 1, 0)).getUTCDate();
    const lead = (first.getUTCDay() + 6) % 7; // weeks start on Monday
    /** @type {HTMLElement[]} */
    const cells = ['Mo', 'Tu', 'We', 'Th', 'Fr', 'Sa', 'Su'].map((d) => el('span', { class: 'weekday' }, d));
    for (let i = 0; i < lead; i++) cells.push(el('span', { class: 'blank' }));
    for (let day = 1; day <= count; day++) {
      if (this.days.has(day)) {
        const button = el(
          'button',
          { type: 'button', class: 'day recorded', 'aria-pressed': String(day === this.day), dataset: { day: String(day) } },
          String(day),
        );
        button.addEventListener('click', () => void this.chooseDay(day));
        cells.push(button);
      } else {
        cells.push(el('span', { class: 'day', dataset: { day: String(day) } }, String(day)));
      }
    }
    this.grid.replaceChildren(...cells);
  }

  /** @param {number} day */
  async chooseDay(day) {
    this.day = day;
    this.render();
    const start = Date.UTC(this.year, this.month, day) / 1000;
    const end = start + DAY_S - 1;
    this.onDay({ start, end });
    const generation = ++this.generation;
    this.spans.replaceChildren(el('li', {}, 'loading…'));
    try {
      const spans = spansOf(await this.command(`get_record_index&start_time=${start}&end_time=${end}`));
      if (generation !== this.generation) return;
      if (!spans.length) {
        this.spans.replaceChildren(el('li', {}, 'Nothing recorded that day.'));
        return;
      }
      this.spans.replaceChildren(
        ...spans.map((span) => {
          const button = el(
            'button',
            { type: 'button', class: 'span', dataset: { start: String(span.start), end: String(span.end) } },
            `▶ ${formatTime(span.start)}–${formatTime(span.end)}`,
            el('span', { class: 'length' }, ` ${span.end - span.start} s`),
          );
          button.addEventListener('click', () => this.onSpan(span));
          return el('li', {}, button);
        }),
      );
    } catch (err) {
      if (generation === this.generation) {
        this.spans.replaceChildren(el('li', { class: 'error' }, `Cannot read the day: ${describeError(err)}`));
      }
    }
  }
}
