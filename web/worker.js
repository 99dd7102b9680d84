// The console runs here, off the page's thread: a generation streams each token to the page
// as the engine flushes it, and the page never freezes. Lines typed meanwhile wait in this
// worker's message queue and run in order (the console's type-ahead).
import { RuvllmConsole } from './ruvllm.js';

let console_ = null;
// Set to 1 by the page's Stop button (shared memory: this worker is busy while it generates).
let stop = null;

function post(type, data = {}) {
  postMessage({ type, ...data });
}

function stats() {
  post('stats', console_.stats());
}

function plan() {
  post('plan', { plan: console_.plan() });
}

// A trap (out of memory inside the engine) leaves the module unusable: the page starts a new
// worker, and the knowledge comes back from the browser's storage.
function guarded(work) {
  try {
    work();
  } catch (e) {
    post('crash', { message: String(e && e.message ? e.message : e) });
    close();
  }
}

onmessage = async ({ data }) => {
  if (data.type === 'init') {
    const wasm = await (await fetch(new URL('./ruvllm.wasm', import.meta.url))).arrayBuffer();
    console_ = await RuvllmConsole.create(wasm, {
      write: (text) => post('out', { text }),
      // The page writes it to localStorage (a worker has no synchronous storage).
      save: (image) => {
        post('save', { image });
        return true;
      },
      interrupt: () => stop !== null && Atomics.exchange(stop, 0, 0) === 1,
    });
    if (data.stop) stop = new Int32Array(data.stop);
    guarded(() => console_.start(data.knowledge));
    post('ready');
    stats();
    plan();
  } else if (data.type === 'line') {
    post('busy', { busy: true });
    guarded(() => console_.feed(data.line + '\r'));
    // A Stop that came after the generation ended is not kept for the next one.
    if (stop) Atomics.store(stop, 0, 0);
    post('busy', { busy: false });
    stats();
  } else if (data.type === 'load') {
    post('busy', { busy: true });
    let ok = false;
    guarded(() => {
      ok = console_.load(new Uint8Array(data.model), data.tokenizer && new Uint8Array(data.tokenizer));
    });
    post('loaded', { ok, name: data.name });
    post('busy', { busy: false });
    stats();
    plan();
  }
};
