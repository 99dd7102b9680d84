#!/usr/bin/env node
// ruvllm-esp32 from npm: `gen` and `console` run the board's console in WebAssembly (the
// same ruvllm.wasm as the web page, no Rust needed); `monitor` talks to a board through the
// serialport package, `flash` writes the C3/C6 images the package carries through esptool-js;
// `build`, `install` and a flash of another model hand over to the native CLI (Rust), or say
// how to get it.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, openSync, readFileSync, readSync, closeSync, renameSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RuvllmConsole, MAX_MODEL_BYTES } from '../ruvllm.js';

const here = dirname(fileURLToPath(import.meta.url));
const USAGE = `usage: ruvllm-esp32 <command>
  gen -p <text> [-n steps] [-t temp] [-s seed] [-m model -z tokenizer]
                  prompt + continuation on stdout, as the native 'gen --int' prints it
  console [-m model -z tokenizer] [--knowledge FILE]
                  the board's console on stdin/stdout (Ctrl-D quits)
  flash -p <port> [--chip esp32c3|esp32c6] [-b baud]   (untested on hardware)
  flash --dry-run -o <file> [--chip ...]
                  the firmware with the built-in model that this package carries
  monitor -p <port> [-b baud]
                  a serial terminal on a board: its output here, keys to it (Ctrl-] quits)
  build | install, and flash with -m/--elf
                  handed over to the native CLI (Rust); see README.md`;

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

/** `--name value` / `-n value` options; the rest are refused. */
function parse(args, spec) {
  const opts = {};
  for (let i = 0; i < args.length; i++) {
    const name = spec[args[i]];
    if (!name) fail(`unknown option '${args[i]}' (no arguments: usage)`);
    if (i + 1 >= args.length) fail(`${args[i]} needs a value`);
    opts[name] = args[++i];
  }
  return opts;
}

/** A file the user named, refused in one line when it cannot be read or is too large. */
function readInput(path, what, limit) {
  let fd;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    fail(`${path}: cannot read the ${what} (${e.code ?? e.message})`);
  }
  // Read at most one byte past the limit: a FIFO or device never makes us hold more.
  const buf = Buffer.alloc(limit + 1);
  let n = 0;
  for (let r; n <= limit && (r = readSync(fd, buf, n, limit + 1 - n, null)) > 0; ) n += r;
  closeSync(fd);
  if (n > limit) fail(`${path}: the ${what} is larger than ${limit >> 20} MiB: choose a smaller one`);
  return new Uint8Array(buf.buffer, buf.byteOffset, n);
}

function open(write, save) {
  return RuvllmConsole.create(readFileSync(join(here, '../ruvllm.wasm')), { write, save });
}

function loadModel(engine, opts, errors) {
  if (!opts.model) return;
  const model = readInput(opts.model, 'model file', MAX_MODEL_BYTES);
  const tok = opts.tokenizer ? readInput(opts.tokenizer, 'tokenizer file', 16 << 20) : undefined;
  if (!engine.load(model, tok)) fail(`${opts.model}: ${errors().replace(/^[\s\S]*error: /, '').split('\r\n')[0]}`);
}

async function gen(args) {
  const opts = parse(args, {
    '-p': 'prompt', '--prompt': 'prompt', '-n': 'steps', '--steps': 'steps', '-t': 'temp', '--temp': 'temp',
    '-s': 'seed', '--seed': 'seed', '-m': 'model', '--model': 'model', '-z': 'tokenizer', '--tokenizer': 'tokenizer',
  });
  let out = '';
  const engine = await open((t) => (out += t));
  engine.start();
  loadModel(engine, opts, () => out);
  // The console's settings, then the generation; its reply is what the native `gen` prints.
  for (const [key, flag] of [['steps', '-n'], ['temp', '-t'], ['seed', '-s']]) {
    if (opts[key] === undefined) continue;
    out = '';
    engine.feed(`set ${key} ${opts[key]}\r`);
    const err = out.match(/error: [^\r\n]*/);
    if (err) fail(`${flag} ${opts[key]}: ${err[0].slice(7)}`);
  }
  const line = `gen ${opts.prompt ?? ''}`;
  out = '';
  const t0 = performance.now();
  engine.feed(`${line}\r`);
  const ms = performance.now() - t0;
  const reply = out.slice(out.indexOf('\r\n') + 2, out.lastIndexOf('> ')).replaceAll('\r\n', '\n');
  if (reply.startsWith('error: ')) fail(reply.slice(7).trimEnd());
  process.stdout.write(reply);
  const { stats } = engine.stats();
  process.stderr.write(
    `achieved tok/s: ${(1e6 / stats.last_per_token).toFixed(1)} (${stats.last_positions} positions in ${ms.toFixed(2)} ms; WebAssembly, integer fixed-point)\n`,
  );
}

