// The cloud's browser routes (docs/protocol.md §4a) with a viewer token: what the SDK asks the
// cloud, and nothing else. A browser never holds an app secret: the app's backend mints the
// token (POST /api/v1/app/viewer-token, app-signed) and the page hands the SDK a function that
// fetches one. Tokens travel in the Authorization header only, never in a URL.

import { base64urlDecode } from './xp2pinfo.js';

/** A fresh token is fetched when the one held expires within this many seconds. */
export const TOKEN_RENEW_MARGIN = 60;
/** Every cloud request is bounded (the cloud's own connect timeout is 5 s). */
export const REQUEST_TIMEOUT_MS = 10_000;

/**
 * @typedef {{token: string, expiresAt?: number}} ViewerToken
 * @typedef {() => Promise<ViewerToken | string>} TokenSource
 */

/** A refusal of the cloud (`status`, `code` as in docs/protocol.md) or no answer at all
 * (`status` 0, `code` `unreachable` or `timeout`). */
export class CloudError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {Record<string, unknown>} [extra]
   */
  constructor(status, code, message, extra = {}) {
    super(`${code}: ${message}`);
    this.name = 'CloudError';
    this.status = status;
    this.code = code;
    this.detail = message;
    this.extra = extra;
  }
}

/**
 * The `exp` claim of a viewer token, read without verifying it (only the cloud can): used to
 * know when to fetch the next one. 0 when unreadable.
 * @param {string} token
 */
export function tokenExpiry(token) {
  const parts = token.split('.');
  const raw = parts.length === 3 ? base64urlDecode(parts[1]) : null;
  if (!raw) return 0;
  try {
    const exp = JSON.parse(new TextDecoder().decode(raw)).exp;
    return typeof exp === 'number' ? exp : 0;
  } catch {
    return 0;
  }
}

/** @param {string} segment */
const seg = (segment) => encodeURIComponent(segment);

export class CloudClient {
  /**
   * @param {string} baseUrl the cloud, e.g. `https://cloud.example` (no trailing path)
   * @param {TokenSource} tokenSource
   */
  constructor(baseUrl, tokenSource) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this._tokenSource = tokenSource;
    /** @type {ViewerToken | null} */
    this._token = null;
    /** @type {Promise<ViewerToken> | null} */
    this._fetching = null;
  }

  /** @param {boolean} fresh fetch a new token even if the one held is still valid */
  async token(fresh = false) {
    const now = Date.now() / 1000;
    const held = this._token;
    if (!fresh && held && (held.expiresAt ?? 0) - now > TOKEN_RENEW_MARGIN) return held.token;
    // One fetch at a time: several services starting together share it.
    this._fetching ??= (async () => {
      let got;
      try {
        got = await this._tokenSource();
      } catch (err) {
        throw new CloudError(0, 'token_source_failed', `the app could not provide a viewer token: ${err instanceof Error ? err.message : err}`);
      }
      const token = typeof got === 'string' ? got : got?.token;
      if (typeof token !== 'string' || !token) {
        throw new CloudError(0, 'token_missing', 'the app provided no viewer token');
      }
      const expiresAt = (typeof got === 'object' && got.expiresAt) || tokenExpiry(token);
      return { token, expiresAt };
    })().finally(() => {
      this._fetching = null;
    });
    this._token = await this._fetching;
    return this._token.token;
  }

  /**
   * @param {'GET' | 'POST'} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<any>}
   */
  async request(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const token = await this.token(attempt > 0);
      try {
        return await this._send(method, path, body, token);
      } catch (err) {
        // An expired token is the one refusal a fresh token can fix; try once more.
        if (attempt === 0 && err instanceof CloudError && err.code === 'token_expired') continue;
        throw err;
      }
    }
  }

  /**
   * @param {'GET' | 'POST'} method
   * @param {string} path
   * @param {unknown} body
   * @param {string} token
   */
  async _send(method, path, body, token) {
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (err) {
      const timeout = err instanceof DOMException && err.name === 'TimeoutError';
      throw new CloudError(
        0,
        timeout ? 'timeout' : 'unreachable',
        timeout ? `the cloud did not answer within ${REQUEST_TIMEOUT_MS / 1000} s` : `cannot reach the cloud at ${this.baseUrl}`,
      );
    }
    /** @type {any} */
    let doc = null;
    try {
      doc = await response.json();
    } catch {
      doc = null;
    }
    if (response.ok && doc && typeof doc === 'object') return doc;
    const error = doc && typeof doc === 'object' ? doc.error : null;
    if (error && typeof error.code === 'string') {
      const { code, message, ...extra } = error;
      throw new CloudError(response.status, code, String(message ?? ''), extra);
    }
    throw new CloudError(response.status, 'bad_answer', `the cloud answered HTTP ${response.status} without a JSON body`);
  }

  /** ICE servers (STUN and TURN with credentials) for this viewer. */
  createSession() {
    return this.request('POST', '/api/v1/app/session', {});
  }

  /** @param {string} productId @param {string} deviceName */
  p2pInfo(productId, deviceName) {
    return this.request('GET', `/api/v1/devices/${seg(productId)}/${seg(deviceName)}/p2p-info`);
  }

  /** @param {string} productId @param {string} deviceName @returns {Promise<{grant: string, expires_at: number}>} */
  grant(productId, deviceName) {
    return this.request('POST', `/api/v1/devices/${seg(productId)}/${seg(deviceName)}/grant`, {});
  }

  /** @param {string} productId @param {string} deviceName @param {object} offer */
  async connect(productId, deviceName, offer) {
    const doc = await this.request('POST', `/api/v1/devices/${seg(productId)}/${seg(deviceName)}/connect`, { offer });
    return doc.answer;
  }

  /** The devices this viewer may see, with their online state (`GET /api/v1/app/devices`). */
  devices() {
    return this.request('GET', '/api/v1/app/devices');
  }
}
