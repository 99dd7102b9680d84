//! Flash access for a model kept in its own data partition: [`read`] copies raw flash bytes (the
//! partition table), [`map`] maps a flash range into the data address space so the model is read
//! in place, like the .rodata image, with no RAM copy.
//!
//! [`map`] writes the flash MMU the way ESP-IDF does it for the ESP32-C3 and ESP32-C6
//! (`s_do_mapping()` in components/esp_mm/esp_mmu_map.c): interrupts off, cache suspended, MMU
//! entries written, the mapped range invalidated in the cache, cache resumed. Every hardware fact
//! below names the ESP-IDF file it comes from; register offsets were cross-checked against the
//! esp32c3 / esp32c6 PAC crates.

use core::fmt;
use esp_storage::{FlashStorage, FlashStorageError};

/// Why a raw flash read failed.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashError {
    /// The range is not inside the flash chip.
    OutOfBounds { offset: u32, len: usize },
    /// The SPI flash read failed (ROM status 1).
    Io,
    /// The SPI flash read timed out (ROM status 2).
    Timeout,
    /// Any other esp-storage error.
    Other,
}

impl fmt::Display for FlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FlashError::OutOfBounds { offset, len } => {
                write!(f, "flash read of {len} bytes at {offset:#x} is past the end of the flash")
            }
            FlashError::Io => f.write_str("flash read failed"),
            FlashError::Timeout => f.write_str("flash read timed out"),
            FlashError::Other => f.write_str("flash read failed (esp-storage error)"),
        }
    }
}

/// Reads `buf.len()` raw bytes of flash at `offset` (any alignment) through esp-storage, which
/// takes the `FLASH` peripheral: `FlashStorage::new(peripherals.FLASH)`.
pub fn read(flash: &mut FlashStorage<'_>, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
    flash.read(offset, buf).map_err(|e| match e {
        FlashStorageError::OutOfBounds => FlashError::OutOfBounds { offset, len: buf.len() },
        FlashStorageError::IoError => FlashError::Io,
        FlashStorageError::IoTimeout => FlashError::Timeout,
        _ => FlashError::Other,
    })
}

/// Why [`map`] refused or failed.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// `len` was 0.
    Empty,
    /// `offset` is not a multiple of the 4 KiB flash sector.
    Misaligned { offset: u32 },
    /// `[offset, offset + len)` goes past the 16 MiB the MMU can address.
    OutOfRange { offset: u32, len: u32 },
    /// The MMU runs with another page size than the 64 KiB this module assumes (ESP32-C6).
    PageSize { bytes: u32 },
    /// Fewer than `need` consecutive unused MMU entries.
    NoFreePages { need: u32 },
    /// This chip's MMU is not handled here (the Xtensa chips).
    Unsupported,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::Empty => f.write_str("cannot map an empty flash range"),
            MapError::Misaligned { offset } => {
                write!(f, "flash offset {offset:#x} is not 4 KiB aligned")
            }
            MapError::OutOfRange { offset, len } => {
                write!(f, "flash range {offset:#x}+{len:#x} is beyond the 16 MiB the MMU maps")
            }
            MapError::PageSize { bytes } => {
                write!(f, "MMU page size is {bytes} bytes, only 64 KiB is supported")
            }
            MapError::NoFreePages { need } => {
                write!(f, "no {need} consecutive free MMU pages to map the flash range")
            }
            MapError::Unsupported => f.write_str("mapping flash is not supported on this chip"),
        }
    }
}

/// Flash sector: partitions start on one (ESP-IDF partition table format).
const SECTOR: u32 = 0x1000;
/// MMU page size: fixed on the C3 (`mmu_ll_get_page_size()`, hal/esp32c3/include/hal/mmu_ll.h),
/// configurable on the C6 but 64 KiB by default (checked in `hw::page_size_ok`).
const PAGE: u32 = 0x1_0000;
/// The MMU addresses 256 pages of 64 KiB of flash: `SOC_MMU_MAX_PADDR_PAGE_NUM` (256) in
/// soc/esp32c3/include/soc/ext_mem_defs.h and `MMU_MAX_PADDR_PAGE_NUM` in the esp32c6 one.
const FLASH_LIMIT: u32 = 256 * 0x1_0000;

/// Maps `len` bytes of flash at `offset` (4 KiB aligned) read-only into the data address space
/// and returns exactly those bytes. The mapping stays for the life of the program: it uses MMU
/// entries no one else uses (the highest free ones, below the last, which ESP-IDF's bootloader
/// keeps for its own reads: `MMU_LL_END_DROM_ENTRY_ID`, hal/esp32c6/include/hal/mmu_ll.h).
///
/// # Safety
/// Nothing may write or erase this flash range while the slice is in use (the slice would change
/// under it, or read stale cache lines), and nothing else may unmap the chosen MMU entries.
pub unsafe fn map(offset: u32, len: u32) -> Result<&'static [u8], MapError> {
    if len == 0 {
        return Err(MapError::Empty);
    }
    if !offset.is_multiple_of(SECTOR) {
        return Err(MapError::Misaligned { offset });
    }
    match offset.checked_add(len) {
        Some(end) if end <= FLASH_LIMIT => {}
        _ => return Err(MapError::OutOfRange { offset, len }),
    }
    map_checked(offset, len)
}

