//! The integer primitives against f64 references, overflow edges, and the no-float rule.

use super::*;

fn scale_value(s: Scale) -> f64 {
    s.m as f64 * libm::pow(2.0, s.e as f64)
}

#[test]
fn isqrt_is_the_floor_root() {
    for n in (0u64..5000).chain([u64::MAX, u64::MAX - 1, 1 << 62, (1 << 62) - 1, 1 << 32, (1 << 32) - 1]) {
        let r = isqrt(n);
        assert!(r.checked_mul(r).is_some_and(|sq| sq <= n), "{n}: {r}");
        assert!((r + 1).checked_mul(r + 1).is_none_or(|sq| sq > n), "{n}: {r}");
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = isqrt(x) as u128;
        assert!(r * r <= x as u128 && (r + 1) * (r + 1) > x as u128);
    }
}

#[test]
fn inv_sqrt_has_sixteen_bits() {
    for v in [1u64, 2, 3, 42_950, 1 << 32, 12_345_678_901, u64::MAX >> 1, u64::MAX] {
        let want = 1.0 / libm::sqrt(v as f64 / 4_294_967_296.0);
        let got = scale_value(inv_sqrt(v, 32));
        assert!((got / want - 1.0).abs() < 3e-5, "{v}: {got} vs {want}");
    }
    assert_eq!(inv_sqrt(0, 32), inv_sqrt(1, 32));
}

#[test]
fn exp_table_error_is_tiny() {
    let mut worst = 0.0f64;
    for t in (0u32..(24 << 16)).step_by(37).chain([0, 1, u32::MAX]) {
        let want = libm::exp(-(t as f64) / 65536.0);
        let got = exp_neg(t) as f64 / (1u64 << 30) as f64;
        worst = worst.max((got - want).abs());
    }
    assert!(worst < 2e-6, "max abs error {worst}");
    assert_eq!(exp_neg(0), 1 << 30);
    assert_eq!(EXP2_NEG[256], 1 << 29);
}

#[test]
fn sigmoid_table_error_is_tiny() {
    let mut worst = 0.0f64;
    for x in (-(20i64 << 16)..(20 << 16)).step_by(101).chain([i32::MIN as i64, i32::MAX as i64]) {
        let want = 1.0 / (1.0 + libm::exp(-(x as f64) / 65536.0));
        let got = sigmoid(x as i32) as f64 / (1u64 << 30) as f64;
        worst = worst.max((got - want).abs());
    }
    assert!(worst < 3e-5, "max abs error {worst}");
    assert_eq!(SIGMOID[0], 1 << 29);
}

#[test]
fn swiglu_matches_f64_and_saturates() {
    for (a, b) in [(1.5f64, -2.0f64), (-3.0, 0.5), (0.0, 7.0), (10.0, 10.0)] {
        let want = a / (1.0 + libm::exp(-a)) * b;
        let got = swiglu((a * 65536.0) as i32, (b * 65536.0) as i32) as f64 / 65536.0;
        assert!((got - want).abs() < 1e-3, "{a} {b}: {got} vs {want}");
    }
    assert_eq!(swiglu(i32::MAX, i32::MAX), i32::MAX);
    assert_eq!(swiglu(i32::MAX, i32::MIN), i32::MIN);
    assert_eq!(swiglu(i32::MIN, i32::MAX), 0);
}

#[test]
fn scales_decode_from_ieee_bits() {
    let cases = [
        1.0f32,
        -1.0,
        0.0078125,
        3.0e-3,
        1.0 / 127.0,
        123.456,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::MIN_POSITIVE / 3.0, // subnormal
        1.0e-45,                 // smallest subnormal
        0.999_999_94,            // rounds up across a power of two
    ];
    for v in cases {
        let s = Scale::from_ieee_bits(v.to_bits());
        assert!(s.m.unsigned_abs() >> 15 == 1, "{v}: mantissa {} not normalized", s.m);
        let got = scale_value(s);
        assert!((got / v as f64 - 1.0).abs() <= 1.0 / 65536.0, "{v}: {got}");
    }
    assert_eq!(Scale::from_ieee_bits(0), Scale::ZERO);
    assert_eq!(Scale::from_ieee_bits((-0.0f32).to_bits()).m, 0);
    // Infinity and NaN saturate to the largest magnitude instead of misbehaving.
    let inf = Scale::from_ieee_bits(f32::INFINITY.to_bits());
    assert!(scale_value(inf) > 3.0e38);
    let nan = Scale::from_ieee_bits(f32::NAN.to_bits());
    assert!(scale_value(nan).is_finite());
}

