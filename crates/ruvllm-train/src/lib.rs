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
