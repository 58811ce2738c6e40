// Talk-back: one button that opens the microphone and talks to the camera until pressed
// again. The SDK opens the microphone itself (startVoice with no stream) with the browser's
// echo cancellation on, so the camera's own sound from the speakers is not sent back to it.

import { byId, describeError } from './ui.js';

export class TalkButton {
  /** @param {import('../sdk/index.js').XP2PModule} p2p */
  constructor(p2p) {
    this.p2p = p2p;
    /** @type {string | null} */
    this.id = null;
    /** @type {'idle' | 'starting' | 'talking'} */
    this.state = 'idle';
    this.button = /** @type {HTMLButtonElement} */ (byId('talk'));
    this.status = byId('talk-status');
    this.button.addEventListener('click', () => void this.toggle());
  }

  /** @param {string | null} id */
  attach(id) {
    if (this.state !== 'idle' && this.id !== null) this.stop();
    this.id = id;
    this.show('idle', '');
  }

  async toggle() {
    if (this.state === 'idle') await this.start();
    else this.stop();
  }

  async start() {
    const id = this.id;
    if (id === null) return;
    this.show('starting', 'opening the microphone…');
    try {
      await this.p2p.startVoice(
        id,
        null,
        { sampleRate: 8000, channels: 1, urlParams: 'channel=0' },
        {
          onStart: () => this.show('talking', 'talking: the camera hears you'),
          onPause: () => this.show('talking', 'paused'),
          onResume: () => this.show('talking', 'talking: the camera hears you'),
          onStop: () => {
            if (this.id === id) this.show('idle', 'stopped');
          },
        },
      );
      if (this.state === 'starting' && this.id === id) this.show('talking', 'talking: the camera hears you');
    } catch (err) {
      if (this.id === id) this.show('idle', `cannot talk: ${describeError(err)}`);
    }
  }

  stop() {
    if (this.id !== null) {
      try {
        this.p2p.stopVoice(this.id);
      } catch {
        // no session open any more
      }
    }
    this.show('idle', 'stopped');
  }

  /**
   * @param {'idle' | 'starting' | 'talking'} state
   * @param {string} text
   */
  show(state, text) {
    this.state = state;
    this.button.setAttribute('aria-pressed', String(state !== 'idle'));
    this.button.textContent = state === 'idle' ? 'Talk' : 'Stop talking';
    this.status.textContent = text;
    this.status.dataset.state = state;
  }
}
