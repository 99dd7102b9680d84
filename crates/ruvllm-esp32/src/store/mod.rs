//! Persistence on the chip: a power-fail-safe key-value store in a NOR-flash region.
//!
//! [`Store`] keeps knowledge, memories and detector state across restarts. It is a thin,
//! blocking, allocation-free layer over the `sequential-storage` crate's map, which appends
//! items (header with CRCs + key + value) to the pages of the region in turn and migrates live
//! items out of the oldest page before erasing it; see docs/ARCHITECTURE.md, "Persistence".
//!
//! * Keys are `u32` ([`Key`]): four bytes per item (a `u16` would save two) buy room for a
//!   namespace in the high byte (knowledge / memories / detector state / ...) and a 24-bit id
//!   below it, so callers never have to squeeze ids into 65,536 values.
//! * Values are byte slices of at most [`MAX_VALUE_LEN`] bytes; the store keeps one work
//!   buffer of that size (plus key and word padding) inline, so it needs no heap.
//! * [`Store::put`] and [`Store::remove`] return `Ok` only after the flash driver has
//!   returned from the last write of the operation: that is the acknowledgement. An
//!   acknowledged write survives power loss; an interrupted one leaves the key at its old or
//!   its new value, never a mix (tested by cutting the power at every flash operation).
//! * [`Store::open`] checks the region at boot and says what it found in a [`BootReport`];
//!   a region the store cannot use even after its repair gives [`Error::Corrupt`], and
//!   [`Store::open_or_format`] then erases it so the device keeps running (policy in
//!   [`BootReport`]).
//!
//! Every operation is blocking; the flash driver must implement `embedded-storage`'s
//! `MultiwriteNorFlash` (removal clears the CRC word of an item already written), which NOR
//! flash such as the ESP32's does: a write can only clear bits.

mod blocking;
mod ram;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;

use core::ops::Range;

use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapConfigError, MapStorage};

pub use blocking::{block_on, Blocking};
pub use ram::{RamFlash, RamFlashError, RAM_SECTOR, RAM_WORD};

use crate::error::{Error, Result};

/// A store key. See the module documentation for why `u32`.
pub type Key = u32;

/// Longest value [`Store::put`] accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 512;

/// Bytes a key takes in an item (little-endian `u32`).
const KEY_LEN: usize = core::mem::size_of::<Key>();

/// The largest flash word sequential-storage supports; items are padded to the flash's word,
/// so the work buffer is rounded up to this to suit any flash.
const MAX_FLASH_WORD: usize = 32;

/// Work buffer size: one serialized item body (key + value) rounded up to a flash word.
const WORK_LEN: usize = (KEY_LEN + MAX_VALUE_LEN).next_multiple_of(MAX_FLASH_WORD);

/// sequential-storage treats a page marker word as set once at least this many of its bits
/// are zero (half a byte: it tolerates a few flipped bits and catches a torn marker write).
/// The boot check classifies pages the same way.
const MARKER_SET_ZERO_BITS: u32 = 4;

/// The boot check's chain repair handles regions of up to this many pages (1 MiB of 4 KiB
/// sectors); larger regions are still checked page by page, without that repair.
const MAX_PAGES: usize = 256;

/// Some flash drivers need the buffers they write from to be word-aligned in RAM.
#[repr(C, align(4))]
struct WorkBuf([u8; WORK_LEN]);

type Map<F> = MapStorage<Key, Blocking<F>, Cache<Uncached, Uncached, Uncached, Key>>;

