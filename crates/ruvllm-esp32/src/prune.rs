//! Magnitude pruning of a model's transformer blocks, on the host before conversion
//! (`ruvllm-esp32 convert --prune S [--structured]`).
//!
//! - [`Pruning::Unstructured`]: in every attention and feed-forward matrix, the fraction
//!   `sparsity` of weights smallest in magnitude become zero (per matrix, so each keeps the same
//!   share). The matrices keep their shape: the saving is in what a sparse format or a
//!   compressor makes of the zeros, not in the dense kernels.
//! - [`Pruning::Structured`]: the fraction `sparsity` of each layer's feed-forward units are
//!   removed, those whose gate row, up row and down column have the smallest norm product. The
//!   result is a smaller model of the same architecture (`hidden_dim` shrinks), so every path
//!   (f32, q8, integer, the chips) runs it with less work and less flash, unchanged.
//!
//! - [`prune_heads`]: whole attention heads, the same number of key/value heads in every layer
//!   with all the query heads that read them (so grouped-query attention keeps one share of
//!   query heads per key/value head), those whose `wq`/`wk`/`wv` rows and `wo` columns have the
//!   smallest norm product. The head size stays, so the model then records it apart from `dim /
//!   n_heads` ([`Config::head_dim`](crate::model::Config::head_dim), GGUF's
//!   `llama.attention.key_length`).
//!
//! Embeddings, norms and the classifier are never pruned.

use alloc::vec::Vec;

use crate::convert::HostModel;
use crate::error::{Error, Result};

/// How [`prune`] removes weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pruning {
    /// Single weights, smallest magnitude first, in each matrix.
    Unstructured,
    /// Whole feed-forward units, the weakest in each layer.
    Structured,
}

/// What [`prune`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneReport {
    /// Weights of the transformer blocks' matrices before pruning.
    pub weights_before: usize,
    /// Of those, how many are zero (unstructured) or were removed (structured).
    pub pruned: usize,
    /// Feed-forward width before and after.
    pub hidden_before: usize,
    pub hidden_after: usize,
}

/// Prunes `model` in place to `sparsity` (0.0 ..= 0.95) of its block matrices' weights. A
/// sparsity outside that range, or one that would leave a layer without feed-forward units, is
/// [`Error::Invalid`] and leaves the model as it was.
pub fn prune(model: &mut HostModel, sparsity: f32, how: Pruning) -> Result<PruneReport> {
    if !(0.0..=MAX_SPARSITY).contains(&sparsity) {
        return Err(Error::Invalid { what: "sparsity outside 0-95%" });
    }
    model.validate()?;
    let hidden_before = model.config.hidden_dim;
    let weights_before = block_weights(model);
    match how {
        Pruning::Unstructured => {
            for l in &mut model.layers {
                for m in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w1, &mut l.w2, &mut l.w3] {
                    zero_smallest(m, sparsity);
                }
            }
        }
        Pruning::Structured => {
            let (d, h) = (model.config.dim, hidden_before);
            // Units kept: the rounding keeps at least one, and the same count in every layer
            // (the formats have one hidden_dim for all).
            let keep = h - (libm::round(h as f64 * f64::from(sparsity)) as usize).min(h - 1);
            for l in &mut model.layers {
                let norm = |v: &[f32]| libm::sqrtf(v.iter().map(|x| x * x).sum::<f32>());
                let mut score: Vec<(f32, usize)> = (0..h)
                    .map(|u| {
                        let down =
                            libm::sqrtf((0..d).map(|r| l.w2[r * h + u] * l.w2[r * h + u]).sum::<f32>());
                        (norm(&l.w1[u * d..(u + 1) * d]) * norm(&l.w3[u * d..(u + 1) * d]) * down, u)
                    })
                    .collect();
                // Strongest first; equal scores keep the lower index (deterministic).
                score.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let mut kept: Vec<usize> = score[..keep].iter().map(|&(_, u)| u).collect();
                kept.sort_unstable();
                l.w1 = kept.iter().flat_map(|&u| l.w1[u * d..(u + 1) * d].iter().copied()).collect();
                l.w3 = kept.iter().flat_map(|&u| l.w3[u * d..(u + 1) * d].iter().copied()).collect();
                l.w2 = (0..d)
                    .flat_map(|r| kept.iter().map(move |&u| (r, u)))
                    .map(|(r, u)| l.w2[r * h + u])
                    .collect();
            }
            model.config.hidden_dim = keep;
        }
    }
    model.validate()?;
    let pruned = match how {
        Pruning::Unstructured => model
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3])
            .map(|m| m.iter().filter(|&&x| x == 0.0).count())
            .sum(),
        Pruning::Structured => weights_before - block_weights(model),
    };
    Ok(PruneReport { weights_before, pruned, hidden_before, hidden_after: model.config.hidden_dim })
}

