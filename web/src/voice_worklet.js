// The AudioWorklet of startVoice: the microphone's float samples at the context's rate in,
// signed 16-bit little-endian PCM at the talk-back rate (8 kHz mono by default) out, posted
// to the main thread in frames of `frameMs`. Resampling averages the input samples each
// output sample stands for (a box filter: enough anti-aliasing for speech at 8 kHz).
/* global sampleRate, registerProcessor, AudioWorkletProcessor */

// @ts-nocheck -- runs in AudioWorkletGlobalScope, which TypeScript's DOM library lacks.
class PcmProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 8000, channels = 1, frameMs = 20 } = options.processorOptions ?? {};
    this.step = sampleRate / targetRate; // input samples per output sample
    this.channels = channels;
    this.frameSamples = Math.round((targetRate * frameMs) / 1000);
    this.out = new DataView(new ArrayBuffer(this.frameSamples * channels * 2));
    this.outAt = 0; // output samples in the current frame
    this.sum = new Float64Array(channels);
    this.count = 0; // input samples summed for the next output sample
    this.phase = 0; // input samples consumed towards the next output sample boundary
    this.paused = false;
    this.port.onmessage = (event) => {
      if (event.data === 'stop') this.stopped = true;
    };
  }

  process(inputs) {
    if (this.stopped) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      for (let c = 0; c < this.channels; c++) {
        const channel = input[Math.min(c, input.length - 1)];
        this.sum[c] += channel[i];
      }
      this.count++;
      this.phase++;
      if (this.phase >= this.step) {
        this.phase -= this.step;
        for (let c = 0; c < this.channels; c++) {
          const value = Math.max(-1, Math.min(1, this.sum[c] / this.count));
          this.out.setInt16((this.outAt * this.channels + c) * 2, Math.round(value * 32767), true);
          this.sum[c] = 0;
        }
        this.count = 0;
        this.outAt++;
        if (this.outAt === this.frameSamples) {
          const frame = this.out.buffer.slice(0);
          this.port.postMessage(frame, [frame]);
          this.outAt = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor('xp2p-pcm', PcmProcessor);