async function console_(args) {
  const opts = parse(args, {
    '-m': 'model', '--model': 'model', '-z': 'tokenizer', '--tokenizer': 'tokenizer', '--knowledge': 'knowledge',
  });
  let saved;
  if (opts.knowledge && existsSync(opts.knowledge)) {
    saved = readInput(opts.knowledge, 'knowledge file', 1 << 20);
  } else if (opts.knowledge) {
    process.stderr.write(`knowledge: ${opts.knowledge} does not exist yet; the first add creates it\n`);
  }
  // Write-then-acknowledge: the console replies to `add` only after this returns true.
  const save = (image) => {
    if (!opts.knowledge) return false;
    try {
      writeFileSync(`${opts.knowledge}.tmp`, image);
      renameSync(`${opts.knowledge}.tmp`, opts.knowledge);
      return true;
    } catch {
      return false;
    }
  };
  let startup = '';
  const engine = await open((t) => (startup === null ? process.stdout.write(t) : (startup += t)), save);
  engine.start(saved);
  loadModel(engine, opts, () => startup);
  process.stdout.write(startup);
  startup = null;
  // Bytes go to the console as they come, like a serial line: in a terminal, raw keys (the
  // console echoes and edits the line; Ctrl-D quits).
  const tty = process.stdin.isTTY;
  if (tty) process.stdin.setRawMode(true);
  process.stdin.on('data', (chunk) => {
    if (tty && chunk.includes(4)) process.exit(0);
    if (engine.feedBytes(chunk)) process.exit(0);
  });
}

async function monitor(args) {
  const opts = parse(args, { '-p': 'port', '--port': 'port', '-b': 'baud', '--baud': 'baud' });
  if (!opts.port) fail('monitor needs the board\'s serial port: -p /dev/ttyUSB0 (or /dev/ttyACM0)');
  const baudRate = Number(opts.baud ?? 115200);
  if (!Number.isInteger(baudRate) || baudRate <= 0) fail(`-b ${opts.baud}: the speed is a whole number of baud, such as 115200`);
  let SerialPort;
  try {
    ({ SerialPort } = await import('serialport'));
  } catch {
    fail('the serialport package is missing: reinstall ruvllm-esp32 (npm install ruvllm-esp32)');
  }
  const port = new SerialPort({ path: opts.port, baudRate, autoOpen: false });
  await new Promise((done) =>
    port.open((e) => {
      if (!e) return done();
      const missing = /No such file|ENOENT|cannot open/i.test(e.message);
      fail(
        missing
          ? `${opts.port}: no such serial port: plug the board in, or pick another port (ruvllm-esp32 ports lists them)`
          : `${opts.port}: cannot open the serial port (${e.message.replace(/^Error: /, '')})`,
      );
    }),
  );
  port.on('data', (d) => process.stdout.write(d));
  port.on('close', () => process.exit(0));
  port.on('error', (e) => fail(`${opts.port}: ${e.message}`));
  const tty = process.stdin.isTTY;
  if (tty) {
    process.stdin.setRawMode(true);
    process.stderr.write(`monitor: ${opts.port} at ${baudRate} baud (Ctrl-] quits)\n`);
  }
  process.stdin.on('data', (chunk) => {
    const quit = chunk.indexOf(0x1d);
    if (quit >= 0) {
      port.write(chunk.subarray(0, quit), () => port.close());
      return;
    }
    // A terminal's Enter is \r already; a piped line ends in \n, which the board takes too.
    port.write(chunk);
  });
}