/// Removes `groups` key/value heads from every layer, with the query heads that read them (see
/// the module docs); 0 changes nothing. At least one must stay: removing all of them, or more
/// than there are, is [`Error::Invalid`] and leaves the model as it was.
pub fn prune_heads(model: &mut HostModel, groups: usize) -> Result<()> {
    model.validate()?;
    let c = model.config;
    if groups == 0 {
        return Ok(());
    }
    if groups >= c.n_kv_heads {
        return Err(Error::Invalid { what: "--prune-heads must leave at least one key/value head" });
    }
    let (d, hs, q) = (c.dim, c.head_size(), c.q_dim());
    let kv_mul = c.n_heads / c.n_kv_heads;
    let keep = c.n_kv_heads - groups;
    let norm = |v: &mut dyn Iterator<Item = f32>| libm::sqrtf(v.map(|x| x * x).sum::<f32>());
    for l in &mut model.layers {
        // Query heads j * kv_mul .. (j + 1) * kv_mul read key/value head j: rows of wq, columns of wo.
        let qrows = |j: usize| j * kv_mul * hs..(j + 1) * kv_mul * hs;
        let mut score: Vec<(f32, usize)> = (0..c.n_kv_heads)
            .map(|j| {
                let wq = norm(&mut l.wq[qrows(j).start * d..qrows(j).end * d].iter().copied());
                let wk = norm(&mut l.wk[j * hs * d..(j + 1) * hs * d].iter().copied());
                let wv = norm(&mut l.wv[j * hs * d..(j + 1) * hs * d].iter().copied());
                let wo = norm(
                    &mut (0..d)
                        .flat_map(|r| l.wo[r * q + qrows(j).start..r * q + qrows(j).end].iter().copied()),
                );
                (wq * wk * wv * wo, j)
            })
            .collect();
        // Strongest first; equal scores keep the lower index (deterministic).
        score.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut kept: Vec<usize> = score[..keep].iter().map(|&(_, j)| j).collect();
        kept.sort_unstable();
        let rows = |m: &[f32], per: usize| -> Vec<f32> {
            kept.iter().flat_map(|&j| m[j * per * d..(j + 1) * per * d].iter().copied()).collect()
        };
        l.wq = rows(&l.wq, kv_mul * hs);
        l.wk = rows(&l.wk, hs);
        l.wv = rows(&l.wv, hs);
        let cols = |r: usize| kept.iter().flat_map(move |&j| r * q + qrows(j).start..r * q + qrows(j).end);
        l.wo = (0..d).flat_map(cols).map(|i| l.wo[i]).collect();
    }
    model.config.head_dim = hs;
    model.config.n_heads = keep * kv_mul;
    model.config.n_kv_heads = keep;
    model.validate()
}

/// Highest sparsity [`prune`] accepts.
pub const MAX_SPARSITY: f32 = 0.95;

/// Weights in the transformer blocks' matrices.
fn block_weights(model: &HostModel) -> usize {
    let m = model.layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3]);
    m.map(|v| v.len()).sum()
}

