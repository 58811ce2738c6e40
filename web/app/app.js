// The web app the cloud serves at /app/: a camera app on the JavaScript SDK (served at
// /sdk/). Sign in, list the cameras, watch one live (quality, link figures), steer its head,
// talk to it, browse and play back its recordings, download its files. Each part is a
// module of its own; this one signs in and wires them to the chosen camera's service.

import { NotifySubtype, XP2PModule } from '../sdk/index.js';
import { DeviceList, deviceId } from './devices.js';
import { FileList } from './files.js';
import { PlaybackControls } from './playback.js';
import { PtzPad } from './ptz.js';
import { RecordsCalendar } from './records.js';
import { fetchViewerToken, forgetLoginCode, needsLoginCode, SignInError, takeLoginCode, tokenCache } from './signin.js';
import { StreamView } from './stream.js';
import { TalkButton } from './talk.js';
import { byId, clearNotice, describeError, showError, showInfo } from './ui.js';

/** A lost camera listed online again is reconnected this many times at most (one per
 * device-list refresh), then left to the person to choose again. */
const MAX_RECONNECTS = 5;

/** @typedef {import('./stream.js').Quality} Quality */
/** @typedef {import('./devices.js').Device} Device */

export class CameraApp {
  /**
   * @param {XP2PModule} p2p an initialised module
   * @param {ReturnType<typeof tokenCache>} tokens
   */
  constructor(p2p, tokens) {
    this.p2p = p2p;
    this.tokens = tokens;
    /** @type {string | null} the camera whose service is open */
    this.current = null;
    /** @type {Quality} */
    this.quality = 'high';
    /** @type {{id: string, attempts: number} | null} a camera whose link was lost */
    this.lost = null;
    this.stream = new StreamView(p2p);
    this.ptz = new PtzPad(p2p);
    this.talk = new TalkButton(p2p);
    this.files = new FileList(p2p);
    this.playback = new PlaybackControls(p2p, () => void this.live());
    this.calendar = new RecordsCalendar(
      p2p,
      (day) => void this.files.load(day),
      (span) => void this.play(span),
    );
    this.devices = new DeviceList(location.origin, () => tokens.get(), (d) => void this.select(d));
    // A newcomer sees a camera playing with no other step: the first online one, once.
    let chosen = false;
    this.devices.onUpdate = (devices) => {
      const first = devices.find((d) => d.online);
      if (!chosen && first) {
        chosen = true;
        if (this.current === null) void this.select(first);
      }
      this.reconnect(devices);
    };
    this.stream.onChange = (pull) => {
      byId('stream-kind').textContent =
        pull === null ? 'stopped' : pull.kind === 'live' ? `live · ${pull.quality}` : 'recording';
      if (pull?.kind !== 'playback') this.playback.end();
    };
    for (const button of /** @type {NodeListOf<HTMLButtonElement>} */ (document.querySelectorAll('#quality button'))) {
      button.addEventListener('click', () => void this.live(/** @type {Quality} */ (button.dataset.quality)));
    }
    this.showQuality();
  }

  start() {
    this.devices.start();
  }

  /** A camera whose link was lost (it restarted, or the network changed) comes back by
   * itself once the cloud lists it online again: a new service gets its fresh xp2pInfo.
   * @param {Device[]} devices */
  reconnect(devices) {
    const lost = this.lost;
    if (lost === null || this.current !== null || lost.attempts >= MAX_RECONNECTS) return;
    const device = devices.find((d) => deviceId(d) === lost.id && d.online);
    if (!device) return;
    lost.attempts += 1;
    void this.select(device, true);
  }

  /** Opens `device`'s service (closing the one before) and starts its live view.
   * @param {Device} device
   * @param {boolean} [reconnecting] after a lost link, rather than chosen */
  async select(device, reconnecting = false) {
    const id = deviceId(device);
    this.close();
    if (!reconnecting) this.lost = null;
    this.current = id;
    this.devices.select(id);
    byId('viewer').hidden = false;
    byId('viewer-title').textContent = id;
    clearNotice();
    if (reconnecting) showInfo(`Reconnecting to ${id}…`);
    else if (!device.online) showInfo(`${id} is offline now: trying anyway.`);
    try {
      await this.p2p.startP2PService(
        id,
        { productId: device.productId, deviceName: device.deviceName },
        { msgCallback: (event, subtype, detail) => this.onMessage(id, event, subtype, detail) },
      );
    } catch (err) {
      if (this.current === id) {
        this.current = null;
        showError(`connecting to ${id}`, err);
      }
      return;
    }
    if (this.current !== id) return; // another camera was chosen meanwhile
    if (reconnecting) clearNotice();
    this.lost = null;
    this.ptz.attach(id);
    this.talk.attach(id);
    this.files.attach(id);
    this.calendar.attach(id);
    await this.live();
  }

