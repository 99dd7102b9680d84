//! The integer sampler against exact softmax probabilities (f64), and its seeding.

use super::*;

/// Draws `n` tokens from `logits` (Q16.16) at `temp_milli`, counting each.
fn counts(logits: &[i32], temp_milli: u32, seed: u64, n: usize) -> std::vec::Vec<u64> {
    let mut rng = crate::sample::seed_state(seed);
    let mut c = std::vec![0u64; logits.len()];
    for _ in 0..n {
        c[sample_int(logits, temp_milli, &mut rng) as usize] += 1;
    }
    c
}

/// exp(l / T) / sum, in f64.
fn softmax(logits: &[i32], temp_milli: u32) -> std::vec::Vec<f64> {
    let t = temp_milli as f64 / 1000.0;
    let x: std::vec::Vec<f64> = logits.iter().map(|&l| l as f64 / 65536.0 / t).collect();
    let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: std::vec::Vec<f64> = x.iter().map(|v| libm::exp(v - max)).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// Pearson's chi-square of `observed` against `p`, pooling cells expected below 5.
fn chi_square(observed: &[u64], p: &[f64]) -> (f64, usize) {
    let n: u64 = observed.iter().sum();
    let (mut chi, mut cells, mut pool_o, mut pool_e) = (0.0, 0usize, 0.0, 0.0);
    for (&o, &p) in observed.iter().zip(p) {
        let e = p * n as f64;
        if e < 5.0 {
            pool_o += o as f64;
            pool_e += e;
            continue;
        }
        chi += (o as f64 - e) * (o as f64 - e) / e;
        cells += 1;
    }
    if pool_e > 0.0 {
        chi += (pool_o - pool_e) * (pool_o - pool_e) / pool_e.max(1e-9);
        cells += 1;
    }
    (chi, cells)
}

#[test]
fn temperature_zero_is_argmax() {
    let logits = [3 << 16, 7 << 16, 7 << 16, -2 << 16];
    let mut rng = 99;
    for _ in 0..10 {
        assert_eq!(sample_int(&logits, 0, &mut rng), 1);
    }
    assert_eq!(rng, 99, "greedy does not draw");
    assert_eq!(sample_int(&[], 800, &mut rng), 0);
}

#[test]
fn frequencies_follow_the_exact_softmax() {
    // Fixed logits spanning several units, a tie, and a very unlikely token.
    let logits: std::vec::Vec<i32> = [2.0, 1.5, 1.5, 0.25, -0.5, -1.0, 0.0, 3.0, -12.0, 0.75]
        .iter()
        .map(|v| (v * 65536.0) as i32)
        .collect();
    let n = 200_000;
    for temp in [250, 800, 1000, 2500] {
        let p = softmax(&logits, temp);
        let c = counts(&logits, temp, 12345, n);
        let (chi, cells) = chi_square(&c, &p);
        // 99.9th percentile of chi-square with <= 9 degrees of freedom is 27.9.
        assert!(chi < 27.9, "T={temp}: chi-square {chi} over {cells} cells; counts {c:?} vs p {p:?}");
        // And the check can fail: the same counts against the probabilities of tokens 0 and 1
        // (logits 2.0 and 1.5) swapped do.
        let mut q = p.clone();
        q.swap(0, 1);
        assert!(chi_square(&c, &q).0 > 100.0, "T={temp}: the test cannot tell tokens 0 and 1 apart");
    }
}

#[test]
fn the_same_seed_gives_the_same_draws_and_another_seed_others() {
    let logits: std::vec::Vec<i32> = (0..64).map(|i| ((i * 7919) % 97 - 48) << 12).collect();
    let draw = |seed: u64| {
        let mut rng = crate::sample::seed_state(seed);
        (0..64).map(|_| sample_int(&logits, 1000, &mut rng)).collect::<std::vec::Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    assert_eq!(draw(0), draw(0), "seed 0 is replaced, not stuck");
    assert!(draw(0).iter().any(|&t| t != draw(0)[0]));
}
