//! ruvllm-esp32 on a real ESP32 (esp-hal): UART0 at 115200 baud and the chip's USB-Serial-JTAG
//! (where it has one) as one `embedded-io` byte stream ([`serial`]), a banner, the model read in place from flash (from the `model` partition that
//! `ruvllm-esp32 flash` writes, mapped by the MMU, else the image linked into the firmware) with
//! its checksum verified, then a line console
//! whose `gen <text>` streams greedy text from the integer-only forward pass and whose `add` /
//! `ask` / `anomaly` work on a knowledge store kept in RAM. Reception is interrupt-driven into a
//! ring buffer, so lines typed while the console generates are kept.
//!
//! One implementation for every chip: the `esp32c3` / `esp32c6` / `esp32` / `esp32s2` /
//! `esp32s3` feature picks the chip, and the only chip-specific code is [`console_ports`]' pin
//! choice, the [`CHIP`] name and whether the chip has USB-Serial-JTAG (`cfg(usb_serial_jtag)`,
//! set by build.rs). The integer path runs on all of them (the ESP32 and S3 have an FPU and
//! could run the float q8 path too; the integer one gives the same text on every chip).
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use embedded_io::Write as _;
use esp_hal::clock::CpuClock;
use esp_hal::peripherals::Peripherals;
use esp_hal::uart::{Config as UartConfig, ConfigError, Uart};
use esp_hal::Blocking;
use ruvllm_esp32::console::{Board, Console, IntegerEngine, Knowledge};
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::partition;

mod flash_map;
mod serial;

use serial::Serial;

// LAYERS, SEQ_LEN, ARENA_LEN, IMAGE_LEN: computed by build.rs from the image.
include!(concat!(env!("OUT_DIR"), "/plan.rs"));

// The application descriptor the ESP-IDF second-stage bootloader checks (espflash needs it).
esp_bootloader_esp_idf::esp_app_desc!();

#[cfg(feature = "esp32c3")]
const CHIP: &str = "ESP32-C3";
#[cfg(feature = "esp32c6")]
const CHIP: &str = "ESP32-C6";
#[cfg(feature = "esp32")]
const CHIP: &str = "ESP32";
#[cfg(feature = "esp32s2")]
const CHIP: &str = "ESP32-S2";
#[cfg(feature = "esp32s3")]
const CHIP: &str = "ESP32-S3";

/// Console speed.
const BAUD: u32 = 115_200;

/// The banner's word on USB: the console is served there too where the chip has it.
#[cfg(usb_serial_jtag)]
const ALSO_USB: &str = " and USB-Serial-JTAG";
#[cfg(not(usb_serial_jtag))]
const ALSO_USB: &str = "";

/// The model image is read in place: its tensors need 4-byte alignment, the wrapper gives 16.
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

/// The GGUF image (`ruvllm-esp32 convert --quant q8`), linked into flash .rodata, which the
/// chip's MMU maps into the data address space and reads in place: no RAM copy. The length in
/// the type is build.rs's, so a changed file cannot slip past the build-time plan.
static IMAGE: Aligned<[u8; IMAGE_LEN]> = Aligned(*include_bytes!(env!("RUVLLM_MODEL")));

/// Activations and int8 KV cache of the integer path for SEQ_LEN positions, in .bss: RAM the
/// linker accounts for, so a model too big for the chip fails to link.
static mut ARENA: [i32; ARENA_LEN] = [0; ARENA_LEN];

/// The console's knowledge (`add`, `ask`, `anomaly`): in .bss next to the arena, written once
/// at boot.
static mut KNOWLEDGE: MaybeUninit<Knowledge> = MaybeUninit::uninit();

/// The console's ports: UART0 on the pins each chip's ROM bootloader uses (the dev boards'
/// USB-UART bridge), and the chip's USB-Serial-JTAG where it has one.
fn console_ports(p: Peripherals) -> Result<(Uart<'static, Blocking>, serial::usb::Port), ConfigError> {
    #[cfg(feature = "esp32c3")]
    let (tx, rx) = (p.GPIO21, p.GPIO20);
    #[cfg(feature = "esp32c6")]
    let (tx, rx) = (p.GPIO16, p.GPIO17);
    #[cfg(feature = "esp32")]
    let (tx, rx) = (p.GPIO1, p.GPIO3);
    #[cfg(any(feature = "esp32s2", feature = "esp32s3"))]
    let (tx, rx) = (p.GPIO43, p.GPIO44);
    #[cfg(usb_serial_jtag)]
    let usb = esp_hal::usb::usb_serial_jtag::UsbSerialJtag::new(p.USB_DEVICE);
    #[cfg(not(usb_serial_jtag))]
    let usb = ();
    let uart = Uart::new(p.UART0, UartConfig::default().with_baudrate(BAUD))?.with_tx(tx).with_rx(rx);
    Ok((uart, usb))
}

/// Stops here for good (after an error message): nothing sensible can run.
fn halt() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Microseconds since boot, for the console's tokens-per-second figure.
fn micros() -> u64 {
    esp_hal::time::Instant::now().duration_since_epoch().as_micros()
}

