// A day's files on the camera (get_file_list) and their downloads: the file's bytes arrive
// over the link (startLocalDownload), are kept in memory, checked against the device's
// x-content-sha256 and handed to the browser to save (a Blob behind an <a download>).

import { byId, describeError, el, formatBytes, formatTime, sha256Hex } from './ui.js';

/**
 * @typedef {object} CameraFile
 * @property {string} name
 * @property {number} size
 * @property {number} type 0 video, 1 picture
 * @property {number} start
 * @property {number} end
 */

/**
 * @typedef {object} DownloadResult
 * @property {string} name
 * @property {number} size bytes received
 * @property {string | null} sha256 of the Blob, computed in the page (null: no WebCrypto)
 * @property {string | null} expected the device's x-content-sha256
 * @property {boolean} verified
 */

/** Rows shown at first and added per "Show more": a day of short segments is thousands. */
const PAGE = 50;

const MIME = /** @type {Record<string, string>} */ ({
  flv: 'video/x-flv', mp4: 'video/mp4', jpg: 'image/jpeg', jpeg: 'image/jpeg', png: 'image/png',
});

/** @param {unknown} data get_file_list's reply
 * @returns {CameraFile[]} */
export function filesOf(data) {
  const list = /** @type {any} */ (data)?.file_list;
  if (!Array.isArray(list)) return [];
  return list
    .filter((f) => typeof f?.file_name === 'string')
    .map((f) => ({
      name: f.file_name,
      size: Number(f.file_size) || 0,
      type: Number(f.file_type) || 0,
      start: Number(f.start_time) || 0,
      end: Number(f.end_time) || 0,
    }));
}

/** A response header, whatever shape the SDK gives them in (an object, Headers, a Map).
 * @param {unknown} headers
 * @param {string} name lower case */
function header(headers, name) {
  if (!headers) return null;
  const h = /** @type {any} */ (headers);
  if (typeof h.get === 'function') return h.get(name) ?? null;
  for (const [key, value] of Object.entries(h)) if (key.toLowerCase() === name) return String(value);
  return null;
}

/** The browser saves `blob` as `name` (its download bar or folder).
 * @param {Blob} blob
 * @param {string} name */
