//! The names most programs need: `use ruvllm_esp32::prelude::*;`.
//!
//! ```
//! # let vector = [0.5f32; 64];
//! # let query: [f32; 64] = core::array::from_fn(|i| if i % 2 == 0 { 0.5 } else { 0.25 });
//! # let embedding: [f32; 64] = core::array::from_fn(|i| (i as f32 * 0.1).sin() + 0.1);
//! # let query_embedding: [f32; 64] = core::array::from_fn(|i| (i as f32 * 0.1).sin());
//! # let tokens = [1u32, 415, 79, 2];
//! # let float_vector: [f32; 64] = core::array::from_fn(|i| if i % 3 == 0 { -1.0 } else { 1.0 });
//! # let a = BinaryVector::from_f32(&embedding);
//! # let b = BinaryVector::from_f32(&query_embedding);
//! use ruvllm_esp32::prelude::*;
//! let config = HNSWConfig::default();
//! let mut index: MicroHNSW<64, 256> = MicroHNSW::new(config);
//! index.insert(&vector)?;
//! let results = index.search(&query, 5);
//! let mut rag: MicroRAG<64, 64> = MicroRAG::new(RAGConfig::default());
//! rag.add_knowledge("The sky is blue", &embedding)?;
//! let results = rag.retrieve(&query_embedding, 3);
//! let mut memory: SemanticMemory<64, 32> = SemanticMemory::new();
//! memory.add_memory(&embedding, &tokens, MemoryType::Factual)?;
//! let mut detector = AnomalyDetector::new(AnomalyConfig::default());
//! let result = detector.check(&embedding);
//! if result.is_anomaly { println!("Anomaly detected!"); }
//! let binary = BinaryVector::from_f32(&float_vector);
//! let distance = hamming_distance(&a, &b);
//! let pq = ProductQuantizer::new(PQConfig { dim: 64, num_subspaces: 8, num_centroids: 16 });
//! let code = pq.encode(&vector)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the defaults are: `AnomalyDetector::new` builds 64 dimensions and 32 references, and
//! its `check` is a plain verdict, not an anomaly until it has learned 2 normal embeddings
//! ([`crate::knowledge::anomaly`], *Before calibration*; `try_check` is the fallible form);
//! `BinaryVector::from_f32` packs 64 dimensions (`BinaryVector::<N>::pack` any other);
//! `SemanticMemory::new()` takes the default [`MemoryConfig`] (`with_config` another);
//! `ProductQuantizer::new` starts from a fixed default codebook ([`crate::vector::pq`], *The
//! default codebook*; `try_new` is the fallible form, `with_storage` and training beside it).

pub use crate::error::Error;
pub use crate::knowledge::{
    AnomalyConfig, AnomalyDetector, AnomalyResult, MemoryConfig, MemoryType, MicroRAG, RAGConfig,
    SemanticMemory,
};
pub use crate::vector::{
    hamming_distance, BinaryVector, HNSWConfig, MicroHNSW, PQConfig, ProductQuantizer, SearchResult,
};