async function flash(args) {
  // Another model or firmware needs the native build: hand over.
  if (args.some((a) => ['-m', '--model', '-z', '--tokenizer', '--elf'].includes(a))) return handOver('flash', args);
  const dry = args.includes('--dry-run');
  const opts = parse(args.filter((a) => a !== '--dry-run'), {
    '-p': 'port', '--port': 'port', '--chip': 'chip', '-o': 'output', '--output': 'output', '-b': 'baud', '--baud': 'baud',
  });
  const { CHIPS, image, dryRun, flashPort } = await import('../lib/flash.mjs');
  const chip = opts.chip ?? 'esp32c3';
  if (!CHIPS[chip]) fail(`--chip ${chip}: this package carries images for esp32c3 and esp32c6 (other chips: the native CLI)`);
  const bytes = image(chip);
  if (!bytes) fail(`this package carries no ${chip} image (it was packed without scripts/build-web-firmware.sh)`);
  if (dry) {
    if (!opts.output) fail('--dry-run needs -o FILE: where to write the merged image');
    try {
      process.stdout.write(`${dryRun(bytes, opts.output)}\n`);
    } catch (e) {
      fail(`${opts.output}: cannot write (${e.code ?? e.message})`);
    }
    return;
  }
  if (!opts.port) fail('flash needs the board\'s serial port: -p /dev/ttyUSB0 (or /dev/ttyACM0), or --dry-run -o FILE');
  const baud = Number(opts.baud ?? 460800);
  try {
    await flashPort(bytes, chip, opts.port, baud, (t) => process.stderr.write(t));
  } catch (e) {
    fail(e.message);
  }
}

/** The native CLI on PATH (an executable, not an npm script shim like this one). */
function native() {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const path = join(dir, 'ruvllm-esp32');
    try {
      accessSync(path, constants.X_OK);
      const fd = openSync(path, 'r');
      const head = Buffer.alloc(2);
      readSync(fd, head, 0, 2, 0);
      closeSync(fd);
      if (head.toString() !== '#!') return path;
    } catch {
      // not there
    }
  }
  return null;
}

/** The checkout of the project around the working directory, if any (it has install.sh). */
function checkout() {
  for (let dir = process.cwd(); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'install.sh')) && existsSync(join(dir, 'crates/ruvllm-cli/Cargo.toml'))) return dir;
    if (dirname(dir) === dir) return null;
  }
}

function handOver(command, args) {
  const bin = process.env.RUVLLM_NATIVE ?? native();
  if (bin) {
    const r = spawnSync(bin, [command, ...args], { stdio: 'inherit' });
    process.exit(r.status ?? 1);
  }
  const cargo = spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status === 0;
  if (command === 'install' && cargo) {
    // In a checkout, the project's own installer (it also checks the chip toolchains);
    // elsewhere the CLI's crate.
    const root = checkout();
    const [tool, argv] = root ? ['bash', [join(root, 'install.sh'), ...args]] : ['cargo', ['install', '--locked', 'ruvllm-cli']];
    process.stderr.write(`ruvllm-esp32: installing the native CLI: ${tool} ${argv.join(' ')}\n`);
    const r = spawnSync(tool, argv, { stdio: 'inherit' });
    process.exit(r.status ?? 1);
  }
  fail(
    `'${command}' needs the native CLI (Rust), which is not on PATH: ` +
      (cargo
        ? 'run `npx ruvllm-esp32 install` (in a checkout it runs install.sh; elsewhere cargo install ruvllm-cli)'
        : 'install Rust from https://rustup.rs, then run `npx ruvllm-esp32 install`'),
  );
}

const [command, ...args] = process.argv.slice(2);
switch (command) {
  case 'gen':
    await gen(args);
    break;
  case 'console':
    await console_(args);
    break;
  case 'monitor':
    await monitor(args);
    break;
  case 'flash':
    await flash(args);
    break;
  case 'build':
  case 'install':
    handOver(command, args);
    break;
  default:
    if (!command) {
      process.stderr.write(`${USAGE}\n`);
      process.exit(1);
    }
    fail(`unknown command '${command}' (gen, console, build, install, flash, monitor; no arguments: usage)`);
}