#[esp_hal::main]
fn main() -> ! {
    let mut peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // The partition table, read before the console's ports take the peripherals.
    let mut table = [0u8; partition::TABLE_LEN];
    let table_read = {
        let mut flash = esp_storage::FlashStorage::new(peripherals.FLASH.reborrow());
        flash_map::read(&mut flash, partition::TABLE_OFFSET as u32, &mut table)
    };
    let Ok((uart, usb)) = console_ports(peripherals) else { halt() };
    // Reception runs from here on, so input typed during the boot is kept.
    let mut io = serial::install(uart, usb);
    // TX errors cannot be reported anywhere but the ports themselves, so they are ignored.
    let _ = write!(io, "\r\nruvllm-esp32 on {CHIP} (esp-hal), console on UART0 at {BAUD} baud{ALSO_USB}\r\n");

    // The linked image is read (and its checksum computed) only when the partition does not
    // serve.
    let from_partition = match table_read {
        Ok(()) => partition_model(&mut io, &table),
        Err(e) => refused(&mut io, &e),
    };
    let linked: Model<'static, LAYERS>;
    let model = match &from_partition {
        Some(m) => m,
        None => {
            linked = match Model::from_gguf(&IMAGE.0) {
                Ok(m) => m,
                Err(e) => {
                    let _ = write!(io, "error: the model image is refused: {e}\r\nhalted.\r\n");
                    halt()
                }
            };
            let at = IMAGE.0.as_ptr();
            let _ = write!(io, "model: the image linked into the firmware, {IMAGE_LEN} bytes at {at:p}\r\n");
            &linked
        }
    };
    let c = &model.config;
    let _ = write!(
        io,
        "checksum verified: dim {} layers {} heads {} vocab {} context {}\r\n",
        c.dim, c.n_layers, c.n_heads, c.vocab_size, c.seq_len
    );
    let seq = SEQ_LEN.min(c.seq_len);

    // build.rs sized the arena from this same image; check it anyway, the arena is unsafe to
    // get wrong and cheap to check.
    let need = IntState::arena_len(model, seq);
    if need > ARENA_LEN {
        let _ = write!(io, "error: arena holds {ARENA_LEN} words, the model needs {need}\r\nhalted.\r\n");
        halt()
    }
    // SAFETY: main runs once and never returns, so this is the only reference to ARENA.
    let arena: &'static mut [i32; ARENA_LEN] = unsafe { &mut *addr_of_mut!(ARENA) };
    let engine = match IntegerEngine::new(model, arena, seq) {
        Ok(e) => e,
        Err(e) => {
            let _ = write!(io, "error: cannot set up the integer engine: {e}\r\nhalted.\r\n");
            halt()
        }
    };
    let _ = write!(io, "integer engine: {seq} positions, arena {} bytes of RAM\r\n", need * 4);

    // The library's console, the same one the QEMU board and the host run.
    let board = Board { name: CHIP, counter: Some(micros), counter_unit: "us", ram: None };
    // SAFETY: main runs once and never returns, so this is the only reference to KNOWLEDGE.
    let knowledge = Knowledge::init_in(unsafe { &mut *addr_of_mut!(KNOWLEDGE) });
    let mut console =
        Console::with_knowledge(io, engine, board, knowledge).counting_rx_losses(serial::rx_lost);
    let _ = console.run();
    halt()
}

/// The model in the flash's `model` partition (`table` holds the partition table), mapped by
/// the MMU and read in place, when it loads (checksum verified) and fits the arena. One boot
/// line either way; silent when the flash has no partition table.
fn partition_model(out: &mut Serial, table: &[u8]) -> Option<Model<'static, LAYERS>> {
    if partition::is_blank(table) {
        return None;
    }
    let part = match partition::model_partition(table) {
        Ok(p) => p,
        Err(e) => return refused(out, &e),
    };
    // SAFETY: this firmware never writes or erases flash, and maps the partition once.
    let bytes = match unsafe { flash_map::map(part.offset, part.size) } {
        Ok(b) => b,
        Err(e) => return refused(out, &e),
    };
    let model = match partition::image_in(bytes).and_then(Model::from_gguf) {
        Ok(m) => m,
        Err(e) => return refused(out, &e),
    };
    let need = IntState::arena_len(&model, SEQ_LEN.min(model.config.seq_len));
    if need > ARENA_LEN {
        let why = format_args!("its arena needs {need} words, the firmware has {ARENA_LEN}");
        return refused(out, &why);
    }
    let (at, len) = (part.offset, bytes.len());
    let _ = write!(
        out,
        "model: partition `model` at flash {at:#x} (mapped at {:p}), {len} bytes\r\n",
        bytes.as_ptr()
    );
    Some(model)
}

/// Reports why the model partition does not serve; the linked image does.
fn refused(out: &mut Serial, why: &dyn core::fmt::Display) -> Option<Model<'static, LAYERS>> {
    let _ = write!(out, "model partition refused: {why}; using the image linked into the firmware\r\n");
    None
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the program is going down; main's ports are never used again, so taking the
    // peripherals afresh to print the message is the only access from here on.
    let p = unsafe { Peripherals::steal() };
    if let Ok((uart, usb)) = console_ports(p) {
        serial::last_words(uart, usb, format_args!("\r\npanic: {info}\r\nhalted.\r\n"));
    }
    halt()
}
