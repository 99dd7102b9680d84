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
