//! Text embeddings on the chip, without allocation: a text becomes a unit-length `[f32; D]`
//! whose cosine with another text's says how close their meanings are, for retrieval over a
//! [`MicroHNSW`](crate::vector::MicroHNSW) index or an exact scan.
//!
//! Two embedders:
//! - [`ModelEmbedder`]: the language model itself. It runs the integer-only forward pass
//!   ([`IntState`](crate::infer::IntState), what the ESP32-C3/C6 run) over the text's tokens and pools the final
//!   hidden states (after the output RMSNorm, what the classifier reads); `D` is the model's
//!   `dim`.
//! - [`NgramEmbedder`]: for chips that carry no model. Lower-cased character 3-grams of each
//!   word with word-boundary markers, plus the whole word, each hashed (FNV-1a) into signed
//!   buckets: a sparse random projection with no tables.
//!
//! Both return [`Error::Invalid`] for a text with no word (empty, only spaces or punctuation)
//! and never panic.

mod model;
mod ngram;
mod table;

#[cfg(test)]
mod tests;

pub use model::{ModelEmbedder, Pooling, MAX_TEXT_BYTES};
pub use ngram::{for_each_feature, table_row, NgramEmbedder};
#[cfg(feature = "alloc")]
pub use table::table_file;
pub use table::{TableEmbedder, TABLE_HEADER, TABLE_MAGIC};

use crate::error::{Error, Result};

/// Turns a text into a unit-length vector of `D` floats.
pub trait Embedder<const D: usize> {
    /// Writes the embedding of `text` into `out` (L2 norm 1). Errors leave `out` unspecified.
    fn embed(&mut self, text: &str, out: &mut [f32; D]) -> Result<()>;
}

/// Cosine similarity of two unit vectors: their dot product.
pub fn similarity<const D: usize>(a: &[f32; D], b: &[f32; D]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales `v` to L2 norm 1; [`Error::Invalid`] when it is zero (nothing to embed) or not
/// finite.
fn normalize(v: &mut [f32]) -> Result<()> {
    let n2: f32 = v.iter().map(|x| x * x).sum();
    if !(n2 > 0.0 && n2.is_finite()) {
        return Err(Error::Invalid { what: "text has nothing to embed (no word)" });
    }
    let inv = 1.0 / libm::sqrtf(n2);
    for x in v.iter_mut() {
        *x *= inv;
    }
    Ok(())
}

/// Whether `text` has at least one word character (a letter or digit).
pub(crate) fn has_word(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}
