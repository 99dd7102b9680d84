//! A QEMU `virt` board with exactly the ESP32-C3's resources (rv32imc, no FPU, 4 MiB flash,
//! 400 KiB RAM) running the ruvllm-esp32 console on its UART. The model is read in place from
//! flash: from the `model` partition of the chip flash image in the board's flash bank when
//! there is one (what `ruvllm-esp32 flash` writes to a real chip), else the image linked into
//! the firmware. The engine's arena is a static array sized at build time.
//!
//! With the `vector-bench` feature the board runs no console and embeds no model: it builds a
//! `MicroHNSW` over vectors linked into flash, counts the instructions of every insert and
//! search, prints the results and exits (see `vector_bench.rs`).
#![no_std]
#![no_main]
// A federation node uses the model, the arena and the UART, not the console's helpers; the
// sparse-kernel benchmark only the model.
#![cfg_attr(any(feature = "federation-node", feature = "sparse-bench"), allow(dead_code, unused_imports))]

#[cfg(feature = "federation-node")]
mod node;
#[cfg(not(feature = "vector-bench"))]
mod pflash;
#[cfg(feature = "sparse-bench")]
mod sparse_bench;
mod uart;
#[cfg(feature = "vector-bench")]
mod vector_bench;

use core::fmt::Write as _;
#[cfg(not(feature = "vector-bench"))]
use core::mem::MaybeUninit;
#[cfg(not(feature = "vector-bench"))]
use core::ptr::addr_of_mut;
use ruvllm_esp32::console::RamUse;
#[cfg(all(feature = "float-engine", not(feature = "vector-bench")))]
use ruvllm_esp32::console::ReferenceEngine;
#[cfg(not(feature = "vector-bench"))]
use ruvllm_esp32::console::{Board, Console, Knowledge, KnowledgeStore, SavingOff};
#[cfg(all(not(feature = "float-engine"), not(feature = "vector-bench")))]
use ruvllm_esp32::console::{IntegerEngine, Speculation};
#[cfg(not(feature = "vector-bench"))]
use ruvllm_esp32::model::Model;
#[cfg(not(feature = "vector-bench"))]
use ruvllm_esp32::partition;
#[cfg(not(feature = "vector-bench"))]
use ruvllm_esp32::store::Store;
use uart::Uart;

// LAYERS, SEQ_LEN, ARENA_LEN: computed by build.rs from the image.
#[cfg(not(feature = "vector-bench"))]
include!(concat!(env!("OUT_DIR"), "/plan.rs"));

/// GGUF tensors are read in place, so the image keeps the format's 32-byte alignment.
#[repr(C, align(32))]
struct Aligned<T: ?Sized>(T);

#[cfg(not(feature = "vector-bench"))]
static IMAGE: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("RUVLLM_IMAGE")));

/// Activations and KV cache for the full context, in .bss: RAM the linker accounts for.
#[cfg(all(not(feature = "float-engine"), not(feature = "vector-bench")))]
static mut ARENA: [i32; ARENA_LEN] = [0; ARENA_LEN];
#[cfg(all(feature = "float-engine", not(feature = "vector-bench")))]
static mut ARENA: [f32; ARENA_LEN] = [0.0; ARENA_LEN];

/// The early-exit draft's state and the verification buffers (`set speculative on`), when
/// build.rs found room for them.
#[cfg(all(not(feature = "float-engine"), not(feature = "vector-bench")))]
static mut SPEC_ARENA: [i32; SPEC_LEN] = [0; SPEC_LEN];

/// The console's knowledge (`add`, `ask`, `anomaly`): in .bss next to the arena, so the link
/// checks that both fit the 400 KiB; written once at boot.
#[cfg(not(feature = "vector-bench"))]
static mut KNOWLEDGE: MaybeUninit<Knowledge> = MaybeUninit::uninit();

/// The MicroLoRA adapter the console trains (`lora`): in .bss (all zeros until the engine sets
/// it up), so the link checks its fixed size fits too.
#[cfg(all(not(feature = "float-engine"), not(feature = "vector-bench"), not(feature = "lean")))]
static mut LORA: ruvllm_esp32::lora::DeviceLora = ruvllm_esp32::lora::DeviceLora::EMPTY;

