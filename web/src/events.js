// Event names of the seed's callbacks (docs/api.md): the strings the seed's msgCallback and
// init event handler receive. Mirrors src/xp2p/events.py: tests/browser/test_sdk_parity.py
// compares the two.

/** First argument of `msgCallback(event, subtype, detail)`. */
export const XP2PEvent = Object.freeze({
  NOTIFY: 'notify',
  LOG: 'log',
});

/** The stream's subtypes (request ... close) are the pull's alone: a talk session has its own
 * (voice_*), so a seed-style msgCallback that ends the video on close, eof or fail never ends
 * it when a talk ends. */
export const NotifySubtype = Object.freeze({
  CONNECTED: 'connected',
  REQUEST: 'request',
  PARSED: 'parsed',
  EOF: 'eof',
  FAIL: 'fail',
  CLOSE: 'close',
  DISCONNECT: 'disconnect',
  /** Talk-back: the request went out / the answer's headers came / the device took every
   * byte / the session ended (always its last notify; `ok` says how). */
  VOICE_REQUEST: 'voice_request',
  VOICE_PARSED: 'voice_parsed',
  VOICE_SUCCESS: 'voice_success',
  VOICE_CLOSE: 'voice_close',
  /** 1vN: the service's statistics, about every 2 s. */
  SWARM: 'swarm',
  /** 1vN: the room's state changed (stalled, ended, live) or the service re-joined. */
  SWARM_STATE: 'swarm_state',
});

export const LogLevel = Object.freeze({
  LOG: 'log',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
});

/** Events of `init(..., eventHandler)`. */
export const NatEvent = Object.freeze({
  NAT_CHANGED: 'natChanged',
  NAT_ERROR: 'natError',
});

/** The seed's spelling of XP2PEvent (`p2pModule.XP2PEventEnum.Notify`). */
export const XP2PEventEnum = Object.freeze({
  Notify: XP2PEvent.NOTIFY,
  Log: XP2PEvent.LOG,
});

/** The seed's spelling of NotifySubtype (`p2pModule.XP2PNotify_SubType.Disconnect`). */
export const XP2PNotify_SubType = Object.freeze({
  Connected: NotifySubtype.CONNECTED,
  Request: NotifySubtype.REQUEST,
  Parsed: NotifySubtype.PARSED,
  Eof: NotifySubtype.EOF,
  Fail: NotifySubtype.FAIL,
  Close: NotifySubtype.CLOSE,
  Disconnect: NotifySubtype.DISCONNECT,
  VoiceRequest: NotifySubtype.VOICE_REQUEST,
  VoiceParsed: NotifySubtype.VOICE_PARSED,
  VoiceSuccess: NotifySubtype.VOICE_SUCCESS,
  VoiceClose: NotifySubtype.VOICE_CLOSE,
  Swarm: NotifySubtype.SWARM,
  SwarmState: NotifySubtype.SWARM_STATE,
});
