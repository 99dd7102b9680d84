// `flash` from Node without Rust: esptool-js writes the merged image the package carries
// (firmware/<chip>.bin, made by `ruvllm-esp32 flash --dry-run` around the built-in model; see
// scripts/build-web-firmware.sh) over a port opened with the serialport package.
// UNTESTED ON HARDWARE: no board has been flashed this way yet; --dry-run is tested.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const CHIPS = { esp32c3: 'ESP32-C3', esp32c6: 'ESP32-C6' };

/** The image this package carries for `chip`. */
export function image(chip) {
  const path = join(here, `../firmware/${chip}.bin`);
  if (!existsSync(path)) return null;
  return readFileSync(path);
}

/** `--dry-run`: the image written to `output`, as native `flash --dry-run -o` writes it. */
export function dryRun(bytes, output) {
  writeFileSync(output, bytes);
  return `wrote ${output} (${bytes.length} bytes: bootloader, partition table, app, built-in model)`;
}

/** The Web Serial port interface that esptool-js's Transport drives, over node serialport. */
class NodeSerial {
  constructor(SerialPort, path) {
    this.SerialPort = SerialPort;
    this.path = path;
    this.signals = { dtr: true, rts: true };
    this.readable = null;
    this.writable = null;
  }

  async open({ baudRate }) {
    this.port = new this.SerialPort({ path: this.path, baudRate, autoOpen: false });
    await new Promise((ok, ko) => this.port.open((e) => (e ? ko(e) : ok())));
    const port = this.port;
    this.readable = new ReadableStream({
      start(c) {
        port.on('data', (d) => c.enqueue(new Uint8Array(d)));
        port.on('close', () => c.close());
      },
    });
    this.writable = new WritableStream({
      write: (chunk) => new Promise((ok, ko) => port.write(Buffer.from(chunk), (e) => (e ? ko(e) : port.drain(ok)))),
    });
  }

  async setBaudRate(baudRate) {
    await new Promise((ok, ko) => this.port.update({ baudRate }, (e) => (e ? ko(e) : ok())));
  }

  async setSignals({ dataTerminalReady, requestToSend }) {
    // serialport's set() defaults each line it is not given: keep the other one as it was.
    if (dataTerminalReady !== undefined) this.signals.dtr = dataTerminalReady;
    if (requestToSend !== undefined) this.signals.rts = requestToSend;
    await new Promise((ok, ko) => this.port.set(this.signals, (e) => (e ? ko(e) : ok())));
  }

  getInfo() {
    return {};
  }

  async close() {
    this.readable = null;
    this.writable = null;
    if (this.port?.isOpen) await new Promise((ok) => this.port.close(() => ok()));
  }
}

/** Flashes `bytes` to the `chip` board on `path`; throws an Error whose message is the line to show. */
export async function flashPort(bytes, chip, path, baud, log) {
  if (!existsSync(path)) {
    throw new Error(`${path}: no such serial port: plug the board in, or pick another port (ruvllm-esp32 ports lists them)`);
  }
  const { SerialPort } = await import('serialport');
  const { ESPLoader, Transport } = await import('esptool-js');
  const transport = new Transport(new NodeSerial(SerialPort, path));
  const quiet = { clean() {}, writeLine() {}, write() {} };
  try {
    const loader = new ESPLoader({ transport, baudrate: baud, terminal: quiet });
    const found = await loader.main();
    if (!found.startsWith(CHIPS[chip])) {
      throw new Error(`${path}: the board is an ${found}, not an ${CHIPS[chip]}: pass --chip`);
    }
    await loader.writeFlash({
      fileArray: [{ data: new Uint8Array(bytes), address: 0 }],
      flashMode: 'keep',
      flashFreq: 'keep',
      flashSize: 'keep',
      eraseAll: false,
      compress: true,
      reportProgress: (_, written, total) => log(`\rflashing ${CHIPS[chip]}: ${Math.floor((100 * written) / total)}%`),
    });
    await loader.after('hard_reset');
    log(`\nflashed: the ${CHIPS[chip]} restarts into the console (npx ruvllm-esp32 monitor -p ${path})\n`);
  } finally {
    await transport.disconnect().catch(() => {});
  }
}
