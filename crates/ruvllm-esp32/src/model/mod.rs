//! Model description and weights read in place from a GGUF image.

pub mod chips;
pub mod config;
pub mod weights;

pub use config::Config;
pub use weights::{
    Cut, Layer, Matrix, Model, Precision, RopeTable, ShardCut, CUT_FIRST_KEY, CUT_TOTAL_KEY, ROPE_FRAC,
    ROPE_KEY, SHARD_KEY,
};
