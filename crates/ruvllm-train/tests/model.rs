//! The trainer's forward and backward passes against an obviously-correct f64 reference, the
//! engine, and themselves (threads, determinism), plus a short overfit run.

use ruvllm_esp32::convert::{HostVocab, Quant};
use ruvllm_esp32::infer::State;
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::{Config, Model};
use ruvllm_esp32::quant::WeightFormat;
use ruvllm_train::model::{grad_norm, AdamW, Params, Trainer};

fn tiny() -> Config {
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

/// A tiny xorshift for test data.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Parameters far enough from the initialization's small values that every nonlinearity is
/// exercised: matrices ~0.3, norms around 1.
fn lively(c: &Config, seed: u64) -> Params {
    let mut p = Params::init(c, seed);
    let mut r = Lcg(seed * 2 + 1);
    for t in p.tensors() {
        for v in &mut p.data[t.range] {
            *v = if t.matrix { *v * 15.0 } else { 0.6 + 0.8 * r.unit() as f32 };
        }
    }
    p
}

fn tokens(c: &Config, rows: usize, seq: usize, seed: u64) -> Vec<u32> {
    let mut r = Lcg(seed | 1);
    (0..rows * (seq + 1)).map(|_| (r.next() % c.vocab_size as u64) as u32).collect()
}

// ---------------------------------------------------------------------------------------------
// The f64 reference: one position at a time with a key/value cache, straight from the
// definitions, on its own reading of the documented parameter layout.

struct RefLayer {
    attn_norm: usize,
    wq: usize,
    wk: usize,
    wv: usize,
    wo: usize,
    ffn_norm: usize,
    w1: usize,
    w2: usize,
    w3: usize,
}

fn ref_offsets(c: &Config) -> (Vec<RefLayer>, usize, usize) {
    let (d, h, kv, qd) = (c.dim, c.hidden_dim, c.kv_dim(), c.q_dim());
    let mut at = c.vocab_size * d;
    let mut layers = Vec::new();
    for _ in 0..c.n_layers {
        let mut next = |n: usize| {
            let o = at;
            at += n;
            o
        };
        layers.push(RefLayer {
            attn_norm: next(d),
            wq: next(qd * d),
            wk: next(kv * d),
            wv: next(kv * d),
            wo: next(d * qd),
            ffn_norm: next(d),
            w1: next(h * d),
            w2: next(d * h),
            w3: next(h * d),
        });
    }
    (layers, at, at + d)
}

fn matvec(w: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
    let n = x.len();
    (0..rows).map(|i| (0..n).map(|j| w[i * n + j] * x[j]).sum()).collect()
}

fn rmsnorm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(x, w)| x * r * w).collect()
}

fn rope(v: &mut [f64], pos: usize, hs: usize, theta: f64) {
    for head in v.chunks_mut(hs) {
        for i in 0..hs / 2 {
            let freq = 1.0 / theta.powf((2 * i) as f64 / hs as f64);
            let (s, co) = (pos as f64 * freq).sin_cos();
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * co - b * s;
            head[2 * i + 1] = a * s + b * co;
        }
    }
}

