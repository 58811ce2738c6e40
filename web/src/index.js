// The browser SDK of xp2p: the seed's X-P2P API over WebRTC (docs/api.md, "The JavaScript
// SDK"). One import for a page: `import { XP2PModule } from '/sdk/index.js'`.

export { XP2PModule, LINK_MODE_DIRECT, LINK_MODE_RELAY } from './module.js';
export { ErrorCode, XP2PError, errorName } from './errors.js';
export { XP2PEvent, NotifySubtype, LogLevel, NatEvent, XP2PEventEnum, XP2PNotify_SubType } from './events.js';
export { createLivePlayer } from './player.js';
export { parseXp2pInfo } from './xp2pinfo.js';
export { CloudError } from './cloud.js';
export { LinkError } from './link.js';

/** @typedef {import('./player.js').LivePlayer} LivePlayer */
/** @typedef {import('./player.js').LivePlayerStats} LivePlayerStats */
/** @typedef {import('./command.js').CommandResult} CommandResult */
/** @typedef {import('./download.js').LocalDownloadResult} LocalDownloadResult */