#[test]
fn group_scales_and_packing_round_trip() {
    for amax in [1u32, 127, 65_536, 1 << 24, 123_456_789, u32::MAX >> 1, 1 << 31] {
        let s = Scale::of_group(amax, FRAC);
        let want = amax as f64 / 65536.0 / 127.0;
        assert!((scale_value(s) / want - 1.0).abs() < 2.0 / 65536.0, "{amax}");
        assert_eq!(Scale::unpack(s.pack()), s);
    }
    assert_eq!(Scale::of_group(0, FRAC), Scale::ZERO);
    assert_eq!(Scale::unpack(Scale::ZERO.pack()), Scale::ZERO);
}

#[test]
fn shifts_round_and_saturate() {
    assert_eq!(shr_round(5, 1), 3);
    assert_eq!(shr_round(-5, 1), -2);
    assert_eq!(shr_round(i64::MAX, 70), 0);
    assert_eq!(shr_round(1, -62), 1 << 62);
    assert_eq!(shr_round(2, -62), i64::MAX);
    assert_eq!(shr_round(-2, -62), i64::MIN);
    assert_eq!(shr_round(-1, i32::MIN), i64::MIN);
    assert_eq!(shr_round(0, i32::MIN), 0);
    assert_eq!(sat32(i64::MAX), i32::MAX);
    assert_eq!(sat32(i64::MIN), i32::MIN);
}

#[test]
fn extreme_activations_saturate_without_panicking() {
    // Largest inputs through every kernel: results are clamped, never wrapped.
    let big = [i32::MAX, i32::MIN, i32::MAX, i32::MIN];
    let mut o = [0i32; 4];
    let w = [f32::MAX.to_bits(); 4];
    rmsnorm(&mut o, &big, &w, 0);
    assert!(o.iter().all(|v| v.unsigned_abs() >= (i32::MAX as u32) - 1), "{o:?}");
    let mut z = [0i32; 4];
    rmsnorm(&mut z, &[0; 4], &w, 0);
    assert_eq!(z, [0; 4]);

    let mut v = big;
    let table: Vec<u8> =
        [i32::MAX, i32::MIN, i32::MIN, i32::MAX].iter().flat_map(|c| c.to_le_bytes()).collect();
    rotate(&mut v, &table);
    let mut att = [i32::MAX, i32::MIN, 0];
    softmax(&mut att);
    assert_eq!(att[0], 1 << 30);
    assert_eq!(att[1], 0);

    // A matrix with absurd scales and activations at the limit.
    let q = [127i8; 64];
    let s = [f32::MAX.to_bits(), (-f32::MAX).to_bits(), f32::INFINITY.to_bits(), f32::NAN.to_bits()];
    let m = view::QMat { q: &q, s: &s, cols: 32 };
    let (mut xq, mut xs) = ([0i8; 32], [0i32; 1]);
    quantize(&[i32::MAX; 32], &mut xq, &mut xs, 32);
    let mut out = [0i32; 2];
    matvec(&mut out, &m, &xq, &xs, 32);
    assert_eq!(out, [i32::MAX, i32::MIN]);
    let mut e = [0i32; 32];
    embed(&mut e, &view::LMat::Q8(m), 1, 32);
    assert!(e.iter().all(|v| *v == i32::MIN));

    // Packed rows with the same scales: +1, -1 (times -MAX), +1, +1 (0x55 ternary, 0 binary).
    let tq = [[0x55u8; 8], [0xaa; 8], [0x55; 8], [0x55; 8]].concat();
    let bq = [[0u8; 4], [0xff; 4], [0; 4], [0; 4]].concat();
    for (m, want) in [
        (view::LMat::Ternary(view::PMat { q: &tq, s: &s, cols: 32 }), [i32::MAX; 4]),
        (view::LMat::Binary(view::PMat { q: &bq, s: &s, cols: 32 }), [i32::MAX; 4]),
    ] {
        let mut t = [0i32; 256];
        let mut out = [0i32; 4];
        matmul(&mut out, &m, &xq, &xs, 32, &mut Lut { t: &mut t, e: 0 }, true);
        assert_eq!(out, want);
    }
}

