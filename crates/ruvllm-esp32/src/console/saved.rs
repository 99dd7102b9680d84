//! Where the console keeps its knowledge across restarts.
//!
//! [`KnowledgeStore`] is what the console calls after a change to its [`Knowledge`]: one
//! small object-safe trait, so the console holds a `&mut dyn KnowledgeStore` and stays free of
//! the flash driver's type. It is implemented once, for [`Store<F>`] (the chip's flash store,
//! through [`crate::knowledge::persist`]); a host wraps a `Store<RamFlash>` and writes its
//! image to a file in [`KnowledgeStore::flush`].
//!
//! Write-then-acknowledge: [`Knowledge::add_saved`] and [`Knowledge::forget_saved`] return
//! `Ok` only after every record of the change is durable and read back intact (`flush`
//! included); when a save fails they undo the change in RAM, put the store back as it was
//! ([`KnowledgeStore::revert`]), and return [`KnowledgeError::NotSaved`]: the console then
//! prints one `error:` line, and nothing is half-applied in RAM. On flash that keeps failing
//! the roll-back cannot reach it either: a record written before the failure may then come
//! back at the next boot, like any write whose acknowledgement a power cut prevented. A file
//! store drops the unsaved writes and leaves its file as it was.
//!
//! [`KnowledgeError::NotSaved`]: super::KnowledgeError::NotSaved

use core::fmt;

use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash};

use super::knowledge::{Knowledge, KnowledgeDetector, KnowledgeRag};
use crate::error::{Error, Result};
use crate::knowledge::persist::{
    load_adapter, load_detector, load_rag, save_adapter, save_detector_learned, save_rag_entry,
};
use crate::knowledge::{Learned, LoadReport};
use crate::store::Store;

/// Durable storage for a console's [`Knowledge`]. Every method returns `Ok` only once what it
/// wrote survives a power cut (or, for a store that batches, once [`Self::flush`] returns).
pub trait KnowledgeStore {
    /// Writes knowledge entry `slot` of `rag`, or removes its record when the slot is free.
    fn save_entry(&mut self, rag: &KnowledgeRag, slot: u16) -> Result<()>;
    /// Writes what one learn of `detector` changed (the reference `learned` names, then the
    /// detector's header; `Learned::Skipped`: the header only).
    fn save_learned(&mut self, detector: &KnowledgeDetector, learned: Learned) -> Result<()>;
    /// Rebuilds the empty `rag` and `detector` from the records: (entries, detector).
    fn load(
        &mut self,
        rag: &mut KnowledgeRag,
        detector: &mut KnowledgeDetector,
    ) -> Result<(LoadReport, LoadReport)>;
    /// Makes everything written since the last call durable (a store that writes through
    /// needs nothing: the default).
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// After a failed save, with the change already undone in RAM: puts the store back as it
    /// was. The default suits a store written in place (flash): it writes entry `slot`'s
    /// record and `learned`'s detector records again as RAM now has them, best effort (the
    /// save already failed). A store that keeps its last saved state (a file) drops the
    /// unsaved writes instead, so that nothing at all changed.
    fn revert(
        &mut self,
        rag: &KnowledgeRag,
        detector: &KnowledgeDetector,
        slot: Option<u16>,
        learned: Option<Learned>,
    ) {
        if let Some(slot) = slot {
            let _ = self.save_entry(rag, slot);
        }
        if let Some(learned) = learned {
            // After the undo an added reference is beyond the count: the header alone drops it.
            let back = match learned {
                Learned::Replaced(i) => Learned::Replaced(i),
                _ => Learned::Skipped,
            };
            let _ = self.save_learned(detector, back);
        }
        let _ = self.flush();
    }
    /// Keeps a MicroLoRA adapter file (`lora save`) durably, replacing the one kept before.
    fn save_adapter(&mut self, _file: &[u8]) -> Result<()> {
        Err(Error::Unsupported { what: "this store cannot keep an adapter" })
    }
    /// The adapter file kept by [`Self::save_adapter`], into `out`: its length, or `None`.
    fn load_adapter(&mut self, _out: &mut [u8]) -> Result<Option<usize>> {
        Ok(None)
    }
    /// Records the store found damaged when it was opened (unreadable, so never loaded):
    /// the restore line counts them with the corrupt records it skipped.
    fn damaged_records(&self) -> usize {
        0
    }
}

