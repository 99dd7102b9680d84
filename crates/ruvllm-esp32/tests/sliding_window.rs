//! Sliding-window attention through a ring-buffer cache (`State::sliding`), and the sparse
//! patterns (`State::sparse`, `IntState::sparse`) at the end: the same numbers as
//! full attention while the window holds every position, the numbers of an independent
//! windowed forward pass after it, and positions far past the model's context in the RAM of
//! the window.
#![cfg(feature = "alloc")]

mod common;

use ruvllm_esp32::convert::{load_llama2c, load_tokenizer_bin, Quant};
use ruvllm_esp32::infer::{IntState, Pattern, State, Step};
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

/// An f32 model's forward pass written out plainly, attention over the positions `attends`
/// allows (`attends(pos, p)`) in their natural order: the reference the ring and the sparse
/// patterns are checked against.
struct Reference<'m> {
    model: &'m Model<'m>,
    attends: Box<dyn Fn(usize, usize) -> bool + 'm>,
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
            let seen: Vec<usize> = (0..=pos).filter(|&p| (self.attends)(pos, p)).collect();
            let mut out = vec![0f32; d];
            for h in 0..c.n_heads {
                let kv = (h / kv_mul) * hs;
                let qh = &q[h * hs..(h + 1) * hs];
                let scores: Vec<f32> = seen
                    .iter()
                    .map(|&p| {
                        qh.iter().zip(&self.keys[l][p][kv..kv + hs]).map(|(a, b)| a * b).sum::<f32>()
                            / (hs as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = e.iter().sum();
                for (&p, e) in seen.iter().zip(&e) {
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
    let mut reference = Reference {
        model: &model,
        attends: Box::new(move |pos, p| pos - p < window),
        keys: vec![vec![]; layers],
        values: vec![vec![]; layers],
    };
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

/// Patterns that list every position of an `n`-position run (BigBird's random draws included).
fn covering(n: usize) -> Vec<Pattern> {
    vec![
        Pattern::Full,
        Pattern::Window(n),
        Pattern::Strided(1),
        Pattern::Strided(n),
        Pattern::Dilated { gap: 1, count: n },
        Pattern::BigBird { global: 0, local: n, random: 0, seed: 0 },
        Pattern::BigBird { global: 2, local: 8, random: n, seed: 3 },
    ]
}

/// `attends(pos, p)`: whether position `pos` attends to position `p`.
type Mask = Box<dyn Fn(usize, usize) -> bool>;

/// Patterns that cut attention, with their definitions written as predicates (BigBird's random
/// draws are the library's: the reference checks what is computed over them).
fn cutting() -> Vec<(Pattern, Mask)> {
    let bigbird = Pattern::BigBird { global: 1, local: 4, random: 3, seed: 11 };
    vec![
        (Pattern::Window(6), Box::new(|pos, p| pos - p < 6)),
        (Pattern::Strided(4), Box::new(|pos, p| pos - p < 4 || (pos - p).is_multiple_of(4))),
        (
            Pattern::Dilated { gap: 3, count: 5 },
            Box::new(|pos, p| (pos - p).is_multiple_of(3) && (pos - p) / 3 < 5),
        ),
        (
            bigbird,
            Box::new(move |pos, p| {
                let mut out = [0u32; 8];
                let n = bigbird.select(pos, &mut out);
                out[..n].contains(&(p as u32))
            }),
        ),
    ]
}

fn float_logits(model: &Model, pattern: Option<Pattern>, kernels: Kernels, toks: &[u32]) -> Vec<Vec<u32>> {
    let n = toks.len();
    let mut arena = vec![0f32; State::sparse_arena_len(model, n, Pattern::Full)];
    let mut s = match pattern {
        Some(p) => State::sparse(model, &mut arena, n, kernels, p).unwrap(),
        None => State::new(model, &mut arena, n, kernels).unwrap(),
    };
    let mut out = vec![];
    for (pos, &t) in toks.iter().enumerate() {
        out.push(s.forward(model, t, pos).unwrap().iter().map(|v| v.to_bits()).collect());
    }
    out
}

fn int_logits(model: &Model, pattern: Option<Pattern>, toks: &[u32]) -> Vec<Vec<i32>> {
    let n = toks.len();
    let mut arena = vec![0i32; IntState::sparse_arena_len(model, n, Pattern::Full)];
    let mut s = match pattern {
        Some(p) => IntState::sparse(model, &mut arena, n, p).unwrap(),
        None => IntState::new(model, &mut arena, n).unwrap(),
    };
    toks.iter().enumerate().map(|(pos, &t)| s.forward(model, t, pos).unwrap().to_vec()).collect()
}

#[test]
fn sparse_patterns_that_list_every_position_are_full_attention_bit_for_bit() {
    let n = 48;
    let toks = tokens(n);
    let builtin = builtin();
    let q8: Model = Model::from_gguf(builtin.bytes()).unwrap();
    let full_q8 = float_logits(&q8, None, Kernels::detect(), &toks);
    let full_int = int_logits(&q8, None, &toks);
    let f32_img = stories_f32();
    let f32_model: Option<Model> = f32_img.as_ref().map(|i| Model::from_gguf(i.bytes()).unwrap());
    let full_f32 = f32_model.as_ref().map(|m| float_logits(m, None, Kernels::detect(), &toks));
    for p in covering(n) {
        assert_eq!(float_logits(&q8, Some(p), Kernels::detect(), &toks), full_q8, "q8 {p:?}");
        assert_eq!(int_logits(&q8, Some(p), &toks), full_int, "integer {p:?}");
        if let (Some(m), Some(full)) = (&f32_model, &full_f32) {
            assert_eq!(&float_logits(m, Some(p), Kernels::detect(), &toks), full, "f32 {p:?}");
        }
    }
    // And the cutting patterns really cut, on every path.
    for (p, _) in cutting() {
        assert_ne!(float_logits(&q8, Some(p), Kernels::detect(), &toks), full_q8, "q8 {p:?}");
        assert_ne!(int_logits(&q8, Some(p), &toks), full_int, "integer {p:?}");
    }
}

#[test]
fn sparse_patterns_compute_masked_attention() {
    let Some(img) = stories_f32() else { return };
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let layers = model.config.n_layers;
    let toks = tokens(80);
    for (p, attends) in cutting() {
        let mut reference =
            Reference { model: &model, attends, keys: vec![vec![]; layers], values: vec![vec![]; layers] };
        let got = float_logits(&model, Some(p), Kernels::REFERENCE, &toks);
        let mut worst = 0f32;
        for (pos, &t) in toks.iter().enumerate() {
            let want = reference.forward(t, pos);
            let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
            for (a, b) in got[pos].iter().zip(&want) {
                worst = worst.max((f32::from_bits(*a) - b).abs() / scale);
            }
        }
        assert!(worst < 1e-4, "{p:?}: largest difference {worst} of the logits' range");
    }
}

#[test]
fn positions_a_pattern_skips_are_never_read() {
    // dilated:2 attends to positions of its own parity only: changing every odd position's
    // token leaves every even position's logits exactly as they were, on every path.
    let img = builtin();
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let a = tokens(40);
    let b: Vec<u32> =
        a.iter().enumerate().map(|(i, &t)| if i % 2 == 1 { (t + 101) % 500 + 3 } else { t }).collect();
    let p = Some(Pattern::Dilated { gap: 2, count: 40 });
    let (fa, fb) =
        (float_logits(&model, p, Kernels::detect(), &a), float_logits(&model, p, Kernels::detect(), &b));
    let (ia, ib) = (int_logits(&model, p, &a), int_logits(&model, p, &b));
    for pos in (0..40).step_by(2) {
        assert_eq!(fa[pos], fb[pos], "q8, position {pos}");
        assert_eq!(ia[pos], ib[pos], "integer, position {pos}");
    }
    assert_ne!(fa[1], fb[1]);
}

#[test]
fn an_integer_window_over_the_whole_cache_equals_the_ring() {
    // Two implementations of the same attention (rows gathered from a full cache, a ring of
    // the window's slots): the integer path's exact sums make them equal bit for bit past the
    // ring's first wrap too.
    let img = builtin();
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let (n, w) = (100, 12);
    let mut ring_arena = vec![0i32; IntState::arena_len(&model, w)];
    let mut ring = IntState::sliding(&model, &mut ring_arena, w).unwrap();
    let sparse = int_logits(&model, Some(Pattern::Window(w)), &tokens(n));
    for (pos, &t) in tokens(n).iter().enumerate() {
        assert_eq!(ring.forward(&model, t, pos).unwrap(), &sparse[pos][..], "position {pos}");
    }
}

#[test]
fn a_pattern_must_fit_the_scratch_it_was_built_with() {
    let img = builtin();
    let model: Model = Model::from_gguf(img.bytes()).unwrap();
    let n = 64;
    let small = Pattern::Strided(8);
    let mut arena = vec![0i32; IntState::sparse_arena_len(&model, n, small)];
    let mut s = IntState::sparse(&model, &mut arena, n, small).unwrap();
    assert!(s.set_pattern(Pattern::Window(8)).is_ok());
    assert!(matches!(s.set_pattern(Pattern::Full), Err(ruvllm_esp32::Error::BufferTooSmall { .. })));
    let mut short = vec![0i32; IntState::sparse_arena_len(&model, n, small) - 1];
    assert!(IntState::sparse(&model, &mut short, n, small).is_err());
    let mut farena = vec![0f32; State::arena_len(&model, n)];
    let mut plain = State::new(&model, &mut farena, n, Kernels::detect()).unwrap();
    assert!(plain.set_pattern(&model, small).is_err(), "a state built without scratch");
    // Without scratch attention is full already: asking for full is no error (a board whose
    // RAM holds no pattern scratch answers `set attention full`).
    assert!(plain.set_pattern(&model, Pattern::Full).is_ok());
    assert_eq!(plain.pattern(), None);
    let mut iarena = vec![0i32; IntState::arena_len(&model, n)];
    let mut iplain = IntState::new(&model, &mut iarena, n).unwrap();
    assert!(iplain.set_pattern(small).is_err(), "an integer state built without scratch");
    assert!(iplain.set_pattern(Pattern::Full).is_ok());
    assert_eq!(iplain.pattern(), None);
}
