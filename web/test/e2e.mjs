// End-to-end test of the web console in headless Chromium (Debian's, driven by playwright-core):
// the page served on localhost by this test, compared with the native CLI's console.
//
//   scripts/build-web.sh && cargo build -p ruvllm-cli && (cd web && npm ci && npm test)
//
// Env: CHROMIUM (default /usr/bin/chromium), RUVLLM_BIN (default target/debug/ruvllm-esp32),
// ARTIFACTS (default web/test-results: the screenshot). The stories260K step needs ../shared;
// it is skipped with a message when that is absent, and fails when CI=true.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const root = resolve(web, '..');
const bin = process.env.RUVLLM_BIN ?? join(root, 'target/debug/ruvllm-esp32');
const shared = join(root, '../shared/models');
const artifacts = process.env.ARTIFACTS ?? join(web, 'test-results');
const PROMPT = 'gen Once upon a time';

/** The native console's reply to `line` (its own echo and prompt removed), and its stats. */
function nativeReply(line, args = []) {
  const r = spawnSync(bin, ['console', ...args], { input: `${line}\nstats json\n`, encoding: 'utf8' });
  assert.equal(r.status, 0, `native console failed: ${r.stderr}`);
  const text = r.stdout.replaceAll('\r', '');
  const start = text.indexOf(`> ${line}\n`) + line.length + 3;
  const end = text.indexOf('\n> ', start);
  const stats = JSON.parse(text.slice(end + 3).split('\n').find((l) => l.startsWith('{')));
  return { reply: text.slice(start, end + 1), stats };
}

/** Types `line` on the page and waits for the console's next prompt; its reply. */
async function run(page, line) {
  const before = await page.locator('#out').evaluate((e) => e.textContent.length);
  await page.fill('#line', line);
  await page.press('#line', 'Enter');
  await page.waitForFunction(
    (n) => {
      const t = document.getElementById('out').textContent.slice(n);
      return t.includes('\n') && t.endsWith('\n> ') && !document.body.classList.contains('busy');
    },
    before,
    { timeout: 60_000 },
  );
  const t = await page.locator('#out').evaluate((e, n) => e.textContent.slice(n), before);
  return t.slice(t.indexOf('\n') + 1, -2);
}

/** Drops files (name and bytes) on the page's drop zone, as a user's drag and drop does. */
async function drop(page, files) {
  const encoded = files.map(({ name, bytes }) => ({ name, b64: Buffer.from(bytes).toString('base64') }));
  await page.evaluate((files) => {
    const dt = new DataTransfer();
    for (const f of files) dt.items.add(new File([Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0))], f.name));
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, encoded);
}

async function ready(page) {
  await page.waitForFunction(() => document.body.dataset.ready === 'true' && document.getElementById('out').textContent.endsWith('> '), null, { timeout: 30_000 });
}

