// The PTZ pad: the seed demo's user_define commands (docs/protocol.md §10). A direction turns
// the head while its button is held (`ptz_<dir>_press`) and stops when it is let go
// (`ptz_release_pre`); the device answers `{"apex": "yes"|"no"}`, yes meaning the head is at
// its limit that way, shown by marking the button.

import { byId, describeError } from './ui.js';

const RELEASE = 'ptz_release_pre';

export class PtzPad {
  /** @param {import('../sdk/index.js').XP2PModule} p2p */
  constructor(p2p) {
    this.p2p = p2p;
    /** @type {string | null} */
    this.id = null;
    this.messageId = 0;
    /** @type {HTMLButtonElement | null} the button held now */
    this.held = null;
    /** Commands go one after the other: each request has its own data channel, so a quick
     * release sent beside its press could reach the camera first and leave the head turning. */
    this.queue = Promise.resolve();
    this.reply = byId('ptz-reply');
    for (const button of /** @type {NodeListOf<HTMLButtonElement>} */ (
      document.querySelectorAll('#ptz button[data-ptz]')
    )) {
      button.addEventListener('pointerdown', (event) => {
        event.preventDefault();
        try {
          // Held even when the finger slides off the button: the release still comes here.
          button.setPointerCapture(event.pointerId);
        } catch {
          // a pointer the browser does not track (a synthetic event): no capture needed
        }
        void this.press(button);
      });
      for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
        button.addEventListener(type, () => void this.release());
      }
      // The keyboard: held while the key is down, like the pointer.
      button.addEventListener('keydown', (event) => {
        if ((event.key === ' ' || event.key === 'Enter') && !event.repeat) {
          event.preventDefault();
          void this.press(button);
        }
      });
      button.addEventListener('keyup', () => void this.release());
    }
  }

  /** @param {string | null} id */
  attach(id) {
    this.id = id;
    this.held = null;
    this.reply.textContent = '';
    for (const button of document.querySelectorAll('#ptz button[data-ptz]')) button.classList.remove('at-limit');
  }

  /** @param {HTMLButtonElement} button */
  async press(button) {
    if (this.held) return;
    this.held = button;
    await this.enqueue(`ptz_${button.dataset.ptz}_press`, button);
  }

  async release() {
    const button = this.held;
    if (!button) return;
    this.held = null;
    await this.enqueue(RELEASE, button);
  }

  /**
   * @param {string} cmd
   * @param {HTMLButtonElement} button
   */
  enqueue(cmd, button) {
    this.queue = this.queue.then(() => this.send(cmd, button));
    return this.queue;
  }

  /**
   * @param {string} cmd
   * @param {HTMLButtonElement} button
   */
  async send(cmd, button) {
    const id = this.id;
    if (id === null) return;
    this.messageId += 1;
    const text = JSON.stringify({ topic: 'ptz', data: { cmd }, message_id: this.messageId });
    this.reply.dataset.state = 'waiting';
    try {
      const result = await this.p2p.sendCommand(id, `action=user_define&channel=0&cmd=${text}`, { timeout: 5 });
      if (id !== this.id) return;
      const data = typeof result.data === 'string' ? result.data : JSON.stringify(result.data);
      if (result.type === 'success') {
        this.reply.textContent = `${cmd}: ${data}`;
        const apex = /** @type {any} */ (result.data)?.apex === 'yes';
        button.classList.toggle('at-limit', apex);
      } else {
        this.reply.textContent = `${cmd}: ${result.type} ${result.errcode} ${result.errmsg || data}`;
      }
      this.reply.dataset.state = result.type;
    } catch (err) {
      this.reply.textContent = `${cmd}: ${describeError(err)}`;
      this.reply.dataset.state = 'error';
    }
  }
}