/// The knowledge store's region: the two erase blocks (512 KiB) of pflash bank 0 after its
/// boot block.
#[cfg(not(feature = "vector-bench"))]
const KNOWLEDGE_REGION: core::ops::Range<u32> = pflash::SECTOR as u32..(3 * pflash::SECTOR) as u32;

/// Where the board's flash bank holds an ESP32-C3 flash image (`ruvllm-esp32 flash --dry-run`'s
/// output, put there by `ruvllm-esp32 board --flash-image`): the chip's 4 MiB of SPI flash as
/// its MMU maps it, after the boot block and the knowledge store.
#[cfg(not(feature = "vector-bench"))]
const CHIP_FLASH: core::ops::Range<usize> = 0x40_0000..0x80_0000;

/// Written over the free stack at boot; the first word that differs marks the deepest use.
const PAINT: u32 = 0x5AA5_C33C;

extern "C" {
    static _ram_start: u8;
    static __eheap: u8;
    static _stack_start: u8;
}

/// The sifive_test device: QEMU exits with the written status.
fn exit(code: u32) -> ! {
    let value = if code == 0 { 0x5555 } else { (code << 16) | 0x3333 };
    // SAFETY: the virt board's test device register; writing it ends the emulation.
    unsafe { core::ptr::write_volatile(0x0010_0000 as *mut u32, value) };
    loop {
        core::hint::spin_loop();
    }
}

/// Retired instructions: exact and repeatable under `-icount shift=0`.
fn instret() -> u64 {
    riscv::register::instret::read64()
}

fn addr(sym: &u8) -> usize {
    sym as *const u8 as usize
}