/// Logits of every position of one sequence.
fn ref_logits(c: &Config, w: &[f64], toks: &[u32]) -> Vec<Vec<f64>> {
    let (d, h, kv, hs, qd) = (c.dim, c.hidden_dim, c.kv_dim(), c.head_size(), c.q_dim());
    let (layers, onorm, end) = ref_offsets(c);
    assert_eq!(end, w.len());
    let eps = c.norm_eps as f64;
    let mut keys = vec![Vec::<Vec<f64>>::new(); c.n_layers];
    let mut vals = vec![Vec::<Vec<f64>>::new(); c.n_layers];
    let mut out = Vec::new();
    for (pos, &tok) in toks.iter().enumerate() {
        let mut x = w[tok as usize * d..(tok as usize + 1) * d].to_vec();
        for (l, o) in layers.iter().enumerate() {
            let xn = rmsnorm(&x, &w[o.attn_norm..o.attn_norm + d], eps);
            let mut q = matvec(&w[o.wq..o.wq + qd * d], &xn, qd);
            let mut k = matvec(&w[o.wk..o.wk + kv * d], &xn, kv);
            let v = matvec(&w[o.wv..o.wv + kv * d], &xn, kv);
            rope(&mut q, pos, hs, c.rope_theta as f64);
            rope(&mut k, pos, hs, c.rope_theta as f64);
            keys[l].push(k);
            vals[l].push(v);
            let mut att = vec![0.0; qd];
            for head in 0..c.n_heads {
                let g = head / (c.n_heads / c.n_kv_heads);
                let qh = &q[head * hs..(head + 1) * hs];
                let sc: Vec<f64> = keys[l]
                    .iter()
                    .map(|k| {
                        qh.iter().zip(&k[g * hs..(g + 1) * hs]).map(|(a, b)| a * b).sum::<f64>()
                            / (hs as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (p, v) in e.iter().zip(&vals[l]) {
                    for i in 0..hs {
                        att[head * hs + i] += p / z * v[g * hs + i];
                    }
                }
            }
            let y = matvec(&w[o.wo..o.wo + d * qd], &att, d);
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
            let xn = rmsnorm(&x, &w[o.ffn_norm..o.ffn_norm + d], eps);
            let a = matvec(&w[o.w1..o.w1 + h * d], &xn, h);
            let b = matvec(&w[o.w3..o.w3 + h * d], &xn, h);
            let gated: Vec<f64> = a.iter().zip(&b).map(|(a, b)| a / (1.0 + (-a).exp()) * b).collect();
            let y = matvec(&w[o.w2..o.w2 + d * h], &gated, d);
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        }
        let xn = rmsnorm(&x, &w[onorm..onorm + d], eps);
        out.push(matvec(&w[..c.vocab_size * d], &xn, c.vocab_size));
    }
    out
}

/// Mean next-token cross-entropy over rows of `seq + 1` tokens.
fn ref_loss(c: &Config, w: &[f64], toks: &[u32], seq: usize) -> f64 {
    let mut total = 0.0;
    let rows = toks.len() / (seq + 1);
    for row in toks.chunks_exact(seq + 1) {
        for (lg, &y) in ref_logits(c, w, &row[..seq]).iter().zip(&row[1..]) {
            let m = lg.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = lg.iter().map(|v| (v - m).exp()).sum();
            total += m + z.ln() - lg[y as usize];
        }
    }
    total / (rows * seq) as f64
}

// ---------------------------------------------------------------------------------------------

/// Head size 8 (the blocked and AVX-512 attention kernels) and a sequence that is not a
/// multiple of the kernels' blocks.
fn head8() -> Config {
    Config { dim: 32, hidden_dim: 40, n_heads: 4, n_kv_heads: 2, vocab_size: 13, seq_len: 21, ..tiny() }
}

const KERNELS: [&str; 4] = ["generic", "avx2", "avx512", "unfused"];

#[test]
fn gradients_match_finite_differences_of_the_f64_reference() {
    grad_check(&tiny(), 2, 6, "");
}

#[test]
fn gradients_match_finite_differences_with_head_size_8_on_every_kernel_set() {
    // Grouped-query (two query heads per KV head) and plain multi-head attention.
    let mha = Config { dim: 16, n_heads: 2, n_kv_heads: 2, ..head8() };
    for k in KERNELS {
        grad_check(&head8(), 2, 21, k);
        grad_check(&mha, 2, 21, k);
    }
}

#[test]
fn gradients_match_finite_differences_with_head_size_16_and_one_kv_head() {
    let c =
        Config { dim: 32, hidden_dim: 24, n_heads: 2, n_kv_heads: 1, vocab_size: 9, seq_len: 18, ..tiny() };
    for k in KERNELS {
        grad_check(&c, 2, 18, k);
    }
}

/// Attention heads removed (`convert --prune-heads`): two query heads of 8 on one key/value
/// head, in a model 32 wide (the query 16 wide, apart from `dim`).
#[test]
fn gradients_match_finite_differences_with_removed_heads() {
    let c = Config { n_heads: 2, n_kv_heads: 1, head_dim: 8, ..head8() };
    assert_eq!(c.q_dim(), 16);
    for k in KERNELS {
        grad_check(&c, 2, 21, k);
    }
}

fn grad_check(c: &Config, batch: usize, seq: usize, kernels: &str) {
    let c = *c;
    let p = lively(&c, 3);
    let toks = tokens(&c, batch, seq, 99);
    let mut tr = Trainer::new(&c, batch, seq, 1, WeightFormat::F32);
    if !kernels.is_empty() && !tr.set_kernels(kernels) {
        eprintln!("skipping kernel set {kernels}: not supported by this CPU");
        return;
    }
    let mut g = vec![0.0f32; p.len()];
    let loss = tr.forward_backward(&p, &toks, &mut g);
    let w: Vec<f64> = p.data.iter().map(|v| *v as f64).collect();
    let ref_l = ref_loss(&c, &w, &toks, seq);
    assert!((loss as f64 - ref_l).abs() < 1e-5 * ref_l.abs().max(1.0), "loss {loss} vs reference {ref_l}");
    assert!((tr.loss(&p, &toks) - loss).abs() < 1e-6);
    let mut rng = Lcg(12345);
    let mut worst = 0.0f64;
    for t in p.tensors() {
        let scale = t.range.clone().map(|i| (g[i] as f64).abs()).fold(0.0, f64::max);
        assert!(scale > 0.0, "{}: all-zero gradient", t.name);
        for s in 0..8 {
            let i = if s == 0 {
                // The entry with the largest gradient, then random ones.
                t.range.clone().max_by(|a, b| g[*a].abs().total_cmp(&g[*b].abs())).unwrap()
            } else {
                t.range.start + (rng.next() as usize) % t.range.len()
            };
            let h = 1e-5;
            let mut wp = w.clone();
            wp[i] += h;
            let lp = ref_loss(&c, &wp, &toks, seq);
            wp[i] -= 2.0 * h;
            let lm = ref_loss(&c, &wp, &toks, seq);
            let num = (lp - lm) / (2.0 * h);
            // Relative error, with a floor of a small fraction of the tensor's largest gradient
            // so entries near zero are judged against f32 rounding, not against themselves.
            let err = (g[i] as f64 - num).abs() / (num.abs() + 3e-3 * scale);
            worst = worst.max(err);
            assert!(
                err < 1e-3,
                "{} kernels, {} entry {}: analytic {} vs numeric {num} (rel {err:e})",
                tr.kernels(),
                t.name,
                i - t.range.start,
                g[i]
            );
        }
    }
    eprintln!(
        "worst relative gradient error ({} kernels, head size {}): {worst:e}",
        tr.kernels(),
        c.head_size()
    );
}

#[test]
fn qat_gradient_is_the_f32_gradient_at_the_projected_weights() {
    let c = tiny();
    let (batch, seq) = (2, 6);
    let p = lively(&c, 5);
    let toks = tokens(&c, batch, seq, 7);
    let mut f32_tr = Trainer::new(&c, batch, seq, 1, WeightFormat::F32);
    let mut f32_loss = 0.0;
    for f in [WeightFormat::Q8, WeightFormat::Ternary, WeightFormat::Binary] {
        let projected = p.project(f);
        assert_ne!(projected.data, p.data, "{f:?} changes the weights");
        let mut want = vec![0.0f32; p.len()];
        let lw = f32_tr.forward_backward(&projected, &toks, &mut want);
        let mut got = vec![0.0f32; p.len()];
        let mut tr = Trainer::new(&c, batch, seq, 1, f);
        let lg = tr.forward_backward(&p, &toks, &mut got);
        assert_eq!(lg, lw, "{f:?} loss");
        assert_eq!(got, want, "{f:?} gradients");
        f32_loss = f32_tr.forward_backward(&p, &toks, &mut want);
        assert_ne!(lg, f32_loss);
    }
    assert!(f32_loss.is_finite());
}

fn engine_logits(host: &ruvllm_esp32::convert::HostModel, toks: &[u32]) -> Vec<Vec<f32>> {
    let bytes = host.to_gguf(Quant::F32).unwrap();
    // The engine reads tensors in place: give it an 8-byte aligned copy.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (i, b) in bytes.iter().enumerate() {
        words[i / 8] |= (*b as u64) << (8 * (i % 8));
    }
    // SAFETY: `words` owns bytes.len().div_ceil(8) * 8 initialized bytes; u8 has no alignment.
    let img = unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, bytes.len()) };
    let model = <Model<'_>>::from_gguf(img).unwrap();
    let mut arena = vec![0f32; State::arena_len(&model, toks.len())];
    let mut state = State::new(&model, &mut arena, toks.len(), Kernels::REFERENCE).unwrap();
    toks.iter().enumerate().map(|(pos, &t)| state.forward(&model, t, pos).unwrap().to_vec()).collect()
}

