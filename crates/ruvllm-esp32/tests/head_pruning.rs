//! Attention heads removed (`prune::prune_heads`, `convert --prune-heads N`) from the built-in
//! model (8 query heads reading 4 key/value heads of 8 values): the image records the head size
//! apart from `dim / n_heads` (`llama.attention.key_length`), the loaders read it, and the float
//! and integer paths and their batch paths run the smaller attention. Removing a key/value head
//! with its query heads is the same function as zeroing those query heads' columns of `wo`: the
//! float path with the reference kernels gives that model's logits bit for bit. Removing none
//! changes no byte.
//!
//! `cargo test -p ruvllm-esp32 --features std --test head_pruning`
#![cfg(feature = "alloc")]

mod common;

use ruvllm_esp32::convert::{load_gguf, HostModel, Quant};
use ruvllm_esp32::infer::{Batch, IntBatch, IntState, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::prune::prune_heads;

fn builtin() -> HostModel {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    load_gguf(&std::fs::read(path).unwrap()).unwrap()
}

const TOKENS: [u32; 10] = [1, 300, 45, 77, 12, 400, 9, 250, 3, 60];

fn float_logits(image: &[u8]) -> Vec<Vec<u32>> {
    let img = common::Image::new(image);
    let m: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let mut a = vec![0f32; State::arena_len(&m, 16)];
    let mut st = State::new(&m, &mut a, 16, Kernels::REFERENCE).unwrap();
    TOKENS
        .iter()
        .enumerate()
        .map(|(p, &t)| st.forward(&m, t, p).unwrap().iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// The largest difference between the integer path's logits and the float path's (reference
/// kernels) on a q8 image over [`TOKENS`], and at how many positions their top token agrees.
fn int_vs_float(q8: &[u8]) -> (f32, usize) {
    let img = common::Image::new(q8);
    let m: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let mut a = vec![0i32; IntState::arena_len(&m, 16)];
    let mut st = IntState::new(&m, &mut a, 16).unwrap();
    let mut fa = vec![0f32; State::arena_len(&m, 16)];
    let mut fs = State::new(&m, &mut fa, 16, Kernels::REFERENCE).unwrap();
    let (mut worst, mut agree) = (0f32, 0);
    for (p, &t) in TOKENS.iter().enumerate() {
        let int: Vec<f32> = st.forward(&m, t, p).unwrap().iter().map(|v| *v as f32 / 65536.0).collect();
        let flt = fs.forward(&m, t, p).unwrap();
        let top = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        agree += usize::from(top(&int) == top(flt));
        worst = int.iter().zip(flt.iter()).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
    }
    (worst, agree)
}

#[test]
fn removing_no_head_changes_no_byte() {
    let base = builtin();
    let mut same = base.clone();
    prune_heads(&mut same, 0).unwrap();
    assert_eq!(same, base);
    for q in [Quant::F32, Quant::Q8] {
        let image = same.to_gguf(q).unwrap();
        assert_eq!(image, base.to_gguf(q).unwrap());
        let g = ruvllm_esp32::gguf::Gguf::parse(&image).unwrap();
        assert!(g.get("llama.attention.key_length").is_none(), "no head size key unless heads were removed");
    }
}

#[test]
fn removed_heads_compute_what_zeroed_output_columns_compute() {
    let base = builtin();
    let (d, hs, q) = (base.config.dim, base.config.head_size(), base.config.q_dim());
    for groups in 1..base.config.n_kv_heads {
        let mut pruned = base.clone();
        prune_heads(&mut pruned, groups).unwrap();
        let c = pruned.config;
        assert_eq!(
            (c.n_kv_heads, c.n_heads, c.head_size(), c.q_dim()),
            (4 - groups, 8 - 2 * groups, 8, 64 - 16 * groups)
        );
        // The same model with the removed heads' wo columns zeroed: which key/value heads
        // stayed is read from wk (its rows are copied whole).
        let mut masked = base.clone();
        for (l, (pl, ml)) in pruned.layers.iter().zip(masked.layers.iter_mut()).enumerate() {
            let kept: Vec<usize> = pl
                .wk
                .chunks_exact(hs * d)
                .map(|rows| base.layers[l].wk.chunks_exact(hs * d).position(|b| b == rows).unwrap())
                .collect();
            for j in (0..4).filter(|j| !kept.contains(j)) {
                for r in 0..d {
                    ml.wo[r * q + j * 2 * hs..r * q + (j + 1) * 2 * hs].fill(0.0);
                }
            }
        }
        let image = pruned.to_gguf(Quant::F32).unwrap();
        assert!(image.len() < masked.to_gguf(Quant::F32).unwrap().len());
        assert_eq!(
            float_logits(&image),
            float_logits(&masked.to_gguf(Quant::F32).unwrap()),
            "{groups} removed"
        );
        // Read back: the host loader gives the pruned model.
        let back = load_gguf(&image).unwrap();
        assert_eq!(back.config, c);
        assert_eq!(back.layers, pruned.layers);
        // q8 on the integer path: it runs the smaller attention, as far from the float path
        // on the same image as the unpruned model's integer path is from its float path.
        let q8 = pruned.to_gguf(Quant::Q8).unwrap();
        let (worst, agree) = int_vs_float(&q8);
        let (base_worst, base_agree) = int_vs_float(&base.to_gguf(Quant::Q8).unwrap());
        eprintln!("{groups} removed: integer vs float worst {worst}, top agrees {agree}/10 (unpruned {base_worst}, {base_agree}/10)");
        assert!(
            worst <= 2.0 * base_worst.max(0.25),
            "{groups} removed: {worst} against {base_worst} unpruned"
        );
        assert!(agree + 2 >= base_agree, "{groups} removed: top token agrees {agree} against {base_agree}");
        let img = common::Image::new(&q8);
        let m: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
        // The batch paths (speculative decoding's verification) give each position the logits a
        // single forward gives it, bit for bit.
        let mut a = vec![0i32; IntState::arena_len(&m, 16)];
        let mut st = IntState::new(&m, &mut a, 16).unwrap();
        let singles: Vec<Vec<i32>> =
            TOKENS.iter().enumerate().map(|(p, &t)| st.forward(&m, t, p).unwrap().to_vec()).collect();
        let mut a = vec![0i32; IntState::arena_len(&m, 16)];
        let mut many = IntState::new(&m, &mut a, 16).unwrap();
        let mut ba = vec![0i32; IntBatch::arena_len(&m, 8)];
        let mut batch = IntBatch::new(&m, &mut ba, 8).unwrap();
        many.forward_batch(&m, &mut batch, &TOKENS[..8], 0, true).unwrap();
        for (i, want) in singles.iter().take(8).enumerate() {
            assert_eq!(batch.logits(i), &want[..], "{groups} removed: integer batch, position {i}");
        }
        let mut fa = vec![0f32; State::arena_len(&m, 16)];
        let mut one = State::new(&m, &mut fa, 16, Kernels::REFERENCE).unwrap();
        let fsingles: Vec<Vec<f32>> =
            TOKENS.iter().enumerate().map(|(p, &t)| one.forward(&m, t, p).unwrap().to_vec()).collect();
        let mut fa = vec![0f32; State::arena_len(&m, 16)];
        let mut fmany = State::new(&m, &mut fa, 16, Kernels::REFERENCE).unwrap();
        let mut fb = vec![0f32; Batch::arena_len(&m, 8)];
        let mut fbatch = Batch::new(&m, &mut fb, 8).unwrap();
        fmany.forward_batch(&m, &mut fbatch, &TOKENS[..8], 0, true).unwrap();
        for (i, want) in fsingles.iter().take(8).enumerate() {
            assert_eq!(fbatch.logits(i), &want[..], "{groups} removed: float batch, position {i}");
        }
    }
    // At least one key/value head stays.
    let mut all = base.clone();
    assert!(prune_heads(&mut all, 4).is_err());
    assert_eq!(all, base);
}
