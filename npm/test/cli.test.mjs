// The npm CLI (the packed package) against the native one: `gen` prints the same text as `gen --int`, `console`
// answers as the native console does, and bad input gets one line and a non-zero exit.
//
//   scripts/build-web.sh && cargo build -p ruvllm-cli && (cd npm && npm test)
//
// RUVLLM_BIN names the native binary (default target/debug/ruvllm-esp32). The stories260K
// case needs ../shared: skipped with a message when absent, a failure when CI=true.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const root = resolve(pkg, '..');
const nativeBin = process.env.RUVLLM_BIN ?? join(root, 'target/debug/ruvllm-esp32');
const shared = join(root, '../shared/models');

/** The package as `npm pack` makes it, unpacked: every test runs the packed copy. */
function packed() {
  const dir = mkdtempSync(join(tmpdir(), 'ruvllm-pack-'));
  const pack = spawnSync('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: pkg, encoding: 'utf8' });
  assert.equal(pack.status, 0, pack.stderr);
  const untar = spawnSync('tar', ['xzf', join(dir, pack.stdout.trim()), '-C', dir]);
  assert.equal(untar.status, 0);
  // Its dependencies as `npm install` would put them beside it (npm ci installed them here).
  symlinkSync(join(pkg, 'node_modules'), join(dir, 'package/node_modules'));
  return join(dir, 'package');
}
const installed = packed();

const npx = (args, input, env = process.env) =>
  spawnSync(process.execPath, [join(installed, 'bin/ruvllm-esp32.mjs'), ...args], { input, encoding: 'utf8', env });
const native = (args, input) => spawnSync(nativeBin, args, { input, encoding: 'utf8' });

test('built: the wasm and the native binary', () => {
  assert.ok(existsSync(join(pkg, 'ruvllm.wasm')), 'npm/ruvllm.wasm is missing: run scripts/build-web.sh');
  assert.ok(existsSync(nativeBin), `${nativeBin} is missing: cargo build -p ruvllm-cli`);
});

for (const settings of [[], ['-n', '64', '-t', '0.8', '-s', '7']]) {
  test(`gen ${settings.join(' ')} equals the native gen --int`, () => {
    const ours = npx(['gen', '-p', 'Once upon a time', ...settings]);
    const theirs = native(['gen', '--int', '-p', 'Once upon a time', ...settings]);
    assert.equal(ours.status, 0, ours.stderr);
    assert.equal(theirs.status, 0, theirs.stderr);
    assert.ok(ours.stdout.length > 40);
    assert.equal(ours.stdout, theirs.stdout);
    assert.match(ours.stderr, /^achieved tok\/s: [\d.]+ /);
    console.log(`node: ${ours.stderr.trim()}\nnative: ${theirs.stderr.trim()}`);
  });
}

test('gen on stories260K (llama2.c checkpoint and tokenizer) equals the native gen --int', (t) => {
  if (!existsSync(join(shared, 'stories260K.bin'))) {
    assert.notEqual(process.env.CI, 'true', `${shared}/stories260K.bin is missing (CI=true)`);
    t.skip(`${shared}/stories260K.bin is absent: skipped`);
    return;
  }
  const model = ['-m', join(shared, 'stories260K.bin'), '-z', join(shared, 'tok512.bin')];
  const ours = npx(['gen', '-p', 'Once upon a time', ...model]);
  assert.equal(ours.status, 0, ours.stderr);
  assert.equal(ours.stdout, native(['gen', '--int', '-p', 'Once upon a time', ...model]).stdout);
});

test('console: the native console\'s replies, and knowledge kept in a file across runs', () => {
  const lines = 'gen Once upon a time\nanomaly xqzv kkjw pplq zzxv\n';
  const reply = (out) => out.slice(out.indexOf('> gen'));
  const ours = npx(['console'], lines);
  assert.equal(ours.status, 0, ours.stderr);
  assert.equal(reply(ours.stdout), reply(native(['console'], lines).stdout));
  assert.match(ours.stdout, /ANOMALY \(score/);

  const file = join(mkdtempSync(join(tmpdir(), 'ruvllm-npm-')), 'facts.rvk');
  assert.match(npx(['console', '--knowledge', file], 'add The capital of Freedonia is Fredville.\n').stdout, /Added knowledge #1/);
  const again = npx(['console', '--knowledge', file], 'ask What is the capital of Freedonia?\n');
  assert.match(again.stdout, /knowledge: restored 1 entry/);
  assert.match(again.stdout, /Found: The capital of Freedonia is Fredville\./);
});

test('bad input: one error line and a non-zero exit', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ruvllm-npm-'));
  const notes = join(dir, 'notes.txt');
  writeFileSync(notes, 'just some notes\n');
  const cases = [
    [['gen', '-m', join(dir, 'missing.gguf')], /^error: .*missing\.gguf: cannot read the model file/],
    [['gen', '-m', notes], /^error: .*notes\.txt: this file is not a model/],
    [['gen', '-p', 'x'.repeat(1000)], /^error: line too long/],
    [['gen', '-n', '0'], /^error: -n 0: steps must be/],
    [['frobnicate'], /^error: unknown command 'frobnicate'/],
    [['build', '--chip', 'esp32c3'], /^error: 'build' needs the native CLI \(Rust\), which is not on PATH: install Rust/],
    [['flash', '--elf', 'app.elf'], /^error: 'flash' needs the native CLI \(Rust\), which is not on PATH/],
    [['monitor', '-p', join(dir, 'ttyNONE')], /^error: .*ttyNONE: no such serial port: plug the board in/],
    [['monitor'], /^error: monitor needs the board's serial port/],
  ];
  // No native CLI and no cargo on PATH (node itself is started by its full path).
  const env = { ...process.env, PATH: mkdtempSync(join(tmpdir(), 'ruvllm-path-')) };
  for (const [args, message] of cases) {
    const r = npx(args, '', env);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stdout}`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

/** Resolves with `stream`'s text once it matches `pattern` (rejects after 30 s). */
function waitFor(stream, pattern) {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in: ${JSON.stringify(text)}`)), 30_000);
    stream.on('data', function on(d) {
      text += d;
      if (pattern.test(text)) {
        clearTimeout(timer);
        stream.off('data', on);
        resolve(text);
      }
    });
  });
}

