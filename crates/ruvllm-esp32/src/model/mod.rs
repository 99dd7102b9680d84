//! Model description and weights read in place from a GGUF image.

pub mod chips;
pub mod config;
pub mod weights;

pub use config::Config;
pub use weights::{Layer, Matrix, Model, Precision, RopeTable, ROPE_FRAC, ROPE_KEY};
