//! The llama architecture's forward and backward passes, written out by hand for this one
//! architecture (as llm.c does for GPT-2), with quantization-aware training, and AdamW.
//!
//! # Parameter layout
//!
//! [`Params::data`] holds every trainable tensor, flat, in the order of
//! [`HostModel`] (matrices row-major `[out][in]`):
//!
//! | tensor | shape |
//! | --- | --- |
//! | `token_embd` (also the classifier) | `[vocab][dim]` |
//! | per layer `l`: `attn_norm` | `[dim]` |
//! | `wq` | `[dim][dim]` |
//! | `wk`, `wv` | `[kv_dim][dim]` each |
//! | `wo` | `[dim][dim]` |
//! | `ffn_norm` | `[dim]` |
//! | `w1` (gate), then `w2` (down, `[dim][hidden]`), then `w3` (up) | `[hidden][dim]` |
//! | `output_norm` | `[dim]` |
//!
//! [`Layout`] gives each tensor's range; [`Params::tensors`] lists them with their shapes.
//!
//! # Quantization-aware training
//!
//! [`Trainer`] runs its forward pass on [`project`]ed weights: every per-layer matrix row goes
//! through [`project_row`] of the chosen format, the token embedding (which is also the
//! classifier) through `project_row(Q8, ..)` whenever the format is not F32, norms unchanged. The
//! backward pass is the straight-through estimator: the gradient with respect to the projected
//! weights is the gradient applied to the latent weights.
//!
//! # The passes
//!
//! [`Trainer`] splits a batch over its threads in contiguous blocks of sequences; each thread
//! runs its sequences one at a time (forward, cross-entropy, backward) on activation buffers
//! allocated once, accumulating weight gradients in its own buffer, and the buffers are summed
//! in thread order: a given thread count always gives the same bits.
//!
//! * Matrix products go through `matrixmultiply`'s sgemm (row-major `[T][in] x [out][in]^T`,
//!   and the two transposed products of the backward pass) over one sequence's positions.
//! * Causal attention is fused per sequence and head: scores, softmax and the weighted sum
//!   row by row, never storing the `T x T` probabilities; the forward keeps each row's
//!   log-sum-exp, and the backward recomputes the probabilities from it in a single pass per
//!   query row that produces `dq` and accumulates `dk`, `dv`. Keys and values are kept
//!   transposed (`[kv_dim][T]`) so the position axis is the vector axis. On x86-64 with
//!   AVX-512 (head sizes 8, 16, 32) the kernels use 16-lane intrinsics and process the query
//!   heads that share a key/value head together; elsewhere the same blocked loops are
//!   written portably (AVX2 and generic builds).
//! * RoPE uses the engine's own table and rotation
//!   ([`ruvllm_esp32::kernels::reference::rope_table`] / `rope`), so positions match exactly.
//!
//! [`Trainer::profile`] reports where the time goes, per section.

mod kernels;
mod trainer;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use trainer::Trainer;

use crate::rng::Rng;
use ruvllm_esp32::convert::{HostLayer, HostModel};
use ruvllm_esp32::model::Config;
use ruvllm_esp32::quant::{project_row, WeightFormat};
use std::ops::Range;

/// Where one layer's tensors sit in [`Params::data`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerLayout {
    pub attn_norm: Range<usize>,
    pub wq: Range<usize>,
    pub wk: Range<usize>,
    pub wv: Range<usize>,
    pub wo: Range<usize>,
    pub ffn_norm: Range<usize>,
    pub w1: Range<usize>,
    pub w2: Range<usize>,
    pub w3: Range<usize>,
}

/// Where every tensor sits in [`Params::data`] (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub token_embd: Range<usize>,
    pub layers: Vec<LayerLayout>,
    pub output_norm: Range<usize>,
    /// Total number of parameters.
    pub len: usize,
}

/// One tensor of the layout: its name (llama2.c's), range and shape. Norms are `rows == 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub range: Range<usize>,
    pub rows: usize,
    pub cols: usize,
    /// A 2-D weight (weight decay applies; QAT projects it row by row).
    pub matrix: bool,
}

impl Layout {
    pub fn new(c: &Config) -> Layout {
        let (d, h, kv, v) = (c.dim, c.hidden_dim, c.kv_dim(), c.vocab_size);
        let q = c.q_dim();
        let mut at = 0;
        let mut take = |n: usize| {
            let r = at..at + n;
            at += n;
            r
        };
        let token_embd = take(v * d);
        let layers = (0..c.n_layers)
            .map(|_| LayerLayout {
                attn_norm: take(d),
                wq: take(q * d),
                wk: take(kv * d),
                wv: take(kv * d),
                wo: take(d * q),
                ffn_norm: take(d),
                w1: take(h * d),
                w2: take(d * h),
                w3: take(h * d),
            })
            .collect();
        let output_norm = take(d);
        Layout { token_embd, layers, output_norm, len: at }
    }

