//! Sliding-window attention through a ring-buffer cache (`State::sliding`): the same numbers as
//! full attention while the window holds every position, the numbers of an independent
//! windowed forward pass after it, and positions far past the model's context in the RAM of
//! the window.
#![cfg(feature = "alloc")]

mod common;

use ruvllm_esp32::convert::{load_llama2c, load_tokenizer_bin, Quant};
use ruvllm_esp32::infer::{IntState, State, Step};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::{Matrix, Model};

fn builtin() -> common::Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    common::Image::new(&std::fs::read(path).unwrap())
}

fn stories_f32() -> Option<common::Image> {
    let model = common::read_shared("models/stories260K.bin")?;
    let tok = common::read_shared("models/tok512.bin")?;
    let mut m = load_llama2c(&model).expect("stories260K.bin loads");
    m.vocab = Some(load_tokenizer_bin(&tok, m.config.vocab_size).expect("tok512.bin loads"));
    Some(common::Image::new(&m.to_gguf(Quant::F32).unwrap()))
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| (i * 37 % 500) as u32 + 3).collect()
}

#[test]
fn a_window_that_holds_every_position_is_full_attention() {
    let img = builtin();
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let n = 64;
    let mut a = vec![0f32; State::arena_len(&model, n)];
    let mut b = a.clone();
    let mut full = State::new(&model, &mut a, n, Kernels::detect()).unwrap();
    let mut ring = State::sliding(&model, &mut b, n, Kernels::detect()).unwrap();
    for (pos, &t) in tokens(n).iter().enumerate() {
        let x: Vec<u32> = full.forward(&model, t, pos).unwrap().iter().map(|v| v.to_bits()).collect();
        let y: Vec<u32> = ring.forward(&model, t, pos).unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(x, y, "position {pos}");
    }
}

/// An f32 model's forward pass written out plainly, attention over the last `window`
/// positions in their natural order: the reference the ring is checked against.
struct Reference<'m> {
    model: &'m Model<'m>,
    window: usize,
    keys: Vec<Vec<Vec<f32>>>,
    values: Vec<Vec<Vec<f32>>>,
}

fn w<'a>(m: &Matrix<'a>) -> &'a [f32] {
    match *m {
        Matrix::F32 { w, .. } => w,
        _ => panic!("the reference reads f32 models"),
    }
}

