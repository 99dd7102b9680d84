//! The backward pass's f32 recomputation against the integer forward pass it stands for.

use super::*;
use std::vec;
use std::vec::Vec;

/// The built-in model in an 8-byte aligned buffer (tensors are read in place).
fn builtin() -> Vec<u64> {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf")).unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    words
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f32 = b.iter().map(|y| y * y).sum();
    libm::sqrtf(diff / norm.max(1e-12))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb): (f32, f32) = (a.iter().map(|x| x * x).sum(), b.iter().map(|y| y * y).sum());
    dot / libm::sqrtf(na * nb).max(1e-12)
}

/// A trained adapter on every layer's wq and wv changes the integer pass's output, and the f32
/// recomputation of a layer (what the gradient is taken through) follows the integer pass as
/// closely with the adapters as without them: the change the adapters make agrees in direction
/// and size on both paths.
#[test]
fn wq_wv_adapters_change_the_integer_pass_and_the_float_recomputation_agrees() {
    let words = builtin();
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let model: Model<'_> = Model::from_gguf(bytes).unwrap();
    let c = model.config;
    let ctx = 32;
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let mut state = IntState::new(&model, &mut arena, ctx).unwrap();
    let all: Vec<usize> = (0..c.n_layers).collect();
    let sites = Sites::new(&c, &all, &[Target::Wq, Target::Wv]).unwrap();
    let mut t: std::boxed::Box<LoraTrainer<HOST_PARAMS>> = std::boxed::Box::new(LoraTrainer::EMPTY);
    t.reset(&c, LoraConfig::default(), sites).unwrap();
    // A phrase of the training set, and a few steps on it.
    let mut tokens = vec![0u32; 64];
    let mut work = vec![0u32; crate::tokenizer::WORK_PER_TOKEN * 64];
    let text = b"My dog Biscuit sleeps under the piano.";
    let n = crate::tokenizer::encode_with(&model.vocab, text, true, false, &mut tokens, &mut work).unwrap();
    tokens.truncate(n);
    let mut buf = vec![0f32; t.work_len(&model, n)];
    let before = t.loss(&model, &mut state, &tokens).unwrap();
    for _ in 0..4 {
        t.step_with(&model, &mut state, &tokens, &mut buf).unwrap();
    }
    let after = t.loss(&model, &mut state, &tokens).unwrap();
    assert!(after < before - 0.5, "the steps lowered the loss: {before} -> {after}");
    assert!(!t.adapter().changes_nothing());
    // Too small a work buffer is refused, nothing changed.
    let steps = t.steps();
    assert!(t.step_with(&model, &mut state, &tokens, &mut buf[..10]).is_err());
    assert_eq!(t.steps(), steps);

    let dims = Dims::of(&c);
    let zero = IntLora::<HOST_PARAMS>::zero(2, sites, dims).unwrap();
    let d = c.dim;
    let mut changed = false;
    for l in 0..c.n_layers - 1 {
        // The integer pass's residual stream entering layer l and l + 1, with and without the
        // adapters, for every position; the f32 recomputation of layer l from the first.
        let mut run = |lora: &IntLora<HOST_PARAMS>| -> (Vec<f32>, Vec<f32>, Vec<i32>) {
            let (mut x, mut y, mut keep) = (vec![0f32; n * d], vec![0f32; n * d], vec![0i32; d]);
            let mut logits = Vec::new();
            for (pos, &tok) in tokens.iter().enumerate() {
                state.forward_lora_keep(&model, tok, pos, lora.view(), l, &mut keep).unwrap();
                x[pos * d..(pos + 1) * d].iter_mut().zip(&keep).for_each(|(f, &v)| *f = real(v));
                let out = state.forward_lora_keep(&model, tok, pos, lora.view(), l + 1, &mut keep).unwrap();
                logits.extend_from_slice(out);
                y[pos * d..(pos + 1) * d].iter_mut().zip(&keep).for_each(|(f, &v)| *f = real(v));
            }
            (x, y, logits)
        };
        let (x0, y0, logits0) = run(&zero);
        let (x1, y1, logits1) = run(t.adapter());
        changed |= logits0 != logits1;
        let float = |w: &[f32], x: &[f32]| -> Vec<f32> {
            let mut scratch = vec![0f32; Buffers::len(&dims, c.n_heads, n)];
            let mut b = Buffers::carve(&mut scratch, &dims, c.n_heads, n);
            let f = Float { model: &model, w, rank: 2, sites, dims, t: n };
            let mut out = vec![0f32; n * d];
            f.layer(l, x, &mut b, Some(&mut out)).unwrap();
            out
        };
        let plain = float(&vec![0f32; HOST_PARAMS], &x0);
        let adapted = float(&t.w, &x1);
        let (e0, e1) = (rel(&plain, &y0), rel(&adapted, &y1));
        std::println!("layer {l}: f32 against integer {e0:.4} without adapters, {e1:.4} with");
        assert!(e0 < 0.05, "layer {l}: f32 and integer differ by {e0} without adapters");
        assert!(e1 < 2.0 * e0 + 0.01, "layer {l}: {e1} with adapters, {e0} without");
        // The adapters' change of the layer's output, on both paths.
        let df: Vec<f32> = adapted.iter().zip(&plain).map(|(a, b)| a - b).collect();
        let di: Vec<f32> = y1.iter().zip(&y0).map(|(a, b)| a - b).collect();
        std::println!("layer {l}: the adapters' change, cosine f32 / integer {:.4}", cosine(&df, &di));
        assert!(cosine(&df, &di) > 0.9, "layer {l}: cosine {}", cosine(&df, &di));
    }
    assert!(changed, "the wq/wv adapters changed no logit");
}