test('monitor: a console behind a pseudo-terminal, as a board on USB serial', async (t) => {
  const board = spawn('python3', [join(pkg, 'test/pty_console.py'), nativeBin, 'console']);
  t.after(() => board.kill());
  board.stdout.setEncoding('utf8');
  const path = (await waitFor(board.stdout, /\n/)).trim();
  const monitor = spawn(process.execPath, [join(installed, 'bin/ruvllm-esp32.mjs'), 'monitor', '-p', path]);
  t.after(() => monitor.kill());
  monitor.stdout.setEncoding('utf8');
  // (The banner the console printed before the port was opened may be gone, as on a board.)
  const reply = waitFor(monitor.stdout, /gen Once upon a time\r\n[^]*\r\n> $/);
  monitor.stdin.write('gen Once upon a time\r');
  const text = await reply;
  const native = spawnSync(nativeBin, ['gen', '--int', '-p', 'Once upon a time'], { encoding: 'utf8' }).stdout;
  assert.equal(text.slice(text.indexOf('gen Once upon a time\r\n') + 22, -2).replaceAll('\r\n', '\n'), native);
  // Ctrl-] ends the monitor.
  const exit = new Promise((resolve) => monitor.on('exit', resolve));
  monitor.stdin.write(Buffer.from([0x1d]));
  assert.equal(await exit, 0);
});

test('flash --dry-run writes the image native flash --dry-run makes; flash without a port says so', (t) => {
  const elfs = { esp32c3: 'riscv32imc-unknown-none-elf', esp32c6: 'riscv32imac-unknown-none-elf' };
  const elf = (chip) => join(root, `target/chip/firmware-esp/${elfs[chip]}/release/ruvllm-esp`);
  if (!existsSync(join(pkg, 'firmware/esp32c6.bin')) || !existsSync(elf('esp32c6'))) {
    assert.notEqual(process.env.CI, 'true', 'the firmware images are missing (CI=true): run scripts/build-web-firmware.sh');
    t.skip('no firmware images: run scripts/build-web-firmware.sh');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'ruvllm-flash-'));
  for (const chip of Object.keys(elfs)) {
    const ours = npx(['flash', '--dry-run', '--chip', chip, '-o', join(dir, `${chip}.npm.bin`)]);
    assert.equal(ours.status, 0, ours.stderr);
    const theirs = native(['flash', '--dry-run', '--chip', chip, '--elf', elf(chip), '-o', join(dir, `${chip}.native.bin`)]);
    assert.equal(theirs.status, 0, theirs.stderr);
    const [a, b] = [readFileSync(join(dir, `${chip}.npm.bin`)), readFileSync(join(dir, `${chip}.native.bin`))];
    assert.equal(a.length, 4 << 20);
    assert.ok(a.equals(b), `${chip}: the package's image differs from native flash --dry-run's`);
  }
  const r = npx(['flash', '-p', join(dir, 'ttyNONE')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^error: .*ttyNONE: no such serial port: plug the board in/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
});

test('build and install hand over to the native CLI, or to cargo', () => {
  // The native CLI found (RUVLLM_NATIVE names it): the command runs there.
  const built = npx(['build', '--help'], '', { ...process.env, RUVLLM_NATIVE: nativeBin });
  assert.equal(built.status, 0, built.stderr);
  assert.match(built.stdout, /Build the esp-hal firmware/);
  // No native CLI, but cargo (a stub that logs its arguments), outside a checkout.
  const dir = mkdtempSync(join(tmpdir(), 'ruvllm-cargo-'));
  writeFileSync(join(dir, 'cargo'), `#!/bin/sh\necho "$@" >> ${join(dir, 'log')}\n`, { mode: 0o755 });
  const env = { ...process.env, PATH: dir };
  const r = spawnSync(process.execPath, [join(installed, 'bin/ruvllm-esp32.mjs'), 'install'], { cwd: dir, env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(join(dir, 'log'), 'utf8'), '--version\ninstall --locked ruvllm-cli\n');
});