fn matvec(m: &Matrix<'_>, x: &[f32]) -> Vec<f32> {
    w(m).chunks_exact(x.len()).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

fn rmsnorm(x: &[f32], g: &[f32], eps: f32) -> Vec<f32> {
    let ss = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    x.iter().zip(g).map(|(v, g)| v * inv * g).collect()
}

fn rope(v: &mut [f32], pos: usize, head_size: usize, theta: f32) {
    for head in v.chunks_exact_mut(head_size) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let angle = pos as f32 / theta.powf((2 * i) as f32 / head_size as f32);
            let (c, s) = (angle.cos(), angle.sin());
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

impl<'m> Reference<'m> {
    fn forward(&mut self, token: u32, pos: usize) -> Vec<f32> {
        let c = &self.model.config;
        let (hs, kv_mul) = (c.head_size(), c.n_heads / c.n_kv_heads);
        let d = c.dim;
        let mut x = w(&self.model.token_embd)[token as usize * d..(token as usize + 1) * d].to_vec();
        for (l, layer) in self.model.layers.iter().enumerate() {
            let xb = rmsnorm(&x, layer.attn_norm, c.norm_eps);
            let mut q = matvec(&layer.wq, &xb);
            let mut k = matvec(&layer.wk, &xb);
            rope(&mut q, pos, hs, c.rope_theta);
            rope(&mut k, pos, hs, c.rope_theta);
            self.keys[l].push(k);
            self.values[l].push(matvec(&layer.wv, &xb));
            let from = (pos + 1).saturating_sub(self.window);
            let mut out = vec![0f32; d];
            for h in 0..c.n_heads {
                let kv = (h / kv_mul) * hs;
                let qh = &q[h * hs..(h + 1) * hs];
                let scores: Vec<f32> = (from..=pos)
                    .map(|p| {
                        qh.iter().zip(&self.keys[l][p][kv..kv + hs]).map(|(a, b)| a * b).sum::<f32>()
                            / (hs as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = e.iter().sum();
                for (p, e) in (from..=pos).zip(&e) {
                    for (o, v) in out[h * hs..(h + 1) * hs].iter_mut().zip(&self.values[l][p][kv..kv + hs]) {
                        *o += e / total * v;
                    }
                }
            }
            for (a, b) in x.iter_mut().zip(matvec(&layer.wo, &out)) {
                *a += b;
            }
            let xb = rmsnorm(&x, layer.ffn_norm, c.norm_eps);
            let (h1, h3) = (matvec(&layer.w1, &xb), matvec(&layer.w3, &xb));
            let h: Vec<f32> = h1.iter().zip(&h3).map(|(a, b)| a / (1.0 + (-a).exp()) * b).collect();
            for (a, b) in x.iter_mut().zip(matvec(&layer.w2, &h)) {
                *a += b;
            }
        }
        matvec(&self.model.output, &rmsnorm(&x, self.model.output_norm, c.norm_eps))
    }
}

#[test]
fn the_ring_computes_windowed_attention() {
    let Some(img) = stories_f32() else { return };
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let window = 16;
    let layers = model.config.n_layers;
    let mut reference =
        Reference { model: &model, window, keys: vec![vec![]; layers], values: vec![vec![]; layers] };
    let mut arena = vec![0f32; State::arena_len(&model, window)];
    let mut ring = State::sliding(&model, &mut arena, window, Kernels::REFERENCE).unwrap();
    let mut worst = 0f32;
    for (pos, &t) in tokens(80).iter().enumerate() {
        let want = reference.forward(t, pos);
        let got = ring.forward(&model, t, pos).unwrap();
        let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
        for (a, b) in got.iter().zip(&want) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    // Both run the same arithmetic in another order (and libm against std for exp, cos, sin).
    assert!(worst < 1e-4, "largest difference {worst} of the logits' range");
}

#[test]
fn ten_thousand_positions_run_in_the_ram_of_the_window() {
    let img = builtin();
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let (window, n) = (128, 10_000);
    assert!(n > model.config.seq_len);
    let len = State::arena_len(&model, window);
    let mut arena = vec![0f32; len];
    let mut ring = State::sliding(&model, &mut arena, window, Kernels::detect()).unwrap();
    assert_eq!(ring.capacity(), usize::MAX);
    // Greedy, the model's own tokens fed back (a BOS starts the next story, as in training).
    let mut token = model.vocab.bos();
    let mut distinct = std::collections::HashSet::new();
    for pos in 0..n {
        let logits = ring.forward(&model, token, pos).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()), "position {pos}");
        token = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        if pos > n - 500 {
            distinct.insert(token);
        }
    }
    assert_eq!(State::arena_len(&model, window), len);
    // Still text, not one token repeated: the last 500 positions use many tokens.
    assert!(distinct.len() > 20, "{} distinct tokens in the last 500", distinct.len());
    // The full-attention state of the same RAM stops at its context.
    let mut arena = vec![0f32; len];
    let mut full = State::new(&model, &mut arena, window, Kernels::detect()).unwrap();
    assert!(full.forward(&model, 1, window).is_err());
}

#[test]
fn integer_rotations_past_the_table_are_the_angles() {
    let img = builtin();
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let rope = model.rope.unwrap();
    let (rows, hs, theta) = (model.config.seq_len, model.config.head_size(), model.config.rope_theta as f64);
    let mut buf = [0u8; 256];
    for pos in [0, 1, rows - 1, rows, rows + 1, 1000, 4097, 10_000, 123_456] {
        let row = ruvllm_esp32::infer::integer::rotation_at(&rope, pos, rows, &mut buf).unwrap().to_vec();
        for (i, pair) in row.chunks_exact(8).enumerate() {
            let angle = pos as f64 / theta.powf((2 * i) as f64 / hs as f64);
            let q = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / (1u64 << 30) as f64;
            let (c, s) = (q(&pair[..4]), q(&pair[4..]));
            assert!(
                (c - angle.cos()).abs() < 1e-6 && (s - angle.sin()).abs() < 1e-6,
                "position {pos}, pair {i}"
            );
        }
    }
}

#[test]
fn the_integer_ring_is_full_attention_inside_the_window_and_runs_past_the_context() {
    let img = builtin();
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let n = 48;
    let mut a = vec![0i32; IntState::arena_len(&model, n)];
    let mut b = a.clone();
    let mut full = IntState::new(&model, &mut a, n).unwrap();
    let mut ring = IntState::sliding(&model, &mut b, n).unwrap();
    for (pos, &t) in tokens(n).iter().enumerate() {
        let x = full.forward(&model, t, pos).unwrap().to_vec();
        assert_eq!(ring.forward(&model, t, pos).unwrap(), &x[..], "position {pos}");
    }
    // 10,000 positions through 32 slots, greedy, the model's tokens fed back.
    let mut arena = vec![0i32; IntState::arena_len(&model, 32)];
    let mut ring = IntState::sliding(&model, &mut arena, 32).unwrap();
    let (mut token, mut distinct) = (model.vocab.bos(), std::collections::HashSet::new());
    for pos in 0..10_000 {
        token = ruvllm_esp32::infer::integer::argmax(ring.forward(&model, token, pos).unwrap());
        if pos > 9_500 {
            distinct.insert(token);
        }
    }
    assert!(distinct.len() > 20, "{} distinct tokens in the last 500", distinct.len());
}