/// The packed kernels against f64 sums of code x activation, on stories260K's row lengths
/// (64, and 172 = 5 x 32 + 12) and odd ones.
#[test]
fn packed_matvecs_match_f64() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (rows, cols) in [(64usize, 64usize), (172, 64), (64, 172), (7, 37), (5, 3)] {
        let x: std::vec::Vec<i32> =
            (0..cols).map(|_| (next() % (40 << FRAC)) as i32 - (20 << FRAC)).collect();
        let (mut xq, mut xs) = (std::vec![0i8; cols], std::vec![0i32; cols.div_ceil(32)]);
        quantize(&x, &mut xq, &mut xs, 32);
        let scales: std::vec::Vec<f32> = (0..rows).map(|r| 0.01 + r as f32 * 0.003).collect();
        let s_bits: std::vec::Vec<u32> = scales.iter().map(|v| v.to_bits()).collect();
        for ternary in [true, false] {
            let stride = if ternary {
                crate::packed::ternary_row_bytes(cols)
            } else {
                crate::packed::binary_row_bytes(cols)
            };
            let mut q = std::vec![0u8; rows * stride];
            let mut codes = std::vec![0i8; rows * cols];
            for (c, qr) in codes.chunks_exact_mut(cols).zip(q.chunks_exact_mut(stride)) {
                for v in c.iter_mut() {
                    *v = (next() % 3) as i8 - 1;
                    if !ternary && *v == 0 {
                        *v = 1;
                    }
                }
                if ternary {
                    crate::packed::pack_ternary(c, qr);
                } else {
                    crate::packed::pack_binary(c, qr);
                }
            }
            let pm = view::PMat { q: &q, s: &s_bits, cols };
            let m = if ternary { view::LMat::Ternary(pm) } else { view::LMat::Binary(pm) };
            let mut out = std::vec![0i32; rows];
            let mut t = std::vec![0x5a5a_5a5ai32; 32 * stride];
            matmul(&mut out, &m, &xq, &xs, 32, &mut Lut { t: &mut t, e: 7 }, true);
            for r in 0..rows {
                let mut want = 0f64;
                let mut bound = 0f64;
                for j in 0..cols {
                    let sx = scale_value(Scale::unpack(xs[j / 32]));
                    let t = codes[r * cols + j] as f64 * xq[j] as f64 * sx;
                    want += t;
                    bound += t.abs();
                }
                let rs = scale_value(Scale::from_ieee_bits(s_bits[r]));
                let got = out[r] as f64 / 65536.0;
                assert!(
                    (got - want * rs).abs() <= bound * rs * 1e-5 + 2.0 / 65536.0,
                    "ternary {ternary} {rows}x{cols} row {r}: {got} vs {}",
                    want * rs
                );
            }
        }
    }
}

#[test]
fn argmax_takes_the_first_maximum() {
    assert_eq!(argmax(&[1, 5, 5, -3]), 1);
    assert_eq!(argmax(&[i32::MIN, i32::MIN]), 0);
    assert_eq!(argmax(&[]), 0);
}

/// The per-token code (this module's forward pass and its primitives) names no float type:
/// floats appear only in `view.rs` (reinterpreting the image's f32 words as bits) and
/// `tables.rs` (evaluated by the compiler).
#[test]
fn no_float_type_in_the_per_token_code() {
    for (name, src) in [("mod.rs", include_str!("mod.rs")), ("fixed.rs", include_str!("fixed.rs"))] {
        for (i, line) in src.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in code.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
                assert!(
                    !matches!(word, "f32" | "f64" | "from_bits" | "to_bits"),
                    "{name}:{}: float type in per-token code: {line}",
                    i + 1
                );
            }
        }
    }
}

#[test]
fn q8_0_blocks_compute_exactly_what_split_int8_does_with_their_scales() {
    // 8 rows of 64 values with varied codes and f16 scales, as blocks and as codes + scales.
    let (rows, cols) = (8usize, 64usize);
    let q: Vec<i8> = (0..rows * cols).map(|i| ((i * 37 + 11) % 255) as i8).map(|v| v.max(-127)).collect();
    let half: Vec<u16> = (0..rows * 2).map(|i| crate::gguf::f32_to_f16(0.001 * (i as f32 + 1.5))).collect();
    let s: Vec<u32> = half.iter().map(|h| crate::gguf::f16_to_f32_bits(*h)).collect();
    let b: Vec<u8> = half
        .iter()
        .zip(q.chunks_exact(32))
        .flat_map(|(h, q)| h.to_le_bytes().into_iter().chain(q.iter().map(|v| *v as u8)))
        .collect();
    let x: Vec<i32> = (0..cols as i32).map(|i| (i - 30) * 40_000).collect();
    let (mut xq, mut xs) = (vec![0i8; cols], vec![0i32; 2]);
    quantize(&x, &mut xq, &mut xs, 32);
    let (split, blocks) = (view::QMat { q: &q, s: &s, cols }, view::BMat { b: &b, cols });
    let (mut a, mut c) = (vec![0i32; rows], vec![0i32; rows]);
    matvec(&mut a, &split, &xq, &xs, 32);
    matvec_blocks(&mut c, &blocks, &xq, &xs);
    assert_eq!(a, c);
    assert!(a.iter().any(|v| *v != 0));
    let (mut e1, mut e2) = (vec![0i32; cols], vec![0i32; cols]);
    embed(&mut e1, &view::LMat::Q8(split), 5, 32);
    embed(&mut e2, &view::LMat::Q8Block(blocks), 5, 32);
    assert_eq!(e1, e2);
}