  /** Closes the open service, if any, with everything that runs on it. */
  close() {
    const id = this.current;
    if (id === null) return;
    this.current = null;
    this.stream.stop();
    this.playback.end();
    this.talk.attach(null);
    this.ptz.attach(null);
    this.files.attach(null);
    this.calendar.attach(null);
    try {
      this.p2p.stopP2PService(id);
    } catch {
      // already gone (a lost link)
    }
  }

  /** The live view, at `quality` (or the one chosen last).
   * @param {Quality} [quality] */
  async live(quality) {
    if (quality) this.quality = quality;
    this.showQuality();
    const id = this.current;
    if (id === null) return;
    try {
      await this.stream.start(id, { kind: 'live', quality: this.quality });
    } catch (err) {
      if (this.current === id) showError('starting the live view', err);
    }
  }

  /** Plays a recorded span back instead of the live view (one pull per service).
   * @param {{start: number, end: number}} span */
  async play(span) {
    const id = this.current;
    if (id === null) return;
    try {
      await this.stream.start(id, { kind: 'playback', start: span.start, end: span.end });
      this.playback.begin(id, span);
    } catch (err) {
      if (this.current === id) showError('starting the playback', err);
    }
  }

  showQuality() {
    for (const button of document.querySelectorAll('#quality button')) {
      button.setAttribute('aria-pressed', String(/** @type {HTMLElement} */ (button).dataset.quality === this.quality));
    }
  }

  /**
   * The service's notifies (docs/api.md, Events).
   * @param {string} id
   * @param {string} event
   * @param {string} subtype
   * @param {any} detail
   */
  onMessage(id, event, subtype, detail) {
    if (id !== this.current || event !== 'notify') return;
    if (subtype === NotifySubtype.DISCONNECT) {
      this.stream.ended();
      this.close();
      this.lost = { id, attempts: 0 };
      showError(
        `watching ${id}`,
        `the link was lost (${detail?.reason ?? 'no reason given'}); reconnecting when the camera is back online`,
      );
    } else if (subtype === NotifySubtype.EOF) {
      this.stream.ended();
      if (this.stream.pull?.kind === 'playback') this.playback.finished();
      else showInfo('the live stream ended; choose a quality to restart it');
    } else if (subtype === NotifySubtype.FAIL) {
      showError('streaming', detail?.errmsg ?? detail?.reason ?? JSON.stringify(detail));
    }
  }
}

/** Signs in, initialises the SDK and starts the app; every failure ends as text on screen. */
async function main() {
  window.addEventListener('unhandledrejection', (event) => showError('', event.reason));
  window.addEventListener('error', (event) => showError('', event.error ?? event.message));
  const code = takeLoginCode();
  if (needsLoginCode() && !code) {
    showInfo('Not signed in: open the address `xp2p demo` printed (it ends in #login=…).');
    byId('signin-help').hidden = false;
    return;
  }
  const tokens = tokenCache(() => fetchViewerToken(code));
  try {
    await tokens.get();
  } catch (err) {
    if (err instanceof SignInError && err.status >= 400 && err.status < 500) forgetLoginCode();
    showError('signing in', err);
    byId('signin-help').hidden = false;
    return;
  }
  // `#relay=only` in the address sends every link through the cloud's TURN relay: how an
  // operator checks the relay path that viewers behind hostile NATs depend on.
  const relayOnly = new URLSearchParams(location.hash.slice(1)).get('relay') === 'only';
  const relayNote = relayOnly ? 'Relay only: links go through the TURN server.' : '';
  /** @param {string} text */
  const netNote = (text) => {
    byId('net-status').textContent = [relayNote, text].filter(Boolean).join(' ');
  };
  netNote('');
  const p2p = new XP2PModule();
  try {
    await p2p.init({
      appParams: {
        cloudUrl: location.origin,
        relayOnly,
        getViewerToken: async () => {
          const { token, expiresAt } = await tokens.get();
          return { token, expiresAt };
        },
      },
      // The network check's outcome is a note, not an error: a link may work without STUN
      // (on one host, or through TURN), and a failed connect says so itself.
      eventHandler: (/** @type {string} */ event, /** @type {any} */ detail) => {
        if (event === 'natError') netNote(`Network check: ${detail?.message ?? describeError(detail)}`);
        else if (event === 'natChanged') netNote('Network changed: new links use the new address.');
      },
    });
  } catch (err) {
    showError('starting the SDK', err);
    return;
  }
  clearNotice();
  const app = new CameraApp(p2p, tokens);
  /** @type {any} */ (window).xp2pApp = app; // for the browser tests and the console
  // Leaving the page ends its links now, so the camera frees the viewer's slot and talk
  // session at once rather than when the link times out.
  window.addEventListener('pagehide', () => p2p.destroy());
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) location.reload(); // back from the page cache: its links are gone
  });
  app.start();
}

void main();