impl<F: NorFlash + MultiwriteNorFlash> KnowledgeStore for Store<F> {
    fn save_entry(&mut self, rag: &KnowledgeRag, slot: u16) -> Result<()> {
        save_rag_entry(self, rag, slot)
    }

    fn save_learned(&mut self, detector: &KnowledgeDetector, learned: Learned) -> Result<()> {
        save_detector_learned(self, detector, learned)
    }

    fn load(
        &mut self,
        rag: &mut KnowledgeRag,
        detector: &mut KnowledgeDetector,
    ) -> Result<(LoadReport, LoadReport)> {
        Ok((load_rag(self, rag)?, load_detector(self, detector)?))
    }

    fn damaged_records(&self) -> usize {
        self.boot_report().damaged_items
    }

    fn save_adapter(&mut self, file: &[u8]) -> Result<()> {
        save_adapter(self, file)
    }

    fn load_adapter(&mut self, out: &mut [u8]) -> Result<Option<usize>> {
        load_adapter(self, out)
    }
}

/// What [`Knowledge::restore`] loaded. Its `Display` is the boot line:
/// `knowledge: restored 5 entries, 5 detector references (1 corrupt record skipped)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    pub entries: LoadReport,
    pub detector: LoadReport,
    /// Records whose bytes no longer matched their checksums ([`KnowledgeStore::damaged_records`]).
    pub damaged: usize,
}

impl Restored {
    /// Records left out because they were damaged or could not be decoded.
    pub fn skipped_corrupt(&self) -> usize {
        self.entries.skipped_corrupt + self.detector.skipped_corrupt + self.damaged
    }
}

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let (n, r) = (self.entries.loaded, self.detector.loaded);
        write!(
            f,
            "knowledge: restored {n} entr{}, {r} detector reference{}",
            if n == 1 { "y" } else { "ies" },
            plural(r)
        )?;
        match self.skipped_corrupt() {
            0 => Ok(()),
            s => write!(f, " ({s} corrupt record{} skipped)", plural(s)),
        }
    }
}

/// The boot line for a knowledge region that could not be opened (`e`, e.g. the store's
/// [`Error::Corrupt`]): the console goes on with its knowledge in RAM only.
pub struct SavingOff(pub Error);

impl fmt::Display for SavingOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "knowledge: store unusable ({}); left as it is, saving is off (knowledge kept in RAM only)",
            self.0
        )
    }
}

impl Knowledge {
    /// Loads what `store` holds into this (empty) knowledge, entries at their saved ids.
    pub fn restore(&mut self, store: &mut dyn KnowledgeStore) -> Result<Restored> {
        if !self.is_empty() || self.references().0 != 0 {
            return Err(Error::Invalid { what: "restore needs an empty Knowledge" });
        }
        let (rag, detector) = self.parts_mut();
        let (entries, detector) = store.load(rag, detector)?;
        Ok(Restored { entries, detector, damaged: store.damaged_records() })
    }
}

/// Puts `store` back as it was after a failed save ([`KnowledgeStore::revert`]), with `k`
/// already undone in RAM.
pub(super) fn roll_back(
    store: &mut dyn KnowledgeStore,
    k: &mut Knowledge,
    slot: Option<u16>,
    learned: Option<Learned>,
) {
    let (rag, detector) = k.parts_mut();
    store.revert(rag, detector, slot, learned);
}

