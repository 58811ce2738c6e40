// The seed's 1v1→1vN switch (`liveStreamDomain`), the rules of xp2p.viewer.switch: ask the
// camera for its live state first; 405 means full. Python then joins the camera's swarm on
// the edge; this SDK cannot join swarms yet, so a full camera is -2004 with that reason,
// and a failed query is the seed's -2801, as in Python.

import { ErrorCode, XP2PError } from './errors.js';

export const QUALITIES = Object.freeze(['standard', 'high', 'super']);
export const STATE_TIMEOUT = 5;

/**
 * The edge's base URL from `liveStreamDomain`: a host (then https) or an http(s) URL.
 * @param {unknown} domain
 * @returns {string}
 */
export function edgeUrl(domain) {
  const text = typeof domain === 'string' ? domain : '';
  const url = text.includes('://') ? text : `https://${text}`;
  /** @type {URL | null} */
  let parts = null;
  try {
    parts = new URL(url);
  } catch {
    parts = null;
  }
  const portOk = parts !== null && (parts.port === '' || Number(parts.port) > 0);
  if (!parts || !portOk || !['http:', 'https:'].includes(parts.protocol) || !parts.hostname || parts.search || parts.hash || parts.username || parts.password) {
    throw new XP2PError(ErrorCode.BAD_PARAM, `liveStreamDomain must be the edge's host or its http(s) URL, not ${JSON.stringify(text.slice(0, 80))}`);
  }
  return url.replace(/\/+$/, '');
}

/**
 * The quality the viewer pulls: `quality=` of a seed 1v1 url, else `high`.
 * @param {string | undefined} url
 */
export function qualityOf(url) {
  let quality = 'high';
  if (url) {
    const found = new URLSearchParams(url.split('?')[1] ?? '').getAll('quality');
    if (found.length) quality = found[found.length - 1];
  }
  if (!QUALITIES.includes(quality)) throw new XP2PError(ErrorCode.BAD_PARAM, `quality must be one of ${QUALITIES.join(', ')}`);
  return quality;
}

/** @param {string} quality */
export function stateCommand(quality) {
  return `action=inner_define&channel=0&cmd=get_device_st&type=live&quality=${quality}`;
}

/**
 * True for status 405, false for 0; -2801 for anything else.
 * @param {{type: string, data?: any, errcode?: number, errmsg?: string}} result
 */
export function cameraIsFull(result) {
  const first = Array.isArray(result.data) && result.data[0] && typeof result.data[0] === 'object' ? result.data[0] : null;
  const raw = result.type === 'success' && first ? first.status : undefined;
  const status = typeof raw === 'string' || typeof raw === 'number' ? String(raw) : null;
  if (status === '405') return true;
  if (status === '0') return false;
  const why = result.type !== 'success' ? `${result.type} ${result.errcode}: ${result.errmsg}` : `an unexpected reply${status !== null ? ` (status ${status})` : ''}`;
  throw new XP2PError(ErrorCode.DEVICE_STATE_QUERY_FAILED, `the device state query failed: ${why}`);
}
