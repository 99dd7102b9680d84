//! The console's knowledge in the host's storage (the page's localStorage): the chip's own
//! flash store over a RAM image, handed to the host's `save` whole after each change.

use ruvllm_esp32::console::{KnowledgeDetector, KnowledgeRag, KnowledgeStore};
use ruvllm_esp32::knowledge::{Learned, LoadReport};
use ruvllm_esp32::store::{RamFlash, Store, RAM_SECTOR};
use ruvllm_esp32::{Error, Result};

use crate::host;

/// Bytes of the knowledge image: 64 sectors, room for the console's whole knowledge (the size
/// of the native console's knowledge file).
pub const KNOWLEDGE_IMAGE_BYTES: usize = 64 * RAM_SECTOR;

/// A [`KnowledgeStore`] whose durable copy is whatever the host's `save` keeps.
pub struct BrowserKnowledge {
    store: Store<RamFlash<Vec<u8>>>,
    /// The image as last saved: what a failed save goes back to.
    saved: Vec<u8>,
}

impl BrowserKnowledge {
    /// The store in `saved` (an image `save` received earlier), or a blank one when `saved`
    /// is empty. A damaged image is an error: the console then runs without saving.
    pub fn open(saved: &[u8]) -> Result<Self> {
        let image = match saved.len() {
            0 => vec![0xFF; KNOWLEDGE_IMAGE_BYTES],
            KNOWLEDGE_IMAGE_BYTES => saved.to_vec(),
            _ => return Err(Error::Corrupt { what: "the saved knowledge has the wrong size" }),
        };
        let (mut store, _) = Store::open(RamFlash::new(image), 0..KNOWLEDGE_IMAGE_BYTES as u32)?;
        let saved = store.flash().bytes().to_vec();
        Ok(BrowserKnowledge { store, saved })
    }
}

impl KnowledgeStore for BrowserKnowledge {
    fn save_entry(&mut self, rag: &KnowledgeRag, slot: u16) -> Result<()> {
        self.store.save_entry(rag, slot)
    }

    fn save_learned(&mut self, detector: &KnowledgeDetector, learned: Learned) -> Result<()> {
        self.store.save_learned(detector, learned)
    }

    fn load(
        &mut self,
        rag: &mut KnowledgeRag,
        detector: &mut KnowledgeDetector,
    ) -> Result<(LoadReport, LoadReport)> {
        self.store.load(rag, detector)
    }

    /// Hands the image to the host; `Ok` only once the host kept it.
    fn flush(&mut self) -> Result<()> {
        let image = self.store.flash().bytes();
        if image == self.saved.as_slice() {
            return Ok(());
        }
        if !host::save(image) {
            return Err(Error::Storage {
                what: "the browser did not keep the knowledge (storage full or blocked); nothing changed",
            });
        }
        self.saved = image.to_vec();
        Ok(())
    }

    /// Drops every write since the last save: the image goes back to the saved one.
    fn revert(
        &mut self,
        _rag: &KnowledgeRag,
        _detector: &KnowledgeDetector,
        _slot: Option<u16>,
        _learned: Option<Learned>,
    ) {
        *self.store.flash() = RamFlash::new(self.saved.clone());
    }

    fn damaged_records(&self) -> usize {
        self.store.damaged_records()
    }
}