/// What [`Store::open`] found in the region.
///
/// Corruption policy:
/// * A page whose first marker word is erased but whose last is set (`torn_pages`) is an
///   interrupted erase: the boot check finishes the erase, as sequential-storage's own repair
///   would (its iteration skips that repair). The page's live items had been migrated before
///   the erase started, so nothing is lost.
/// * A page that looks unused (neither marker set) but holds other than erased bytes
///   (`dirty_pages`: a half-erased page, random bytes) holds no store data, yet new items
///   written on it would be garbled: the boot check erases it.
/// * An unused page between pages in use (`holes_closed`: only damage makes one) is marked
///   closed, so the store's searches, which walk back from the newest page until the first
///   unused one, still reach the older pages. Entries that were on the damaged page are lost.
/// * The page new items go to (the partial-open page) must be erased after its last item:
///   the crate writes the next item there without looking, and a bit already cleared in that
///   space would corrupt it. If it is not (`dirty_free_pages`: a flipped bit, stray bytes),
///   the boot check closes that page and opens the next one, so nothing is written over the
///   damage; the page's items stay readable. When the next page is not free either, the
///   region is refused ([`Error::Corrupt`]).
/// * An item whose bytes no longer match its CRCs (a flipped bit) is skipped by every read;
///   the key falls back to its newest intact version or reads as absent. Other entries are
///   unaffected. `damaged_items` counts them (item headers found, less intact items).
/// * If the store still cannot be read after those repairs (for example every page claims to
///   be full, which the crate's repair cannot resolve), [`Store::open`] returns
///   [`Error::Corrupt`], and [`Store::open_or_format`] erases the region and starts empty
///   (`formatted` is then true): the device keeps running, without the old entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootReport {
    /// Pages (erase sectors) in the region.
    pub pages: usize,
    /// Pages holding store data (first marker set).
    pub pages_in_use: usize,
    /// Pages found half-erased with their end marker still set, or opened beside the page in
    /// use without holding anything (a cut, a flipped marker bit); erased at boot.
    pub torn_pages: usize,
    /// Pages marked unused but not blank (half-erased, random bytes); erased at boot.
    pub dirty_pages: usize,
    /// Unused pages found inside the chain of pages in use (a damaged page erased at boot)
    /// and marked closed so that the pages behind them stay readable.
    pub holes_closed: usize,
    /// Partial-open pages whose space after the last item was not erased: closed at boot
    /// (the next page takes new items) so that no write lands on the damage.
    pub dirty_free_pages: usize,
    /// Items whose bytes no longer match their CRCs (or whose header is damaged): skipped by
    /// every read.
    pub damaged_items: usize,
    /// Intact items found by one pass over the region after the repairs: live entries and
    /// superseded versions not yet reclaimed ([`Store::stats`] counts the live entries, at
    /// the cost of one pass per entry).
    pub items: usize,
    /// True when the region was unusable and has been erased ([`Store::open_or_format`]).
    pub formatted: bool,
}

impl BootReport {
    /// True when the boot check found nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.torn_pages == 0
            && self.dirty_pages == 0
            && self.holes_closed == 0
            && self.dirty_free_pages == 0
            && !self.formatted
    }
}

/// Space figures from [`Store::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Live entries.
    pub entries: usize,
    /// Flash bytes the live entries occupy (item header + key + value, word-padded).
    pub live_bytes: usize,
    /// Flash bytes of all intact items, superseded versions included (reclaimed when their
    /// page is next recycled).
    pub written_bytes: usize,
    /// Item bytes the region can hold: all pages but the one kept free for migration, less
    /// the page markers.
    pub capacity_bytes: usize,
    /// `capacity_bytes - live_bytes`: room for more entries. Approximate: an item never
    /// straddles two pages, so up to one item's worth per page can go unused.
    pub free_bytes: usize,
}

/// A power-fail-safe key-value store over the NOR-flash region `range` of `F`.
///
/// `F` may be the driver itself or `&mut` the driver (to keep it after the store is
/// dropped).
pub struct Store<F: NorFlash + MultiwriteNorFlash> {
    map: Map<F>,
    buf: WorkBuf,
    boot: BootReport,
}

/// The flash word: items and markers are padded to it.
const fn word<F: NorFlash>() -> usize {
    if F::WRITE_SIZE > F::READ_SIZE {
        F::WRITE_SIZE
    } else {
        F::READ_SIZE
    }
}

