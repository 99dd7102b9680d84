//! The hyper-parameters of a llama-architecture model.

use crate::error::{Error, Result};

/// Limits that keep a malicious or corrupt header from asking for absurd memory. They are far
/// above anything a microcontroller (or this host tool) would run.
pub const MAX_DIM: usize = 1 << 16;
pub const MAX_LAYERS: usize = 256;
pub const MAX_VOCAB: usize = 1 << 20;
pub const MAX_SEQ_LEN: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Embedding width.
    pub dim: usize,
    /// Width of the SwiGLU hidden layer.
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than `n_heads`).
    pub n_kv_heads: usize,
    /// Values per head when a model's heads are not `dim / n_heads` wide (attention heads
    /// removed by `convert --prune-heads`: GGUF's `llama.attention.key_length`); 0: `dim /
    /// n_heads`, as in every llama2.c file.
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub seq_len: usize,
    /// The classifier reuses the token embedding table.
    pub shared_classifier: bool,
    pub norm_eps: f32,
    pub rope_theta: f32,
}

/// GGUF's head size keys, which llama.cpp writes for every model and this engine only for one
/// whose heads were removed (`convert --prune-heads`).
pub const KEY_LENGTH: &str = "llama.attention.key_length";
pub const VALUE_LENGTH: &str = "llama.attention.value_length";

/// [`Config::head_dim`] from [`KEY_LENGTH`] and [`VALUE_LENGTH`] (either may be absent): 0 when
/// both are, or when the size is `dim / n_heads` anyway. Keys and values of different sizes
/// are refused (this engine's attention reads both with one head size).
pub fn head_dim_from(key: Option<u32>, value: Option<u32>, dim: usize, n_heads: usize) -> Result<usize> {
    let hs = match (key, value) {
        (None, None) => return Ok(0),
        (Some(k), Some(v)) if k != v => {
            return Err(Error::Unsupported { what: "attention keys and values of different head sizes" })
        }
        (k, v) => k.or(v).unwrap_or(0) as usize,
    };
    if hs == 0 || hs > MAX_DIM {
        return Err(Error::Invalid { what: "llama.attention.key_length out of range" });
    }
    Ok(if n_heads > 0 && hs.checked_mul(n_heads) == Some(dim) { 0 } else { hs })
}

impl Config {
    pub fn head_size(&self) -> usize {
        if self.head_dim > 0 {
            self.head_dim
        } else {
            self.dim / self.n_heads.max(1)
        }
    }

