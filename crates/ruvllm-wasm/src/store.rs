//! The console's knowledge in the host's storage (the page's localStorage): the chip's own
//! flash store over a RAM image ([`ImageKnowledge`]), handed to the host's `save` whole after
//! each change.

use ruvllm_esp32::console::{ImageKnowledge, ImageSink};
use ruvllm_esp32::store::RAM_SECTOR;
use ruvllm_esp32::{Error, Result};

use crate::host;

/// Bytes of the knowledge image: 64 sectors, room for the console's whole knowledge (the size
/// of the native console's knowledge file).
pub const KNOWLEDGE_IMAGE_BYTES: usize = 64 * RAM_SECTOR;

/// The host's `save` import.
pub struct HostSave;

impl ImageSink for HostSave {
    fn keep(&mut self, image: &[u8], _previous: &[u8]) -> Result<()> {
        if host::save(image) {
            Ok(())
        } else {
            Err(Error::Storage {
                what: "the browser did not keep the knowledge (storage full or blocked); nothing changed",
            })
        }
    }
}

/// The console's knowledge store, saved through the host.
pub type BrowserKnowledge = ImageKnowledge<HostSave>;

/// The store in `saved` (an image `save` received earlier), or a blank one when `saved` is
/// empty. A damaged image is an error: the console then runs without saving.
pub fn open(saved: &[u8]) -> Result<BrowserKnowledge> {
    let image = match saved.len() {
        0 => vec![0xFF; KNOWLEDGE_IMAGE_BYTES],
        KNOWLEDGE_IMAGE_BYTES => saved.to_vec(),
        _ => return Err(Error::Corrupt { what: "the saved knowledge has the wrong size" }),
    };
    ImageKnowledge::open(image, HostSave)
}