test('the web console in headless Chromium', { timeout: 300_000 }, async (t) => {
  assert.ok(existsSync(join(web, 'ruvllm.wasm')), 'web/ruvllm.wasm is missing: run scripts/build-web.sh first');
  assert.ok(existsSync(bin), `${bin} is missing: run cargo build -p ruvllm-cli first`);
  const server = await serve(web);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  t.after(async () => {
    await browser.close();
    server.close();
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(server.url);
  await ready(page);

  await t.test('gen streams token by token the native console\'s text', async () => {
    // Count the page's output updates during the generation (one per flushed token) and the
    // separate tasks that made them: an engine on the page's own thread would show all of
    // its text in one task at the end, and the page would be frozen until then.
    await page.evaluate(() => {
      window.chunks = 0;
      window.tasks = 0;
      new MutationObserver((m) => {
        window.chunks += m.length;
        window.tasks += 1;
      }).observe(document.getElementById('out'), { childList: true });
    });
    const web = await run(page, PROMPT);
    const native = nativeReply(PROMPT);
    assert.equal(web, native.reply);
    const { chunks, tasks } = await page.evaluate(() => ({ chunks: window.chunks, tasks: window.tasks }));
    assert.ok(chunks > 50, `output arrived in ${chunks} pieces, not streamed`);
    assert.ok(tasks > 10, `output arrived in ${tasks} page tasks, not as it was generated`);
    const speed = await page.locator('#speed').textContent();
    assert.match(speed, /tok\/s/);
    console.log(`chromium: ${speed}; native (same run): ${(1e6 / native.stats.last_per_token).toFixed(1)} tok/s`);
  });

  await t.test('the picture of how the model fits each ESP32 is the native info plan', async () => {
    const r = spawnSync(bin, ['info', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const native = JSON.parse(r.stdout);
    const drawn = JSON.parse(await page.locator('#plan').getAttribute('data-plan'));
    assert.equal(drawn.image, native.image_bytes);
    const pick = (c) => [c.chip, c.max_context, c.fits, c.path];
    assert.deepEqual(drawn.chips.map(pick), native.chips.map(pick));
    assert.equal(await page.locator('#plan rect').count(), 4 * native.chips.length);
  });

  await t.test('a fact added survives a reload and answers ask', async () => {
    assert.match(await run(page, 'add The capital of Freedonia is Fredville.'), /^Added knowledge #1/);
    await page.reload();
    await ready(page);
    assert.match(await page.locator('#out').textContent(), /knowledge: restored 1 entry/);
    assert.match(await run(page, 'ask What is the capital of Freedonia?'), /Found: The capital of Freedonia is Fredville\./);
  });

  await t.test('gibberish is an ANOMALY', async () => {
    assert.match(await run(page, 'anomaly xqzv kkjw pplq zzxv'), /^ANOMALY/);
  });

  await t.test('bad input: a long line, a non-model file, an over-large model', async () => {
    assert.match(await run(page, 'ask ' + 'x'.repeat(1000)), /^error: line too long/);
    await drop(page, [{ name: 'notes.txt', bytes: new TextEncoder().encode('just some notes, not a model\n') }]);
    await page.waitForFunction(() => /was not loaded/.test(document.getElementById('notice').textContent));
    assert.match(await page.locator('#notice').textContent(), /notes\.txt was not loaded: error: this file is not a model/);
    await page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array((128 << 20) + 1)], 'huge.gguf'));
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    assert.match(await page.locator('#notice').textContent(), /huge\.gguf is 128\.0 MiB; this page runs models up to 128\.0 MiB/);
    // The console still answers, on the built-in model.
    assert.match(await run(page, 'info'), /parameters: 233152/);
  });

  await t.test('a dropped stories260K GGUF runs as natively', async (t) => {
    if (!existsSync(join(shared, 'stories260K.bin'))) {
      assert.notEqual(process.env.CI, 'true', `${shared}/stories260K.bin is missing (CI=true)`);
      t.skip(`${shared}/stories260K.bin is absent: skipped`);
      return;
    }
    const gguf = join(mkdtempSync(join(tmpdir(), 'ruvllm-web-')), 'stories260K-q8.gguf');
    const c = spawnSync(bin, ['convert', join(shared, 'stories260K.bin'), '--tokenizer', join(shared, 'tok512.bin'), '--quant', 'q8', '-o', gguf], { encoding: 'utf8' });
    assert.equal(c.status, 0, c.stderr);
    await drop(page, [{ name: 'stories260K-q8.gguf', bytes: readFileSync(gguf) }]);
    await page.waitForFunction(() => /Running stories260K-q8\.gguf/.test(document.getElementById('notice').textContent));
    await ready(page);
    assert.equal(await run(page, PROMPT), nativeReply(PROMPT, ['-m', gguf]).reply);
  });

  await t.test('Stop ends a generation as Ctrl-C does on a board', async () => {
    // The stories260K model (context 512) or the built-in one: the longest generation it has.
    await run(page, 'set steps 512');
    const before = await page.locator('#out').evaluate((e) => e.textContent.length);
    // Click Stop as soon as it is enabled (the generation takes a fraction of a second).
    const clicked = page.evaluate(
      () =>
        new Promise((resolve) => {
          const stop = document.getElementById('stop');
          new MutationObserver(() => {
            if (!stop.disabled) resolve(stop.click());
          }).observe(stop, { attributes: true });
        }),
    );
    await page.fill('#line', PROMPT);
    await page.press('#line', 'Enter');
    await clicked;
    await page.waitForFunction((n) => {
      const t = document.getElementById('out').textContent.slice(n);
      return t.endsWith('\n> ') && !document.body.classList.contains('busy');
    }, before);
    const reply = await page.locator('#out').evaluate((e, n) => e.textContent.slice(n), before);
    assert.match(reply, /\^C\n> $/);
    assert.match(await run(page, 'info'), /^model: /);
  });

  await t.test('flash: no port chosen, and a browser without Web Serial, each explained', async (t) => {
    if (!existsSync(join(web, 'firmware/esp32c3.bin')) || !existsSync(join(web, 'vendor/esptool.js'))) {
      assert.notEqual(process.env.CI, 'true', 'web/firmware or web/vendor missing (CI=true): scripts/build-web-firmware.sh, scripts/build-web.sh');
      t.diagnostic('no web/firmware/esp32c3.bin or web/vendor/esptool.js: the port chooser case is skipped');
    } else {
      // Headless Chromium has Web Serial, but its port chooser never closes by itself: answer
      // as the browser does when the user closes it without a port.
      await page.evaluate(() => {
        navigator.serial.requestPort = () => Promise.reject(new DOMException('No port selected by the user.', 'NotFoundError'));
      });
      await page.click('#flash');
      await page.waitForFunction(() => /No serial port was chosen/.test(document.getElementById('notice').textContent));
    }
    const bare = await browser.newPage();
    await bare.addInitScript(() => delete Navigator.prototype.serial);
    await bare.goto(server.url);
    await ready(bare);
    await bare.click('#flash');
    await bare.waitForFunction(() => /This browser has no Web Serial/.test(document.getElementById('notice').textContent));
    await bare.close();
  });

  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, 'web-console.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});
