//! The ESP32 family's memory, for planning what fits where before anything is flashed.

/// One chip's resources as the engine sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chip {
    pub name: &'static str,
    /// On-chip SRAM usable for data (datasheet figures; the original ESP32's 520 KiB include
    /// instruction RAM, of which 320 KiB is data RAM).
    pub data_ram: usize,
    /// Flash on the common modules (the model image is read from it in place).
    pub flash: usize,
    pub has_fpu: bool,
    pub mhz: u32,
}

/// RAM the firmware itself keeps (stacks, UART buffers, esp-hal state, console line buffer),
/// subtracted before the engine's arena is planned.
pub const FIRMWARE_RESERVE: usize = 48 * 1024;
/// RAM the console's knowledge takes on a chip (`console::Knowledge` in a `static`: a
/// [`CHIP_KNOWLEDGE_CAP`](crate::console::CHIP_KNOWLEDGE_CAP)-entry store, the anomaly
/// detector, the memory of exchanges and the embedders; 30,048 bytes measured on a 64-bit host,
/// a little less on the chips), with room for per-entry retrieval features. Subtracted before
/// the arena is planned; a test keeps `size_of::<Knowledge>()` of a chip build below it.
pub const KNOWLEDGE_RESERVE: usize = 40 * 1024;
/// Flash taken by the bootloader, partition table and application, ahead of the model image.
pub const APP_FLASH_RESERVE: usize = 1024 * 1024;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

pub const CHIPS: [Chip; 5] = [
    Chip { name: "esp32", data_ram: 320 * KIB, flash: 4 * MIB, has_fpu: true, mhz: 240 },
    Chip { name: "esp32s2", data_ram: 320 * KIB, flash: 4 * MIB, has_fpu: false, mhz: 240 },
    Chip { name: "esp32s3", data_ram: 512 * KIB, flash: 8 * MIB, has_fpu: true, mhz: 240 },
    Chip { name: "esp32c3", data_ram: 400 * KIB, flash: 4 * MIB, has_fpu: false, mhz: 160 },
    Chip { name: "esp32c6", data_ram: 512 * KIB, flash: 4 * MIB, has_fpu: false, mhz: 160 },
];

impl Chip {
    pub fn by_name(name: &str) -> Option<Chip> {
        CHIPS.iter().copied().find(|c| c.name == name)
    }

    /// RAM left for the engine's arena: the firmware and the knowledge take theirs first.
    pub fn arena_budget(&self) -> usize {
        self.data_ram - FIRMWARE_RESERVE - KNOWLEDGE_RESERVE
    }

    /// Flash left for the model image.
    pub fn image_budget(&self) -> usize {
        self.flash - APP_FLASH_RESERVE
    }
}

/// How a model fits one chip: what `ruvllm-esp32 info` tabulates and the web console draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub chip: Chip,
    /// The chip runs the integer path (no FPU, and a q8 image with its RoPE table).
    pub integer: bool,
    /// Arena bytes at the model's full context on that path.
    pub arena_full: usize,
    /// Longest context whose arena fits [`Chip::arena_budget`] (0: none).
    pub max_context: usize,
    /// The image fits [`Chip::image_budget`].
    pub flash_ok: bool,
}

impl Fit {
    /// The model runs on the chip (at some context).
    pub fn fits(&self) -> bool {
        self.flash_ok && self.max_context > 0
    }
}

/// How `model` (an image of `image_len` bytes) fits each of [`CHIPS`].
pub fn plan<const L: usize>(model: &super::Model<'_, L>, image_len: usize) -> [Fit; CHIPS.len()] {
    use crate::infer::{IntState, State};
    let c = &model.config;
    // Chips without an FPU run a q8 image on the integer path, which has its own arena.
    let integer = model.precision.int8_activations() && model.rope.is_some();
    let ram = |n: usize, fpu: bool| {
        if integer && !fpu {
            IntState::ram_bytes(model, n)
        } else {
            State::ram_bytes(c, model.precision, model.group, n)
        }
    };
    CHIPS.map(|chip| Fit {
        chip,
        integer: integer && !chip.has_fpu,
        arena_full: ram(c.seq_len, chip.has_fpu),
        max_context: (1..=c.seq_len)
            .rev()
            .find(|&n| ram(n, chip.has_fpu) <= chip.arena_budget())
            .unwrap_or(0),
        flash_ok: image_len <= chip.image_budget(),
    })
}