/// Paints the free stack below the caller's frame.
#[inline(never)]
fn paint_stack() {
    let sp: usize;
    // SAFETY: only reads the stack pointer.
    unsafe { core::arch::asm!("mv {}, sp", out(reg) sp) };
    // SAFETY: linker symbols; only their addresses are used.
    let bottom = unsafe { addr(&__eheap) }.next_multiple_of(4);
    let mut p = bottom;
    // Stop a little below this frame: nothing lives under sp on RISC-V (no red zone).
    while p + 64 < sp {
        // SAFETY: [bottom, sp) is unused stack inside RAM.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Static RAM (.data + .bss, the arena included) and the stack's high-water mark.
fn ram_use() -> RamUse {
    // SAFETY: linker symbols; only their addresses are used.
    let (start, bottom, top) = unsafe { (addr(&_ram_start), addr(&__eheap), addr(&_stack_start)) };
    let bottom = bottom.next_multiple_of(4);
    let mut p = bottom;
    // SAFETY: reads words of the stack region painted at boot.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    RamUse { static_bytes: bottom - start, stack_bytes: top - p }
}

#[cfg(feature = "vector-bench")]
#[riscv_rt::entry]
fn main() -> ! {
    paint_stack();
    // SAFETY: the only Uart.
    vector_bench::run(unsafe { Uart::new() })
}

#[cfg(feature = "sparse-bench")]
#[riscv_rt::entry]
fn main() -> ! {
    // SAFETY: the only Uart.
    sparse_bench::run(unsafe { Uart::new() })
}

#[cfg(feature = "federation-node")]
#[riscv_rt::entry]
fn main() -> ! {
    paint_stack();
    // SAFETY: the only Uart.
    let uart = unsafe { Uart::new() };
    // Nothing is printed: the UART carries only the link's frames.
    let Ok(model) = Model::<LAYERS>::from_gguf(&IMAGE.0) else { exit(2) };
    let seq = SEQ_LEN.min(model.config.seq_len);
    // SAFETY: main runs once and never returns, so this is the only reference to ARENA.
    let arena = unsafe { &mut *addr_of_mut!(ARENA) };
    let code = match SHARD {
        Some(shard) => {
            // SAFETY: as ARENA.
            let acc = unsafe { &mut *addr_of_mut!(PARTIALS) };
            node::run_tensor(uart, &model, &IMAGE.0, arena, acc, seq, NODE_ID, shard, instret, peak_ram)
        }
        None => node::run(uart, &model, &IMAGE.0, arena, seq, NODE_ID, NODE_LAYERS, instret, peak_ram),
    };
    exit(code)
}

/// Static RAM and the stack's high-water mark so far, in bytes.
#[cfg(feature = "federation-node")]
fn peak_ram() -> u32 {
    let r = ram_use();
    (r.static_bytes + r.stack_bytes) as u32
}

/// A tensor-parallel node's partial sums, one per residual value.
#[cfg(feature = "federation-node")]
static mut PARTIALS: [i64; DIM] = [0; DIM];

#[cfg(all(not(feature = "vector-bench"), not(feature = "federation-node"), not(feature = "sparse-bench")))]
#[riscv_rt::entry]
fn main() -> ! {
    paint_stack();
    // SAFETY: the only Uart.
    let mut uart = unsafe { Uart::new() };
    let _ = writeln!(Fmt(&mut uart), "qemu-c3: ESP32-C3-sized board");
    // The linked image is read (and its checksum computed) only when the partition does not
    // serve.
    let from_partition = partition_model(&mut uart);
    let linked: Model<'static, LAYERS>;
    let (model, image) = match &from_partition {
        Some((m, image)) => (m, *image),
        None => {
            linked = match Model::from_gguf(&IMAGE.0) {
                Ok(m) => m,
                Err(e) => {
                    let _ = writeln!(Fmt(&mut uart), "error: the model image is refused: {e}");
                    exit(2);
                }
            };
            let _ = writeln!(
                Fmt(&mut uart),
                "model: the image linked into the firmware, {} bytes, checksum verified",
                IMAGE.0.len()
            );
            (&linked, &IMAGE.0)
        }
    };
    let seq = SEQ_LEN.min(model.config.seq_len);
    // SAFETY: main runs once and never returns, so this is the only reference to ARENA.
    let arena = unsafe { &mut *addr_of_mut!(ARENA) };
    // SAFETY: main runs once and never returns, so this is the only reference to LORA.
    #[cfg(all(not(feature = "float-engine"), not(feature = "lean")))]
    let lora = unsafe { &mut *addr_of_mut!(LORA) };
    #[cfg(all(not(feature = "float-engine"), not(feature = "lean")))]
    let engine =
        IntegerEngine::new(model, arena, seq).map(|e| e.with_lora(lora, ruvllm_esp32::lora::model_id(image)));
    #[cfg(all(not(feature = "float-engine"), feature = "lean"))]
    let engine = IntegerEngine::new(model, arena, seq);
    #[cfg(any(feature = "float-engine", feature = "lean"))]
    let _ = image;
    #[cfg(feature = "float-engine")]
    let engine = ReferenceEngine::new(model, arena, seq);
    let engine = match engine {
        Ok(e) => e,
        Err(e) => {
            let _ = writeln!(Fmt(&mut uart), "error: cannot set up the engine: {e}");
            exit(3);
        }
    };
    // The early-exit draft (the model's own first layers), when build.rs found room for its
    // state. SAFETY: main runs once and never returns, so this is the only reference to
    // SPEC_ARENA.
    #[cfg(not(feature = "float-engine"))]
    let draft = ruvllm_esp32::speculative::early_exit(model, SPEC_LAYERS);
    #[cfg(not(feature = "float-engine"))]
    let engine = match draft
        .as_ref()
        .map(|d| Speculation::new(model, d, unsafe { &mut *addr_of_mut!(SPEC_ARENA) }, seq, SPEC_GAMMA))
    {
        Ok(Ok(spec)) => engine.with_speculation(spec),
        _ => engine,
    };
    let board =
        Board { name: "qemu-c3", counter: Some(instret), counter_unit: "instructions", ram: Some(ram_use) };
    // SAFETY: main runs once and never returns, so this is the only reference to KNOWLEDGE.
    let knowledge = Knowledge::init_in(unsafe { &mut *addr_of_mut!(KNOWLEDGE) });
    let mut store = open_knowledge(&mut uart, knowledge);
    let mut console = Console::with_knowledge(uart, engine, board, knowledge);
    if let Some(store) = store.as_mut() {
        console = console.saving_to(store as &mut dyn KnowledgeStore);
    }
    let _ = console.restore_adapter();
    // The UART's error type is Infallible: run only returns on quit or end of input.
    let _ = console.run();
    exit(0)
}

/// The model in the `model` partition of the chip flash image at [`CHIP_FLASH`], read in place,
/// when it loads (checksum verified) and fits the arena; one boot line either way. A bank with
/// no chip image (blank) is silent; a damaged table or image is reported and the linked image
/// serves.
#[cfg(not(feature = "vector-bench"))]
fn partition_model(uart: &mut Uart) -> Option<(Model<'static, LAYERS>, &'static [u8])> {
    // SAFETY: the bank reads as memory (the store driver returns it to read-array mode after
    // every command), and the store only programs and erases its own blocks, below CHIP_FLASH.
    let flash: &'static [u8] = unsafe {
        core::slice::from_raw_parts((pflash::BASE + CHIP_FLASH.start) as *const u8, CHIP_FLASH.len())
    };
    if partition::is_blank(&flash[partition::TABLE_OFFSET..]) {
        return None;
    }
    let found = partition::model_image(flash).and_then(|(part, image)| {
        let model: Model<'static, LAYERS> = Model::from_gguf(image)?;
        Ok((part, image, model))
    });
    let (part, image, model) = match found {
        Ok(f) => f,
        Err(e) => {
            let _ =
                writeln!(Fmt(uart), "model partition refused: {e}; using the image linked into the firmware");
            return None;
        }
    };
    #[cfg(not(feature = "float-engine"))]
    let need = ruvllm_esp32::infer::IntState::arena_len(&model, SEQ_LEN.min(model.config.seq_len));
    #[cfg(feature = "float-engine")]
    let need = ruvllm_esp32::infer::State::arena_len(&model, SEQ_LEN.min(model.config.seq_len));
    if need > ARENA_LEN {
        let _ = writeln!(
            Fmt(uart),
            "model partition refused: its arena needs {need} words, the firmware has {ARENA_LEN}; \
             using the image linked into the firmware"
        );
        return None;
    }
    let _ = writeln!(
        Fmt(uart),
        "model: partition `{}` at flash 0x{:x}, {} bytes, checksum verified",
        part.label,
        part.offset,
        image.len()
    );
    Some((model, image))
}

/// Opens the knowledge store in pflash and restores what it holds, with one boot line. A
/// blank (or never used) region is a new, empty store. A region the store cannot repair is
/// left as it is and the console runs with its knowledge in RAM only.
#[cfg(not(feature = "vector-bench"))]
fn open_knowledge(uart: &mut Uart, knowledge: &mut Knowledge) -> Option<Store<pflash::PFlash>> {
    // SAFETY: the only PFlash.
    let flash = unsafe { pflash::PFlash::new() };
    let (mut store, boot) = match Store::open(flash, KNOWLEDGE_REGION) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = writeln!(Fmt(uart), "{}", SavingOff(e));
            return None;
        }
    };
    match knowledge.restore(&mut store) {
        Ok(restored) => {
            let _ = write!(Fmt(uart), "{restored}");
        }
        Err(e) => {
            let _ = writeln!(Fmt(uart), "{}", SavingOff(e));
            return None;
        }
    }
    if boot.pages_in_use == 0 {
        let _ = write!(
            Fmt(uart),
            " (new store: pflash 0x{:x}..0x{:x})",
            KNOWLEDGE_REGION.start,
            KNOWLEDGE_REGION.end
        );
    }
    if !boot.is_clean() {
        let _ = write!(
            Fmt(uart),
            " (flash repaired: {} torn, {} dirty pages erased, {} holes closed, {} pages with damaged free space closed)",
            boot.torn_pages,
            boot.dirty_pages,
            boot.holes_closed,
            boot.dirty_free_pages
        );
    }
    let _ = writeln!(Fmt(uart));
    Some(store)
}

/// `core::fmt` over the UART, for boot messages before the console runs.
struct Fmt<'a>(&'a mut Uart);

impl core::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.write_byte(b'\r');
            }
            self.0.write_byte(b);
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the board is going down; a second Uart only writes bytes.
    let mut uart = unsafe { Uart::new() };
    let _ = writeln!(Fmt(&mut uart), "panic: {info}");
    exit(101)
}
