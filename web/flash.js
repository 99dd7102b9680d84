// Flashing a board from the page: Web Serial and esptool-js (the approach of ESP Web Tools)
// write the merged image that `ruvllm-esp32 flash --dry-run` makes (bootloader, partition
// table, app, built-in model) at offset 0 of an ESP32-C3 or C6.
// UNTESTED ON HARDWARE: no board has run this yet; the page says so next to the button.

const CHIPS = { esp32c3: 'ESP32-C3', esp32c6: 'ESP32-C6' };

/** Flashes `firmware/<chip>.bin`; `say(text, ok)` reports each step in one line. */
export async function flash(chip, say) {
  if (!('serial' in navigator)) {
    say('This browser has no Web Serial, so it cannot flash: use Chrome, Edge or Opera on a desktop, or `npx ruvllm-esp32 flash`.');
    return false;
  }
  const res = await fetch(new URL(`./firmware/${chip}.bin`, import.meta.url));
  if (!res.ok) {
    say(`No ${CHIPS[chip]} image is served with this page: build it with scripts/build-web-firmware.sh.`);
    return false;
  }
  const image = new Uint8Array(await res.arrayBuffer());
  let port;
  try {
    port = await navigator.serial.requestPort();
  } catch {
    say('No serial port was chosen: connect the board by USB, press Flash again and pick its port.');
    return false;
  }
  const { ESPLoader, Transport } = await import('./vendor/esptool.js');
  const transport = new Transport(port);
  const quiet = { clean() {}, writeLine() {}, write() {} };
  try {
    const loader = new ESPLoader({ transport, baudrate: 460800, terminal: quiet });
    say('Connecting to the board (hold BOOT while pressing RESET if it does not answer)...', true);
    const found = await loader.main();
    if (!found.startsWith(CHIPS[chip])) {
      say(`The board is an ${found}, not an ${CHIPS[chip]}: choose its chip and flash again.`);
      return false;
    }
    await loader.writeFlash({
      fileArray: [{ data: image, address: 0 }],
      flashMode: 'keep',
      flashFreq: 'keep',
      flashSize: 'keep',
      eraseAll: false,
      compress: true,
      reportProgress: (_, written, total) => say(`Flashing ${CHIPS[chip]}: ${Math.floor((100 * written) / total)}%`, true),
    });
    await loader.after('hard_reset');
    say(`Flashed: the ${CHIPS[chip]} restarts into the console (115200 baud).`, true);
    return true;
  } catch (e) {
    say(`Flashing failed: ${e.message ?? e}. Reconnect the board and try again.`);
    return false;
  } finally {
    await transport.disconnect().catch(() => {});
  }
}
