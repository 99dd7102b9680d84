// The page: a terminal for the console in worker.js, the knowledge kept in localStorage, model
// drag and drop, and the engine panel. Everything stays in this tab.
import { MAX_MODEL_BYTES } from './ruvllm.js';

const KNOWLEDGE_KEY = 'ruvllm-esp32.knowledge';
const $ = (id) => document.getElementById(id);
const out = $('out');
const notice = $('notice');
let worker = null;
// The Stop flag the worker polls during a generation: shared memory, which browsers give only
// to a cross-origin isolated page (served with COOP/COEP headers); elsewhere there is no Stop.
const stop = globalThis.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : null;
// The console's last `error:` line since a model load began (shown as the load's outcome).
let lastError = null;

function say(text, ok = false) {
  notice.textContent = text;
  notice.className = ok ? 'ok' : '';
}

function append(text) {
  const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
  out.append(text.replaceAll('\r', ''));
  for (const m of text.matchAll(/error: [^\r\n]*/g)) lastError = m[0];
  if (atEnd) out.scrollTop = out.scrollHeight;
}

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(text) {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

function savedKnowledge() {
  const text = localStorage.getItem(KNOWLEDGE_KEY);
  return text ? fromBase64(text) : null;
}

const mib = (n) => `${(n / (1 << 20)).toFixed(1)} MiB`;

function showStats({ stats, memoryBytes }) {
  $('memory').textContent = mib(memoryBytes);
  if (!stats) return;
  $('speed').textContent = stats.last_per_token
    ? `${(1e6 / stats.last_per_token).toFixed(1)} tok/s (last gen), ${stats.tokens_generated} tokens in all`
    : '-';
  $('arena').textContent = `${(stats.ram.arena / 1024).toFixed(1)} KiB (activations and KV cache)`;
  $('knowledge').textContent = `${stats.entries} of ${stats.capacity} entries, ${(stats.ram.knowledge / 1024).toFixed(1)} KiB`;
}

/** The `info` plan as bars: per chip, RAM (arena) and flash (image) against their budgets. */
function drawPlan(plan) {
  const svg = $('plan');
  svg.replaceChildren();
  if (!plan) return;
  const NS = 'http://www.w3.org/2000/svg';
  const el = (name, attrs, text) => {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  const X = 62, W = 150;
  plan.chips.forEach((c, i) => {
    const y = 8 + i * 38;
    el('text', { x: 0, y: y + 9, class: 'chip' }, c.chip);
    el('text', { x: 0, y: y + 21 }, c.fpu ? 'FPU' : 'no FPU');
    const bars = [
      ['RAM', c.arena_full, c.arena_budget, c.max_context === plan.context],
      ['flash', plan.image, c.image_budget, c.flash_ok],
    ];
    bars.forEach(([label, used, budget, ok], j) => {
      const by = y + j * 13;
      el('rect', { x: X, y: by, width: W, height: 10, class: 'budget' });
      el('rect', { x: X, y: by, width: Math.max(1, Math.min(1, used / budget) * W), height: 10, class: ok ? 'ok' : 'over' });
      el('text', { x: X + W + 4, y: by + 9 }, `${label} ${Math.round((100 * used) / budget)}%`);
    });
    const verdict = !c.fits ? 'does not fit' : c.max_context === plan.context ? `fits, ${c.path}` : `context ${c.max_context}`;
    el('text', { x: X, y: y + 34 }, verdict);
  });
  // What the picture shows, in figures (for reading and for the tests).
  svg.dataset.plan = JSON.stringify(plan);
}

function startWorker() {
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = ({ data }) => {
    switch (data.type) {
      case 'out':
        append(data.text);
        break;
      case 'save':
        try {
          localStorage.setItem(KNOWLEDGE_KEY, toBase64(data.image));
        } catch {
          say('The browser did not keep the knowledge (storage full or blocked): it lasts until this tab closes.');
        }
        break;
      case 'stats':
        showStats(data);
        break;
      case 'plan':
        drawPlan(data.plan);
        break;
      case 'busy':
        document.body.classList.toggle('busy', data.busy);
        $('stop').disabled = !(data.busy && stop);
        break;
      case 'ready':
        document.body.dataset.ready = 'true';
        break;
      case 'loaded':
        if (data.ok) {
          $('model').textContent = data.name;
          say(`Running ${data.name}.`, true);
        } else {
          say(`${data.name} was not loaded: ${lastError ?? 'see the console'}. The current model stays.`);
        }
        break;
      case 'crash':
        say(`The engine stopped (${data.message}): most likely the model needs more memory than this tab has. Restarted on the built-in model.`);
        $('model').textContent = 'built-in';
        document.body.dataset.ready = 'false';
        worker.terminate();
        startWorker();
        break;
    }
  };
  worker.postMessage({ type: 'init', knowledge: savedKnowledge(), stop: stop?.buffer });
}

function interrupt() {
  if (stop && document.body.classList.contains('busy')) Atomics.store(stop, 0, 1);
}
$('stop').addEventListener('click', interrupt);
$('line').addEventListener('keydown', (e) => {
  if (e.ctrlKey && e.key === 'c' && !$('line').value) interrupt();
});
if (!stop) $('stop').title = 'Stop needs the page served cross-origin isolated (COOP and COEP headers); see docs/WEB.md';

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  const line = $('line').value;
  $('line').value = '';
  worker.postMessage({ type: 'line', line });
});

async function loadFiles(files) {
  const list = [...files];
  if (list.length === 0) return;
  if (list.length > 2) {
    say('Drop one model file (or a llama2.c model with its tokenizer: two files).');
    return;
  }
  // With two files, the larger is the model and the smaller its tokenizer.
  list.sort((a, b) => b.size - a.size);
  const [model, tokenizer] = list;
  if (model.size > MAX_MODEL_BYTES) {
    say(`${model.name} is ${mib(model.size)}; this page runs models up to ${mib(MAX_MODEL_BYTES)}: choose a smaller one.`);
    return;
  }
  say(`Loading ${model.name}...`, true);
  lastError = null;
  const bytes = await model.arrayBuffer();
  const tok = tokenizer ? await tokenizer.arrayBuffer() : null;
  const transfer = tok ? [bytes, tok] : [bytes];
  worker.postMessage({ type: 'load', model: bytes, tokenizer: tok, name: model.name }, transfer);
}

const drop = $('drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  loadFiles(e.dataTransfer.files);
});
$('file').addEventListener('change', (e) => loadFiles(e.target.files));
$('forget-all').addEventListener('click', () => {
  localStorage.removeItem(KNOWLEDGE_KEY);
  say('Saved knowledge cleared; it is gone after a reload (`clear` also empties this session).', true);
});

$('flash').addEventListener('click', async () => {
  $('flash').disabled = true;
  try {
    const { flash } = await import('./flash.js');
    await flash($('chip').value, say);
  } finally {
    $('flash').disabled = false;
  }
});

startWorker();