    /// Every tensor in storage order.
    pub fn tensors(&self, c: &Config) -> Vec<Tensor> {
        let (d, h, kv, v) = (c.dim, c.hidden_dim, c.kv_dim(), c.vocab_size);
        let t = |name: String, range: &Range<usize>, rows: usize, cols: usize| Tensor {
            name,
            range: range.clone(),
            rows,
            cols,
            matrix: rows > 1,
        };
        let mut out = vec![t("token_embd".into(), &self.token_embd, v, d)];
        for (i, l) in self.layers.iter().enumerate() {
            out.push(t(format!("{i}.attn_norm"), &l.attn_norm, 1, d));
            out.push(t(format!("{i}.wq"), &l.wq, c.q_dim(), d));
            out.push(t(format!("{i}.wk"), &l.wk, kv, d));
            out.push(t(format!("{i}.wv"), &l.wv, kv, d));
            out.push(t(format!("{i}.wo"), &l.wo, d, c.q_dim()));
            out.push(t(format!("{i}.ffn_norm"), &l.ffn_norm, 1, d));
            out.push(t(format!("{i}.w1"), &l.w1, h, d));
            out.push(t(format!("{i}.w2"), &l.w2, d, h));
            out.push(t(format!("{i}.w3"), &l.w3, h, d));
        }
        out.push(t("output_norm".into(), &self.output_norm, 1, d));
        out
    }
}

/// All trainable tensors of a model, flat (layout in the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub config: Config,
    pub data: Vec<f32>,
}

impl Params {
    /// Deterministic initialization: matrices normal(0, 0.02) (Box-Muller over splitmix64), the
    /// residual output projections (`wo`, `w2`) scaled by `1 / sqrt(2 n_layers)`, norms 1.
    pub fn init(config: &Config, seed: u64) -> Params {
        let layout = Layout::new(config);
        let mut data = vec![0.0f32; layout.len];
        let mut rng = Rng::new(seed ^ 0x05EE_D0F1_1A4A);
        let residual = 1.0 / (2.0 * config.n_layers as f64).sqrt();
        for t in layout.tensors(config) {
            let out = &mut data[t.range.clone()];
            if !t.matrix {
                out.fill(1.0);
                continue;
            }
            let std = if t.name.ends_with(".wo") || t.name.ends_with(".w2") { 0.02 * residual } else { 0.02 };
            for pair in out.chunks_mut(2) {
                let (u1, u2) = (rng.uniform(), rng.uniform());
                let r = (-2.0 * u1.ln()).sqrt();
                let a = 2.0 * std::f64::consts::PI * u2;
                pair[0] = (r * a.cos() * std) as f32;
                if pair.len() > 1 {
                    pair[1] = (r * a.sin() * std) as f32;
                }
            }
        }
        Params { config: *config, data }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.config)
    }

    /// Every tensor with its range and shape.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.layout().tensors(&self.config)
    }

    /// One flag per parameter: true for entries of 2-D weights (weight decay applies).
    pub fn is_matrix(&self) -> Vec<bool> {
        let mut m = vec![false; self.len()];
        for t in self.tensors() {
            if t.matrix {
                m[t.range].fill(true);
            }
        }
        m
    }

    /// The model for the engine's converter: vocab `None`, classifier shared (`output: None`).
    pub fn to_host(&self) -> HostModel {
        let l = self.layout();
        let g = |r: &Range<usize>| self.data[r.clone()].to_vec();
        let mut config = self.config;
        config.shared_classifier = true;
        HostModel {
            config,
            token_embd: g(&l.token_embd),
            layers: l
                .layers
                .iter()
                .map(|t| HostLayer {
                    attn_norm: g(&t.attn_norm),
                    wq: g(&t.wq),
                    wk: g(&t.wk),
                    wv: g(&t.wv),
                    wo: g(&t.wo),
                    ffn_norm: g(&t.ffn_norm),
                    w1: g(&t.w1),
                    w2: g(&t.w2),
                    w3: g(&t.w3),
                })
                .collect(),
            output_norm: g(&l.output_norm),
            output: None,
            vocab: None,
        }
    }

    /// Parameters of a host model; the classifier must be shared with the token embedding.
    pub fn from_host(m: &HostModel) -> Result<Params, String> {
        if !m.config.shared_classifier || m.output.is_some() {
            return Err("the trainer needs a classifier shared with the token embedding".into());
        }
        m.validate().map_err(|e| format!("invalid model: {e:?}"))?;
        let l = Layout::new(&m.config);
        let mut data = vec![0.0f32; l.len];
        let mut put = |r: &Range<usize>, v: &[f32]| data[r.clone()].copy_from_slice(v);
        put(&l.token_embd, &m.token_embd);
        for (t, h) in l.layers.iter().zip(&m.layers) {
            put(&t.attn_norm, &h.attn_norm);
            put(&t.wq, &h.wq);
            put(&t.wk, &h.wk);
            put(&t.wv, &h.wv);
            put(&t.wo, &h.wo);
            put(&t.ffn_norm, &h.ffn_norm);
            put(&t.w1, &h.w1);
            put(&t.w2, &h.w2);
            put(&t.w3, &h.w3);
        }
        put(&l.output_norm, &m.output_norm);
        Ok(Params { config: m.config, data })
    }

    /// The weights the forward pass of a [`Trainer`] in `format` computes with (see [`project`]).
    pub fn project(&self, format: WeightFormat) -> Params {
        let mut data = vec![0.0f32; self.len()];
        project(&self.config, format, &self.data, &mut data);
        Params { config: self.config, data }
    }
}