fn flash_error<E: NorFlashError>(e: E) -> Error {
    Error::Storage {
        what: match e.kind() {
            NorFlashErrorKind::NotAligned => "flash access not aligned",
            NorFlashErrorKind::OutOfBounds => "flash access out of bounds",
            _ => "flash driver error (or power lost during the operation)",
        },
    }
}

fn map_error<E: NorFlashError>(e: sequential_storage::Error<E>) -> Error {
    use sequential_storage::Error as S;
    match e {
        S::Storage { value, .. } => flash_error(value),
        S::FullStorage => Error::Storage { what: "store full: the live entries fill the region" },
        S::Corrupted { .. } => {
            Error::Corrupt { what: "flash region damaged beyond repair (only erasing it makes it usable)" }
        }
        S::LogicBug { .. } => Error::Corrupt { what: "sequential-storage reported a logic bug" },
        S::ItemTooBig => Error::Invalid { what: "store item larger than a flash page" },
        S::BufferTooBig | S::BufferTooSmall(_) => {
            Error::Invalid { what: "store work buffer does not suit the flash" }
        }
        S::SerializationError(_) => Error::Invalid { what: "store item key or value unreadable" },
        _ => Error::Storage { what: "unknown sequential-storage error" },
    }
}

fn config_error(e: MapConfigError) -> Error {
    Error::Invalid {
        what: match e {
            MapConfigError::StartRangeNotAtPageBoundary => {
                "store region does not start on an erase-sector boundary"
            }
            MapConfigError::EndRangeNotAtPageBoundary => {
                "store region does not end on an erase-sector boundary"
            }
            MapConfigError::RangeTooSmall => "store region is smaller than two erase sectors",
            MapConfigError::PagesTooSmall => "flash erase sectors too small for a store",
            MapConfigError::WordSizeTooLarge => "flash word larger than 32 bytes",
        },
    }
}

/// sequential-storage 8's CRC of an item's length field (CRC-16F/4.2, never 0xFFFF), so the
/// boot check reads headers exactly as the crate does.
fn length_crc(data: &[u8]) -> u16 {
    let mut crc = 0xffffu16;
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x1a2e } else { crc >> 1 };
        }
    }
    match crc ^ 0xffff {
        0xffff => 0xfffe,
        other => other,
    }
}

/// Counts zero bits (written bits) in `bytes`.
fn zero_bits(bytes: &[u8]) -> u32 {
    bytes.iter().map(|b| b.count_zeros()).sum()
}

impl<F: NorFlash + MultiwriteNorFlash> Store<F> {
    /// Mounts the store in `range` of `flash` after a boot check (see [`BootReport`]): the
    /// region must be whole erase sectors, at least two, inside the flash. Returns
    /// [`Error::Corrupt`] when the region is unusable even after repair.
    pub fn open(flash: F, range: Range<u32>) -> Result<(Self, BootReport)> {
        let mut store = Self::new(flash, range)?;
        let report = store.mount()?;
        store.boot = report;
        Ok((store, report))
    }

    /// As [`Store::open`], but a region that cannot be repaired is erased (its entries are
    /// lost) and the report says `formatted`. Errors only when the flash itself fails.
    pub fn open_or_format(flash: F, range: Range<u32>) -> Result<(Self, BootReport)> {
        let mut store = Self::new(flash, range)?;
        match store.mount() {
            Ok(report) => {
                store.boot = report;
                Ok((store, report))
            }
            Err(Error::Corrupt { .. }) => {
                store.format()?;
                let mut report = store.mount()?;
                report.formatted = true;
                store.boot = report;
                Ok((store, report))
            }
            Err(e) => Err(e),
        }
    }