#[cfg(not(any(feature = "esp32c3", feature = "esp32c6")))]
fn map_checked(_offset: u32, _len: u32) -> Result<&'static [u8], MapError> {
    Err(MapError::Unsupported)
}

#[cfg(any(feature = "esp32c3", feature = "esp32c6"))]
fn map_checked(offset: u32, len: u32) -> Result<&'static [u8], MapError> {
    hw::page_size_ok()?;
    let first_page = offset / PAGE;
    let pages = (offset + len - 1) / PAGE - first_page + 1;
    let extra = hw::entry_extra_bits();
    let first_entry = critical_section::with(|_| {
        // Highest run of `pages` free entries, leaving out the last entry (see `map`). Scanned
        // and written in one critical section: the C6 reads entries through an index register.
        let mut run = 0;
        let mut found = None;
        for entry in (0..hw::ENTRIES - 1).rev() {
            run = if hw::entry_valid(entry) { 0 } else { run + 1 };
            if run == pages {
                found = Some(entry);
                break;
            }
        }
        let first_entry = found?;
        // SAFETY: the entries are unused, so no code or data of the running app moves.
        unsafe { write_entries_in_ram(first_entry, first_page, pages, extra) };
        Some(first_entry)
    })
    .ok_or(MapError::NoFreePages { need: pages })?;
    let vaddr = hw::VADDR_BASE + first_entry * PAGE + (offset - first_page * PAGE);
    // SAFETY: [vaddr, vaddr + len) now reads flash [offset, offset + len), for good.
    Ok(unsafe { core::slice::from_raw_parts(vaddr as *const u8, len as usize) })
}

// The ROM's cache functions (esp-rom-sys ld/esp32c3/rom/esp32c3.rom.ld, ld/esp32c6/rom/
// esp32c6.rom.ld); signatures from ESP-IDF components/esp_rom/esp32c{3,6}/include/esp32c{3,6}/
// rom/cache.h (some declare Cache_Invalidate_Addr as returning int: the result is not needed).
#[cfg(any(feature = "esp32c3", feature = "esp32c6"))]
extern "C" {
    /// Suspends the (unified I/D) cache; returns the autoload setting to resume with.
    fn Cache_Suspend_ICache() -> u32;
    /// Resumes the cache with the autoload setting `Cache_Suspend_ICache` returned.
    fn Cache_Resume_ICache(autoload: u32);
    /// Invalidates the cache lines of virtual addresses [addr, addr + size).
    fn Cache_Invalidate_Addr(addr: u32, size: u32);
}

/// Writes `pages` MMU entries from `first_entry` on, mapping flash pages `first_page..`, and
/// drops stale cache lines of the range: ESP-IDF's `s_do_mapping()` (esp_mm/esp_mmu_map.c), whose
/// `spi_flash_disable_interrupts_caches_and_other_cpu()` suspends the cache (`cache_hal_suspend`
/// -> `Cache_Suspend_ICache`, hal/esp32c3/include/hal/cache_ll.h). With the cache suspended
/// nothing may run from flash, so this lives in RAM and only does register writes and ROM calls;
/// the caller has interrupts off.
#[cfg(any(feature = "esp32c3", feature = "esp32c6"))]
#[esp_hal::ram] // in RAM, never inlined into a flash caller (the macro adds inline(never))
unsafe fn write_entries_in_ram(first_entry: u32, first_page: u32, pages: u32, extra: u32) {
    let autoload = Cache_Suspend_ICache();
    let mut i = 0;
    while i < pages {
        hw::write_entry(first_entry + i, (first_page + i) | extra);
        i += 1;
    }
    Cache_Invalidate_Addr(hw::VADDR_BASE + first_entry * PAGE, pages * PAGE);
    Cache_Resume_ICache(autoload);
}

/// ESP32-C3: the MMU table is memory-mapped, one word per entry.
#[cfg(feature = "esp32c3")]
mod hw {
    use super::MapError;

