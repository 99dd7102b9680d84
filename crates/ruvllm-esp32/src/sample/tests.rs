use super::*;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

fn ln_probs(p: &[f32]) -> Vec<f32> {
    p.iter().map(|&x| libm::logf(x)).collect()
}

/// Draws `draws` samples from fresh copies of `logits` and returns the frequency per token.
fn frequencies(s: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
    let mut counts = vec![0usize; logits.len()];
    let mut scratch = vec![ProbIndex::default(); logits.len()];
    for _ in 0..draws {
        let mut l = logits.to_vec();
        counts[s.sample(&mut l, &mut scratch) as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / draws as f64).collect()
}

#[test]
fn rng_matches_llama2c_xorshift() {
    // Expected values computed independently with 64-bit wrapping arithmetic.
    let mut s = Sampler::new(1.0, 0.9, 0, 42);
    assert_eq!(s.random_u32(), 1456360119);
    assert_eq!(s.random_u32(), 3359763283);
    assert_eq!(s.random_u32(), 3393612768);
    let f = s.random_f32();
    assert!((0.0..1.0).contains(&f));
}

#[test]
fn greedy_is_argmax_first_max_wins() {
    let mut s = Sampler::new(0.0, 0.9, 0, 1);
    let mut scratch = [ProbIndex::default(); 5];
    assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 3.0, 2.0], &mut scratch), 1);
    assert_eq!(s.sample(&mut [f32::NAN, 0.5, 0.5], &mut scratch), 1);
    assert_eq!(s.sample(&mut [f32::NAN, f32::NAN], &mut scratch), 0);
    assert_eq!(s.sample(&mut [-f32::INFINITY, f32::INFINITY, 1.0], &mut scratch), 1);
    assert_eq!(s.sample(&mut [], &mut scratch), 0);
}

/// The lane-wise argmax picks exactly the index of the one-at-a-time definition: ties (the
/// first wins, also between -0.0 and 0.0), NaN anywhere, all -inf, lengths around the lane
/// count, and random logits.
#[test]
fn fast_argmax_matches_the_definition() {
    let nan = f32::NAN;
    let ninf = f32::NEG_INFINITY;
    let mut cases: Vec<Vec<f32>> = vec![
        vec![],
        vec![nan],
        vec![ninf, ninf, nan],
        vec![-0.0, 0.0, -1.0],
        vec![0.0, -0.0],
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.0],
        vec![9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0, nan],
        vec![nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0],
        vec![f32::INFINITY; 20],
    ];
    let mut s = 12345u32;
    for n in [1usize, 7, 8, 9, 15, 16, 17, 512, 1000] {
        for coarse in [false, true] {
            cases.push(
                (0..n)
                    .map(|_| {
                        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        // Coarse values tie often; a few NaN too.
                        match (s >> 28, coarse) {
                            (0, _) => nan,
                            (_, true) => ((s >> 20) % 5) as f32,
                            _ => (s >> 8) as f32 / 65536.0 - 128.0,
                        }
                    })
                    .collect(),
            );
        }
    }
    for c in &cases {
        assert_eq!(argmax(c), argmax_simple(c), "{c:?}");
    }
}

#[test]
fn same_seed_same_sequence_different_seed_differs() {
    let logits: Vec<f32> = (0..50).map(|i| libm::sinf(i as f32) * 2.0).collect();
    let run = |seed, top_p, top_k| {
        let mut s = Sampler::new(0.9, top_p, top_k, seed);
        let mut scratch = vec![ProbIndex::default(); logits.len()];
        (0..64).map(|_| s.sample(&mut logits.clone(), &mut scratch)).collect::<Vec<u32>>()
    };
    for (p, k) in [(1.0, 0), (0.9, 0), (0.0, 10), (0.8, 20)] {
        assert_eq!(run(7, p, k), run(7, p, k));
        assert_ne!(run(7, p, k), run(8, p, k));
    }
}

#[test]
fn multinomial_frequencies_within_one_percent() {
    let p = [0.1, 0.2, 0.3, 0.4];
    let mut s = Sampler::new(1.0, 1.0, 0, 1234);
    let f = frequencies(&mut s, &ln_probs(&p), 100_000);
    for (fi, pi) in f.iter().zip(p) {
        assert!((fi - pi as f64).abs() < 0.01, "{f:?} vs {p:?}");
    }
}