    fn new(flash: F, range: Range<u32>) -> Result<Self> {
        let config = MapConfig::<Blocking<F>>::try_new(range.clone()).map_err(config_error)?;
        if range.end as usize > flash.capacity() {
            return Err(Error::Invalid { what: "store region extends past the end of the flash" });
        }
        let overhead = Map::<F>::item_overhead_size() as usize;
        let largest_item = overhead + (KEY_LEN + MAX_VALUE_LEN).next_multiple_of(word::<F>());
        if largest_item + 2 * word::<F>() > F::ERASE_SIZE {
            return Err(Error::Unsupported { what: "flash erase sectors smaller than one full store item" });
        }
        Ok(Self {
            map: MapStorage::new(Blocking(flash), config, Cache::new_uncached()),
            buf: WorkBuf([0; WORK_LEN]),
            boot: BootReport::default(),
        })
    }

    /// The boot check: classify every page by its markers, finish interrupted erases, erase
    /// dirty unused pages, bridge holes in the page chain, then read the whole store once and
    /// count the live entries.
    fn mount(&mut self) -> Result<BootReport> {
        let range = self.map.flash_range();
        let page = F::ERASE_SIZE as u32;
        let w = word::<F>() as u32;
        let pages = ((range.end - range.start) / page) as usize;
        let mut report = BootReport { pages, ..BootReport::default() };
        // Page states after the repairs below: `true` = open (erased, unused).
        let mut open = [false; MAX_PAGES];
        // Partial-open pages (first marker only) and, of those, the ones holding nothing.
        let (mut partials, mut empty_partial) = (0, [false; MAX_PAGES]);
        let mut partial = None;
        let mut dirty_partial = None;
        // Closed pages that hold no item: an erased first header (items start right after the
        // first marker), or only headers of removed items (a zeroed data CRC: damage that
        // cleared bits there reads as one). What else the body holds is damage.
        let mut blank_closed = [false; MAX_PAGES];
        let mut counted = 0;
        let mut headers = 0;
        for index in 0..pages {
            let start = range.start + index as u32 * page;
            let end = start + page;
            let first_set = self.marker_set(start)?;
            let last_set = self.marker_set(end - w)?;
            let is_open = match (first_set, last_set) {
                (true, last_set) => {
                    report.pages_in_use += 1;
                    let (items, free) = self.walk_page(start)?;
                    headers += items;
                    if last_set && items == 0 {
                        if let Some(slot) = blank_closed.get_mut(index) {
                            *slot = true;
                        }
                    }
                    if !last_set {
                        partials += 1;
                        partial = Some(index);
                        let blank_after = match free {
                            Some(at) => self.body_blank(at, end - w)?,
                            None => true,
                        };
                        if let Some(slot) = empty_partial.get_mut(index) {
                            *slot = blank_after && free == Some(start + w);
                        }
                        if !blank_after {
                            dirty_partial = Some(index);
                        }
                    }
                    false
                }
                (false, true) => {
                    // An interrupted erase: finish it, as sequential-storage's own repair does.
                    report.torn_pages += 1;
                    self.erase_page(start)?;
                    true
                }
                (false, false) => {
                    if !self.body_blank(start + w, end - w)? {
                        report.dirty_pages += 1;
                        self.erase_page(start)?;
                    }
                    true
                }
            };
            if let Some(slot) = open.get_mut(index) {
                *slot = is_open;
                counted += 1;
            }
        }
        // One page takes new items. More than one comes from a cut in the repair below (the
        // page after a damaged one opened, the damaged one not yet closed: finish by closing
        // it) or from damage (a marker bit cleared on an unused page: erase that page, which
        // holds nothing; the crate would otherwise write to one partial page and, finding the
        // next not free, erase it as a half-done migration, with its data). Two holding data:
        // refused.
        if partials > 1 && counted == pages {
            for index in 0..pages {
                if !empty_partial[index] {
                    continue;
                }
                let prev = (index + pages - 1) % pages;
                let prev_end = range.start + prev as u32 * page + page - w;
                if !open[prev] && !empty_partial[prev] && !self.marker_set(prev_end)? {
                    self.write_marker(prev_end)?;
                    report.dirty_free_pages += 1;
                    dirty_partial = dirty_partial.filter(|&p| p != prev);
                } else {
                    self.erase_page(range.start + index as u32 * page)?;
                    open[index] = true;
                    report.torn_pages += 1;
                    report.pages_in_use -= 1;
                }
            }
            partial = None;
            for index in (0..pages).filter(|&i| !open[i]) {
                if !self.marker_set(range.start + index as u32 * page + page - w)? {
                    if partial.is_some() {
                        return Err(Error::Corrupt {
                            what: "two pages of the store claim to take new items",
                        });
                    }
                    partial = Some(index);
                }
            }
        }
        // New items go after the last item of the partial-open page, without a look at what
        // is there: if that space is not erased, close the page and open the next one (first,
        // so that a cut between the two writes leaves two partial pages, and this check runs
        // again at the next boot). The next page is the migration buffer, erased, unless a
        // cut came after it was opened here. When it is in use, a migration into the partial
        // page was cut: the crate's repair erases that page and redoes the migration before
        // anything else is written, so the damage is erased, not written over.
        if let Some(p) = dirty_partial {
            let next = (p + 1) % pages;
            let start = range.start + next as u32 * page;
            if !self.marker_set(start + page - w)? {
                if !self.marker_set(start)? {
                    self.write_marker(start)?;
                }
                self.write_marker(range.start + p as u32 * page + page - w)?;
                if let Some(slot) = open.get_mut(next) {
                    *slot = false;
                }
                partial = Some(next);
                report.dirty_free_pages += 1;
            }
        }
        // The pages in use form a chain: oldest closed page, ..., the partial-open page, then
        // the free (open) pages up to the oldest again. An open page inside the chain (a
        // damaged page erased above) would hide every older page from the store's searches:
        // mark it closed (an empty closed page) so the entries behind it stay readable.
        if let (Some(p), true) = (partial, counted == pages) {
            // The free pages after the partial-open one, then the oldest closed pages. A page
            // among the free ones whose markers read as closed but which holds nothing (right
            // after the partial page, or with a free page after it) is damage on an unused
            // page: erase it. Left closed, the crate would take it for the oldest page and
            // recycle the partial page's entries away on the next write. Closed pages holding
            // only removed items after the last free page are the oldest pages, as the crate
            // left them: they stay.
            let next = |i: usize| (i + 1) % pages;
            let (mut run, mut free_run, mut i) = (0, 0, next(p));
            while i != p && (open[i] || blank_closed[i]) {
                run += 1;
                if open[i] {
                    free_run = run;
                }
                i = next(i);
            }
            // No free page at all after the partial one: the first is the damaged one.
            let damaged = if free_run == 0 { run.min(1) } else { free_run };
            let mut i = next(p);
            for _ in 0..damaged {
                if !open[i] {
                    self.erase_page(range.start + i as u32 * page)?;
                    open[i] = true;
                    report.dirty_pages += 1;
                    report.pages_in_use -= 1;
                }
                i = next(i);
            }
            while i != p {
                if open[i] {
                    let start = range.start + i as u32 * page;
                    // End marker first: a cut between the two writes leaves a torn page
                    // (finished and bridged again at the next boot), never a second
                    // partial-open page.
                    self.write_marker(start + page - w)?;
                    self.write_marker(start)?;
                    report.holes_closed += 1;
                }
                i = (i + 1) % pages;
            }
        }
        // One full pass over the items: sequential-storage reports a region it cannot make
        // sense of (for example no open page at all) as corrupt.
        report.items = self.scan_items()?.0;
        report.damaged_items = headers.saturating_sub(report.items);
        Ok(report)
    }

