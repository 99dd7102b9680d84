//! Speculative decoding on real models: the built-in model with its draft (`models/draft.gguf`)
//! and with early exit, stories260K (`../shared`, skipped with a message when absent) with
//! early exit. The batched pass equals the single-position one bit for bit, greedy output is
//! the target's own, and sampling keeps the target's distribution.
#![cfg(feature = "alloc")]

mod common;

use ruvllm_esp32::convert::{load_llama2c, load_tokenizer_bin, Quant};
use ruvllm_esp32::infer::{self, Batch, IntBatch, IntState, State, Step};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::{seed_state, ProbIndex, Sampler};
use ruvllm_esp32::speculative::{self, FloatBuffers, IntBuffers, Mode, Refusal};

fn read(rel: &str) -> common::Image {
    let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
    common::Image::new(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn builtin() -> common::Image {
    read("../ruvllm-cli/data/default.gguf")
}

fn draft() -> common::Image {
    read("../../models/draft.gguf")
}

fn stories(q: Quant) -> Option<common::Image> {
    let model = common::read_shared("models/stories260K.bin")?;
    let tok = common::read_shared("models/tok512.bin")?;
    let mut m = load_llama2c(&model).expect("stories260K.bin loads");
    m.vocab = Some(load_tokenizer_bin(&tok, m.config.vocab_size).expect("tok512.bin loads"));
    Some(common::Image::new(&m.to_gguf(q).unwrap()))
}

fn kernel_sets() -> Vec<Kernels> {
    let fast = Kernels::detect();
    if fast.name == Kernels::REFERENCE.name {
        vec![fast]
    } else {
        vec![Kernels::REFERENCE, fast]
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A batch at positions 3..3+n gives each position the logits a single forward gives it, and
/// the cache it leaves serves the next single forward identically.
fn batch_matches_single(model: &Model<'_>, what: &str) {
    let tokens = [1u32, 300, 45, 77, 12, 400, 9, 250, 3, 60];
    let seq = 64;
    for k in kernel_sets() {
        let mut a1 = vec![0f32; State::arena_len(model, seq)];
        let mut a2 = a1.clone();
        let mut one = State::new(model, &mut a1, seq, k).unwrap();
        let mut many = State::new(model, &mut a2, seq, k).unwrap();
        let mut ba = vec![0f32; Batch::arena_len(model, 8)];
        let mut batch = Batch::new(model, &mut ba, 8).unwrap();
        many.forward_batch(model, &mut batch, &tokens[..3], 0, false).unwrap();
        let mut singles = Vec::new();
        for (pos, &t) in tokens.iter().enumerate() {
            singles.push(bits(one.forward(model, t, pos).unwrap()));
        }
        many.forward_batch(model, &mut batch, &tokens[3..9], 3, true).unwrap();
        for i in 0..6 {
            assert_eq!(bits(batch.logits(i)), singles[3 + i], "{what} {k:?}: position {}", 3 + i);
        }
        assert_eq!(
            bits(many.forward(model, tokens[9], 9).unwrap()),
            singles[9],
            "{what} {k:?}: after the batch"
        );
        // Rolled back: positions 5.. run again with other tokens, as after a rejection.
        many.forward_batch(model, &mut batch, &[200, 201], 5, true).unwrap();
        let again = bits(batch.logits(1));
        one.forward(model, 200, 5).unwrap();
        assert_eq!(again, bits(one.forward(model, 201, 6).unwrap()), "{what} {k:?}: after a rollback");
    }
}

/// Both paths: the float one on every image, the integer one on the int8 images.
fn both_paths(model: &Model<'_>, what: &str) {
    batch_matches_single(model, what);
    if model.precision != ruvllm_esp32::model::Precision::F32 {
        int_batch_matches_single(model, what);
    }
}

#[test]
fn batched_pass_is_identical_to_single_positions() {
    let img = builtin();
    both_paths(&Model::from_gguf(img.bytes()).unwrap(), "built-in q8");
    let img = draft();
    both_paths(&Model::from_gguf(img.bytes()).unwrap(), "draft q8");
    for q in [Quant::F32, Quant::Q8, Quant::Ternary, Quant::Binary] {
        let Some(img) = stories(q) else { return };
        both_paths(&Model::from_gguf(img.bytes()).unwrap(), &format!("stories260K {q:?}"));
    }
}

/// Plain greedy tokens (as text) and the speculative ones with `draft` at `gamma`.
fn greedy_pair(
    target: &Model<'_>,
    draft: &Model<'_>,
    prompt: &[u32],
    steps: usize,
    gamma: usize,
) -> (String, String, speculative::SpecStats) {
    let k = Kernels::detect();
    let mut arena = vec![0f32; State::arena_len(target, steps)];
    let mut state = State::new(target, &mut arena, steps, k).unwrap();
    let mut sampler = Sampler::new(0.0, 0.9, 0, 1);
    let mut scratch = vec![ProbIndex::default(); target.config.vocab_size];
    let mut plain = Vec::new();
    infer::generate(target, &mut state, &mut sampler, &mut scratch, prompt, steps, |b, _| {
        plain.extend_from_slice(b)
    })
    .unwrap();

    let mut ta = vec![0f32; State::arena_len(target, steps)];
    let mut da = vec![0f32; State::arena_len(draft, steps)];
    let mut ba = vec![0f32; FloatBuffers::arena_len(target, gamma)];
    let mut ts = State::new(target, &mut ta, steps, k).unwrap();
    let mut ds = State::new(draft, &mut da, steps, k).unwrap();
    let mut buf = FloatBuffers::new(target, &mut ba, gamma).unwrap();
    let mut spec = Vec::new();
    let stats = speculative::generate(
        target,
        &mut ts,
        draft,
        &mut ds,
        &mut buf,
        Mode::Greedy,
        prompt,
        steps,
        |b, _| spec.extend_from_slice(b),
    )
    .unwrap();
    (String::from_utf8_lossy(&plain).into_owned(), String::from_utf8_lossy(&spec).into_owned(), stats)
}

fn prompt(model: &Model<'_>, text: &str) -> Vec<u32> {
    let mut t = vec![0u32; text.len() + 3];
    let n = ruvllm_esp32::tokenizer::encode(&model.vocab, text.as_bytes(), true, false, &mut t).unwrap();
    t.truncate(n);
    t
}

#[test]
fn greedy_text_is_the_targets_own() {
    let (ti, di) = (builtin(), draft());
    let target: Model = Model::from_gguf(ti.bytes()).unwrap();
    let small: Model = Model::from_gguf(di.bytes()).unwrap();
    speculative::check_draft(&target, &small).unwrap();
    let steps = target.config.seq_len.min(small.config.seq_len);
    for text in
        ["", "Once upon a time", "Fact: The meeting is at 3 pm. Question: When is the meeting? Answer:"]
    {
        let p = prompt(&target, text);
        for gamma in [1, 4, 8] {
            let (plain, spec, st) = greedy_pair(&target, &small, &p, steps, gamma);
            assert_eq!(spec, plain, "draft.gguf, gamma {gamma}, prompt {text:?}");
            // A short answer may end before any draft is kept; a story may not.
            assert!(st.gen.generated < 50 || st.tokens_per_pass() > 1.5, "{st:?}");
            eprintln!(
                "built-in + draft.gguf g={gamma} {text:?}: acceptance {:.3}, {:.2} tokens/pass",
                st.acceptance_rate(),
                st.tokens_per_pass()
            );
        }
        for layers in 1..target.config.n_layers {
            let ee = speculative::early_exit(&target, layers).unwrap();
            let (plain, spec, st) = greedy_pair(&target, &ee, &p, target.config.seq_len, 4);
            assert_eq!(spec, plain, "early exit {layers}, prompt {text:?}");
            eprintln!("built-in early exit {layers}: acceptance {:.3}", st.acceptance_rate());
        }
    }
    for q in [Quant::F32, Quant::Q8] {
        let Some(img) = stories(q) else { return };
        let target: Model = Model::from_gguf(img.bytes()).unwrap();
        let p = prompt(&target, "Once upon a time");
        for layers in [1, 2, 4] {
            for gamma in [2, 5] {
                let ee = speculative::early_exit(&target, layers).unwrap();
                let (plain, spec, st) = greedy_pair(&target, &ee, &p, 512, gamma);
                assert_eq!(spec, plain, "stories260K {q:?}, early exit {layers}, gamma {gamma}");
                eprintln!(
                    "stories260K {q:?} early exit {layers} g={gamma}: acceptance {:.3}",
                    st.acceptance_rate()
                );
            }
        }
    }
}

/// The exact law of the first two generated tokens after `prompt` at `temp`: the first token's
/// distribution, and the second's marginal over every first one.
fn exact_two(model: &Model<'_>, prompt: &[u32], temp: f32) -> (Vec<f64>, Vec<f64>) {
    let n = prompt.len() + 2;
    let mut arena = vec![0f32; State::arena_len(model, n)];
    let mut st = State::new(model, &mut arena, n, Kernels::REFERENCE).unwrap();
    let soft = |l: &[f32]| {
        let mut v: Vec<f32> = l.iter().map(|x| x / temp).collect();
        ruvllm_esp32::sample::softmax(&mut v);
        v.into_iter().map(f64::from).collect::<Vec<f64>>()
    };
    two_token_law(model, &mut st, prompt, soft)
}

/// The first token's law after `prompt` (`law` turns logits into probabilities), and the
/// second's marginal over every first one but BOS, which ends a generation.
fn two_token_law<S: Step>(
    model: &Model<'_>,
    st: &mut S,
    prompt: &[u32],
    law: impl Fn(&[S::Logit]) -> Vec<f64>,
) -> (Vec<f64>, Vec<f64>) {
    for (pos, &t) in prompt[..prompt.len() - 1].iter().enumerate() {
        st.prefill_token(model, t, pos).unwrap();
    }
    let pos = prompt.len() - 1;
    let p1 = law(st.logits(model, prompt[pos], pos).unwrap());
    let bos = model.vocab.bos() as usize;
    let mut p2 = vec![0f64; p1.len()];
    for (t1, &w) in p1.iter().enumerate() {
        if w < 1e-7 || t1 == bos {
            continue;
        }
        for (a, b) in p2.iter_mut().zip(law(st.logits(model, t1 as u32, pos + 1).unwrap())) {
            *a += w * b;
        }
    }
    let rest = 1.0 - p1[bos];
    (p1, p2.into_iter().map(|x| x / rest).collect())
}

/// Speculative sampling's first two tokens, `runs` times, against their exact law.
fn sampling_keeps_law(target: &Model<'_>, draft: &Model<'_>, what: &str) {
    // A high temperature spreads the law over many tokens, so the test sees many bins.
    let temp = 2.0;
    let p = prompt(target, "Once upon a time");
    let (p1, p2) = exact_two(target, &p, temp);
    let steps = p.len() + 2;
    let k = Kernels::detect();
    let mut ta = vec![0f32; State::arena_len(target, steps)];
    let mut da = vec![0f32; State::arena_len(draft, steps)];
    let mut ba = vec![0f32; FloatBuffers::arena_len(target, 2)];
    let mut buf = FloatBuffers::new(target, &mut ba, 2).unwrap();
    let mut rng = seed_state(11);
    let (mut c1, mut c2) = (vec![0u64; p1.len()], vec![0u64; p1.len()]);
    let mut stats = speculative::SpecStats::default();
    for _ in 0..10_000 {
        let mut ts = State::new(target, &mut ta, steps, k).unwrap();
        let mut ds = State::new(draft, &mut da, steps, k).unwrap();
        let mode = Mode::Sample { temp, rng: &mut rng };
        let mut got = Vec::new();
        let s =
            speculative::generate_tokens(target, &mut ts, draft, &mut ds, &mut buf, mode, &p, steps, |t| {
                got.push(t)
            })
            .unwrap();
        stats.drafted += s.drafted;
        stats.accepted += s.accepted;
        tally(&got, target.vocab.bos(), &mut c1, &mut c2);
    }
    assert_law(what, [&c1, &c2], [&p1, &p2]);
    eprintln!("{what}: acceptance {:.3}", stats.acceptance_rate());
    assert!(stats.accepted > 0 && stats.accepted < stats.drafted, "{stats:?}");
}

#[test]
fn sampling_keeps_the_targets_distribution() {
    let (ti, di) = (builtin(), draft());
    let target: Model = Model::from_gguf(ti.bytes()).unwrap();
    let small: Model = Model::from_gguf(di.bytes()).unwrap();
    sampling_keeps_law(&target, &small, "built-in + draft.gguf");
    sampling_keeps_law(&target, &speculative::early_exit(&target, 2).unwrap(), "built-in, early exit 2");
    let Some(img) = stories(Quant::F32) else { return };
    let target: Model = Model::from_gguf(img.bytes()).unwrap();
    sampling_keeps_law(&target, &speculative::early_exit(&target, 1).unwrap(), "stories260K, early exit 1");
}

/// Counts a generation's first two tokens. A BOS ends a generation unemitted: none emitted
/// means BOS first, one means BOS second.
fn tally(got: &[u32], bos: u32, c1: &mut [u64], c2: &mut [u64]) {
    c1[got.first().copied().unwrap_or(bos) as usize] += 1;
    if !got.is_empty() {
        c2[got.get(1).copied().unwrap_or(bos) as usize] += 1;
    }
}

/// The first and second tokens' counts pass the chi-square test against their laws.
fn assert_law(what: &str, counts: [&[u64]; 2], laws: [&[f64]; 2]) {
    for ((which, counts), law) in ["first", "second"].iter().zip(counts).zip(laws) {
        let (chi, df) = chi_square(counts, law);
        let limit = critical_001(df);
        eprintln!("{what}: {which} token chi-square {chi:.1} over {df} df (limit {limit:.1})");
        assert!(chi < limit, "{what}: the {which} token does not follow the target's law");
    }
}

/// Pearson's chi-square of `counts` against `expected` probabilities (bins expecting fewer
/// than 5 draws merged into one), and its degrees of freedom.
fn chi_square(counts: &[u64], expected: &[f64]) -> (f64, usize) {
    let n: u64 = counts.iter().sum();
    let (mut chi, mut bins) = (0.0, 0usize);
    let (mut rest_obs, mut rest_exp) = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(expected) {
        let e = p * n as f64;
        if e < 5.0 {
            rest_obs += c as f64;
            rest_exp += e;
        } else {
            chi += (c as f64 - e).powi(2) / e;
            bins += 1;
        }
    }
    if rest_exp > 0.0 {
        chi += (rest_obs - rest_exp).powi(2) / rest_exp;
        bins += 1;
    }
    (chi, bins.saturating_sub(1))
}

/// The chi-square value a correct sampler exceeds with probability about 0.001
/// (Wilson-Hilferty).
fn critical_001(df: usize) -> f64 {
    let k = df.max(1) as f64;
    k * (1.0 - 2.0 / (9.0 * k) + 3.09 * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

fn uniform(rng: &mut u64) -> f32 {
    (ruvllm_esp32::sample::random_u32(rng) >> 8) as f32 / 16_777_216.0
}

fn draw(q: &[f32], rng: &mut u64) -> u32 {
    let (r, mut cdf) = (uniform(rng), 0.0);
    for (i, &x) in q.iter().enumerate() {
        cdf += x;
        if r < cdf {
            return i as u32;
        }
    }
    q.len() as u32 - 1
}

#[test]
fn rejection_sampling_keeps_a_synthetic_target_law() {
    let norm = |w: &[f32]| {
        let s: f32 = w.iter().sum();
        w.iter().map(|x| x / s).collect::<Vec<f32>>()
    };
    // A draft wrong in both directions: too sure of some tokens, blind to others.
    let p = norm(&[0.30, 0.05, 0.20, 0.0, 0.15, 0.10, 0.12, 0.08]);
    let q = norm(&[0.05, 0.40, 0.20, 0.10, 0.0, 0.05, 0.10, 0.10]);
    let law: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    let mut rng = seed_state(7);
    let (mut counts, mut naive) = ([0u64; 8], [0u64; 8]);
    for _ in 0..200_000 {
        let d = draw(&q, &mut rng);
        counts[speculative::verify_draw(&p, &q, d, &mut rng).unwrap_or(d) as usize] += 1;
        naive[draw(&q, &mut rng) as usize] += 1;
    }
    assert_eq!(counts[3], 0, "a token the target never picks was emitted");
    let (chi, df) = chi_square(&counts, &law);
    assert!(chi < critical_001(df), "chi-square {chi:.1} over {df} df: not the target's law");
    // The test has power: keeping every draft (the published simulation) gives q, not p.
    let (chi, df) = chi_square(&naive, &law);
    assert!(chi > 100.0 * critical_001(df), "the test cannot tell q from p ({chi:.1})");
}

#[test]
fn refusals() {
    let (ti, di) = (builtin(), draft());
    let target: Model = Model::from_gguf(ti.bytes()).unwrap();
    let n = target.config.n_layers;
    assert_eq!(speculative::early_exit(&target, 0).err(), Some(Refusal::EarlyExit { layer: 0, n_layers: n }));
    assert_eq!(speculative::early_exit(&target, n).err(), Some(Refusal::EarlyExit { layer: n, n_layers: n }));
    assert!(speculative::check_draft(&target, &Model::<64>::from_gguf(di.bytes()).unwrap()).is_ok());
    let Some(img) = stories(Quant::Q8) else { return };
    // stories260K has 512 tokens too, but another tokenizer.
    let other: Model = Model::from_gguf(img.bytes()).unwrap();
    assert!(matches!(speculative::check_draft(&target, &other), Err(Refusal::Tokenizer { .. })));
}

/// The integer path's batch equals its single-position forward, bit for bit.
fn int_batch_matches_single(model: &Model<'_>, what: &str) {
    let tokens = [1u32, 300, 45, 77, 12, 400, 9, 250, 3, 60];
    let seq = 64;
    let mut a1 = vec![0i32; IntState::arena_len(model, seq)];
    let mut a2 = a1.clone();
    let mut one = IntState::new(model, &mut a1, seq).unwrap();
    let mut many = IntState::new(model, &mut a2, seq).unwrap();
    let mut ba = vec![0i32; IntBatch::arena_len(model, 8)];
    let mut batch = IntBatch::new(model, &mut ba, 8).unwrap();
    many.forward_batch(model, &mut batch, &tokens[..3], 0, false).unwrap();
    let singles: Vec<Vec<i32>> =
        tokens.iter().enumerate().map(|(pos, &t)| one.forward(model, t, pos).unwrap().to_vec()).collect();
    many.forward_batch(model, &mut batch, &tokens[3..9], 3, true).unwrap();
    for i in 0..6 {
        assert_eq!(batch.logits(i), &singles[3 + i][..], "{what}: position {}", 3 + i);
    }
    assert_eq!(many.forward(model, tokens[9], 9).unwrap(), &singles[9][..], "{what}: after the batch");
}

/// Speculative generation on the integer path: the generated tokens.
fn int_tokens(
    target: &Model<'_>,
    draft: &Model<'_>,
    prompt: &[u32],
    steps: usize,
    gamma: usize,
    mode: Mode<'_, u32>,
) -> (Vec<u32>, speculative::SpecStats) {
    let mut ta = vec![0i32; IntState::arena_len(target, steps)];
    let mut da = vec![0i32; IntState::arena_len(draft, steps)];
    let mut ba = vec![0i32; IntBuffers::arena_len(target, gamma)];
    let mut ts = IntState::new(target, &mut ta, steps).unwrap();
    let mut ds = IntState::new(draft, &mut da, steps).unwrap();
    let mut buf = IntBuffers::new(target, &mut ba, gamma).unwrap();
    let mut got = Vec::new();
    let st =
        speculative::generate_tokens(target, &mut ts, draft, &mut ds, &mut buf, mode, prompt, steps, |t| {
            got.push(t)
        })
        .unwrap();
    (got, st)
}

/// The text `generate` would print for `tokens` generated after `prompt`.
fn text_of(model: &Model<'_>, prompt: &[u32], tokens: &[u32]) -> String {
    let mut text = Vec::new();
    let mut prev = *prompt.last().unwrap();
    for &t in tokens {
        let mut scratch = [0u8; ruvllm_esp32::tokenizer::DECODE_MAX];
        let piece = ruvllm_esp32::tokenizer::decode(&model.vocab, prev, t, &mut scratch);
        if ruvllm_esp32::tokenizer::is_printable(piece) {
            text.extend_from_slice(piece);
        }
        prev = t;
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn integer_greedy_is_the_targets_own() {
    let (ti, di) = (builtin(), draft());
    let target: Model = Model::from_gguf(ti.bytes()).unwrap();
    let small: Model = Model::from_gguf(di.bytes()).unwrap();
    let steps = 256;
    let p = prompt(&target, "Once upon a time");
    let mut arena = vec![0i32; IntState::arena_len(&target, steps)];
    let mut state = IntState::new(&target, &mut arena, steps).unwrap();
    let mut plain = Vec::new();
    infer::generate_int(&target, &mut state, &p, steps, |b, _| plain.extend_from_slice(b)).unwrap();
    let plain = String::from_utf8_lossy(&plain[b"Once upon a time".len()..]).into_owned();
    for (draft, gamma) in
        [(small.clone(), 1), (small.clone(), 4), (speculative::early_exit(&target, 3).unwrap(), 2)]
    {
        let (tokens, st) = int_tokens(&target, &draft, &p, steps, gamma, Mode::Greedy);
        assert_eq!(text_of(&target, &p, &tokens), plain, "gamma {gamma}");
        eprintln!(
            "integer, gamma {gamma}: acceptance {:.3}, {:.2} tokens per pass",
            st.acceptance_rate(),
            st.tokens_per_pass()
        );
    }
}

/// The integer sampler's law (its Q2.30 weights, normalized) after `prompt`, for the first two
/// generated tokens, as [`exact_two`] does for the float path.
fn exact_two_int(model: &Model<'_>, prompt: &[u32], temp_milli: u32) -> (Vec<f64>, Vec<f64>) {
    let n = prompt.len() + 2;
    let mut arena = vec![0i32; IntState::arena_len(model, n)];
    let mut st = IntState::new(model, &mut arena, n).unwrap();
    let law = |l: &[i32]| {
        let w = infer::integer::weigher(l, temp_milli);
        let total: u64 = l.iter().map(|&x| w(x)).sum();
        l.iter().map(|&x| w(x) as f64 / total as f64).collect::<Vec<f64>>()
    };
    two_token_law(model, &mut st, prompt, law)
}

#[test]
fn integer_sampling_keeps_the_integer_samplers_law() {
    let (ti, di) = (builtin(), draft());
    let target: Model = Model::from_gguf(ti.bytes()).unwrap();
    let small: Model = Model::from_gguf(di.bytes()).unwrap();
    let p = prompt(&target, "Once upon a time");
    let (p1, p2) = exact_two_int(&target, &p, 2000);
    let mut rng = seed_state(5);
    let (mut c1, mut c2) = (vec![0u64; p1.len()], vec![0u64; p1.len()]);
    let (mut drafted, mut accepted) = (0, 0);
    let bos = target.vocab.bos();
    for _ in 0..10_000 {
        let mode = Mode::Sample { temp: 2000, rng: &mut rng };
        let (got, st) = int_tokens(&target, &small, &p, p.len() + 2, 2, mode);
        drafted += st.drafted;
        accepted += st.accepted;
        tally(&got, bos, &mut c1, &mut c2);
    }
    assert_law("integer", [&c1, &c2], [&p1, &p2]);
    assert!(accepted > 0 && accepted < drafted, "{accepted} of {drafted}");
}
