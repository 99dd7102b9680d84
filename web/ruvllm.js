// The console in ruvllm.wasm for any JavaScript host (the page's worker, Node): the module's
// C-like ABI (crates/ruvllm-wasm/src/lib.rs) wrapped in one class. No DOM, no Node APIs.

/** Largest model file the module takes (crates/ruvllm-wasm/src/load.rs, MAX_MODEL_BYTES). */
export const MAX_MODEL_BYTES = 128 << 20;

export class RuvllmConsole {
  /**
   * @param {BufferSource} wasmBytes the module
   * @param {{write(text: string): void, save?(image: Uint8Array): boolean, interrupt?(): boolean}} host
   *   `write` gets console output as it is flushed (each generated token); `save` keeps the
   *   knowledge image and returns whether it did; `interrupt`, polled during a generation,
   *   returns true once to stop it (the console's Ctrl-C).
   */
  static async create(wasmBytes, host) {
    const self = new RuvllmConsole();
    const decoder = new TextDecoder();
    const bytes = (ptr, len) => new Uint8Array(self.exports.memory.buffer, ptr, len);
    const clock = globalThis.performance ?? Date;
    const imports = {
      ruvllm: {
        write: (ptr, len) => host.write(decoder.decode(bytes(ptr, len), { stream: true })),
        now_us: () => clock.now() * 1000,
        save: (ptr, len) => (host.save ? (host.save(bytes(ptr, len).slice()) ? 1 : 0) : 0),
        interrupt: () => (host.interrupt?.() ? 1 : 0),
      },
    };
    const { instance } = await WebAssembly.instantiate(wasmBytes, imports);
    self.exports = instance.exports;
    return self;
  }

  /** Copies `parts` one after another into the module's staging buffer; false without memory. */
  #stage(...parts) {
    const total = parts.reduce((n, p) => n + p.length, 0);
    const ptr = this.exports.rv_buffer(total);
    if (ptr === 0 && total > 0) return false;
    let at = ptr;
    for (const p of parts) {
      new Uint8Array(this.exports.memory.buffer, at, p.length).set(p);
      at += p.length;
    }
    return true;
  }

  /** Starts the console on the built-in model with a saved knowledge image (or none). */
  start(saved) {
    const image = saved ?? new Uint8Array(0);
    this.exports.rv_start(this.#stage(image) ? image.length : 0);
  }

  /** Types `text` (a line ends with "\r") into the console; true after `quit`. */
  feed(text) {
    return this.feedBytes(new TextEncoder().encode(text));
  }

  /** Types raw bytes into the console, as a serial line would; true after `quit`. */
  feedBytes(data) {
    if (!this.#stage(data)) return false;
    return this.exports.rv_feed(data.length) === 1;
  }

  /**
   * Runs `model` (a GGUF, or a llama2.c checkpoint with its `tokenizer`); on error the
   * console says why in one line and keeps the current model. Returns whether it loaded.
   */
  load(model, tokenizer) {
    const tok = tokenizer ?? new Uint8Array(0);
    if (!this.#stage(model, tok)) return false;
    return this.exports.rv_load(model.length, tok.length) === 0;
  }

  /** How the current model fits each ESP32 (the native `info` plan), parsed. */
  plan() {
    const len = this.exports.rv_plan();
    const ptr = this.exports.rv_buffer(len);
    return len ? JSON.parse(new TextDecoder().decode(new Uint8Array(this.exports.memory.buffer, ptr, len))) : null;
  }

  /** The console's `stats json`, parsed, and the module's memory in bytes. */
  stats() {
    const len = this.exports.rv_stats();
    const ptr = this.exports.rv_buffer(len);
    const text = new TextDecoder().decode(new Uint8Array(this.exports.memory.buffer, ptr, len));
    return { stats: len ? JSON.parse(text) : null, memoryBytes: this.exports.memory.buffer.byteLength };
  }
}
