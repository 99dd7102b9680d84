//! Knowledge stores on top of the vector code, without allocation: retrieval of short texts by
//! embedding ([`MicroRAG`]), a memory of token sequences ranked by similarity, recency and
//! importance ([`SemanticMemory`]), a kNN novelty detector ([`AnomalyDetector`]) and a score of
//! how much a text looks like language at all ([`language`]).
//!
//! Every store keeps its vectors as int8 ([`crate::vector::I8`]: `DIM + 4` bytes a vector) and
//! compares them by cosine; every store is one fixed-size value whose memory is
//! `size_of::<Self>()` (`ram_bytes()`). Embeddings must have exactly `DIM` finite values and
//! must not be all zero (a zero vector has no direction, so no cosine): anything else is an
//! [`Error::Invalid`], never a panic.

pub mod anomaly;
pub mod answer;
pub mod answer_type;
pub mod chars;
pub mod language;
pub mod lexical;
pub mod memory;
pub mod persist;
pub mod rag;
pub mod word_match;

pub use anomaly::{AnomalyConfig, AnomalyDetector, AnomalyPrior, AnomalyResult, Learned, PRIOR_COUNTS};
pub use language::{LanguageCalibration, TokenStats};
pub use memory::{Evicted, MemoryConfig, MemoryType, Recalled, SemanticMemory, Stored};
pub use persist::LoadReport;
pub use rag::{MicroRAG, RAGConfig, Retrieved};
pub use word_match::QuestionWords;

use crate::error::{Error, Result};
use crate::vector::hnsw::{I8Query, I8Vector, Storage};
use crate::vector::{Metric, I8};

/// The words of `text`: runs of letters and digits (anything else separates them). The word
/// match and the answer type read texts this way.
pub(crate) fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

/// Most results one retrieval or recall returns.
pub const MAX_RESULTS: usize = crate::vector::hnsw::MAX_K;

/// Checks an embedding: exactly `dim` finite values, not all zero.
pub(crate) fn check_embedding(v: &[f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(Error::Invalid { what: "embedding length differs from the store dimension" });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::Invalid { what: "embedding holds NaN or infinity" });
    }
    if v.iter().all(|&x| x == 0.0) {
        return Err(Error::Invalid { what: "embedding is all zero (no direction for cosine)" });
    }
    Ok(())
}

/// int8 encoding of a checked embedding.
pub(crate) fn encode<const DIM: usize>(v: &[f32]) -> I8Vector<DIM> {
    <I8 as Storage<DIM>>::encode(v)
}

/// A checked query prepared for int8 distances.
pub(crate) fn prepare<const DIM: usize>(v: &[f32]) -> I8Query<DIM> {
    <I8 as Storage<DIM>>::prepare(v)
}

/// Cosine distance `1 - cos` (0..=2) between a prepared query and a stored vector.
pub(crate) fn query_distance<const DIM: usize>(q: &I8Query<DIM>, e: &I8Vector<DIM>) -> f32 {
    <I8 as Storage<DIM>>::query_distance(Metric::Cosine, q, e)
}

/// Cosine distance between two stored vectors.
pub(crate) fn distance<const DIM: usize>(a: &I8Vector<DIM>, b: &I8Vector<DIM>) -> f32 {
    <I8 as Storage<DIM>>::distance(Metric::Cosine, a, b)
}
