//! Vector search without allocation: a fixed-capacity HNSW graph (`hnsw`), 1-bit sign vectors
//! (`binary`), product quantization (`pq`) and the distance functions they share (`metric`).

pub mod binary;
pub mod hnsw;
pub mod metric;
pub mod pq;

pub use binary::{hamming_distance, BinaryVector};
pub use hnsw::{Binary, HNSWConfig, MicroHNSW, SearchResult, Storage, F32, I8};
pub use metric::Metric;
pub use pq::{PQConfig, ProductQuantizer};