    /// Width of the query and of the attention's output (`wq`'s rows, `wo`'s columns):
    /// `dim`, unless heads were removed.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_size()
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_size()
    }

    /// Rejects configurations that are inconsistent or absurd, before anything is sized from
    /// them.
    pub fn validate(&self) -> Result<()> {
        let ok_range = |v: usize, max: usize| v >= 1 && v <= max;
        if !ok_range(self.dim, MAX_DIM) || !ok_range(self.hidden_dim, 4 * MAX_DIM) {
            return Err(Error::Invalid { what: "model dimension out of range" });
        }
        if !ok_range(self.n_layers, MAX_LAYERS) {
            return Err(Error::Invalid { what: "layer count out of range" });
        }
        if !ok_range(self.vocab_size, MAX_VOCAB) {
            return Err(Error::Invalid { what: "vocabulary size out of range" });
        }
        if !ok_range(self.seq_len, MAX_SEQ_LEN) {
            return Err(Error::Invalid { what: "context length out of range" });
        }
        if self.n_heads == 0 || (self.head_dim == 0 && !self.dim.is_multiple_of(self.n_heads)) {
            return Err(Error::Invalid { what: "dim is not a multiple of the head count" });
        }
        if self.head_dim > MAX_DIM || (self.n_heads as u64) * (self.head_size() as u64) > MAX_DIM as u64 {
            return Err(Error::Invalid { what: "head size or head count out of range" });
        }
        if !self.head_size().is_multiple_of(2) {
            return Err(Error::Invalid { what: "head size must be even for RoPE" });
        }
        if self.n_kv_heads == 0
            || self.n_kv_heads > self.n_heads
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return Err(Error::Invalid { what: "head count is not a multiple of the KV head count" });
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(Error::Invalid { what: "RMSNorm epsilon out of range" });
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(Error::Invalid { what: "RoPE base out of range" });
        }
        // Nothing in a file bounds the context length (an ak42 checkpoint stores no RoPE table),
        // yet the RoPE table, the KV cache and the arenas are sized from it: a table larger than
        // the weights means a damaged header, refused before anything is allocated.
        if (self.seq_len as u64) * (self.head_size() as u64) > self.params() {
            return Err(Error::Invalid {
                what: "context length: its RoPE table (context x head size) would outgrow the weights (damaged header?)",
            });
        }
        Ok(())
    }

    /// Number of parameters (the classifier counted once when shared).
    pub fn n_params(&self) -> usize {
        self.params() as usize
    }

    /// [`Config::n_params`] in u64, where the limits above cannot make it overflow (a 32-bit
    /// chip's usize could, before `validate` ran).
    fn params(&self) -> u64 {
        let (d, h, kv) = (self.dim as u64, self.hidden_dim as u64, self.kv_dim() as u64);
        let q = self.q_dim() as u64;
        let per_layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * h;
        let vocab = self.vocab_size as u64 * d;
        let cls = if self.shared_classifier { 0 } else { vocab };
        vocab + self.n_layers as u64 * per_layer + d + cls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn stories260k() -> Config {
        Config {
            dim: 64,
            hidden_dim: 172,
            n_layers: 5,
            n_heads: 8,
            n_kv_heads: 4,
            head_dim: 0,
            vocab_size: 512,
            seq_len: 512,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    #[test]
    fn stories260k_parameter_count_matches_its_documentation() {
        assert_eq!(stories260k().n_params(), 260_032);
        stories260k().validate().unwrap();
    }

    #[test]
    fn absurd_dimensions_are_rejected() {
        let mut c = stories260k();
        c.n_kv_heads = 3;
        assert!(c.validate().is_err());
        let mut c = stories260k();
        c.dim = usize::MAX;
        assert!(c.validate().is_err());
        let mut c = stories260k();
        c.n_layers = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn head_size_keys_give_a_head_dim_only_when_it_differs() {
        assert_eq!(head_dim_from(None, None, 64, 8).unwrap(), 0);
        // llama.cpp writes the keys for every model: dim / n_heads is the default.
        assert_eq!(head_dim_from(Some(8), Some(8), 64, 8).unwrap(), 0);
        assert_eq!(head_dim_from(Some(8), None, 64, 6).unwrap(), 8);
        assert!(head_dim_from(Some(8), Some(16), 64, 6).is_err());
        assert!(head_dim_from(Some(0), None, 64, 6).is_err());
        assert!(head_dim_from(Some(u32::MAX), None, 64, 6).is_err());
        let mut c = stories260k();
        (c.n_heads, c.n_kv_heads, c.head_dim) = (6, 3, 8);
        c.validate().unwrap();
        assert_eq!((c.head_size(), c.q_dim(), c.kv_dim()), (8, 48, 24));
        c.head_dim = 7;
        assert!(c.validate().is_err(), "an odd head size");
        (c.n_heads, c.head_dim) = (1 << 15, 1 << 15);
        assert!(c.validate().is_err(), "query wider than the limits");
    }

    #[test]
    fn a_context_whose_rope_table_outgrows_the_weights_is_refused() {
        let mut c = stories260k();
        c.seq_len = 32_768; // 32768 x 8 = 262,144 table values > 260,032 weights
        assert!(matches!(c.validate(), Err(Error::Invalid { .. })));
        c.seq_len = 32_000;
        c.validate().unwrap();
    }
}
