// The cameras this viewer's token covers, with their online state, refreshed every few
// seconds from the cloud (GET /api/v1/app/devices, Bearer token).

import { byId, describeError, el } from './ui.js';

const REFRESH_MS = 3000;

/**
 * @typedef {object} Device
 * @property {string} productId
 * @property {string} deviceName
 * @property {boolean} online
 */

/** @param {Device} d */
export function deviceId(d) {
  return `${d.productId}/${d.deviceName}`;
}

/**
 * @param {string} cloudUrl
 * @param {string} token
 * @returns {Promise<Device[]>}
 */
async function fetchDevices(cloudUrl, token) {
  const response = await fetch(new URL('/api/v1/app/devices', cloudUrl), {
    headers: { Authorization: `Bearer ${token}` },
    cache: 'no-store',
  });
  /** @type {any} */
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body?.error ?? {};
    throw new Error(`${response.status} ${error.code ?? 'error'}: ${error.message ?? response.statusText}`);
  }
  if (!Array.isArray(body?.devices)) throw new Error('the cloud answered without a device list');
  return body.devices.map((/** @type {any} */ d) => ({
    productId: String(d.product_id),
    deviceName: String(d.device_name),
    online: d.online === true,
  }));
}

export class DeviceList {
  /**
   * @param {string} cloudUrl
   * @param {() => Promise<{token: string}>} getToken
   * @param {(device: Device) => void} onSelect
   */
  constructor(cloudUrl, getToken, onSelect) {
    this.cloudUrl = cloudUrl;
    this.getToken = getToken;
    this.onSelect = onSelect;
    /** @type {Device[]} */
    this.devices = [];
    /** @type {string | null} */
    this.selected = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @type {(devices: Device[]) => void} told after each successful refresh */
    this.onUpdate = () => {};
    this.list = byId('device-list');
    this.status = byId('device-status');
  }

  start() {
    void this.refresh();
  }

  stop() {
    clearTimeout(this.timer);
  }

  async refresh() {
    clearTimeout(this.timer);
    try {
      const { token } = await this.getToken();
      this.devices = await fetchDevices(this.cloudUrl, token);
      this.status.textContent = this.devices.length ? '' : 'This sign-in covers no camera.';
      this.render();
      this.onUpdate(this.devices);
    } catch (err) {
      // Kept on screen beside the last list: the refresh goes on and may recover.
      this.status.textContent = `Cannot list the cameras: ${describeError(err)}`;
    }
    this.timer = setTimeout(() => void this.refresh(), REFRESH_MS);
  }

  /** @param {string | null} id */
  select(id) {
    this.selected = id;
    this.render();
  }

  /** @param {string} id */
  find(id) {
    return this.devices.find((d) => deviceId(d) === id);
  }

  render() {
    const items = this.devices.map((device) => {
      const id = deviceId(device);
      const button = el(
        'button',
        { type: 'button', class: 'device', 'aria-pressed': String(id === this.selected) },
        el('span', { class: 'dot', 'aria-hidden': 'true' }),
        el('span', { class: 'name' }, id),
        el('span', { class: 'state' }, device.online ? 'online' : 'offline'),
      );
      button.addEventListener('click', () => this.onSelect(device));
      return el('li', { dataset: { device: id, online: String(device.online) } }, button);
    });
    this.list.replaceChildren(...items);
  }
}
