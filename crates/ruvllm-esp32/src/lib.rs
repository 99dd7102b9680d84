//! ruvllm-esp32: llama-architecture language models, vector search and retrieval for ESP32
//! microcontrollers. `no_std`, and without features no allocation either: what the firmware
//! links. [`prelude`] holds the names most programs need (its docs show them at work).
//!
//! # Features
//!
//! | Feature | What it adds |
//! |---|---|
//! | (none) | everything that runs on the chip: GGUF reading in place, the forward passes, tokenizer, sampler, vector search, knowledge stores, flash store, console |
//! | `alloc` | model conversion (`convert`), pruning (`prune`) and GGUF writing, owning conveniences (`ProductQuantizer::untrained`, `train`, `to_bytes`) |
//! | `std` | `alloc`, plus run-time CPU feature detection for the host's fast kernels |
//! | `host-test` | the std build for testing on the host: `std` under the name the published README uses |
//! | `federation` | `federation`: pipeline-parallel plans of a model's layers over several chips (what `ruvllm-esp32 cluster` writes), the wire protocol that runs them (postcard frames, a reliable link over `embedded-io-async`) and the pipeline stages |
//! | `wasm` | the set for `wasm32-unknown-unknown`: `alloc` without `std` (no threads, no CPU detection there); CI builds it for that target |
//! | `kernel-profile` | the instructions of each kernel of the integer forward pass, read from the chip's counter (`bench --chip esp32c3 --kernels`); not for shipped firmware |
//! | `full` | all of the above except `kernel-profile` (what docs.rs documents) |
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod console;
#[cfg(feature = "alloc")]
pub mod convert;
pub mod embed;
pub mod error;
#[cfg(feature = "federation")]
pub mod federation;
pub mod gguf;
pub mod infer;
pub mod kernels;
pub mod knowledge;
pub mod lora;
pub mod model;
pub mod packed;
pub mod partition;
pub mod prelude;
#[cfg(feature = "alloc")]
pub mod prune;
pub mod quant;
pub mod sample;
pub mod speculative;
pub mod store;
pub mod tokenizer;
pub mod vector;

pub use error::{Error, Result};