/// `scaled` as first written: one 64-bit product and the general shift.
fn scaled_any(isum: i32, weight_scale_bits: u32, x: Scale) -> i64 {
    let w = Scale::from_ieee_bits(weight_scale_bits);
    let t = isum as i64 * (w.m as i64 * x.m as i64);
    shr_round(t, -(w.e + x.e + ACC))
}

/// A small deterministic generator for the exhaustive-ish checks below.
fn lcg(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 11
}

#[test]
fn the_fast_group_scaling_equals_the_general_one() {
    let mut st = 1u64;
    // Every exponent class of the weight scale (zero, subnormal, normal, infinity, NaN), both
    // signs, and activation scales across shifts from far left to far right.
    for _ in 0..200_000 {
        let r = lcg(&mut st);
        let bits = match r % 8 {
            0 => 0,
            1 => (r >> 8) as u32 & 0x807f_ffff,
            2 => 0x7f80_0000 | ((r >> 8) as u32 & 0x8000_0000),
            3 => 0x7fc0_0001,
            _ => (r >> 8) as u32,
        };
        let isum = (lcg(&mut st) % (2 * 32 * 128 * 128 + 1)) as i32 - 32 * 128 * 128;
        let x =
            Scale { m: (1 << 15) + (lcg(&mut st) % (1 << 15)) as i32, e: (lcg(&mut st) % 120) as i32 - 90 };
        assert_eq!(scaled(isum, bits, x), scaled_any(isum, bits, x), "{isum} {bits:#x} {x:?}");
    }
    for sh in 1..=31u32 {
        for _ in 0..2_000 {
            let v = lcg(&mut st) as i64 - (1i64 << 52);
            assert_eq!(shr_round_31(v, sh), shr_round(v, sh as i32), "{v} >> {sh}");
        }
    }
}

#[test]
fn the_unrolled_matvec_equals_the_general_one() {
    let mut st = 7u64;
    for (rows, cols) in [(4, 32), (7, 64), (9, 172), (5, 12), (64, 64)] {
        let ng = usize::div_ceil(cols, 32);
        let q: Vec<i8> = (0..rows * cols).map(|_| lcg(&mut st) as i8).collect();
        let s: Vec<u32> =
            (0..rows * ng).map(|_| (0.001f32 + (lcg(&mut st) % 1000) as f32 / 1e4).to_bits()).collect();
        let xq: Vec<i8> = (0..cols).map(|_| lcg(&mut st) as i8).collect();
        let xs: Vec<i32> =
            (0..ng).map(|_| Scale::of_group(1 + (lcg(&mut st) % 50_000_000) as u32, FRAC).pack()).collect();
        let m = QMat { q: &q, s: &s, cols };
        let (mut fast, mut general) = (vec![0; rows], vec![0; rows]);
        matvec32(&mut fast, &m, &xq, &xs);
        // A group size the fast path does not take, over the same groups of 32.
        let mut acc = vec![0i64; rows];
        for (r, a) in acc.iter_mut().enumerate() {
            for g in 0..ng {
                let w = &q[r * cols + 32 * g..r * cols + (32 * g + 32).min(cols)];
                let isum = w.iter().zip(&xq[32 * g..]).map(|(a, b)| *a as i32 * *b as i32).sum();
                *a = a.saturating_add(scaled_any(isum, s[r * ng + g], Scale::unpack(xs[g])));
            }
        }
        for (o, a) in general.iter_mut().zip(acc) {
            *o = sat32(shr_round(a, ACC - FRAC as i32));
        }
        assert_eq!(fast, general, "{rows}x{cols}");
    }
}
