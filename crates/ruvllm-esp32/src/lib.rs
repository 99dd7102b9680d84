//! ruvllm-esp32: llama-architecture language models, vector search and retrieval for ESP32
//! microcontrollers. `no_std`; the `alloc` feature adds conversion and writing of model files,
//! `std` adds run-time CPU feature detection for the host's fast kernels.
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
pub mod gguf;
pub mod infer;
pub mod kernels;
pub mod knowledge;
pub mod model;
pub mod packed;
pub mod partition;
pub mod prelude;
pub mod quant;
pub mod sample;
pub mod store;
pub mod tokenizer;
pub mod vector;

pub use error::{Error, Result};
