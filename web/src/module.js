// XP2PModule: the seed's API (docs/api.md, "The JavaScript SDK") for browsers, over WebRTC.
// The same calls, events and error codes as the Python P2PModule; promises resolve 0 (or a
// result) and reject with XP2PError, whose `errcode`/`errmsg` are the seed's fields. The page
// never holds an app secret: `appParams.getViewerToken` fetches a short-lived viewer token
// from the app's own backend (docs/protocol.md §4a).

import { CloudClient, CloudError } from './cloud.js';
import { checkTimeout, commandTarget, ERROR_ERRCODE, MAX_REPLY_BYTES, parseReply, timedOut } from './command.js';
import { checkCallbacks, downloadTarget, LocalDownload } from './download.js';
import { ErrorCode, XP2PError } from './errors.js';
import { LogLevel, NatEvent, NotifySubtype, XP2PEventEnum, XP2PNotify_SubType } from './events.js';
import { LinkError, openLink } from './link.js';
import { quoteTarget, Service } from './service.js';
import { captureMicrophone, VoiceDataWriter, VoiceSession, voiceTarget } from './voice.js';
import { cameraIsFull, edgeUrl, qualityOf, STATE_TIMEOUT, stateCommand } from './switch.js';
import { parseXp2pInfo } from './xp2pinfo.js';

export const LINK_MODE_DIRECT = 62;
export const LINK_MODE_RELAY = 63;
/** A grant is renewed on the link this long (or half its life) before it expires. */
export const GRANT_RENEW_MARGIN = 60;
/** How long the NAT check of init/resetP2P waits for a server-reflexive candidate. */
export const PROBE_TIMEOUT_MS = 3000;
const DEFAULT_FLV = { filename: 'ipc.flv', params: 'action=live&channel=0&quality=high' };
/** The host of the seed's 1v1 url, `http://XP2P_INFO.xnet/ipc.p2p.com/ipc.flv?<params>`. */
export const XP2P_INFO_HOST = 'xp2p_info.xnet';

/** The pull a seed-style 1v1 url names (the last path segment is the file on the device, the
 * query its params; the seed's `ipc.p2p.com` before it is a placeholder), or null for any other
 * url (a 1vN stream's). Mirrors src/xp2p/viewer/types.py flv_of_1v1_url.
 * @param {unknown} url @returns {{filename: string, params: string} | null} */
export function flvOf1v1Url(url) {
  if (typeof url !== 'string' || !url) return null;
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.hostname.toLowerCase() !== XP2P_INFO_HOST) return null;
  const filename = parsed.pathname.split('/').pop() || DEFAULT_FLV.filename;
  return { filename, params: parsed.search.slice(1) || DEFAULT_FLV.params };
}

/**
 * @typedef {object} AppParams
 * @property {string} cloudUrl the cloud's base URL (`https://cloud.example`)
 * @property {import('./cloud.js').TokenSource} getViewerToken fetches a viewer token from the
 *   app's backend: `{token, expiresAt}` or the token string
 * @property {boolean} [relayOnly] offer relayed candidates only (`iceTransportPolicy: 'relay'`)
 * @property {number} [connectTimeout] ms for a link to come up (10 000)
 * @typedef {{productId?: string, deviceName?: string, xp2pInfo?: string, url?: string, liveStreamDomain?: string, streamLiveDomain?: string}} StreamInfo
 * @typedef {{msgCallback?: import('./service.js').MsgCallback, dataCallback?: import('./service.js').DataCallback}} ServiceCallbacks
 */

/** @param {number} code @param {string} message @param {string} [reason] */
function fail(code, message, reason) {
  const error = new XP2PError(code, message);
  error.reason = reason;
  return error;
}