    /// `DR_REG_MMU_TABLE` (soc/esp32c3/include/soc/reg_base.h; esp32c3 PAC `MMU_TABLE`).
    const MMU_TABLE: *mut u32 = 0x600C_5000 as *mut u32;
    /// `SOC_MMU_ENTRY_NUM` (soc/esp32c3/include/soc/ext_mem_defs.h).
    pub const ENTRIES: u32 = 128;
    /// Data bus: entry n maps `SOC_MMU_DBUS_VADDR_BASE + n * 64 KiB`, since the entry id is
    /// `(vaddr & SOC_MMU_VADDR_MASK) >> 16` with mask 0x7F_FFFF (ext_mem_defs.h; `mmu_ll_get_entry_id`
    /// in hal/esp32c3/include/hal/mmu_ll.h). esp-hal's DROM region: 0x3C00_0000..0x3C80_0000.
    pub const VADDR_BASE: u32 = 0x3C00_0000;
    /// `SOC_MMU_INVALID` = bit 8; valid = 0, flash = 0; value bits 0..8 are the flash page
    /// (ext_mem_defs.h, `mmu_ll_write_entry` in mmu_ll.h).
    const INVALID: u32 = 1 << 8;

    pub fn page_size_ok() -> Result<(), MapError> {
        Ok(())
    }

    /// No extra bits: the C3 MMU entry has no encryption flag (`mmu_ll_write_entry`).
    pub fn entry_extra_bits() -> u32 {
        0
    }

    pub fn entry_valid(entry: u32) -> bool {
        // SAFETY: entry < ENTRIES, inside the MMU table.
        unsafe { MMU_TABLE.add(entry as usize).read_volatile() & INVALID == 0 }
    }

    #[inline(always)]
    pub unsafe fn write_entry(entry: u32, value: u32) {
        MMU_TABLE.add(entry as usize).write_volatile(value);
    }
}

/// ESP32-C6: MMU entries are read and written through an index and a content register of SPI0
/// (`SPI_MEM_MMU_ITEM_INDEX_REG(0)` / `SPI_MEM_MMU_ITEM_CONTENT_REG(0)`, `mmu_ll_write_entry` in
/// hal/esp32c6/include/hal/mmu_ll.h). Offsets from the esp32c6 PAC (`spi0` at 0x6000_2000:
/// content 0x37C, index 0x380, power control 0x384).
#[cfg(feature = "esp32c6")]
mod hw {
    use super::{MapError, PAGE};

    const ITEM_CONTENT: *mut u32 = 0x6000_237C as *mut u32;
    const ITEM_INDEX: *mut u32 = 0x6000_2380 as *mut u32;
    const POWER_CTRL: *const u32 = 0x6000_2384 as *const u32;
    /// `SOC_MMU_ENTRY_NUM` / `MMU_ENTRY_NUM` (soc/esp32c6/include/soc/ext_mem_defs.h).
    pub const ENTRIES: u32 = 256;
    /// Instruction and data share one virtual range on the C6 (`mmu_ll_laddr_to_vaddr`,
    /// mmu_ll.h): entry n maps `SOC_MMU_IBUS_VADDR_BASE` (0x4200_0000) + n * page. esp-hal's
    /// DROM region: 0x4200_0000..0x4300_0000.
    pub const VADDR_BASE: u32 = 0x4200_0000;
    /// `SOC_MMU_VALID` = bit 9, `SOC_MMU_SENSITIVE` = bit 10 (flash encryption), value bits 0..9
    /// the flash page; flash = 0 (ext_mem_defs.h `MMU_MSPI_*`, `mmu_ll_write_entry`).
    const VALID: u32 = 1 << 9;
    const SENSITIVE: u32 = 1 << 10;

    /// `SPI_MEM_MMU_PAGE_SIZE`, bits [4:3] of the power control register: 0 = 64 KiB, 1 = 32,
    /// 2 = 16, 3 = 8 (`mmu_ll_get_page_size`, mmu_ll.h; PAC `spi_mmu_page_size`).
    pub fn page_size_ok() -> Result<(), MapError> {
        // SAFETY: a read of an SPI0 register with no side effects.
        let code = (unsafe { POWER_CTRL.read_volatile() } >> 3) & 3;
        match PAGE >> code {
            PAGE => Ok(()),
            bytes => Err(MapError::PageSize { bytes }),
        }
    }

    /// With flash encryption on, entries carry the sensitive bit so reads are decrypted
    /// (`mmu_ll_write_entry` / `mmu_ll_cache_encryption_enabled`, mmu_ll.h).
    pub fn entry_extra_bits() -> u32 {
        VALID | if esp_hal::efuse::flash_encryption() { SENSITIVE } else { 0 }
    }

    /// Caller holds a critical section (index then content is not atomic).
    pub fn entry_valid(entry: u32) -> bool {
        // SAFETY: MMU register accesses; entry < ENTRIES.
        unsafe {
            ITEM_INDEX.write_volatile(entry);
            ITEM_CONTENT.read_volatile() & VALID != 0
        }
    }

    #[inline(always)]
    pub unsafe fn write_entry(entry: u32, value: u32) {
        ITEM_INDEX.write_volatile(entry);
        ITEM_CONTENT.write_volatile(value);
    }
}