/// Where an [`ImageKnowledge`] keeps its image whole: a file on a host, the browser's storage.
#[cfg(feature = "alloc")]
pub trait ImageSink {
    /// Keeps `image` durably, `Ok` only once it is kept; `previous` is what was kept before
    /// (for a sink that has to put it back when keeping fails half way).
    fn keep(&mut self, image: &[u8], previous: &[u8]) -> Result<()>;
    /// A store error as this host's user should read it (default: as it is).
    fn user_error(&self, e: Error) -> Error {
        e
    }
}

/// A [`KnowledgeStore`] whose records live in a flash image in RAM (the chip's [`Store`]
/// over a [`RamFlash`](crate::store::RamFlash)), handed whole to its [`ImageSink`] at each
/// flush that changed it. A failed save drops every unsaved write: the image goes back to the
/// one last kept, so nothing at all changed.
#[cfg(feature = "alloc")]
pub struct ImageKnowledge<S> {
    store: Store<crate::store::RamFlash<alloc::vec::Vec<u8>>>,
    /// The image as last kept (with the boot check's repairs): what a failed save goes back to.
    saved: alloc::vec::Vec<u8>,
    sink: S,
}

#[cfg(feature = "alloc")]
impl<S: ImageSink> ImageKnowledge<S> {
    /// Mounts `image` after the store's boot check (repairs stay in RAM until the next save);
    /// [`Error::Corrupt`] when it cannot be used even after repair.
    pub fn open(image: alloc::vec::Vec<u8>, sink: S) -> Result<Self> {
        let len =
            u32::try_from(image.len()).map_err(|_| Error::Invalid { what: "knowledge image over 4 GiB" })?;
        let (mut store, _) = Store::open(crate::store::RamFlash::new(image), 0..len)?;
        let saved = store.flash().bytes().to_vec();
        Ok(ImageKnowledge { store, saved, sink })
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The image back to the one last kept.
    fn drop_unsaved(&mut self) {
        *self.store.flash() = crate::store::RamFlash::new(self.saved.clone());
    }

    /// What the store's boot check found and repaired.
    pub fn boot_report(&self) -> crate::store::BootReport {
        self.store.boot_report()
    }
}

#[cfg(feature = "alloc")]
impl<S: ImageSink> KnowledgeStore for ImageKnowledge<S> {
    fn save_entry(&mut self, rag: &KnowledgeRag, slot: u16) -> Result<()> {
        self.store.save_entry(rag, slot).map_err(|e| self.sink.user_error(e))
    }

    fn save_learned(&mut self, detector: &KnowledgeDetector, learned: Learned) -> Result<()> {
        self.store.save_learned(detector, learned).map_err(|e| self.sink.user_error(e))
    }

    fn load(
        &mut self,
        rag: &mut KnowledgeRag,
        detector: &mut KnowledgeDetector,
    ) -> Result<(LoadReport, LoadReport)> {
        self.store.load(rag, detector)
    }

    /// Hands the image to the sink when it changed since the last save.
    fn flush(&mut self) -> Result<()> {
        let image = self.store.flash().bytes();
        if image == self.saved.as_slice() {
            return Ok(());
        }
        self.sink.keep(image, &self.saved)?;
        self.saved = image.to_vec();
        Ok(())
    }

    /// Drops every write since the last save: the image goes back to the kept one.
    fn revert(
        &mut self,
        _rag: &KnowledgeRag,
        _detector: &KnowledgeDetector,
        _slot: Option<u16>,
        _learned: Option<Learned>,
    ) {
        self.drop_unsaved();
    }

    fn damaged_records(&self) -> usize {
        self.store.damaged_records()
    }

    /// Saved and kept, or nothing changed: a failed save goes back to the image last kept.
    fn save_adapter(&mut self, file: &[u8]) -> Result<()> {
        let saved = self.store.save_adapter(file).and_then(|()| self.flush());
        if saved.is_err() {
            self.drop_unsaved();
        }
        saved.map_err(|e| self.sink.user_error(e))
    }

    fn load_adapter(&mut self, out: &mut [u8]) -> Result<Option<usize>> {
        self.store.load_adapter(out)
    }
}