#[test]
fn top_k_keeps_the_k_most_probable() {
    let p = [0.1, 0.2, 0.3, 0.4];
    let mut s = Sampler::new(1.0, 0.0, 2, 99);
    let f = frequencies(&mut s, &ln_probs(&p), 50_000);
    assert_eq!(f[0] + f[1], 0.0);
    assert!((f[3] - 4.0 / 7.0).abs() < 0.01, "{f:?}");
}

#[test]
fn top_p_stays_in_nucleus() {
    // Sorted: 0.4 (1), 0.3 (2) -> cumulative 0.7 > 0.5, so the nucleus is {1, 2}.
    let p = [0.05, 0.4, 0.3, 0.15, 0.1];
    let mut s = Sampler::new(1.0, 0.5, 0, 5);
    let f = frequencies(&mut s, &ln_probs(&p), 50_000);
    assert_eq!(f[0] + f[3] + f[4], 0.0, "{f:?}");
    assert!((f[1] - 4.0 / 7.0).abs() < 0.01, "{f:?}");
    // With top-k as well the nucleus is taken relative to the kept mass: top-3 keeps
    // 0.4 + 0.3 + 0.15 = 0.85, half of it (0.425) is exceeded at the second token.
    let mut s = Sampler::new(1.0, 0.5, 3, 5);
    let f = frequencies(&mut s, &ln_probs(&p), 20_000);
    assert_eq!(f[0] + f[3] + f[4], 0.0, "{f:?}");
}

#[test]
fn top_p_prefilter_that_keeps_nothing_falls_back_to_all() {
    // cutoff (1 - 0.1) / 1 = 0.9 drops both 0.5s; llama2.c would read index -1 here.
    let mut s = Sampler::new(1.0, 0.1, 0, 3);
    let mut scratch = [ProbIndex::default(); 2];
    for _ in 0..100 {
        assert_eq!(s.sample(&mut [0.0, 0.0], &mut scratch), 0);
    }
}

#[test]
fn short_scratch_falls_back_without_panicking() {
    for (p, k) in [(0.9, 0), (0.0, 2), (0.5, 3)] {
        let mut s = Sampler::new(1.0, p, k, 11);
        let mut scratch = [ProbIndex::default(); 1];
        for _ in 0..100 {
            assert!(s.sample(&mut [1.0, 2.0, 3.0, 0.5], &mut scratch) < 4);
        }
    }
}

#[test]
fn softmax_edge_cases() {
    let mut x = [1.0, 2.0, 3.0];
    softmax(&mut x);
    assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(x[2] > x[1] && x[1] > x[0]);
    let mut x = [f32::INFINITY, 0.0, f32::INFINITY, f32::NAN];
    softmax(&mut x);
    assert_eq!(x, [0.5, 0.0, 0.5, 0.0]);
    let mut x = [f32::NAN, f32::NEG_INFINITY];
    softmax(&mut x);
    assert_eq!(x, [0.5, 0.5]);
    softmax(&mut []);
}

fn any_logit() -> impl Strategy<Value = f32> {
    prop_oneof![-30.0f32..30.0, Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY), any::<f32>(),]
}

proptest! {
    #[test]
    fn top_k_one_equals_greedy(logits in proptest::collection::vec(-20.0f32..20.0, 1..64), seed in 1u64.., t in 0.1f32..2.0) {
        let mut greedy = Sampler::new(0.0, 0.0, 0, seed);
        let mut top1 = Sampler::new(t, 0.9, 1, seed);
        let mut scratch = vec![ProbIndex::default(); logits.len()];
        let g = greedy.sample(&mut logits.clone(), &mut scratch);
        let k = top1.sample(&mut logits.clone(), &mut scratch);
        // Distinct logits can round to the same probability; then top-1 takes the lower index.
        let mut probs: Vec<f32> = logits.iter().map(|l| l / t).collect();
        softmax(&mut probs);
        prop_assert!(g == k || probs[g as usize] == probs[k as usize]);
    }

    #[test]
    fn never_panics_on_hostile_logits(logits in proptest::collection::vec(any_logit(), 0..40),
                                      t in prop_oneof![Just(0.0f32), Just(1.0), Just(f32::NAN), Just(-1.0), any::<f32>()],
                                      p in prop_oneof![Just(0.0f32), Just(0.5), Just(0.9), Just(f32::NAN), any::<f32>()],
                                      k in 0usize..50, seed: u64, short: bool) {
        let mut s = Sampler::new(t, p, k, seed);
        let mut scratch = vec![ProbIndex::default(); if short { logits.len() / 2 } else { logits.len() }];
        let mut l = logits.clone();
        let id = s.sample(&mut l, &mut scratch);
        prop_assert!((id as usize) < logits.len().max(1));
    }
}
