// Figures for docs/BENCHMARKS.md ("In the browser and through npx"): the .wasm size, and the
// built-in model's greedy `gen Once upon a time` (256 positions) in tok/s natively, in Node and
// in headless Chromium, measured in one run, best of RUNS each (the first WebAssembly runs
// include the engine's tier-up from the baseline compiler).
//
//   scripts/build-web.sh && cargo build --release -p ruvllm-cli && (cd web && node test/bench.mjs)
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { RuvllmConsole } from '../ruvllm.js';
import { serve } from './serve.mjs';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bin = process.env.RUVLLM_BIN ?? join(web, '../target/release/ruvllm-esp32');
const RUNS = Number(process.env.RUNS ?? 10);
const GEN = 'gen Once upon a time';
const best = (xs) => Math.max(...xs).toFixed(1);

const wasm = join(web, 'ruvllm.wasm');
const gz = gzipSync(readFileSync(wasm), { level: 9 }).length;
console.log(`ruvllm.wasm: ${statSync(wasm).size} bytes, ${gz} gzip -9 (the built-in model's ${statSync(join(web, '../crates/ruvllm-cli/data/default.gguf')).size} included)`);

const native = [];
for (let i = 0; i < RUNS; i++) {
  const r = spawnSync(bin, ['gen', '--int', '-p', 'Once upon a time'], { encoding: 'utf8' });
  native.push(Number(r.stderr.match(/achieved tok\/s: ([\d.]+)/)[1]));
}
console.log(`native (${bin}, gen --int): ${best(native)} tok/s`);

const node = [];
const engine = await RuvllmConsole.create(readFileSync(wasm), { write: () => {} });
engine.start();
for (let i = 0; i < RUNS; i++) {
  engine.feed(`${GEN}\r`);
  node.push(1e6 / engine.stats().stats.last_per_token);
}
console.log(`node ${process.version}: ${best(node)} tok/s (first run ${node[0].toFixed(1)})`);

const server = await serve(web);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await browser.newPage();
await page.goto(server.url);
await page.waitForFunction(() => document.body.dataset.ready === 'true');
const browserRuns = [];
for (let i = 0; i < RUNS; i++) {
  await page.fill('#line', GEN);
  await page.press('#line', 'Enter');
  // The panel updates after each command: wait for this generation's tokens in its total.
  await page.waitForFunction(
    (n) => Number(document.getElementById('speed').textContent.match(/(\d+) tokens in all/)?.[1]) >= n,
    252 * (i + 1),
  );
  browserRuns.push(Number((await page.locator('#speed').textContent()).match(/^([\d.]+) tok\/s/)[1]));
}
console.log(`chromium ${browser.version()}: ${best(browserRuns)} tok/s (first run ${browserRuns[0].toFixed(1)})`);
await browser.close();
server.close();
