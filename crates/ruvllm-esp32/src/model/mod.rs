//! Model description and weights read in place from a GGUF image.

pub mod config;

pub use config::Config;