/// Sets the `sparsity` fraction of `m`'s weights smallest in magnitude to zero (ties: the lower
/// index first, so the result does not depend on the sort).
fn zero_smallest(m: &mut [f32], sparsity: f32) {
    let n = libm::round(m.len() as f64 * f64::from(sparsity)) as usize;
    let mut order: Vec<usize> = (0..m.len()).collect();
    order.sort_by(|&a, &b| m[a].abs().total_cmp(&m[b].abs()).then(a.cmp(&b)));
    for &i in &order[..n.min(m.len())] {
        m[i] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::HostLayer;
    use crate::model::Config;

    /// A model small enough to check by hand: dim 4, hidden 6, one layer.
    fn tiny() -> HostModel {
        let (d, h) = (4usize, 6usize);
        let config = Config {
            dim: d,
            hidden_dim: h,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 2,
            head_dim: 0,
            vocab_size: 3,
            seq_len: 8,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        };
        let ramp = |n: usize, k: f32| {
            (0..n).map(|i| (i as f32 + 1.0) * k * if i % 2 == 0 { 1.0 } else { -1.0 }).collect()
        };
        let layer = HostLayer {
            attn_norm: vec![1.0; d],
            wq: ramp(d * d, 0.1),
            wk: ramp(d * d, 0.2),
            wv: ramp(d * d, 0.3),
            wo: ramp(d * d, 0.4),
            ffn_norm: vec![1.0; d],
            // Unit u's gate and up rows scale with u + 1, so unit 0 is the weakest.
            w1: (0..h * d).map(|i| (i / d + 1) as f32).collect(),
            w2: vec![1.0; d * h],
            w3: (0..h * d).map(|i| (i / d + 1) as f32).collect(),
        };
        HostModel {
            config,
            token_embd: vec![0.5; 3 * d],
            layers: vec![layer],
            output_norm: vec![1.0; d],
            output: None,
            vocab: None,
        }
    }

    #[test]
    fn unstructured_zeroes_the_smallest_share_of_each_matrix() {
        let mut m = tiny();
        let r = prune(&mut m, 0.5, Pruning::Unstructured).unwrap();
        let l = &m.layers[0];
        // wq holds ±0.1 ..= ±1.6: the 8 smallest in magnitude are the first 8.
        assert!(l.wq[..8].iter().all(|&x| x == 0.0) && l.wq[8..].iter().all(|&x| x != 0.0));
        assert_eq!(r.pruned, r.weights_before / 2);
        assert_eq!((r.hidden_before, r.hidden_after), (6, 6));
    }

    #[test]
    fn structured_removes_the_weakest_units_and_keeps_the_rest_exactly() {
        let mut m = tiny();
        let before = m.clone();
        let r = prune(&mut m, 0.5, Pruning::Structured).unwrap();
        assert_eq!((r.hidden_before, r.hidden_after, m.config.hidden_dim), (6, 3, 3));
        // Units 3, 4, 5 stay (the strongest), in order.
        let l = &m.layers[0];
        assert_eq!(l.w1, before.layers[0].w1[3 * 4..].to_vec());
        assert_eq!(l.w2.len(), 4 * 3);
        assert_eq!(r.pruned, 3 * 4 * 3);
        m.validate().unwrap();
    }

    #[test]
    fn sparsity_outside_the_range_changes_nothing() {
        let mut m = tiny();
        let before = m.clone();
        for bad in [-0.1, 0.96, 1.0, f32::NAN, f32::INFINITY] {
            assert!(prune(&mut m, bad, Pruning::Structured).is_err(), "{bad}");
            assert!(prune(&mut m, bad, Pruning::Unstructured).is_err(), "{bad}");
        }
        assert_eq!(m, before);
        // The top of the range still leaves a unit in every layer.
        prune(&mut m, MAX_SPARSITY, Pruning::Structured).unwrap();
        assert!(m.config.hidden_dim >= 1);
    }
}
