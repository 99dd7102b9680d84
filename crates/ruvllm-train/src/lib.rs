//! Training micro-models for ruvllm-esp32 on the CPU, in pure Rust.
//!
//! * [`corpus`]: a deterministic generator of simple stories and facts (the built-in model's
//!   training data, so nothing is downloaded).
//! * [`bpe`]: a byte-fallback BPE tokenizer trained on the corpus, exported in the engine's
//!   SentencePiece-style vocabulary.
//! * [`model`]: the llama architecture's forward and backward passes written out by hand for this
//!   one architecture (as llm.c does for GPT-2), with quantization-aware training, and AdamW.
//! * [`run`]: the training loop: batches, validation split, checkpoints and resume, loss curve.

pub mod answerer;
pub mod bpe;
pub mod chars;
pub mod corpus;
pub mod embedder;
pub mod model;
pub mod rng;
pub mod run;

/// The built-in model's image for tests: an 8-byte aligned copy (GGUF tensors are read in
/// place) and its length in bytes.
#[cfg(test)]
pub(crate) fn builtin_image() -> (Vec<u64>, usize) {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf")).unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    (words, bytes.len())
}
