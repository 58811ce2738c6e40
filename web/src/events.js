// Event names of the seed's callbacks (docs/api.md): the strings the seed's msgCallback and
// init event handler receive. Mirrors src/xp2p/events.py: tests/browser/test_sdk_parity.py
// compares the two.

/** First argument of `msgCallback(event, subtype, detail)`. */
export const XP2PEvent = Object.freeze({
  NOTIFY: 'notify',
  LOG: 'log',
});

export const NotifySubtype = Object.freeze({
  CONNECTED: 'connected',
  REQUEST: 'request',
  PARSED: 'parsed',
  SUCCESS: 'success',
  EOF: 'eof',
  FAIL: 'fail',
  CLOSE: 'close',
  DISCONNECT: 'disconnect',
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
