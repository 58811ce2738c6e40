// Small DOM helpers shared by the app's modules, and the one place errors become text.

/**
 * The element with this id; throws (a page bug, not a user error) when index.html lacks it.
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @returns {T}
 */
export function byId(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`index.html has no #${id}`);
  return /** @type {T} */ (found);
}

/**
 * A new element: `el('button', {class: 'x', dataset: {k: 'v'}}, 'text', child)`.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, string | number | boolean | Record<string, string>>} [attrs]
 * @param {...(Node | string)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'dataset' && typeof value === 'object') Object.assign(node.dataset, value);
    else if (typeof value === 'boolean') node.toggleAttribute(name, value);
    else node.setAttribute(name, String(value));
  }
  node.append(...children);
  return node;
}

/**
 * What went wrong, as one line a person can read: the SDK's errors with their code
 * (`-2403 service not started`), the cloud's with its code, anything else by its message.
 * @param {unknown} err
 * @returns {string}
 */
export function describeError(err) {
  if (err && typeof err === 'object') {
    const e = /** @type {{code?: unknown, detail?: unknown, errmsg?: unknown, message?: unknown}} */ (err);
    if (typeof e.code === 'number' && typeof e.detail === 'string') return `${e.code}: ${e.detail}`;
    if (typeof e.code === 'number' && typeof e.errmsg === 'string') return `${e.code}: ${e.errmsg}`;
    if (typeof e.message === 'string') return e.message;
  }
  return String(err);
}

/**
 * Shows `err` in the page's notice line (role=alert), with what was being done.
 * @param {string} doing e.g. "starting the live view"
 * @param {unknown} err
 */
export function showError(doing, err) {
  const notice = byId('notice');
  notice.textContent = `Error ${doing}: ${describeError(err)}`;
  notice.dataset.kind = 'error';
  notice.hidden = false;
}

/** @param {string} text */
export function showInfo(text) {
  const notice = byId('notice');
  notice.textContent = text;
  notice.dataset.kind = 'info';
  notice.hidden = false;
}

export function clearNotice() {
  byId('notice').hidden = true;
}

/** @param {number} bytes */
export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Recording times are UTC on the device (get_month_record's days are UTC days): shown so.
 * @param {number} unixSeconds */
export function formatTime(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString().slice(11, 19);
}

/** @param {number} ms */
export function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

/** Lower-case hex SHA-256 of `blob`, or null where the page has no WebCrypto (a plain-HTTP,
 * non-loopback address is not a secure context).
 * @param {Blob} blob
 * @returns {Promise<string | null>}
 */
export async function sha256Hex(blob) {
  if (!globalThis.crypto?.subtle) return null;
  const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}