/// The format a tensor is projected with: the token embedding is int8 in every quantized
/// format, norms are never projected.
fn tensor_format(t: &Tensor, format: WeightFormat) -> Option<WeightFormat> {
    if !t.matrix {
        None
    } else if t.name == "token_embd" {
        Some(if format == WeightFormat::F32 { WeightFormat::F32 } else { WeightFormat::Q8 })
    } else {
        Some(format)
    }
}

/// `out` = the values QAT's forward pass uses for the latent weights `latent`: every matrix row
/// through [`project_row`] (the embedding as Q8 unless `format` is F32), norms copied.
pub fn project(config: &Config, format: WeightFormat, latent: &[f32], out: &mut [f32]) {
    let layout = Layout::new(config);
    assert_eq!(latent.len(), layout.len);
    assert_eq!(out.len(), layout.len);
    for t in layout.tensors(config) {
        let (src, dst) = (&latent[t.range.clone()], &mut out[t.range.clone()]);
        match tensor_format(&t, format) {
            None | Some(WeightFormat::F32) => dst.copy_from_slice(src),
            Some(f) => {
                for (s, d) in src.chunks_exact(t.cols).zip(dst.chunks_exact_mut(t.cols)) {
                    project_row(f, s, d);
                }
            }
        }
    }
}

/// The Euclidean norm of a gradient (accumulated in f64), for clipping.
pub fn grad_norm(g: &[f32]) -> f32 {
    g.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt() as f32
}

/// AdamW with bias correction and decoupled weight decay on 2-D weights only (not on norms).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Steps taken.
    pub t: u64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl AdamW {
    /// Zeroed moments for `n` parameters; beta1 0.9, beta2 0.95, eps 1e-8.
    pub fn new(n: usize, weight_decay: f32) -> AdamW {
        AdamW { m: vec![0.0; n], v: vec![0.0; n], t: 0, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay }
    }

    /// One update of `p` with gradient `g` at learning rate `lr`.
    pub fn step(&mut self, p: &mut Params, g: &[f32], lr: f32) {
        assert_eq!(p.len(), g.len());
        assert_eq!(p.len(), self.m.len());
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - (b1 as f64).powi(self.t as i32);
        let c2 = 1.0 - (b2 as f64).powi(self.t as i32);
        let (inv_c1, inv_c2) = ((1.0 / c1) as f32, (1.0 / c2) as f32);
        for t in p.tensors() {
            let decay = if t.matrix { 1.0 - lr * self.weight_decay } else { 1.0 };
            let r = t.range;
            let (w, g) = (&mut p.data[r.clone()], &g[r.clone()]);
            let (m, v) = (&mut self.m[r.clone()], &mut self.v[r]);
            for (((w, g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let mh = *m * inv_c1;
                let vh = *v * inv_c2;
                *w = *w * decay - lr * mh / (vh.sqrt() + self.eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny() -> Config {
        Config {
            dim: 16,
            hidden_dim: 24,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 0,
            vocab_size: 11,
            seq_len: 6,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    #[test]
    fn layout_counts_every_parameter_once() {
        let c = tiny();
        let l = Layout::new(&c);
        assert_eq!(l.len, c.n_params());
        let mut at = 0;
        for t in l.tensors(&c) {
            assert_eq!(t.range.start, at);
            assert_eq!(t.range.len(), t.rows * t.cols);
            at = t.range.end;
        }
        assert_eq!(at, l.len);
    }

    #[test]
    fn init_is_deterministic_and_host_round_trips() {
        let c = tiny();
        let p = Params::init(&c, 7);
        assert_eq!(p, Params::init(&c, 7));
        assert_ne!(p, Params::init(&c, 8));
        let back = Params::from_host(&p.to_host()).unwrap();
        assert_eq!(back, p);
        let l = p.layout();
        assert!(p.data[l.output_norm.clone()].iter().all(|v| *v == 1.0));
        let e = &p.data[l.token_embd.clone()];
        let std = (e.iter().map(|v| v * v).sum::<f32>() / e.len() as f32).sqrt();
        assert!((0.012..0.03).contains(&std), "{std}");
        let mask = p.is_matrix();
        assert!(mask[0] && !mask[l.layers[0].attn_norm.start]);
    }
}