    /// Walks the item headers of the page in use at `start`, in sequential-storage 8's layout
    /// (a header of data CRC `u32`, length `u16` and length CRC `u16` padded to the flash
    /// word, then key and value padded to the word; a data CRC of 0 marks a removed item).
    /// Returns the items not removed (intact or not) and where the free space starts: after
    /// the last item, when a blank header follows it or the words stepped over (`None`: the
    /// page is full). A header whose length does not fit the page or fails its length CRC is
    /// stepped over a word at a time, as the crate does; those words count as part of the
    /// free space, so damage there is found too. (The crate writes its next item at the first
    /// blank header it steps to: an erased hole inside the items, with items after it.)
    fn walk_page(&mut self, start: u32) -> Result<(usize, Option<u32>)> {
        let w = word::<F>() as u32;
        let overhead = Map::<F>::item_overhead_size();
        let end = start + F::ERASE_SIZE as u32 - w;
        let (mut at, mut items) = (start + w, 0);
        let mut free = at;
        while at + overhead <= end {
            let header = &mut self.buf.0[..overhead as usize];
            self.map.flash().0.read(at, header).map_err(flash_error)?;
            if header.iter().all(|&b| b == 0xFF) {
                return Ok((items, Some(free)));
            }
            let len = u32::from(u16::from_le_bytes([header[4], header[5]]));
            let next = at + overhead + len.next_multiple_of(w);
            let len_crc = u16::from_le_bytes([header[6], header[7]]);
            if next <= end && len_crc == length_crc(&header[4..6]) {
                items += usize::from(header[..4] != [0; 4]);
                at = next;
                free = next;
            } else {
                at += w;
            }
        }
        Ok((items, None))
    }