function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el('a', { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  // Revoked later, not at once: the browser may still be reading the Blob.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export class FileList {
  /** @param {import('../sdk/index.js').XP2PModule} p2p */
  constructor(p2p) {
    this.p2p = p2p;
    /** @type {string | null} */
    this.id = null;
    /** @type {object | null} the download running now (a service holds one at a time) */
    this.busy = null;
    /** @type {Record<string, DownloadResult>} the downloads done, by file name (for tests) */
    this.results = {};
    this.generation = 0;
    /** @type {CameraFile[]} the day's files, of which the first `shown` are listed */
    this.files = [];
    this.shown = 0;
    this.list = byId('file-list');
    this.status = byId('file-status');
    this.more = /** @type {HTMLButtonElement} */ (byId('file-more'));
    this.more.addEventListener('click', () => this.showMore());
  }

  showMore() {
    const next = this.files.slice(this.shown, this.shown + PAGE);
    this.shown += next.length;
    this.list.append(...next.map((f) => this.row(f)));
    this.more.hidden = this.shown >= this.files.length;
    this.more.textContent = `Show more (${this.files.length - this.shown} left)`;
  }

  /** @param {string | null} id */
  attach(id) {
    // A download of the camera left behind stops (its own callbacks then run and are dropped).
    if (this.busy && this.id !== null) this.p2p.stopLocalDownload(this.id).catch(() => {});
    this.id = id;
    this.busy = null;
    this.generation += 1;
    this.files = [];
    this.shown = 0;
    this.list.replaceChildren();
    this.more.hidden = true;
    this.status.textContent = 'Choose a recorded day in the calendar.';
  }

  /** Lists the files with content in [start, end].
   * @param {{start: number, end: number}} day */
  async load(day) {
    const id = this.id;
    if (id === null) return;
    const generation = ++this.generation;
    this.status.textContent = 'loading…';
    try {
      const result = await this.p2p.sendCommand(
        id,
        `action=inner_define&channel=0&cmd=get_file_list&start_time=${day.start}&end_time=${day.end}`,
        { timeout: 7.5 },
      );
      if (generation !== this.generation) return;
      if (result.type !== 'success') throw new Error(`get_file_list: ${result.type} ${result.errcode} ${result.errmsg}`);
      this.files = filesOf(result.data);
      this.shown = 0;
      this.status.textContent = this.files.length ? `${this.files.length} files` : 'No files that day.';
      this.list.replaceChildren();
      this.showMore();
    } catch (err) {
      if (generation === this.generation) this.status.textContent = `Cannot list the files: ${describeError(err)}`;
    }
  }

  /** @param {CameraFile} file */
  row(file) {
    const button = el('button', { type: 'button', class: 'download' }, '⤓ Download');
    const progress = el('progress', { max: String(file.size || 1), value: '0', hidden: true });
    const state = el('span', { class: 'state' });
    const item = el(
      'li',
      { dataset: { file: file.name } },
      el('span', { class: 'name' }, file.name),
      el('span', { class: 'meta' }, `${file.type === 1 ? 'picture' : 'video'} · ${formatBytes(file.size)} · ${formatTime(file.start)}`),
      button,
      progress,
      state,
    );
    button.addEventListener('click', () => void this.download(file, item, progress, state));
    return item;
  }

  /**
   * @param {CameraFile} file
   * @param {HTMLLIElement} item
   * @param {HTMLProgressElement} progress
   * @param {HTMLElement} state
   */
  async download(file, item, progress, state) {
    const id = this.id;
    if (id === null) return;
    if (this.busy) {
      state.textContent = 'one download at a time: wait for the other';
      return;
    }
    const mine = {};
    this.busy = mine;
    item.dataset.state = 'downloading';
    progress.hidden = false;
    progress.value = 0;
    state.textContent = '';
    /** @type {ArrayBuffer[]} */
    const chunks = [];
    let received = 0;
    /** @type {unknown} */
    let headers = null;
    const done = new Promise((resolve) => {
      const fail = (/** @type {any} */ r) => {
        item.dataset.state = 'failed';
        state.textContent = `failed: ${r?.errcode ?? ''} ${r?.errmsg ?? ''}`.trim();
      };
      void this.p2p
        .startLocalDownload(
          id,
          // keepLink: the page goes on watching this camera after the download.
          { urlParams: `channel=0&file_name=${encodeURIComponent(file.name)}&offset=0`, keepLink: true },
          {
            onHeadersReceived: (/** @type {{status: number, headers: unknown}} */ r) => {
              headers = r.headers;
              const length = Number(header(r.headers, 'content-length'));
              if (length > 0) progress.max = length;
            },
            onChunkReceived: (/** @type {ArrayBuffer} */ chunk) => {
              chunks.push(chunk);
              received += chunk.byteLength;
              progress.value = received;
            },
            onSuccess: () => {
              item.dataset.state = 'received';
            },
            onFailure: fail,
            onError: fail,
            onComplete: () => resolve(undefined),
          },
        )
        .catch((/** @type {unknown} */ err) => {
          item.dataset.state = 'failed';
          state.textContent = `failed: ${describeError(err)}`;
          resolve(undefined);
        });
    });
    await done;
    if (this.busy !== mine) return; // the camera changed meanwhile: this row is gone
    this.busy = null;
    if (item.dataset.state !== 'received') return;
    const ext = file.name.split('.').pop()?.toLowerCase() ?? '';
    const blob = new Blob(chunks, { type: MIME[ext] ?? 'application/octet-stream' });
    const sha256 = await sha256Hex(blob);
    const expected = header(headers, 'x-content-sha256');
    const verified = sha256 !== null && sha256 === expected;
    this.results[file.name] = { name: file.name, size: blob.size, sha256, expected, verified };
    if (sha256 !== null && expected !== null && !verified) {
      item.dataset.state = 'corrupt';
      state.textContent = 'not saved: its sha256 differs from the camera’s';
      return;
    }
    item.dataset.state = 'saved';
    item.dataset.sha256 = sha256 ?? '';
    state.textContent = verified ? `saved · sha256 ${sha256?.slice(0, 12)}… verified` : 'saved (not verified)';
    save(blob, file.name);
  }
}