/** A random id, as Python's uuid4 (crypto.randomUUID needs a secure context). */
function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class XP2PModule {
  constructor() {
    this._uuid = uuid();
    /** @type {CloudClient | null} */
    this._cloud = null;
    /** @type {AppParams | null} */
    this._params = null;
    /** @type {{iceServers: RTCIceServer[], fetchedAt: number} | null} */
    this._session = null;
    /** @type {((event: string, detail: any) => void) | null} */
    this._eventHandler = null;
    /** @type {Map<string, Service | null>} null while starting */
    this._services = new Map();
    /** @type {Map<string, string>} each service's device (`pid/dev`): one link per device */
    this._devices = new Map();
    /** @type {string | null} the public address of the last check */
    this._mapped = null;
    this._probing = false;
    this.natType = 'unknown';
    // A page hears of a new network through 'online' and, where the browser has it, the
    // Network Information API's 'change': check again, so natChanged needs no resetP2P.
    this._onNetworkChange = () => {
      if (this._cloud && !this._probing) this._probe().catch(() => {});
    };
  }

  /** @returns {EventTarget | null} navigator.connection, where the browser has one */
  static _connection() {
    return /** @type {any} */ (globalThis.navigator)?.connection ?? null;
  }

  getUUID() {
    return this._uuid;
  }

  /** The seed's event constants, where its apps read them (`p2pModule.XP2PEventEnum.Notify`). */
  get XP2PEventEnum() {
    return XP2PEventEnum;
  }

  get XP2PNotify_SubType() {
    return XP2PNotify_SubType;
  }

  /**
   * Signs in to the cloud with a viewer token (ICE servers, TURN credentials) and checks the
   * network (a server-reflexive candidate from the cloud's STUN). Resolves 0.
   * @param {{appParams: AppParams, eventHandler?: (event: string, detail: any) => void}} options
   */
  async init({ appParams, eventHandler } = /** @type {any} */ ({})) {
    if (this._cloud) throw fail(ErrorCode.INIT_REPEATED, 'the module is already initialised');
    if (!appParams || typeof appParams.cloudUrl !== 'string' || !appParams.cloudUrl || typeof appParams.getViewerToken !== 'function') {
      throw fail(ErrorCode.BAD_PARAM, 'appParams needs cloudUrl and getViewerToken (browsers never hold the app secret)');
    }
    if (!/^https?:\/\//.test(appParams.cloudUrl)) throw fail(ErrorCode.BAD_PARAM, 'cloudUrl must be an http(s) URL');
    if (eventHandler !== undefined && typeof eventHandler !== 'function') throw fail(ErrorCode.BAD_PARAM, 'eventHandler must be a function');
    const cloud = new CloudClient(appParams.cloudUrl, appParams.getViewerToken);
    try {
      this._session = await this._newSession(cloud);
    } catch (err) {
      throw this._cloudFailure(err, ErrorCode.BAD_PARAM, 'cloud sign-in failed');
    }
    this._cloud = cloud;
    this._params = appParams;
    this._eventHandler = eventHandler ?? null;
    await this._probe();
    globalThis.addEventListener?.('online', this._onNetworkChange);
    XP2PModule._connection()?.addEventListener('change', this._onNetworkChange);
    return 0;
  }

  /** @param {CloudClient} cloud */
  async _newSession(cloud) {
    const doc = await cloud.createSession();
    return { iceServers: /** @type {RTCIceServer[]} */ (doc.ice_servers ?? []), fetchedAt: Date.now() };
  }

  /** Checks the network again (after a change); the result comes as natChanged/natError. */
  async resetP2P() {
    const cloud = this._requireInit();
    if (this._probing) throw fail(ErrorCode.NAT_PROBE_STARTED_TWICE, 'a NAT probe is already running');
    try {
      this._session = await this._newSession(cloud);
    } catch (err) {
      throw this._cloudFailure(err, ErrorCode.NAT_PROBE_ERROR, 'cannot reach the cloud');
    }
    await this._probe();
    return 0;
  }

  /** A browser cannot run RFC 5780's tests (it has no raw sockets): it learns its public
   * address from a server-reflexive candidate, which is what natChanged compares. */
  async _probe() {
    this._probing = true;
    try {
      const stun = (this._session?.iceServers ?? []).filter((s) => [s.urls].flat().some((u) => u.startsWith('stun:')));
      const pc = new RTCPeerConnection({ iceServers: stun });
      /** @type {string | null} */
      let mapped = null;
      try {
        pc.createDataChannel('probe');
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, PROBE_TIMEOUT_MS);
          pc.addEventListener('icecandidate', (event) => {
            if (event.candidate?.type === 'srflx') {
              mapped = event.candidate.address ?? null;
              clearTimeout(timer);
              resolve(undefined);
            } else if (!event.candidate) {
              clearTimeout(timer);
              resolve(undefined);
            }
          });
          pc.createOffer().then((offer) => pc.setLocalDescription(offer));
        });
      } finally {
        pc.close();
      }
      if (mapped === null) {
        this.natType = 'udp-blocked';
        this._fire(NatEvent.NAT_ERROR, { code: ErrorCode.NAT_PROBE_ERROR, message: 'no answer from the cloud\'s STUN server (UDP blocked?); links may still work through TURN' });
      } else {
        this.natType = 'unknown';
        if (this._mapped !== null && this._mapped !== mapped) {
          this._fire(NatEvent.NAT_CHANGED, { nat_type: this.natType, mapped, previous_mapped: this._mapped });
        }
        this._mapped = mapped;
      }
    } finally {
      this._probing = false;
    }
  }

  /** @param {string} event @param {any} detail */
  _fire(event, detail) {
    try {
      this._eventHandler?.(event, detail);
    } catch (err) {
      console.error('xp2p: eventHandler threw', err);
    }
  }

  /** Stops every service and signs out; never throws. */
  destroy() {
    for (const id of [...this._services.keys()]) this.stopP2PService(id);
    globalThis.removeEventListener?.('online', this._onNetworkChange);
    XP2PModule._connection()?.removeEventListener('change', this._onNetworkChange);
    this._cloud = null;
    this._session = null;
    this._params = null;
    this._mapped = null;
  }

  _requireInit() {
    if (!this._cloud) throw fail(ErrorCode.NOT_INITIALISED, 'call init() first');
    return this._cloud;
  }

  /** @param {string} id */
  _service(id) {
    this._requireInit();
    const service = this._services.get(id);
    if (!service) throw fail(ErrorCode.SERVICE_NOT_STARTED, `no service ${JSON.stringify(id)}`);
    return service;
  }

  /**
   * @param {unknown} err
   * @param {number} code
   * @param {string} what
   */
  _cloudFailure(err, code, what) {
    if (err instanceof CloudError) {
      // A cloud that could not be reached or did not answer is retried later, whatever the call.
      const unreachable = err.status === 0 && (err.code === 'unreachable' || err.code === 'timeout');
      return fail(unreachable ? ErrorCode.CLOUD_UNREACHABLE : code, `${what}: ${unreachable ? err.detail : err.message}`, err.code);
    }
    if (err instanceof XP2PError) return err;
    return fail(code, `${what}: ${err instanceof Error ? err.message : err}`);
  }

  /**
   * Connects service `id` to a device; resolves 0 once the link is up (`connected`
   * notified). With `dataCallback` the live pull starts too, as in the seed.
   * @param {string} id
   * @param {StreamInfo} streamInfo
   * @param {ServiceCallbacks} [callbacks]
   */
  async startP2PService(id, streamInfo, callbacks = {}) {
    const cloud = this._requireInit();
    if (typeof id !== 'string' || id.length < 1 || id.length > 128) throw fail(ErrorCode.BAD_PARAM, 'service id must be 1-128 characters');
    if (this._services.has(id)) throw fail(ErrorCode.SERVICE_ALREADY_STARTED, `service ${JSON.stringify(id)} is already running or starting: stop it first`);
    const { msgCallback, dataCallback } = callbacks ?? {};
    if (msgCallback !== undefined && typeof msgCallback !== 'function') throw fail(ErrorCode.BAD_PARAM, 'msgCallback must be a function');
    if (dataCallback !== undefined && typeof dataCallback !== 'function') throw fail(ErrorCode.BAD_PARAM, 'dataCallback must be a function');
    const info = streamInfo ?? {};
    const flv = flvOf1v1Url(info.url);
    if (info.url && !flv && !info.productId) throw fail(ErrorCode.UNSUPPORTED, 'this SDK connects to devices (1v1): 1vN swarms are not in the browser SDK yet');
    if (typeof info.productId !== 'string' || !info.productId || typeof info.deviceName !== 'string' || !info.deviceName) {
      throw fail(ErrorCode.BAD_PARAM, '1v1 needs productId and deviceName');
    }
    // The seed's switch, under both of its spellings; checked before any link opens.
    const domain = info.liveStreamDomain || info.streamLiveDomain || '';
    const quality = domain ? qualityOf(info.url) : null;
    if (domain) edgeUrl(domain);
    for (const [other, running] of this._devices.entries()) {
      if (running === `${info.productId}/${info.deviceName}`) {
        throw fail(ErrorCode.SERVICE_ALREADY_STARTED, `one link per device (同一个设备只能有1个连接): ${running} already has service ${JSON.stringify(other)}; stop it first`);
      }
    }
    this._services.set(id, null); // reserved: a second start of this id is -2401
    this._devices.set(id, `${info.productId}/${info.deviceName}`);
    let service;
    try {
      service = await this._connect(cloud, id, { productId: info.productId, deviceName: info.deviceName, flv }, info.xp2pInfo, msgCallback ?? null);
    } catch (err) {
      this._services.delete(id);
      this._devices.delete(id);
      throw err;
    }
    if (!this._services.has(id)) {
      // stopP2PService (or destroy) ran while we connected.
      service.link.close('service stopped');
      throw fail(ErrorCode.START_STREAM_FAILED, `service ${id} was stopped while it connected`);
    }
    this._services.set(id, service);
    service.link.onClose(() => {
      if (this._services.get(id) === service && !service.stopped && !service.closedBySdk) this._probe().catch(() => {});
    });
    if (quality) await this._stayOn1v1(id, `${info.productId}/${info.deviceName}`, quality);
    service.notify(NotifySubtype.CONNECTED, { mode: '1v1', link_mode: service.linkMode });
    if (dataCallback) {
      try {
        await this.startStream(id, { dataCallback });
      } catch (err) {
        this.stopP2PService(id); // a failed automatic pull leaves no service behind
        throw err;
      }
    }
    return 0;
  }

  /**
   * The switch's state query on the new link: a camera with room stays 1v1; a full one
   * (405) would move a Python viewer to its swarm, which this SDK cannot join yet (-2004);
   * a query that fails is -2801. Either way the service is stopped before the throw.
   * @param {string} id @param {string} label @param {string} quality
   */
  async _stayOn1v1(id, label, quality) {
    let full;
    try {
      full = cameraIsFull(await this.sendCommand(id, stateCommand(quality), { timeout: STATE_TIMEOUT }));
    } catch (err) {
      this.stopP2PService(id);
      throw err;
    }
    if (full) {
      this.stopP2PService(id);
      throw fail(ErrorCode.UNSUPPORTED, `camera ${label} is full (405): its viewers beyond the limit watch its 1vN swarm, which this SDK cannot join yet`, 'camera_full');
    }
  }

  /**
   * @param {CloudClient} cloud
   * @param {string} id
   * @param {{productId: string, deviceName: string, flv?: {filename: string, params: string} | null}} device
   * @param {string | undefined} knownInfo
   * @param {import('./service.js').MsgCallback | null} msgCallback
   */
  async _connect(cloud, id, device, knownInfo, msgCallback) {
    const { productId, deviceName } = device;
    const label = `${productId}/${deviceName}`;
    let link;
    try {
      const xp2pInfo = knownInfo || (await cloud.p2pInfo(productId, deviceName)).xp2p_info;
      if (!xp2pInfo) throw fail(ErrorCode.BAD_XP2P_INFO, `device ${label} has no xp2pInfo yet`, 'device_offline');
      const parsed = parseXp2pInfo(xp2pInfo);
      if (parsed.productId !== productId || parsed.deviceName !== deviceName) {
        throw fail(ErrorCode.BAD_XP2P_INFO, `xp2pInfo belongs to ${parsed.productId}/${parsed.deviceName}, not ${label}`);
      }
      if (!parsed.dtlsFingerprint) throw fail(ErrorCode.BAD_XP2P_INFO, `device ${label} does not serve browsers (its xp2pInfo has no DTLS fingerprint)`, 'bad_identity');
      const { grant, expires_at: expiresAt } = await cloud.grant(productId, deviceName);
      await this._refreshSession(cloud);
      link = await openLink({
        iceServers: this._session?.iceServers ?? [],
        signal: (offer) => cloud.connect(productId, deviceName, offer),
        fingerprint: parsed.dtlsFingerprint,
        grant,
        connectTimeout: this._params?.connectTimeout ?? 10_000,
        relayOnly: this._params?.relayOnly ?? false,
      });
      const stats = await link.stats();
      const service = new Service(id, device, link, msgCallback, stats.mode);
      this._renewGrant(cloud, service, expiresAt);
      return service;
    } catch (err) {
      if (err instanceof XP2PError) throw err;
      if (err instanceof CloudError) {
        if (err.code === 'device_offline' || err.code === 'unknown_device') {
          throw fail(ErrorCode.BAD_XP2P_INFO, `device ${label} is offline or unknown (${err.code})`, err.code);
        }
        const what = err.code === 'device_refused' ? `device ${label} refused` : `cloud error for ${label}`;
        throw fail(ErrorCode.START_STREAM_FAILED, `${what}: ${err.message}`, err.code);
      }
      if (err instanceof LinkError) {
        const code = err.reason === 'bad_identity' ? ErrorCode.BAD_XP2P_INFO : ErrorCode.START_STREAM_FAILED;
        throw fail(code, `cannot connect to ${label}: ${err.message}`, err.reason);
      }
      throw fail(ErrorCode.START_STREAM_FAILED, `cannot connect to ${label}: ${err}`);
    }
  }

  /** TURN credentials last an hour from the session: a long-lived page renews them.
   * @param {CloudClient} cloud */
  async _refreshSession(cloud) {
    if (this._session && Date.now() - this._session.fetchedAt < 30 * 60_000) return;
    this._session = await this._newSession(cloud);
  }

  /** Presents a fresh grant on the link before the current one expires (the device closes a
   * link whose grant expired, docs/protocol.md §9).
   * @param {CloudClient} cloud @param {Service} service @param {number} expiresAt */
  async _renewGrant(cloud, service, expiresAt) {
    while (!service.link.closed) {
      const remaining = expiresAt - Date.now() / 1000;
      const wait = Math.max(0, remaining - Math.min(GRANT_RENEW_MARGIN, remaining / 2));
      const closed = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), wait * 1000);
        service.link.onClose(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (closed) return;
      try {
        const fresh = await cloud.grant(service.info.productId, service.info.deviceName);
        const exchange = service.link.open('POST', '/grant');
        await exchange.write(new TextEncoder().encode(fresh.grant));
        await exchange.end();
        const head = await exchange.response;
        exchange.cancel();
        if (head.status !== 200) {
          service.log(LogLevel.WARN, `the device refused a renewed grant (${head.status})`);
          return;
        }
        expiresAt = fresh.expires_at;
      } catch (err) {
        service.log(LogLevel.WARN, `cannot renew the grant: ${err instanceof Error ? err.message : err}`);
        await new Promise((r) => setTimeout(r, 5000));
      }
    }
  }

  /**
   * Replaces the service's msgCallback. Returns 0, or -2000 (the seed returns, not throws).
   * @param {string} id @param {ServiceCallbacks} callbacks */
  updateServiceCallbacks(id, callbacks) {
    const service = this._services.get(id);
    if (!service || !callbacks || typeof callbacks.msgCallback !== 'function') return ErrorCode.BAD_PARAM;
    service.msgCallback = callbacks.msgCallback;
    return ErrorCode.OK;
  }

  /** Stops the pull, the talk session and the download, then closes the link.
   * @param {string} id */
  stopP2PService(id) {
    const service = this._services.get(id);
    this._services.delete(id);
    this._devices.delete(id);
    if (service) service.stop();
  }

  /** 62 for a direct link, 63 for one through a TURN relay. @param {string} id */
  getStreamLinkMode(id) {
    return this._service(id).linkMode === 'relay' ? LINK_MODE_RELAY : LINK_MODE_DIRECT;
  }

  /** The link's selected path: mode, RTT, bytes. @param {string} id */
  async getLinkStats(id) {
    return this._service(id).link.stats();
  }

  /**
   * Opens the pull (`flv` names the request on the device) and resolves 0 once the device
   * answered 200; `dataCallback(ArrayBuffer)` then gets the FLV bytes in order.
   * @param {string} id
   * @param {{flv?: {filename?: string, params?: string}, dataCallback: import('./service.js').DataCallback}} options
   */
  async startStream(id, { flv, dataCallback } = /** @type {any} */ ({})) {
    const service = this._service(id);
    if (typeof dataCallback !== 'function') throw fail(ErrorCode.BAD_PARAM, 'dataCallback must be a function');
    // Without flv, the pull the service's url names (the seed's XP2P_INFO.xnet form).
    const named = flv ?? service.info.flv ?? DEFAULT_FLV;
    const filename = named.filename ?? DEFAULT_FLV.filename;
    const params = named.params ?? DEFAULT_FLV.params;
    if (typeof filename !== 'string' || typeof params !== 'string' || !/^[A-Za-z0-9._-]+$/.test(filename)) {
      throw fail(ErrorCode.BAD_PARAM, 'bad flv params: filename is a plain file name, params a query string');
    }
    await service.startPull(`/${filename}?${quoteTarget(params)}`, dataCallback);
    return 0;
  }

  /** Cancels the pull on the link and notifies `close`. @param {string} id */
  stopStream(id) {
    this._services.get(id)?.stopPull();
  }

  // The seed's names before its 1.3.0, still accepted by its plugin.
  /** @param {string} id @param {{flv?: {filename?: string, params?: string}, dataCallback: import('./service.js').DataCallback}} options */
  startP2PStream(id, options) {
    return this.startStream(id, options);
  }

  /** @param {string} id */
  stopP2PStream(id) {
    this.stopStream(id);
  }

  /** @param {string} id */
  stopServiceById(id) {
    this.stopP2PService(id);
  }

  /** @param {string} id @param {MediaStream | null} stream @param {any} [options] @param {import('./voice.js').VoiceCallbacks} [callbacks] */
  startVoiceService(id, stream, options, callbacks) {
    return this.startVoice(id, stream, options, callbacks);
  }

  /** @param {string} id */
  stopVoiceService(id) {
    this.stopVoice(id);
  }

  /**
   * Sends a command (the query of `GET /command`): resolves a CommandResult whose `type` is
   * success, failure, timeout or error; rejects only for a command that cannot be sent.
   * @param {string} id
   * @param {string} command
   * @param {{timeout?: number}} [options] seconds (7.5)
   */
  async sendCommand(id, command, options = {}) {
    const service = this._service(id);
    const target = commandTarget(command);
    const timeout = options.timeout ?? 7.5;
    checkTimeout(timeout);
    if (service.link.closed) {
      return { type: 'error', status: 0, data: null, errcode: ERROR_ERRCODE, errmsg: `no link (${service.link.closeReason})` };
    }
    const exchange = service.link.request('GET', target);
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const expired = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeout * 1000);
    });
    try {
      const outcome = await Promise.race([
        (async () => {
          const head = await exchange.response;
          const body = await exchange.read(MAX_REPLY_BYTES);
          return parseReply(head.status, body);
        })(),
        expired,
      ]);
      if (outcome === 'timeout') {
        exchange.cancel();
        return timedOut(timeout);
      }
      return /** @type {import('./command.js').CommandResult} */ (outcome);
    } catch (err) {
      return { type: 'error', status: 0, data: null, errcode: ERROR_ERRCODE, errmsg: `the reply was lost: ${err instanceof Error ? err.message : err}` };
    } finally {
      clearTimeout(timer);
    }
  }

  /** @param {Service} service */
  _voiceFree(service) {
    if (service.voice) throw fail(ErrorCode.VOICE_FAILED, `service ${service.id} already has a talk session open`);
    if (service.link.closed) throw service.lostLink(ErrorCode.VOICE_FAILED);
  }

  /**
   * Talk-back from the microphone as PCM (s16le). `stream` is a MediaStream with an audio
   * track, or null: the SDK asks for the microphone with echo cancellation on.
   * @param {string} id
   * @param {MediaStream | null} stream
   * @param {{sampleRate?: number, channels?: number, urlParams?: string, audio?: MediaTrackConstraints}} [options]
   * @param {import('./voice.js').VoiceCallbacks} [callbacks]
   */
  async startVoice(id, stream, options = {}, callbacks = {}) {
    const service = this._service(id);
    const sampleRate = options.sampleRate ?? 8000;
    const channels = options.channels ?? 1;
    if (!Number.isInteger(sampleRate) || sampleRate < 8000 || sampleRate > 48000 || (channels !== 1 && channels !== 2)) {
      throw fail(ErrorCode.BAD_PARAM, 'talk-back PCM is 8000-48000 Hz with 1 or 2 channels');
    }
    const target = voiceTarget(options.urlParams ?? 'channel=0', false);
    this._voiceFree(service);
    let media = stream;
    const ownsStream = !media;
    if (!media) {
      try {
        media = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: channels, ...options.audio },
        });
      } catch (err) {
        throw fail(ErrorCode.VOICE_FAILED, `no microphone: ${err instanceof Error ? err.message : err}`);
      }
    }
    const session = new VoiceSession(service, target, { 'content-type': `audio/pcm;rate=${sampleRate};channels=${channels}` }, {});
    service.voice = session;
    try {
      await session.open();
      await captureMicrophone(session, media, { sampleRate, channels, ownsStream }, callbacks ?? {});
    } catch (err) {
      if (service.voice === session) service.voice = null;
      session.exchange.cancel();
      if (ownsStream) for (const t of media.getTracks()) t.stop();
      throw err instanceof XP2PError ? err : fail(ErrorCode.VOICE_FAILED, `talk-back failed: ${err}`);
    }
    return 0;
  }

  /**
   * Talk-back of FLV with AAC audio the app writes: resolves the writer (`addChunk`).
   * @param {string} id
   * @param {{urlParams?: string}} [options]
   * @param {import('./voice.js').VoiceDataCallbacks} [callbacks]
   */
  async startVoiceData(id, options = {}, callbacks = {}) {
    const service = this._service(id);
    const target = voiceTarget(options.urlParams ?? 'channel=0&calltype=audio', true);
    this._voiceFree(service);
    const session = new VoiceSession(service, target, { 'content-type': 'video/x-flv' }, callbacks ?? {});
    service.voice = session;
    try {
      await session.open();
    } catch (err) {
      if (service.voice === session) service.voice = null;
      throw err;
    }
    return new VoiceDataWriter(session);
  }

  /** Ends the talk session after what is queued; its callbacks report the device's verdict.
   * @param {string} id */
  stopVoice(id) {
    this._services.get(id)?.voice?.stop();
  }

  /**
   * Downloads a device file with the seed's callbacks; resolves 0 once started.
   * @param {string} id
   * @param {{urlParams: string, keepLink?: boolean}} options `keepLink`: the link stays up
   *   after the download (the seed closes it once onComplete has run)
   * @param {import('./download.js').DownloadCallbacks} [callbacks]
   */
  async startLocalDownload(id, options, callbacks = {}) {
    const service = this._service(id);
    const target = downloadTarget(options?.urlParams);
    const checked = checkCallbacks(callbacks);
    if (service.download) throw fail(ErrorCode.DOWNLOAD_FAILED, `service ${id} already has a download running`);
    if (service.link.closed) throw service.lostLink(ErrorCode.DOWNLOAD_FAILED);
    service.download = new LocalDownload(service, target, checked, options?.keepLink === true);
    return 0;
  }

  /** Cancels the download; its onError ("stopped") and onComplete have run when it resolves.
   * @param {string} id */
  async stopLocalDownload(id) {
    await this._services.get(id)?.download?.stop();
  }
}