/// The backward pass of a layer against finite differences of its f32 forward pass, for a
/// loss linear in the layer's output (`sum g . out`): the gradient of every kind of adapter
/// (wq, wk, wv, wo, w1, w2, w3) and of the residual stream entering the layer.
#[test]
fn the_backward_pass_matches_finite_differences() {
    let words = builtin();
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let model: Model<'_> = Model::from_gguf(bytes).unwrap();
    let c = model.config;
    let (dims, n, l, d) = (Dims::of(&c), 6, 1, c.dim);
    let sites = Sites::new(&c, &[l], &Target::ALL).unwrap();
    let np = sites.params(&dims, 2);
    // Deterministic pseudo-random values in [-s, s].
    let mut seed = 7u64;
    let mut rnd = |s: f32| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * s
    };
    let mut w: Vec<f32> = (0..np).map(|_| rnd(0.1)).collect();
    let x: Vec<f32> = (0..n * d).map(|_| rnd(1.0)).collect();
    let g: Vec<f32> = (0..n * d).map(|_| rnd(1.0)).collect();
    let mut scratch = vec![0f32; Buffers::len(&dims, c.n_heads, n)];
    let loss = |w: &[f32], x: &[f32], scratch: &mut [f32]| -> f64 {
        let mut b = Buffers::carve(scratch, &dims, c.n_heads, n);
        let f = Float { model: &model, w, rank: 2, sites, dims, t: n };
        let mut out = vec![0f32; n * d];
        f.layer(l, x, &mut b, Some(&mut out)).unwrap();
        out.iter().zip(&g).map(|(o, g)| (o * g) as f64).sum()
    };
    let (mut grad, mut dx) = (vec![0f32; np], g.clone());
    {
        let mut b = Buffers::carve(&mut scratch, &dims, c.n_heads, n);
        let f = Float { model: &model, w: &w, rank: 2, sites, dims, t: n };
        f.layer(l, &x, &mut b, None).unwrap();
        f.back(l, &x, &mut b, &mut dx, &mut grad, true).unwrap();
    }
    let check = |what: &str, analytic: f32, plus: f64, minus: f64, eps: f32| {
        let numeric = ((plus - minus) / (2.0 * eps as f64)) as f32;
        let tol = 0.05 * numeric.abs().max(analytic.abs()) + 2e-3;
        assert!(
            (analytic - numeric).abs() <= tol,
            "{what}: backward {analytic}, finite differences {numeric}"
        );
    };
    // Parameters of every site (each site's A and B), a few each.
    let mut off = 0;
    for (_, t) in sites.iter() {
        let (i_n, o_m) = t.shape(&dims);
        let len = 2 * (i_n + o_m);
        for k in [0, 3, 2 * i_n - 1, 2 * i_n, 2 * i_n + 5, len - 1] {
            let i = off + k;
            let (keep, eps) = (w[i], 1e-2f32);
            w[i] = keep + eps;
            let plus = loss(&w, &x, &mut scratch);
            w[i] = keep - eps;
            let minus = loss(&w, &x, &mut scratch);
            w[i] = keep;
            check(&std::format!("{}.{} parameter {k}", l, t.name()), grad[i], plus, minus, eps);
        }
        off += len;
    }
    // The residual stream entering the layer, at the first, a middle and the last position.
    let mut xs = x.clone();
    for i in [0, 5, n * d / 2 + 3, n * d - 1] {
        let (keep, eps) = (xs[i], 1e-2f32);
        xs[i] = keep + eps;
        let plus = loss(&w, &xs, &mut scratch);
        xs[i] = keep - eps;
        let minus = loss(&w, &xs, &mut scratch);
        xs[i] = keep;
        check(&std::format!("input {i}"), dx[i], plus, minus, eps);
    }
}
