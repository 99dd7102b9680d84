//! Models whose shapes split into several tensor-parallel parts (heads as wide as a
//! quantization group or wider, GQA, an FFN width that is not a multiple of 32), with
//! deterministic pseudo-random weights. Included by path from the engine's and the CLI's tests.
#![allow(dead_code)]

use ruvllm_esp32::convert::{HostLayer, HostModel, HostVocab, Quant};
use ruvllm_esp32::model::Config;

/// Deterministic values in [-scale, scale), plus `offset`.
fn noise(n: usize, seed: u32, scale: f32, offset: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            offset + scale * ((s >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
        })
        .collect()
}

/// A q8 image of `dim` wide, `heads` heads over `kv_heads` KV heads, `hidden` FFN rows, with a
/// byte vocabulary (every byte its own token, so the text is the tokens).
pub fn synthetic(dim: usize, hidden: usize, layers: usize, heads: usize, kv_heads: usize) -> Vec<u8> {
    let vocab = 3 + 256;
    let config = Config {
        dim,
        hidden_dim: hidden,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim: 0,
        vocab_size: vocab,
        seq_len: 96,
        shared_classifier: false,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let (d, h, kv) = (dim, hidden, config.kv_dim());
    let m = |n: usize, seed: u32| noise(n, seed, 0.15, 0.0);
    let layers = (0..layers as u32)
        .map(|i| HostLayer {
            attn_norm: noise(d, 10 * i, 0.2, 1.0),
            wq: m(d * d, 10 * i + 1),
            wk: m(kv * d, 10 * i + 2),
            wv: m(kv * d, 10 * i + 3),
            wo: m(d * d, 10 * i + 4),
            ffn_norm: noise(d, 10 * i + 5, 0.2, 1.0),
            w1: m(h * d, 10 * i + 6),
            w2: m(d * h, 10 * i + 7),
            w3: m(h * d, 10 * i + 8),
        })
        .collect();
    let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
    let host = HostModel {
        config,
        token_embd: noise(vocab * d, 99, 1.0, 0.0),
        layers,
        output_norm: noise(d, 98, 0.2, 1.0),
        output: Some(noise(vocab * d, 97, 0.5, 0.0)),
        vocab: Some(HostVocab { scores: vec![0.0; vocab], pieces, max_token_length: 6, bos: 1, eos: 2 }),
    };
    host.to_gguf(Quant::Q8).expect("converts")
}

/// 5 heads of 32 values (5 attention parts), FFN of 200 rows (7 parts, the last of 8 rows).
pub fn five_heads() -> Vec<u8> {
    synthetic(160, 200, 2, 5, 5)
}

/// GQA: 6 heads of 32 values over 3 KV heads (3 attention parts), FFN of 256 rows.
pub fn grouped() -> Vec<u8> {
    synthetic(192, 256, 2, 6, 3)
}
