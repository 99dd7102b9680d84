//! A dropped model file (or the built-in model) as the integer engine's image.

use ruvllm_esp32::convert::{self, Quant};
use ruvllm_esp32::gguf::Gguf;

/// The project's built-in model (the native CLI's, crates/ruvllm-cli/data/default.gguf).
pub static BUILTIN_MODEL: &[u8] = include_bytes!("../../ruvllm-cli/data/default.gguf");

/// Largest model file taken: converting one holds the file, its f32 weights and the image at
/// once, which for larger files outgrows what browsers give a page.
pub const MAX_MODEL_BYTES: usize = 128 << 20;

/// A model image, 8-byte aligned for reading in place.
#[derive(Debug)]
pub struct Image {
    words: Box<[u64]>,
    len: usize,
}

impl Image {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The image's bytes, borrowed for as long as the words do not move (a box's never do).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len <= words.len() * 8` (see `aligned`), and u8 has no alignment needs.
        unsafe { core::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }
}

/// Magic of llama2.c's versioned exports ("ak42", little-endian u32 0x616b3432).
const AK42: [u8; 4] = 0x616b_3432u32.to_le_bytes();

const NOT_A_MODEL: &str =
    "this file is not a model: drop a GGUF file (.gguf), or a llama2.c model .bin together with its tokenizer .bin";

/// The engine image of `file` (any llama GGUF, or a llama2.c checkpoint with `tokenizer`),
/// 8-byte aligned for reading in place. An image of this engine that the integer path runs is
/// used as it is (its checksum verified); anything else is converted to q8. Errors are one
/// line for the user.
pub fn model_image(file: &[u8], tokenizer: Option<&[u8]>) -> Result<Image, String> {
    if file.len() > MAX_MODEL_BYTES {
        return Err(format!(
            "the model is {} MiB; this page runs models up to {} MiB: choose a smaller one",
            file.len() >> 20,
            MAX_MODEL_BYTES >> 20
        ));
    }
    let mut host = if file.starts_with(b"GGUF") {
        let g = Gguf::parse(file).map_err(|e| format!("not a usable GGUF file: {e}"))?;
        // A damaged image is refused whatever happens next; another tool's GGUF has no checksum.
        g.verify_checksum().map_err(|e| format!("the model file is damaged: {e}"))?;
        let ready = g.get("ruvllm.tokenizer.index").is_some()
            && g.get_str("ruvllm.quant") == Ok("q8")
            && g.get("ruvllm.rope").is_some();
        if ready && tokenizer.is_none() {
            return aligned(file);
        }
        convert::load_gguf(file).map_err(|e| format!("this GGUF cannot be run: {e}"))?
    } else if file.starts_with(&AK42) || tokenizer.is_some() {
        convert::load_llama2c(file).map_err(|e| format!("not a llama2.c model: {e}"))?
    } else {
        return Err(NOT_A_MODEL.to_string());
    };
    if let Some(tok) = tokenizer {
        let vocab = convert::load_tokenizer_bin(tok, host.config.vocab_size)
            .map_err(|e| format!("the tokenizer file: {e}"))?;
        host.vocab = Some(vocab);
    } else if host.vocab.is_none() {
        return Err("a llama2.c model carries no tokenizer: drop its tokenizer .bin together with it".into());
    }
    let image = host.to_gguf(Quant::Q8).map_err(|e| format!("converting the model to q8: {e}"))?;
    aligned(&image)
}

/// `bytes` copied into 8-byte words (the engine reads the image's tensors in place).
fn aligned(bytes: &[u8]) -> Result<Image, String> {
    let words = bytes.len().div_ceil(8);
    let mut v: Vec<u64> = Vec::new();
    v.try_reserve_exact(words).map_err(|_| crate::too_large(words * 8))?;
    v.resize(words, 0);
    for (w, chunk) in v.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_ne_bytes(b);
    }
    Ok(Image { words: v.into_boxed_slice(), len: bytes.len() })
}