fn dummy_vocab(n: usize) -> HostVocab {
    HostVocab {
        pieces: (0..n).map(|i| format!("t{i}").into_bytes()).collect(),
        scores: (0..n).map(|i| -(i as f32)).collect(),
        max_token_length: 8,
        bos: 1,
        eos: 2,
    }
}

fn worst_diff(ours: &[f32], theirs: &[Vec<f32>]) -> f32 {
    let v = theirs[0].len();
    let mut worst = 0.0f32;
    for (row, want) in ours.chunks_exact(v).zip(theirs) {
        for (a, b) in row.iter().zip(want) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

#[test]
fn forward_matches_the_engine() {
    let mut c = tiny();
    c.seq_len = 24;
    c.vocab_size = 40;
    let p = lively(&c, 11);
    let toks: Vec<u32> = tokens(&c, 1, 23, 5);
    let mut host = p.to_host();
    host.vocab = Some(dummy_vocab(c.vocab_size));
    assert_eq!(Params::from_host(&host).unwrap(), p);
    let want = engine_logits(&host, &toks);
    let mut tr = Trainer::new(&c, 1, c.seq_len, 1, WeightFormat::F32);
    let got = tr.logits(&p, &toks);
    let worst = worst_diff(&got, &want);
    eprintln!("largest logit difference from the engine: {worst:e}");
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn forward_matches_the_engine_with_head_size_8_on_every_kernel_set() {
    let mut c = head8();
    c.seq_len = 40;
    let p = lively(&c, 12);
    let mut host = p.to_host();
    host.vocab = Some(dummy_vocab(c.vocab_size));
    // 37 positions: two full blocks of 16 and a partial one; the trainer's buffers hold 40.
    let toks: Vec<u32> = tokens(&c, 1, 36, 8);
    let want = engine_logits(&host, &toks);
    for k in KERNELS {
        let mut tr = Trainer::new(&c, 2, c.seq_len, 1, WeightFormat::F32);
        if !tr.set_kernels(k) {
            continue;
        }
        let got = tr.logits(&p, &toks);
        let worst = worst_diff(&got, &want);
        eprintln!("{k}: largest logit difference from the engine: {worst:e}");
        assert!(worst < 1e-4, "{k}: {worst}");
    }
}

#[test]
fn stories260k_logits_match_the_engine() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/stories260K.bin");
    let Ok(bytes) = std::fs::read(path) else {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI=true but {path} is missing");
        eprintln!("skipping: {path} not found (the shared test material sits beside the checkout)");
        return;
    };
    let mut host = ruvllm_esp32::convert::load_llama2c(&bytes).unwrap();
    let p = Params::from_host(&host).unwrap();
    host.vocab = Some(dummy_vocab(host.config.vocab_size));
    let toks: Vec<u32> = [1u32, 403, 407, 261, 378, 299, 263, 338, 300, 306, 299, 275, 395, 333, 471, 268]
        .into_iter()
        .cycle()
        .take(48)
        .collect();
    let want = engine_logits(&host, &toks);
    let mut tr = Trainer::new(&p.config, 1, 64, 1, WeightFormat::F32);
    let got = tr.logits(&p, &toks);
    let worst = worst_diff(&got, &want);
    eprintln!("stories260K: largest logit difference from the engine over 48 positions: {worst:e}");
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn two_threads_agree_with_one_and_one_is_deterministic() {
    let mut c = tiny();
    c.seq_len = 12;
    let (batch, seq) = (5, 12);
    let p = lively(&c, 21);
    let toks = tokens(&c, batch, seq, 77);
    let run = |threads: usize| {
        let mut tr = Trainer::new(&c, batch, seq, threads, WeightFormat::F32);
        let mut g = vec![0.0f32; p.len()];
        let l = tr.forward_backward(&p, &toks, &mut g);
        // A second call on the same trainer gives the same bits (no stale state).
        let mut g2 = vec![1.0f32; p.len()];
        assert_eq!(tr.forward_backward(&p, &toks, &mut g2), l);
        assert_eq!(g, g2);
        (l, g)
    };
    let (l1, g1) = run(1);
    let (l1b, g1b) = run(1);
    assert_eq!(l1, l1b);
    assert_eq!(g1, g1b);
    let (l2, g2) = run(2);
    assert!((l1 - l2).abs() < 1e-6, "{l1} vs {l2}");
    let n = grad_norm(&g1);
    for (a, b) in g1.iter().zip(&g2) {
        assert!((a - b).abs() < 1e-6 * n.max(1.0), "{a} vs {b}");
    }
    assert_eq!(run(2), (l2, g2));
    // Validation on fewer rows than the batch (and than the threads): the mean of the rows.
    let mut tr = Trainer::new(&c, batch, seq, 2, WeightFormat::F32);
    let row = seq + 1;
    let one: Vec<f32> = (0..batch).map(|r| tr.loss(&p, &toks[r * row..(r + 1) * row])).collect();
    let mean = one.iter().sum::<f32>() / batch as f32;
    assert!((mean - l1).abs() < 1e-5, "{mean} vs {l1}");
    assert!((tr.loss(&p, &toks[..2 * row]) - (one[0] + one[1]) / 2.0).abs() < 1e-5);
}

#[test]
fn adamw_overfits_a_repeated_pattern() {
    let mut c = tiny();
    c.dim = 32;
    c.hidden_dim = 64;
    c.seq_len = 16;
    let (batch, seq) = (4, 16);
    let p0 = Params::init(&c, 1);
    let mut p = p0.clone();
    // Each token determines the next: a cycle through 1..=7 from a different start per row.
    let toks: Vec<u32> =
        (0..batch).flat_map(|r| (0..=seq).map(move |t| ((t + 2 * r) % 7 + 1) as u32)).collect();
    let mut tr = Trainer::new(&c, batch, seq, 2, WeightFormat::F32);
    let mut opt = AdamW::new(p.len(), 0.01);
    let mut g = vec![0.0f32; p.len()];
    let first = tr.forward_backward(&p, &toks, &mut g);
    let mut last = first;
    for _ in 0..200 {
        last = tr.forward_backward(&p, &toks, &mut g);
        opt.step(&mut p, &g, 3e-3);
    }
    let fin = tr.loss(&p, &toks);
    eprintln!("overfit: loss {first} -> {last} -> {fin}");
    assert!(first > 2.0, "{first}");
    assert!(fin < 0.05, "loss after 200 steps: {fin}");
    assert_eq!(opt.t, 200);
}