    /// True when the marker word at `at` counts as set (see [`MARKER_SET_ZERO_BITS`]).
    fn marker_set(&mut self, at: u32) -> Result<bool> {
        let marker = &mut self.buf.0[..word::<F>()];
        self.map.flash().0.read(at, marker).map_err(flash_error)?;
        Ok(zero_bits(marker) >= MARKER_SET_ZERO_BITS)
    }

    /// Programs the marker word at `at` (all bits cleared, as sequential-storage writes it).
    fn write_marker(&mut self, at: u32) -> Result<()> {
        let marker = &mut self.buf.0[..word::<F>()];
        marker.fill(0);
        self.map.flash().0.write(at, marker).map_err(flash_error)
    }

    fn erase_page(&mut self, start: u32) -> Result<()> {
        self.map.flash().0.erase(start, start + F::ERASE_SIZE as u32).map_err(flash_error)
    }

    /// True when every byte in `from..to` reads as erased.
    fn body_blank(&mut self, from: u32, to: u32) -> Result<bool> {
        let chunk = (WORK_LEN / word::<F>() * word::<F>()) as u32;
        let mut at = from;
        while at < to {
            let n = chunk.min(to - at);
            let bytes = &mut self.buf.0[..n as usize];
            self.map.flash().0.read(at, bytes).map_err(flash_error)?;
            if bytes.iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
            at += n;
        }
        Ok(true)
    }

    /// Erases the whole region: every entry is lost.
    pub fn format(&mut self) -> Result<()> {
        block_on(self.map.erase_all()).map_err(map_error)
    }

    /// Stores `value` under `key`, replacing any previous value. Returns once the item is
    /// durable in flash; if power is lost before that, the key keeps its old value or gets
    /// the new one, never anything else.
    pub fn put(&mut self, key: Key, value: &[u8]) -> Result<()> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::Invalid { what: "store value longer than MAX_VALUE_LEN" });
        }
        block_on(self.map.store_item(&mut self.buf.0, &key, &value)).map_err(map_error)
    }

    /// Copies the value of `key` into `out` and returns its length, or `None` when the key
    /// has no value. [`Error::BufferTooSmall`] when `out` is shorter than the value.
    pub fn get(&mut self, key: Key, out: &mut [u8]) -> Result<Option<usize>> {
        let found = block_on(self.map.fetch_item::<&[u8]>(&mut self.buf.0, &key)).map_err(map_error)?;
        match found {
            None => Ok(None),
            Some(value) => {
                let have = out.len();
                let dst =
                    out.get_mut(..value.len()).ok_or(Error::BufferTooSmall { need: value.len(), have })?;
                dst.copy_from_slice(value);
                Ok(Some(value.len()))
            }
        }
    }

    /// True when `key` has a value.
    pub fn contains(&mut self, key: Key) -> Result<bool> {
        let found = block_on(self.map.fetch_item::<&[u8]>(&mut self.buf.0, &key)).map_err(map_error)?;
        Ok(found.is_some())
    }

    /// Removes `key` (every stored version of it). Removing an absent key is not an error.
    pub fn remove(&mut self, key: Key) -> Result<()> {
        block_on(self.map.remove_item(&mut self.buf.0, &key)).map_err(map_error)
    }

    /// The live entry with the smallest key greater than `after` (the smallest of all when
    /// `after` is `None`): its key, with its value copied into `out` and its length. Walk all
    /// entries in key order by passing the last key back. Each call reads the whole region,
    /// so a full walk costs one pass per entry; nothing is allocated.
    pub fn next_after(&mut self, after: Option<Key>, out: &mut [u8]) -> Result<Option<(Key, usize)>> {
        let mut after = after;
        while let Some(key) = self.next_key_after(after)? {
            if let Some(len) = self.get(key, out)? {
                return Ok(Some((key, len)));
            }
            // Listed by the item scan but not readable by key (its newest version is
            // damaged and no older one is intact): skip it.
            after = Some(key);
        }
        Ok(None)
    }

    /// The smallest key greater than `after` among the intact items in flash.
    fn next_key_after(&mut self, after: Option<Key>) -> Result<Option<Key>> {
        let Self { map, buf, .. } = self;
        let mut items = block_on(map.fetch_all_items(&mut buf.0)).map_err(map_error)?;
        let mut best: Option<Key> = None;
        while let Some((key, _)) = block_on(items.next::<&[u8]>(&mut buf.0)).map_err(map_error)? {
            if after.is_none_or(|a| key > a) && best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        Ok(best)
    }

    /// The intact items in the region: their count and the flash bytes they occupy.
    fn scan_items(&mut self) -> Result<(usize, usize)> {
        let Self { map, buf, .. } = self;
        let overhead = Map::<F>::item_overhead_size() as usize;
        let mut items = block_on(map.fetch_all_items(&mut buf.0)).map_err(map_error)?;
        let (mut count, mut bytes) = (0, 0);
        while let Some((_, value)) = block_on(items.next::<&[u8]>(&mut buf.0)).map_err(map_error)? {
            count += 1;
            bytes += overhead + (KEY_LEN + value.len()).next_multiple_of(word::<F>());
        }
        Ok((count, bytes))
    }

    /// Entry count and space figures. Reads the whole region once per entry.
    pub fn stats(&mut self) -> Result<Stats> {
        let written_bytes = self.scan_items()?.1;
        let overhead = Map::<F>::item_overhead_size() as usize;
        let range = self.map.flash_range();
        let pages = ((range.end - range.start) as usize) / F::ERASE_SIZE;
        let capacity_bytes = (pages - 1) * (F::ERASE_SIZE - 2 * word::<F>());
        let mut stats = Stats { written_bytes, capacity_bytes, ..Stats::default() };
        let mut after = None;
        while let Some(key) = self.next_key_after(after)? {
            after = Some(key);
            let found = block_on(self.map.fetch_item::<&[u8]>(&mut self.buf.0, &key)).map_err(map_error)?;
            if let Some(value) = found {
                stats.entries += 1;
                stats.live_bytes += overhead + (KEY_LEN + value.len()).next_multiple_of(word::<F>());
            }
        }
        stats.free_bytes = capacity_bytes.saturating_sub(stats.live_bytes);
        Ok(stats)
    }

    /// What the boot check found when the store was opened.
    pub fn boot_report(&self) -> BootReport {
        self.boot
    }

    /// The flash region the store manages.
    pub fn range(&self) -> Range<u32> {
        self.map.flash_range()
    }

    /// The flash driver, to read the region (a host copies its image to a file after each
    /// change). Writing through it behind the store's back can corrupt the store.
    pub fn flash(&mut self) -> &mut F {
        &mut self.map.flash().0
    }

    /// Gives the flash driver back.
    pub fn into_flash(self) -> F {
        self.map.destroy().0 .0
    }
}
