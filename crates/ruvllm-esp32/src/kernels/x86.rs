//! AVX2 + FMA kernels for x86-64 hosts, chosen at run time by [`detect`]. Each one computes
//! the same function as its `reference` twin (tests compare them); only the f32 summation
//! order differs.

use super::{reference, AttnShape, CacheQ8, Kernels, QueryQ8};
use core::arch::x86_64::*;
use std::{vec, vec::Vec};

/// The AVX2 kernel set, if this CPU has AVX2 and FMA.
pub fn detect() -> Option<Kernels> {
    if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
        return None;
    }
    let avx2 = Kernels {
        name: "avx2",
        matvec_f32,
        matvec_q8,
        matvec_q8_block,
        matvec_ternary,
        matvec_binary,
        attention_f32,
        swiglu,
        attention_q8,
        quantize,
    };
    // AVX-VNNI's int8 dot product on 256-bit registers (the 512-bit VNNI matvec measured
    // slower here than the AVX2 one).
    let avx2 = if std::is_x86_feature_detected!("avxvnni") {
        Kernels { name: "avx2+vnni", matvec_q8: matvec_q8_on::<VNNI>, ..avx2 }
    } else {
        avx2
    };
    if std::is_x86_feature_detected!("avx512f") {
        // Wider f32 products. The rest stays 256-bit: a head of 8 values fills one register.
        let name = if avx2.name == "avx2" { "avx512" } else { "avx512+vnni" };
        let wide = Kernels { name, matvec_f32: matvec_f32_512, attention_f32: attention_f32_512, ..avx2 };
        if std::is_x86_feature_detected!("avx512vl") {
            let matvec_q8 = if name == "avx512" { matvec_q8 } else { matvec_q8_on::<VNNI_WIDE> };
            let attention_q8 =
                if std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vnni") {
                    // The 512-bit score and exponential passes: the same floats.
                    attention_q8_on::<ZMM>
                } else {
                    attention_q8_512
                };
            return Some(Kernels { attention_q8, matvec_q8, ..wide });
        }
        return Some(wide);
    }
    Some(avx2)
}

/// The AVX2 set even on a CPU that has AVX-512 or AVX-VNNI, so tests can compare each with
/// the reference.
pub fn avx2_only() -> Option<Kernels> {
    detect().map(|k| Kernels { name: "avx2", matvec_f32, matvec_q8, attention_f32, attention_q8, ..k })
}

fn matvec_f32_512(out: &mut [f32], w: &[f32], x: &[f32]) {
    assert!(w.len() >= out.len() * x.len());
    // SAFETY: only reachable through `detect`, which checked AVX-512F; bounds asserted.
    unsafe { matvec_f32_avx512_rows(out, w, x) }
}

/// [`matvec_f32_avx512`] for rows of up to 192 values: the activation held in registers, each
/// block's rows read one after the other, front to back, while the next block is fetched into
/// L1 (the weights stream from L2 at every token: 7% faster loop on stories260K than the
/// column-interleaved order). Every accumulator takes the same products in the same order, so
/// the floats are the same. Wider rows run [`matvec_f32_avx512`].
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn matvec_f32_avx512_rows(out: &mut [f32], w: &[f32], x: &[f32]) {
    macro_rules! chunks {
        ($($c:literal)*) => {
            match x.len().div_ceil(16) {
                $($c => block_rows::<$c>(out, w, x),)*
                _ => matvec_f32_avx512(out, w, x),
            }
        };
    }
    chunks!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// [`matvec_f32_avx512_rows`] for rows of `C` chunks of sixteen (the last one masked).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_rows<const C: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    let tail: __mmask16 = if n.is_multiple_of(16) { !0 } else { ((1u32 << (n % 16)) - 1) as __mmask16 };
    let chunk = |p: *const f32, c: usize| {
        if c + 1 < C {
            _mm512_loadu_ps(p.add(16 * c))
        } else {
            _mm512_maskz_loadu_ps(tail, p.add(16 * c))
        }
    };
    let xs: [__m512; C] = core::array::from_fn(|c| chunk(x.as_ptr(), c));
    let mut r = 0;
    while r + 8 <= out.len() {
        let base = w.as_ptr().add(r * n);
        let mut acc = [_mm512_setzero_ps(); 8];
        for (i, acc) in acc.iter_mut().enumerate() {
            let row = base.add(i * n);
            for (c, xv) in xs.iter().enumerate() {
                // The same chunk of the next block (past the matrix's end a prefetch is a no-op).
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(8 * n + 16 * c) as *const i8);
                *acc = _mm512_fmadd_ps(chunk(row, c), *xv, *acc);
            }
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(r), block_sums(&acc));
        r += 8;
    }
    while r < out.len() {
        let row = w.as_ptr().add(r * n);
        let mut acc = _mm512_setzero_ps();
        for (c, xv) in xs.iter().enumerate() {
            acc = _mm512_fmadd_ps(chunk(row, c), *xv, acc);
        }
        out[r] = _mm512_reduce_add_ps(acc);
        r += 1;
    }
}

fn matvec_f32(out: &mut [f32], w: &[f32], x: &[f32]) {
    assert!(w.len() >= out.len() * x.len());
    // SAFETY: only reachable through `detect`, which checked AVX2 and FMA; bounds asserted.
    unsafe { matvec_f32_avx2(out, w, x) }
}

/// Which int8 matvec kernel [`matvec_q8_on`] runs.
const AVX2: u8 = 0;
const VNNI: u8 = 1;
/// VNNI with the AVX-512 register file.
const VNNI_WIDE: u8 = 2;

fn matvec_q8(out: &mut [f32], wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32], group: usize) {
    matvec_q8_on::<AVX2>(out, wq, ws, xq, xs, group)
}

fn matvec_q8_on<const KERNEL: u8>(
    out: &mut [f32],
    wq: &[i8],
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
    group: usize,
) {
    let n = xq.len();
    let ng = n.div_ceil(group);
    if group != 32 {
        return reference::matvec_q8(out, wq, ws, xq, xs, group);
    }
    assert!(wq.len() >= out.len() * n && ws.len() >= out.len() * ng && xs.len() >= ng);
    // SAFETY: only reachable through `detect`, which checked AVX2 and FMA, and AVX-VNNI for
    // `VNNI`, and AVX-512F and VL too for `VNNI_WIDE`; bounds asserted.
    unsafe {
        match KERNEL {
            VNNI => matvec_q8_vnni(out, wq, ws, xq, xs),
            VNNI_WIDE => matvec_q8_vnni_wide(out, wq, ws, xq, xs),
            _ => matvec_q8_avx2(out, wq, ws, xq, xs),
        }
    }
}

fn matvec_q8_block(out: &mut [f32], wb: &[u8], xq: &[i8], xs: &[f32]) {
    let nb = xq.len() / 32;
    assert!(xq.len() == nb * 32 && wb.len() >= out.len() * nb * BLOCK && xs.len() >= nb);
    // SAFETY: as above.
    unsafe { matvec_q8_block_avx2(out, wb, xq, xs) }
}

fn matvec_ternary(out: &mut [f32], wq: &[u8], ws: &[f32], xq: &[i8], xs: &[f32], group: usize) {
    matvec_packed::<true>(out, wq, ws, xq, xs, group)
}

fn matvec_binary(out: &mut [f32], wq: &[u8], ws: &[f32], xq: &[i8], xs: &[f32], group: usize) {
    matvec_packed::<false>(out, wq, ws, xq, xs, group)
}

fn matvec_packed<const TERNARY: bool>(
    out: &mut [f32],
    wq: &[u8],
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
    group: usize,
) {
    let n = xq.len();
    let stride =
        if TERNARY { crate::packed::ternary_row_bytes(n) } else { crate::packed::binary_row_bytes(n) };
    let reference = if TERNARY { reference::matvec_ternary } else { reference::matvec_binary };
    if group != 32 || n == 0 {
        return reference(out, wq, ws, xq, xs, group);
    }
    assert!(wq.len() >= out.len() * stride && ws.len() >= out.len() && xs.len() >= n.div_ceil(32));
    let blocks = out.len() / 8 * 8;
    // SAFETY: only reachable through `detect`, which checked AVX2 and FMA; the kernel reads
    // rows through bounds-checked slices.
    unsafe { matvec_packed_avx2::<TERNARY>(&mut out[..blocks], wq, ws, xq, xs) };
    let (done_w, done_s) = (blocks * stride, blocks);
    reference(&mut out[blocks..], &wq[done_w..], &ws[done_s..], xq, xs, group);
}

fn quantize(x: &[f32], q: &mut [i8], scales: &mut [f32], group: usize) {
    if group != 32 {
        return crate::quant::quantize_row(x, q, scales, group);
    }
    assert!(q.len() >= x.len() && scales.len() >= x.len().div_ceil(32));
    // SAFETY: as above.
    unsafe { quantize_avx2(x, q, scales) }
}

fn swiglu(h1: &mut [f32], h3: &[f32]) {
    assert!(h3.len() >= h1.len());
    // SAFETY: as above.
    unsafe { swiglu_avx2(h1, h3) }
}

fn attention_q8(
    out: &mut [f32],
    query: QueryQ8<'_>,
    cache: CacheQ8<'_>,
    att: &mut [f32],
    shape: AttnShape,
    group: usize,
) {
    attention_q8_on::<YMM>(out, query, cache, att, shape, group)
}

/// Which int8 attention kernel [`attention_q8_on`] runs: AVX2, the same with AVX-512's
/// register file, or two positions per 512-bit register (AVX-512 BW and VNNI too).
const YMM: u8 = 0;
const YMM32: u8 = 1;
const ZMM: u8 = 2;

/// [`attention_q8`] with the AVX-512 register file (32 vector registers, so the kernel's
/// accumulators are not spilled): the same instructions on the same values.
fn attention_q8_512(
    out: &mut [f32],
    query: QueryQ8<'_>,
    cache: CacheQ8<'_>,
    att: &mut [f32],
    shape: AttnShape,
    group: usize,
) {
    attention_q8_on::<YMM32>(out, query, cache, att, shape, group)
}

fn attention_q8_on<const KERNEL: u8>(
    out: &mut [f32],
    query: QueryQ8<'_>,
    cache: CacheQ8<'_>,
    att: &mut [f32],
    shape: AttnShape,
    group: usize,
) {
    let AttnShape { head_size: hs, kv_dim, .. } = shape;
    let n_heads = query.q.len() / hs;
    let positions = cache.keys.len() / kv_dim;
    let ng = kv_dim.div_ceil(group);
    check_attention(out, query.q, cache.keys.len(), cache.values.len(), att, shape);
    assert!(
        cache.key_scales.len() >= positions * ng
            && cache.value_scales.len() >= positions * ng
            && query.qq.len() >= query.q.len()
            && query.qs.len() >= query.q.len().div_ceil(group)
    );
    if hs == 8 && group == 32 && kv_dim.is_multiple_of(32) && n_heads.is_multiple_of(8) {
        // SAFETY: as above (`YMM32` only through `detect` having checked AVX-512F and VL,
        // `ZMM` BW and VNNI too); the shape is the one these kernels are written for.
        return unsafe {
            match KERNEL {
                ZMM if shape.kv_mul.is_multiple_of(2) => attention_q8_hs8_zmm(out, query, cache, att, shape),
                YMM32 | ZMM => attention_q8_hs8_avx512(out, query, cache, att, shape),
                _ => attention_q8_hs8_avx2(out, query, cache, att, shape),
            }
        };
    }
    // Otherwise the f32 block kernel on the dequantized query, if each head lies inside one
    // scale group.
    if !(hs.is_multiple_of(8) && hs <= group && group.is_multiple_of(hs)) {
        return reference::attention_q8(out, query, cache, att, shape, group);
    }
    let rows = Cache {
        keys: cache.keys.as_ptr() as *const u8,
        values: cache.values.as_ptr() as *const u8,
        key_scales: cache.key_scales.as_ptr(),
        value_scales: cache.value_scales.as_ptr(),
        ng,
        group,
    };
    // SAFETY: as above; the cache holds `positions` rows of `kv_dim` int8 values and `ng` scales.
    unsafe { attention_blocks_avx2::<true>(out, query.q, positions, rows, att, shape) }
}

fn attention_f32(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    att: &mut [f32],
    shape: AttnShape,
) {
    if !shape.head_size.is_multiple_of(8) {
        return reference::attention_f32(out, q, keys, values, att, shape);
    }
    check_attention(out, q, keys.len(), values.len(), att, shape);
    let cache = Cache {
        keys: keys.as_ptr() as *const u8,
        values: values.as_ptr() as *const u8,
        key_scales: core::ptr::null(),
        value_scales: core::ptr::null(),
        ng: 0,
        group: 1,
    };
    // SAFETY: as above; the cache holds `positions` rows of `kv_dim` f32 values.
    unsafe { attention_blocks_avx2::<false>(out, q, keys.len() / shape.kv_dim, cache, att, shape) }
}

/// [`attention_f32`] with AVX-512: heads of eight values two positions per 512-bit register
/// ([`attention_f32_hs8_zmm`], the same floats); other shapes run the 256-bit kernel.
fn attention_f32_512(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    att: &mut [f32],
    shape: AttnShape,
) {
    let n_heads = q.len() / 8;
    if shape.head_size != 8 || n_heads == 0 || !n_heads.is_multiple_of(8) {
        return attention_f32(out, q, keys, values, att, shape);
    }
    check_attention(out, q, keys.len(), values.len(), att, shape);
    // SAFETY: only reachable through `detect`, which checked AVX-512F, AVX2 and FMA; bounds
    // checked above, the shape is the one the kernel is written for.
    unsafe {
        match shape.kv_mul {
            1 => attention_f32_hs8_zmm::<true, false>(out, q, keys, values, att, shape),
            2 | 4 => attention_f32_hs8_zmm::<true, true>(out, q, keys, values, att, shape),
            m if m % 2 == 0 => attention_f32_hs8_zmm::<false, true>(out, q, keys, values, att, shape),
            _ => attention_f32_hs8_zmm::<false, false>(out, q, keys, values, att, shape),
        }
    }
}

/// The bounds every fast attention relies on.
fn check_attention(out: &[f32], q: &[f32], keys: usize, values: usize, att: &[f32], shape: AttnShape) {
    let AttnShape { head_size: hs, kv_dim, kv_mul } = shape;
    let n_heads = q.len() / hs;
    let positions = keys / kv_dim;
    assert!(
        out.len() >= q.len()
            && values >= keys
            && att.len() >= n_heads.next_multiple_of(8).max(8) * positions
            && n_heads.div_ceil(kv_mul) * hs <= kv_dim
    );
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sums each of eight vectors: lane i of the result is the sum of `v[i]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum8(v: &[__m256; 8]) -> __m256 {
    let a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    let b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    // a holds [v0 v1 v2 v3] partial sums of the low halves, then of the high halves.
    let lo = _mm256_permute2f128_ps(a, b, 0x20);
    let hi = _mm256_permute2f128_ps(a, b, 0x31);
    _mm256_add_ps(lo, hi)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_f32_avx2(out: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    let n8 = n - n % 8;
    let xp = x.as_ptr();
    let mut r = 0;
    // Eight rows at a time: each load of x serves eight FMAs, and one transposing sum
    // reduces all eight rows at once.
    while r + 8 <= out.len() {
        let rows: [*const f32; 8] = core::array::from_fn(|i| w.as_ptr().add((r + i) * n));
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut j = 0;
        while j < n8 {
            let xv = _mm256_loadu_ps(xp.add(j));
            for i in 0..8 {
                acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(rows[i].add(j)), xv, acc[i]);
            }
            j += 8;
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(r), hsum8(&acc));
        for (i, row) in rows.iter().enumerate() {
            for jj in n8..n {
                out[r + i] += *row.add(jj) * *xp.add(jj);
            }
        }
        r += 8;
    }
    while r < out.len() {
        let row = w.as_ptr().add(r * n);
        let mut acc = _mm256_setzero_ps();
        let mut j = 0;
        while j < n8 {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(j)), _mm256_loadu_ps(xp.add(j)), acc);
            j += 8;
        }
        let mut s = hsum(acc);
        for jj in n8..n {
            s += *row.add(jj) * *xp.add(jj);
        }
        out[r] = s;
        r += 1;
    }
}

/// Bytes of a Q8_0 block: an f16 scale, then 32 int8 values.
const BLOCK: usize = crate::gguf::Q8_0_BYTES as usize;

/// [`reference::matvec_q8_block`]: as [`matvec_q8_avx2`], eight rows at a time, with each
/// block's f16 scale converted where it sits (rows are whole blocks, so there is no tail).
#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_q8_block_avx2(out: &mut [f32], wb: &[u8], xq: &[i8], xs: &[f32]) {
    let nb = xq.len() / 32;
    let row_bytes = nb * BLOCK;
    let wp = wb.as_ptr();
    let scale = |r: usize, g: usize| {
        let at = wp.add(r * row_bytes + g * BLOCK);
        crate::gguf::f16_to_f32(u16::from_le_bytes([*at, *at.add(1)]))
    };
    let mut r = 0;
    while r + 8 <= out.len() {
        let mut acc = _mm256_setzero_ps();
        for g in 0..nb {
            let x = _mm256_loadu_si256(xq.as_ptr().add(g * 32) as *const __m256i);
            let ax = _mm256_sign_epi8(x, x);
            let mut d = [_mm256_setzero_si256(); 8];
            let mut sw = [0.0f32; 8];
            for (i, (d, sw)) in d.iter_mut().zip(&mut sw).enumerate() {
                *d = dot_group(wp.add((r + i) * row_bytes + g * BLOCK + 2) as *const i8, x, ax);
                *sw = scale(r + i, g);
            }
            let scales = _mm256_mul_ps(_mm256_loadu_ps(sw.as_ptr()), _mm256_set1_ps(*xs.get_unchecked(g)));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsum8_epi32(&d)), scales, acc);
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(r), acc);
        r += 8;
    }
    while r < out.len() {
        let mut acc = _mm256_setzero_ps();
        for g in 0..nb {
            let x = _mm256_loadu_si256(xq.as_ptr().add(g * 32) as *const __m256i);
            let p32 =
                dot_group(wp.add(r * row_bytes + g * BLOCK + 2) as *const i8, x, _mm256_sign_epi8(x, x));
            let s = _mm256_set1_ps(scale(r, g) * *xs.get_unchecked(g));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), s, acc);
        }
        out[r] = hsum(acc);
        r += 1;
    }
}

/// One 32-value group: the i32 dot product of `w` and `x` in eight lanes. maddubs wants
/// unsigned x signed, so x's sign moves onto w (`ax` is |x|); |x|, |w| <= 127, so the pairwise
/// i16 sums cannot saturate.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_group(w: *const i8, x: __m256i, ax: __m256i) -> __m256i {
    let w = _mm256_loadu_si256(w as *const __m256i);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, x)), _mm256_set1_epi16(1))
}

/// Eight rows at a time in 512-bit registers; the row's tail is a masked load, so any width
/// works without a scalar loop.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn matvec_f32_avx512(out: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    let n16 = n - n % 16;
    let tail: __mmask16 = ((1u32 << (n % 16)) - 1) as __mmask16;
    let xp = x.as_ptr();
    let mut r = 0;
    while r + 8 <= out.len() {
        let base = w.as_ptr().add(r * n);
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut j = 0;
        while j < n16 {
            let xv = _mm512_loadu_ps(xp.add(j));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_loadu_ps(base.add(i * n + j)), xv, *acc);
            }
            j += 16;
        }
        if tail != 0 {
            let xv = _mm512_maskz_loadu_ps(tail, xp.add(j));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, base.add(i * n + j)), xv, *acc);
            }
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(r), block_sums(&acc));
        r += 8;
    }
    while r < out.len() {
        let row = w.as_ptr().add(r * n);
        let mut acc = _mm512_setzero_ps();
        let mut j = 0;
        while j < n16 {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(row.add(j)), _mm512_loadu_ps(xp.add(j)), acc);
            j += 16;
        }
        if tail != 0 {
            let xv = _mm512_maskz_loadu_ps(tail, xp.add(j));
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, row.add(j)), xv, acc);
        }
        out[r] = _mm512_reduce_add_ps(acc);
        r += 1;
    }
}

/// The eight rows' sums of a block's 512-bit accumulators: each one's two halves added, then
/// [`hsum8`].
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn block_sums(acc: &[__m512; 8]) -> __m256 {
    let mut halves = [_mm256_setzero_ps(); 8];
    for (h, a) in halves.iter_mut().zip(acc) {
        *h = halve(*a);
    }
    hsum8(&halves)
}

/// Sum of each 512-bit accumulator's two halves, for [`hsum8`].
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn halve(v: __m512) -> __m256 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    _mm256_add_ps(_mm512_castps512_ps256(v), hi)
}

/// Sums each of eight i32 vectors: lane i of the result is the sum of `v[i]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum8_epi32(v: &[__m256i; 8]) -> __m256i {
    let a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31))
}

#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_q8_avx2(out: &mut [f32], wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) {
    matvec_q8_body::<false>(out, wq, ws, xq, xs)
}

#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn matvec_q8_vnni(out: &mut [f32], wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) {
    matvec_q8_body::<true>(out, wq, ws, xq, xs)
}

/// [`matvec_q8_vnni`] with the AVX-512 register file (no spills): the same instructions.
#[target_feature(enable = "avx2,fma,avxvnni,avx512f,avx512vl")]
unsafe fn matvec_q8_vnni_wide(out: &mut [f32], wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) {
    matvec_q8_body::<true>(out, wq, ws, xq, xs)
}

/// One 32-value group's i32 dot product in eight lanes. Both instructions multiply unsigned by
/// signed bytes, so w's sign moves onto x: |w| is exact for every int8 (|-128| = 128 unsigned),
/// and x, an activation from `quantize_row`, lies in [-127, 127], so `sign(x, w)` is exact too
/// (and maddubs' pairwise i16 sums, at most 2 * 128 * 127, cannot saturate). AVX-VNNI's
/// `vpdpbusd` sums the products straight into i32; AVX2 needs maddubs then madd.
#[inline(always)]
unsafe fn dot32<const VNNI: bool>(w: *const i8, x: __m256i) -> __m256i {
    let w = _mm256_loadu_si256(w as *const __m256i);
    let (aw, sx) = (_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    if VNNI {
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sx)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
    }
}

/// [`reference::matvec_q8`] for groups of 32: each group's exact i32 sum times `sw * sx`,
/// accumulated over the groups with FMA (so within rounding of the reference, and the same
/// floats for the AVX2 and VNNI variants and for any layout of the work below).
#[inline(always)]
unsafe fn matvec_q8_body<const VNNI: bool>(out: &mut [f32], wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) {
    const G: usize = 32;
    let n = xq.len();
    let full = n / G;
    let ng = n.div_ceil(G);
    let tail = &xq[full * G..];
    // The row's short last group as a whole group: x zero-padded, so the 32 bytes read from w
    // (running into the next row) contribute nothing. Allowed while the read stays inside wq.
    let mut xpad = [0i8; G];
    xpad[..tail.len()].copy_from_slice(tail);
    let x_at = |g: usize| if g < full { xq.as_ptr().add(g * G) } else { xpad.as_ptr() };
    let groups_for = |last_row: usize| {
        if full < ng && last_row * n + full * G + G > wq.len() {
            full
        } else {
            ng
        }
    };
    let (wp, sp) = (wq.as_ptr(), ws.as_ptr());
    let mut r = 0;
    if n == 2 * G {
        // Rows of two groups (dim 64): the (row, group) sums of four rows lie in the order of
        // their scales in `ws`, so the scales are one plain load (no gather).
        let x: [__m256i; 2] = core::array::from_fn(|g| _mm256_loadu_si256(x_at(g) as *const __m256i));
        let sx = _mm256_setr_ps(xs[0], xs[1], xs[0], xs[1], xs[0], xs[1], xs[0], xs[1]);
        let zero = _mm256_setzero_ps();
        while r + 8 <= out.len() {
            let (mut isum, mut scales) = ([zero; 2], [zero; 2]);
            for h in 0..2 {
                let mut d = [_mm256_setzero_si256(); 8];
                for (k, d) in d.iter_mut().enumerate() {
                    let (row, g) = (r + 4 * h + k / 2, k % 2);
                    *d = dot32::<VNNI>(wp.add(row * n + g * G), x[g]);
                }
                scales[h] = _mm256_mul_ps(_mm256_loadu_ps(sp.add((r + 4 * h) * 2)), sx);
                isum[h] = _mm256_cvtepi32_ps(hsum8_epi32(&d));
            }
            // Lanes [r0 r1 r4 r5 | r2 r3 r6 r7] of group 0, then of group 1.
            let g0 = |v: [__m256; 2]| _mm256_shuffle_ps::<0x88>(v[0], v[1]);
            let g1 = |v: [__m256; 2]| _mm256_shuffle_ps::<0xdd>(v[0], v[1]);
            let acc = _mm256_fmadd_ps(g0(isum), g0(scales), zero);
            let sum = _mm256_fmadd_ps(g1(isum), g1(scales), acc);
            let sum = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xd8>(_mm256_castps_pd(sum)));
            _mm256_storeu_ps(out.as_mut_ptr().add(r), sum);
            r += 8;
        }
    }
    let row_scales = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let row_scales = _mm256_mullo_epi32(row_scales, _mm256_set1_epi32(ng as i32));
    // Eight rows at a time: their i32 group sums are reduced together, converted once and
    // scaled by the eight rows' scales for that group.
    while r + 8 <= out.len() {
        let groups = groups_for(r + 7);
        let mut acc = _mm256_setzero_ps();
        for g in 0..groups {
            let x = _mm256_loadu_si256(x_at(g) as *const __m256i);
            let mut d = [_mm256_setzero_si256(); 8];
            for (i, d) in d.iter_mut().enumerate() {
                *d = dot32::<VNNI>(wp.add((r + i) * n + g * G), x);
            }
            let scales = _mm256_i32gather_ps::<4>(sp.add(r * ng + g), row_scales);
            let scales = _mm256_mul_ps(scales, _mm256_set1_ps(*xs.get_unchecked(g)));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsum8_epi32(&d)), scales, acc);
        }
        let mut res = [0.0f32; 8];
        _mm256_storeu_ps(res.as_mut_ptr(), acc);
        if groups < ng {
            for (i, v) in res.iter_mut().enumerate() {
                let isum = dot_tail(wp.add((r + i) * n + full * G), tail);
                *v += isum as f32 * (*sp.add((r + i) * ng + full) * *xs.get_unchecked(full));
            }
        }
        out[r..r + 8].copy_from_slice(&res);
        r += 8;
    }
    while r < out.len() {
        let mut acc = _mm256_setzero_ps();
        for g in 0..full {
            let x = _mm256_loadu_si256(xq.as_ptr().add(g * G) as *const __m256i);
            let p32 = dot32::<VNNI>(wp.add(r * n + g * G), x);
            let scale = _mm256_set1_ps(*sp.add(r * ng + g) * *xs.get_unchecked(g));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), scale, acc);
        }
        let mut s = hsum(acc);
        if full < ng {
            let isum = dot_tail(wp.add(r * n + full * G), tail);
            s += isum as f32 * (*sp.add(r * ng + full) * *xs.get_unchecked(full));
        }
        out[r] = s;
        r += 1;
    }
}

/// An int8 matrix's full blocks of eight rows, repacked for [`matvec_q8_packed`]: for each
/// block and 32-value group, eight runs of four columns, each holding the eight rows' four
/// weights plus 128 (unsigned, as `vpdpbusd` wants its first operand; zero past the row's
/// end), and the eight rows' scales of that group. Built once per model on the host.
pub struct PackedQ8 {
    cols: usize,
    blocks: usize,
    w: Vec<u8>,
    s: Vec<f32>,
}

impl PackedQ8 {
    fn new(q: &[i8], s: &[f32], rows: usize, cols: usize) -> PackedQ8 {
        const G: usize = 32;
        let (blocks, ng) = (rows / 8, cols.div_ceil(G));
        let mut w = vec![0u8; blocks * ng * 8 * 32];
        let mut sc = vec![0.0f32; blocks * ng * 8];
        let full = cols / G;
        for b in 0..blocks {
            for g in 0..full {
                let at = (b * ng + g) * 8;
                // SAFETY: `PackedModel::new` checked AVX2; the eight rows' group lies in `q`
                // (`q.len() >= rows * cols`) and its 256 packed bytes in `w`.
                unsafe {
                    transpose_group(q.as_ptr().add(8 * b * cols + g * G), cols, w.as_mut_ptr().add(at * 32))
                };
                for i in 0..8 {
                    sc[at + i] = s[(8 * b + i) * ng + g];
                }
            }
            for i in 0..8 {
                let row = &q[(8 * b + i) * cols..(8 * b + i + 1) * cols];
                for (g, run) in row.chunks(G).enumerate().skip(full) {
                    let base = (b * ng + g) * 8;
                    for (c, four) in run.chunks(4).enumerate() {
                        let mut v = [0u8; 4];
                        for (d, x) in v.iter_mut().zip(four) {
                            *d = (*x as u8) ^ 0x80;
                        }
                        let at = (base + c) * 32 + i * 4;
                        w[at..at + 4].copy_from_slice(&v);
                    }
                    sc[base + i] = s[(8 * b + i) * ng + g];
                }
            }
        }
        PackedQ8 { cols, blocks, w, s: sc }
    }
}

/// One full group of eight rows (`stride` bytes apart) as [`PackedQ8`] lays it out: the 8 x 8
/// dwords transposed, each byte plus 128.
#[target_feature(enable = "avx2")]
unsafe fn transpose_group(src: *const i8, stride: usize, dst: *mut u8) {
    let flip = _mm256_set1_epi8(-128);
    let r: [__m256i; 8] = core::array::from_fn(|i| {
        _mm256_xor_si256(_mm256_loadu_si256(src.add(i * stride) as *const __m256i), flip)
    });
    let a: [__m256i; 8] = core::array::from_fn(|i| {
        let (x, y) = (r[(i / 2) * 2], r[(i / 2) * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi32(x, y)
        } else {
            _mm256_unpackhi_epi32(x, y)
        }
    });
    // a[0] = r0 r1 interleaved (dwords 0,1 | 4,5), a[1] = (2,3 | 6,7); likewise a[2..4] for r2 r3.
    let b: [__m256i; 8] = core::array::from_fn(|i| {
        let (h, k) = (i / 4, i % 4);
        let (x, y) = (a[4 * h + k % 2], a[4 * h + 2 + k % 2]);
        if k < 2 {
            _mm256_unpacklo_epi64(x, y)
        } else {
            _mm256_unpackhi_epi64(x, y)
        }
    });
    // b[4h + k]: rows 4h..4h+4 of dwords [k'=0: 0|4, 1: 2|6, 2: 1|5, 3: 3|7].
    for (k, c) in [(0, 0), (2, 1), (1, 2), (3, 3)] {
        let (lo, hi) = (b[c], b[4 + c]);
        _mm256_storeu_si256(dst.add(k * 32) as *mut __m256i, _mm256_permute2x128_si256::<0x20>(lo, hi));
        _mm256_storeu_si256(dst.add((k + 4) * 32) as *mut __m256i, _mm256_permute2x128_si256::<0x31>(lo, hi));
    }
}

/// Every int8 matrix of a model repacked ([`PackedQ8`]): the weights once more in host RAM
/// (260 KB for stories260K), so that each group of eight rows costs eight `vpdpbusd` and no
/// horizontal sums. Only where the CPU has AVX-512 VNNI (its broadcast operand).
pub struct PackedModel {
    layers: Vec<[Option<PackedQ8>; 7]>,
    output: Option<PackedQ8>,
}

/// A layer's matrices in [`PackedModel`]: wq, wk, wv, wo, w1, w3, w2.
pub const SLOTS: usize = 7;

impl PackedModel {
    /// `None` unless this CPU runs [`matvec_q8_packed`] and the model has int8 matrices in
    /// groups of 32.
    pub fn new<const L: usize>(model: &crate::model::Model<'_, L>) -> Option<PackedModel> {
        if model.group != 32
            // AVX-VNNI too: rows past the packed blocks run its kernel.
            || !(std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avxvnni"))
            || detect().is_none()
        {
            return None;
        }
        let pack = |m: &crate::model::Matrix<'_>| match *m {
            crate::model::Matrix::Q8 { q, s, rows, cols } if q.len() >= rows * cols => {
                Some(PackedQ8::new(q, s, rows, cols))
            }
            _ => None,
        };
        let layers: Vec<[Option<PackedQ8>; SLOTS]> = model
            .layers
            .iter()
            .map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w3, &l.w2].map(pack))
            .collect();
        let output = pack(&model.output);
        if output.is_none() && layers.iter().all(|l| l.iter().all(Option::is_none)) {
            return None;
        }
        Some(PackedModel { layers, output })
    }

    /// Layer `l`'s matrix in `slot` ([`SLOTS`]), or the classifier for `None`.
    pub fn get(&self, layer: Option<usize>, slot: usize) -> Option<&PackedQ8> {
        match layer {
            Some(l) => self.layers.get(l)?.get(slot)?.as_ref(),
            None => self.output.as_ref(),
        }
    }
}

/// `out = m * x` for an int8 matrix (`wq`, `ws`, groups of 32) with its [`PackedQ8`]: the
/// same floats as `matvec_q8_on` (each group's exact i32 sum times `sw * sx`, the groups
/// accumulated by FMA from zero in order, and a block whose padded last group would read
/// past `wq` adding that group by a multiply and an add, as that kernel does). Rows past
/// the packed blocks run through that kernel.
pub fn matvec_q8_packed(out: &mut [f32], p: &PackedQ8, wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) {
    const G: usize = 32;
    let n = xq.len();
    let ng = n.div_ceil(G);
    let rows = out.len();
    assert!(n == p.cols && wq.len() >= rows * n && ws.len() >= rows * ng && xs.len() >= ng);
    let blocks = p.blocks.min(rows / 8);
    // x as whole groups of dwords (zero-padded) and each group's -128 * sum(x), which takes
    // the +128 of the packed weights back out of the exact sums. On the stack up to 256
    // columns (a small buffer: it is zeroed at every call).
    let (mut small, mut large) = ([0i32; 8 * 9], Vec::new());
    let buf = if ng * 9 <= small.len() {
        &mut small[..ng * 9]
    } else {
        large.resize(ng * 9, 0);
        &mut large[..]
    };
    let (xw, corr) = buf.split_at_mut(ng * 8);
    let full = n / G;
    // SAFETY: only built by `PackedModel::new`, which checked AVX-512 VNNI and VL, AVX-VNNI,
    // AVX2 and FMA; `p` holds `blocks` blocks of `ng` groups; bounds asserted.
    unsafe {
        prepare_x(xq, xw, corr);
        matvec_q8_packed_vnni(&mut out[..blocks * 8], p, wq.len(), n, full, xw, corr, xs)
    };
    let r = blocks * 8;
    matvec_q8_on::<VNNI_WIDE>(&mut out[r..], &wq[r * n..], &ws[r * ng..], xq, xs, G);
}

/// `xq` into `xw` (whole groups, the zeros past its end kept) and each group's -128 * sum.
#[target_feature(enable = "avx2")]
fn prepare_x(xq: &[i8], xw: &mut [i32], corr: &mut [i32]) {
    let xb: &mut [i8] = bytemuck::cast_slice_mut(xw);
    xb[..xq.len()].copy_from_slice(xq);
    for (c, xg) in corr.iter_mut().zip(xq.chunks(32)) {
        *c = -128 * xg.iter().map(|v| *v as i32).sum::<i32>();
    }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn matvec_q8_packed_vnni(
    out: &mut [f32],
    p: &PackedQ8,
    wq_len: usize,
    n: usize,
    full: usize,
    xw: &[i32],
    corr: &[i32],
    xs: &[f32],
) {
    const G: usize = 32;
    let ng = n.div_ceil(G);
    let (wp, sp, xp) = (p.w.as_ptr(), p.s.as_ptr(), xw.as_ptr());
    // The whole group's i32 sums of the block's eight rows, and its eight scales times sx.
    let group = |b: usize, g: usize| {
        let w = wp.add((b * ng + g) * 256);
        // Two chains of four (exact integer sums, in any order).
        let mut d = [_mm256_set1_epi32(*corr.get_unchecked(g)), _mm256_setzero_si256()];
        for j in 0..8 {
            let wv = _mm256_loadu_si256(w.add(j * 32) as *const __m256i);
            d[j % 2] = _mm256_dpbusd_epi32(d[j % 2], wv, _mm256_set1_epi32(*xp.add(g * 8 + j)));
        }
        let d = _mm256_add_epi32(d[0], d[1]);
        let s =
            _mm256_mul_ps(_mm256_loadu_ps(sp.add((b * ng + g) * 8)), _mm256_set1_ps(*xs.get_unchecked(g)));
        (_mm256_cvtepi32_ps(d), s)
    };
    for b in 0..out.len() / 8 {
        let r = 8 * b;
        // As `matvec_q8_body`'s `groups_for`.
        let short = full < ng && (r + 7) * n + full * G + G > wq_len;
        let mut acc = _mm256_setzero_ps();
        for g in 0..if short { full } else { ng } {
            let (d, s) = group(b, g);
            acc = _mm256_fmadd_ps(d, s, acc);
        }
        if short {
            let (d, s) = group(b, full);
            acc = _mm256_add_ps(acc, _mm256_mul_ps(d, s));
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(r), acc);
    }
}

/// The i32 dot product of a row's last, partial group.
#[inline]
unsafe fn dot_tail(w: *const i8, x: &[i8]) -> i32 {
    let mut isum = 0i32;
    for (j, xv) in x.iter().enumerate() {
        isum += *w.add(j) as i32 * *xv as i32;
    }
    isum
}

/// The codes of one group of 32 weights (`BYTES` bytes of a packed row from `off`, zero past
/// the row's end) as 32 int8 lanes in {-1, 0, +1}.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn codes32<const TERNARY: bool>(row: &[u8], off: usize) -> __m256i {
    let bytes = match (TERNARY, row.get(off..off + if TERNARY { 8 } else { 4 })) {
        (true, Some(b)) => i64::from_le_bytes(b.try_into().unwrap_or_default()),
        (false, Some(b)) => u32::from_le_bytes(b.try_into().unwrap_or_default()) as i64,
        (_, None) => {
            let mut b = [0u8; 8];
            let avail = row.len().saturating_sub(off).min(8);
            b[..avail].copy_from_slice(&row[off..off + avail]);
            i64::from_le_bytes(b)
        }
    };
    let v = _mm256_set1_epi64x(bytes);
    if TERNARY {
        // Lane j takes byte j / 4 (each 128-bit half holds all eight bytes), then its 2-bit code.
        let idx = _mm256_setr_epi8(
            0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7,
        );
        let v = _mm256_shuffle_epi8(v, idx);
        let lo = _mm256_set1_epi32(0x4010_0401);
        let hi = _mm256_set1_epi32(0x8020_0802u32 as i32);
        let plus = _mm256_cmpeq_epi8(_mm256_and_si256(v, lo), lo);
        let minus = _mm256_cmpeq_epi8(_mm256_and_si256(v, hi), hi);
        // -1 - 0 = -1 for `10`, 0 - (-1) = +1 for `01`, 0 for `00` and the invalid `11`.
        _mm256_sub_epi8(minus, plus)
    } else {
        // Lane j takes byte j / 8, then its bit: -1 where set, +1 where clear.
        let idx = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let v = _mm256_shuffle_epi8(v, idx);
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let neg = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
        _mm256_or_si256(neg, _mm256_set1_epi8(1))
    }
}

/// Ternary or binary matvec for whole blocks of eight rows (`out.len()` a multiple of 8): per
/// group of 32 activations each row's codes become int8 signs, `sign_epi8` selects +x, -x or 0
/// and the eight rows' i32 sums are reduced together, converted, scaled by the group's scale
/// and accumulated; the row scales multiply once at the end.
#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_packed_avx2<const TERNARY: bool>(
    out: &mut [f32],
    wq: &[u8],
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
) {
    const G: usize = 32;
    let n = xq.len();
    let (stride, per_group) = if TERNARY { (n.div_ceil(4), 8) } else { (n.div_ceil(8), 4) };
    let ng = n.div_ceil(G);
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    // The last group zero-padded (codes past a row's end read as 0 or +1 against zeros).
    let mut xpad = [0i8; G];
    let tail = &xq[(ng - 1) * G..];
    xpad[..tail.len()].copy_from_slice(tail);
    for (r, o) in out.chunks_exact_mut(8).enumerate() {
        let rows = &wq[r * 8 * stride..(r + 1) * 8 * stride];
        let mut acc = _mm256_setzero_ps();
        for g in 0..ng {
            let xg = if g + 1 < ng { &xq[g * G..g * G + G] } else { &xpad[..] };
            let x = _mm256_loadu_si256(xg.as_ptr() as *const __m256i);
            let mut d = [_mm256_setzero_si256(); 8];
            for (i, d) in d.iter_mut().enumerate() {
                let c = codes32::<TERNARY>(&rows[i * stride..(i + 1) * stride], g * per_group);
                *d = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, _mm256_sign_epi8(x, c)), ones16);
            }
            let sums = _mm256_cvtepi32_ps(hsum8_epi32(&d));
            acc = _mm256_fmadd_ps(sums, _mm256_set1_ps(xs[g]), acc);
        }
        let scales = _mm256_loadu_ps(ws[r * 8..r * 8 + 8].as_ptr());
        _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(acc, scales));
    }
}

/// [`crate::quant::quantize_row`] for groups of 32, with the same operations in the same
/// order per value, so the result is identical.
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_avx2(x: &[f32], q: &mut [i8], scales: &mut [f32]) {
    const G: usize = 32;
    let full = x.len() / G;
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    // The scales of up to eight groups at once: their two divisions each (amax / 127, then
    // 1 / scale, the same IEEE quotients as one at a time) in one vector division each,
    // instead of two dependent scalar ones per group.
    let mut inv8 = [0.0f32; 8];
    for g in 0..full {
        if g % 8 == 0 {
            let mut amax = [0.0f32; 8];
            for (k, a) in amax.iter_mut().enumerate().take(full - g) {
                let p = x.as_ptr().add((g + k) * G);
                let m = (0..4).fold(_mm256_setzero_ps(), |m, i| {
                    _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(p.add(i * 8)), abs_mask))
                });
                let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                *a = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            }
            let scale = _mm256_div_ps(_mm256_loadu_ps(amax.as_ptr()), _mm256_set1_ps(127.0));
            let positive = _mm256_cmp_ps(scale, _mm256_setzero_ps(), _CMP_GT_OQ);
            let inv = _mm256_and_ps(_mm256_div_ps(one, scale), positive);
            _mm256_storeu_ps(inv8.as_mut_ptr(), inv);
            let mut sc = [0.0f32; 8];
            _mm256_storeu_ps(sc.as_mut_ptr(), scale);
            let k = (full - g).min(8);
            scales[g..g + k].copy_from_slice(&sc[..k]);
        }
        let p = x.as_ptr().add(g * G);
        let v: [__m256; 4] = core::array::from_fn(|i| _mm256_loadu_ps(p.add(i * 8)));
        let inv = _mm256_set1_ps(inv8[g % 8]);
        // round half away from zero from the exact truncation, as quant::round_to_i8 does
        let r: [__m256i; 4] = core::array::from_fn(|i| {
            let y = _mm256_mul_ps(v[i], inv);
            let t = _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            let f = _mm256_sub_ps(y, t);
            let up = _mm256_and_ps(_mm256_cmp_ps(f, half, _CMP_GE_OQ), one);
            let down =
                _mm256_and_ps(_mm256_cmp_ps(f, _mm256_sub_ps(_mm256_setzero_ps(), half), _CMP_LE_OQ), one);
            _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(t, up), down))
        });
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
        let packed = _mm256_permutevar8x32_epi32(packed, order);
        _mm256_storeu_si256(q.as_mut_ptr().add(g * G) as *mut __m256i, packed);
    }
    crate::quant::quantize_row(&x[full * G..], &mut q[full * G..x.len()], &mut scales[full..], G);
}

/// `exp(x)` for eight lanes: Cody-Waite range reduction and a degree-7 polynomial (within two
/// ulp of the correctly rounded value). Inputs below -64 give exactly zero: a softmax weight
/// under e^-64 changes nothing, while the subnormal numbers it would breed in the attention
/// sums cost Intel CPUs a microcode assist per operation.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.37)), _mm256_set1_ps(-87.33));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(core::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    // Taylor coefficients 1/k! for k = 7..0, evaluated by Horner's rule.
    let mut p = _mm256_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    // Scale by 2^n: n lies in [-126, 127] after the clamp, so the exponent stays normal.
    let e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    let keep = _mm256_cmp_ps(x, _mm256_set1_ps(-64.0), _CMP_GE_OQ);
    _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(h1: &mut [f32], h3: &[f32]) {
    let n = h1.len();
    let n8 = n - n % 8;
    let (p, q) = (h1.as_mut_ptr(), h3.as_ptr());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i < n8 {
        let a = _mm256_loadu_ps(p.add(i));
        let sig = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), a))));
        _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_mul_ps(a, sig), _mm256_loadu_ps(q.add(i))));
        i += 8;
    }
    reference::swiglu(&mut h1[n8..], &h3[n8..]);
}

/// Eight int8 values as f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_i8x8(p: *const i8) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
}

/// The scale of each of eight heads' group, from one position's `ng` group scales at `p`
/// (`gidx` = each head's group). Gathers are slow on many CPUs: one or a few groups are a
/// broadcast or a masked load plus a lane permutation.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_scales(p: *const f32, ng: usize, gidx: __m256i) -> __m256 {
    if ng == 1 {
        _mm256_broadcast_ss(&*p)
    } else if ng <= 8 {
        let lanes =
            _mm256_cmpgt_epi32(_mm256_set1_epi32(ng as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_permutevar8x32_ps(_mm256_maskload_ps(p, lanes), gidx)
    } else {
        _mm256_i32gather_ps::<4>(p, gidx)
    }
}

/// Where one layer's cache lies for [`attention_blocks_avx2`]: f32 rows, or int8 rows with
/// `ng` scales per position (one per `group` values).
#[derive(Clone, Copy)]
struct Cache {
    keys: *const u8,
    values: *const u8,
    key_scales: *const f32,
    value_scales: *const f32,
    ng: usize,
    group: usize,
}

/// Eight cached values starting at element `i`, as f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load8<const INT8: bool>(base: *const u8, i: usize) -> __m256 {
    if INT8 {
        load_i8x8((base as *const i8).add(i))
    } else {
        _mm256_loadu_ps((base as *const f32).add(i))
    }
}

/// Attention for up to eight heads at a time, walking positions in the outer loop so that each
/// cached key and value row is read once per block of heads rather than once per head (a
/// per-head walk re-streams the whole cache from L2 for every head). Scores are kept
/// position-major (`att[t * 8 + i]`), which also vectorizes the softmax across the heads. On an
/// int8 cache each
/// head lies inside one scale group, so a key's scale multiplies the finished score and a
/// value's scale folds into its weight.
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_blocks_avx2<const INT8: bool>(
    out: &mut [f32],
    q: &[f32],
    positions: usize,
    cache: Cache,
    att: &mut [f32],
    shape: AttnShape,
) {
    let AttnShape { head_size: hs, kv_dim, kv_mul } = shape;
    let n_heads = q.len() / hs;
    let chunks = hs / 8;
    let scale = _mm256_set1_ps(1.0 / libm::sqrtf(hs as f32));
    let a = att.as_mut_ptr();
    for h0 in (0..n_heads).step_by(8) {
        let heads = (n_heads - h0).min(8);
        // Each lane's head; the lanes of a partial last block repeat the last head (lanes never
        // mix, and those lanes are not stored).
        let head: [usize; 8] = core::array::from_fn(|i| h0 + i.min(heads - 1));
        // Offset of each head's slice within a cache row.
        let off: [usize; 8] = core::array::from_fn(|i| (head[i] / kv_mul) * hs);
        let gidx =
            _mm256_loadu_si256(core::array::from_fn::<i32, 8, _>(|i| (off[i] / cache.group) as i32).as_ptr()
                as *const __m256i);
        let mut maxv = _mm256_set1_ps(f32::NEG_INFINITY);
        for t in 0..positions {
            let row = t * kv_dim;
            let mut prod = [_mm256_setzero_ps(); 8];
            for c in 0..chunks {
                for (i, p) in prod.iter_mut().enumerate() {
                    let qv = _mm256_loadu_ps(q.as_ptr().add(head[i] * hs + c * 8));
                    *p = _mm256_fmadd_ps(qv, load8::<INT8>(cache.keys, row + off[i] + c * 8), *p);
                }
            }
            let mut sc = _mm256_mul_ps(hsum8(&prod), scale);
            if INT8 {
                sc = _mm256_mul_ps(sc, head_scales(cache.key_scales.add(t * cache.ng), cache.ng, gidx));
            }
            maxv = _mm256_max_ps(maxv, sc);
            _mm256_storeu_ps(a.add(t * 8), sc);
        }
        let mut sumv = _mm256_setzero_ps();
        for t in 0..positions {
            let mut e = exp8(_mm256_sub_ps(_mm256_loadu_ps(a.add(t * 8)), maxv));
            sumv = _mm256_add_ps(sumv, e);
            if INT8 {
                e = _mm256_mul_ps(e, head_scales(cache.value_scales.add(t * cache.ng), cache.ng, gidx));
            }
            _mm256_storeu_ps(a.add(t * 8), e);
        }
        // The softmax's 1/sum is applied once to each output instead of to every weight.
        let mut inv = [0.0f32; 8];
        _mm256_storeu_ps(inv.as_mut_ptr(), _mm256_div_ps(_mm256_set1_ps(1.0), sumv));
        for c in 0..chunks {
            let mut acc = [_mm256_setzero_ps(); 8];
            for t in 0..positions {
                let w = a.add(t * 8);
                for (i, acc) in acc.iter_mut().enumerate() {
                    let v = load8::<INT8>(cache.values, t * kv_dim + off[i] + c * 8);
                    *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*w.add(i)), v, *acc);
                }
            }
            for (i, acc) in acc.iter().enumerate().take(heads) {
                let o = out.as_mut_ptr().add((h0 + i) * hs + c * 8);
                _mm256_storeu_ps(o, _mm256_mul_ps(*acc, _mm256_set1_ps(inv[i])));
            }
        }
    }
}

/// `sqrt(8)`, the score divisor of heads of eight, correctly rounded (twice the correctly
/// rounded `sqrt(2)`, scaling by two being exact) as `libm::sqrtf(8.0)` gives it. A constant:
/// libm's `sqrtf` is a legacy-SSE instruction, which costs a state transition inside these
/// AVX-512 kernels.
const SQRT_8: f32 = 2.0 * core::f32::consts::SQRT_2;

/// 32 int8 values as four vectors of eight f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn widen_chunk(p: *const i8) -> [__m256; 4] {
    let lo = _mm_loadu_si128(p as *const __m128i);
    let hi = _mm_loadu_si128(p.add(16) as *const __m128i);
    let f = |x: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x));
    [f(lo), f(_mm_srli_si128::<8>(lo)), f(hi), f(_mm_srli_si128::<8>(hi))]
}

/// Int8 attention for heads of eight values (stories260K's shape), scores as int8 dot products.
/// A 32-byte key chunk holds four KV heads; a "quad" is the four query heads that read one chunk
/// (one per KV head, the same replica of each group). `maddubs` multiplies a quad's query bytes
/// with the chunk and `hadd` pairs two quads into the scores of eight heads, lane order
/// [A0 A1 B0 B1 A2 A3 B2 B3]. A chunk is one scale group, so each lane's score is
/// `isum * query scale * key scale`.
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_q8_hs8_avx2(
    out: &mut [f32],
    query: QueryQ8<'_>,
    cache: CacheQ8<'_>,
    att: &mut [f32],
    shape: AttnShape,
) {
    attention_q8_hs8(out, query, cache, att, shape)
}

#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn attention_q8_hs8_avx512(
    out: &mut [f32],
    query: QueryQ8<'_>,
    cache: CacheQ8<'_>,
    att: &mut [f32],
    shape: AttnShape,
) {
    attention_q8_hs8(out, query, cache, att, shape)
}

/// One block's eight query heads for the int8 attention kernels: the head in each lane, lane
/// order [A0 A1 B0 B1 A2 A3 B2 B3] (A and B two quads: the four query heads, one per KV head
/// of the same replica, that read one 32-byte key chunk), the quads' query bytes and their
/// absolute values, and each lane's query scale over sqrt(8).
struct Quads {
    lane_head: [usize; 8],
    qa: __m256i,
    qb: __m256i,
    abs_a: __m256i,
    abs_b: __m256i,
    qscale: __m256,
}

#[inline(always)]
unsafe fn quads(query: QueryQ8<'_>, kv_mul: usize, block: usize) -> Quads {
    let (ua, ub) = (2 * block, 2 * block + 1);
    // Query head in slot j of quad u.
    let quad_head = |u: usize, j: usize| (4 * (u / kv_mul) + j) * kv_mul + u % kv_mul;
    let lane_head = [
        quad_head(ua, 0),
        quad_head(ua, 1),
        quad_head(ub, 0),
        quad_head(ub, 1),
        quad_head(ua, 2),
        quad_head(ua, 3),
        quad_head(ub, 2),
        quad_head(ub, 3),
    ];
    let mut bytes = [[0i8; 32]; 2];
    for (quad, b) in [ua, ub].into_iter().zip(bytes.iter_mut()) {
        for (j, slot) in b.chunks_exact_mut(8).enumerate() {
            let h = quad_head(quad, j);
            slot.copy_from_slice(&query.qq[h * 8..h * 8 + 8]);
        }
    }
    let qa = _mm256_loadu_si256(bytes[0].as_ptr() as *const __m256i);
    let qb = _mm256_loadu_si256(bytes[1].as_ptr() as *const __m256i);
    let (abs_a, abs_b) = (_mm256_sign_epi8(qa, qa), _mm256_sign_epi8(qb, qb));
    let lane_scale: [f32; 8] = core::array::from_fn(|i| query.qs[lane_head[i] * 8 / 32] / SQRT_8);
    let qscale = _mm256_loadu_ps(lane_scale.as_ptr());
    Quads { lane_head, qa, qb, abs_a, abs_b, qscale }
}

/// The int8 attention's last pass: the weights in `a` (softmax numerators times value
/// scales, eight lanes a position) times the values, each 32-byte chunk widened to four f32
/// vectors (one per KV head) once per position and shared by the lanes that read it (lane i
/// reads slot [0,1,0,1,2,3,2,3][i] of chunk `ca`'s or `cb`'s), then divided by the sums.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_values(
    out: &mut [f32],
    a: *const f32,
    vp: *const i8,
    kv_dim: usize,
    positions: usize,
    (ca, cb): (usize, usize),
    lane_head: [usize; 8],
    sumv: __m256,
) {
    let mut inv = [0.0f32; 8];
    _mm256_storeu_ps(inv.as_mut_ptr(), _mm256_div_ps(_mm256_set1_ps(1.0), sumv));
    let mut acc = [_mm256_setzero_ps(); 8];
    for t in 0..positions {
        let w = a.add(t * 8);
        let row = vp.add(t * kv_dim);
        let va = widen_chunk(row.add(ca * 32));
        let vb = if cb == ca { va } else { widen_chunk(row.add(cb * 32)) };
        let lanes = [va[0], va[1], vb[0], vb[1], va[2], va[3], vb[2], vb[3]];
        for (i, (acc, v)) in acc.iter_mut().zip(lanes).enumerate() {
            *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*w.add(i)), v, *acc);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let o = out.as_mut_ptr().add(lane_head[i] * 8);
        _mm256_storeu_ps(o, _mm256_mul_ps(*acc, _mm256_set1_ps(inv[i])));
    }
}

/// [`attention_q8_hs8`] two positions per 512-bit register where the work is per lane: the
/// scores (AVX-512 VNNI `vpdpbusd`, exact integer sums like `maddubs` + `madd` on int8 that
/// never reaches -128) and the exponentials. Each lane computes the same operations on the
/// same values in the same order (the running sum adds position t before t + 1), so the
/// result is bit for bit the 256-bit kernel's. For a block whose two quads read the same key
/// chunk (an even number of query heads per KV head, stories260K's 2).
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn attention_q8_hs8_zmm(
    out: &mut [f32],
    query: QueryQ8<'_>,
    cache: CacheQ8<'_>,
    att: &mut [f32],
    shape: AttnShape,
) {
    let AttnShape { kv_dim, kv_mul, .. } = shape;
    debug_assert!(kv_mul.is_multiple_of(2));
    let n_heads = query.q.len() / 8;
    let positions = cache.keys.len() / kv_dim;
    let pairs = positions / 2;
    let ng = kv_dim / 32;
    let a = att.as_mut_ptr();
    let (kp, vp) = (cache.keys.as_ptr(), cache.values.as_ptr());
    let (ksp, vsp) = (cache.key_scales.as_ptr(), cache.value_scales.as_ptr());
    // `hadd_epi32(da, db)` of the 256-bit kernel for both positions: output lane 8p + i sums
    // the int32 pair k = [0,1,0,1,2,3,2,3][i] of quad A's (i in 0,1,4,5) or B's products.
    let pair_lo = _mm512_setr_epi32(0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12, 14, 28, 30);
    let pair_hi = _mm512_add_epi32(pair_lo, _mm512_set1_epi32(1));
    // Both positions' scales: the first in lanes 0-7, the second in 8-15.
    let two = |s: *const f32| {
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_broadcast_ss(&*s))),
            _mm256_castps_pd(_mm256_broadcast_ss(&*s.add(ng))),
        ))
    };
    let both =
        |x: __m256| _mm512_shuffle_f32x4::<0b0100_0100>(_mm512_castps256_ps512(x), _mm512_castps256_ps512(x));
    for block in 0..n_heads / 8 {
        // Both quads read chunk c (kv_mul is even).
        let c = 2 * block / kv_mul;
        let Quads { lane_head, qa, qb, abs_a, abs_b, qscale } = quads(query, kv_mul, block);
        // The 512-bit copies: both halves hold the same query.
        let wide = |x: __m256i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x), x);
        let (qa2, qb2) = (wide(qa), wide(qb));
        let (abs_a2, abs_b2) = (wide(abs_a), wide(abs_b));
        let (neg_a, neg_b) = (_mm512_movepi8_mask(qa2), _mm512_movepi8_mask(qb2));
        let qscale2 = both(qscale);
        let zero = _mm512_setzero_si512();
        let mut max2 = _mm512_set1_ps(f32::NEG_INFINITY);
        for u in 0..pairs {
            let t = 2 * u;
            let k0 = _mm256_loadu_si256(kp.add(t * kv_dim + c * 32) as *const __m256i);
            let k1 = _mm256_loadu_si256(kp.add((t + 1) * kv_dim + c * 32) as *const __m256i);
            let k = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(k0), k1);
            // k * sign(q) (a zero query byte multiplies by |q| = 0 anyway).
            let (sa, sb) = (_mm512_mask_sub_epi8(k, neg_a, zero, k), _mm512_mask_sub_epi8(k, neg_b, zero, k));
            let da = _mm512_dpbusd_epi32(zero, abs_a2, sa);
            let db = _mm512_dpbusd_epi32(zero, abs_b2, sb);
            let isum = _mm512_add_epi32(
                _mm512_permutex2var_epi32(da, pair_lo, db),
                _mm512_permutex2var_epi32(da, pair_hi, db),
            );
            let ks = two(ksp.add(t * ng + c));
            let sc = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), qscale2), ks);
            max2 = _mm512_max_ps(max2, sc);
            _mm512_storeu_ps(a.add(t * 8), sc);
        }
        let mut maxv = _mm256_max_ps(
            _mm512_castps512_ps256(max2),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(max2))),
        );
        let ones = _mm256_set1_epi16(1);
        for t in 2 * pairs..positions {
            let row = kp.add(t * kv_dim);
            let ka = _mm256_loadu_si256(row.add(c * 32) as *const __m256i);
            let da = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(ka, qa)), ones);
            let db = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_b, _mm256_sign_epi8(ka, qb)), ones);
            let isum = _mm256_cvtepi32_ps(_mm256_hadd_epi32(da, db));
            let ks = _mm256_broadcast_ss(&*ksp.add(t * ng + c));
            let sc = _mm256_mul_ps(_mm256_mul_ps(isum, qscale), ks);
            maxv = _mm256_max_ps(maxv, sc);
            _mm256_storeu_ps(a.add(t * 8), sc);
        }
        let max2 = both(maxv);
        let mut sumv = _mm256_setzero_ps();
        for u in 0..pairs {
            let t = 2 * u;
            let e = exp16_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(a.add(t * 8)), max2));
            sumv = _mm256_add_ps(sumv, _mm512_castps512_ps256(e));
            sumv = _mm256_add_ps(sumv, _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e))));
            _mm512_storeu_ps(a.add(t * 8), _mm512_mul_ps(e, two(vsp.add(t * ng + c))));
        }
        for t in 2 * pairs..positions {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(a.add(t * 8)), maxv));
            sumv = _mm256_add_ps(sumv, e);
            let vs = _mm256_broadcast_ss(&*vsp.add(t * ng + c));
            _mm256_storeu_ps(a.add(t * 8), _mm256_mul_ps(e, vs));
        }
        weighted_values(out, a, vp, kv_dim, positions, (c, c), lane_head, sumv);
    }
}

/// f32 attention for heads of eight values, bit for bit [`attention_blocks_avx2`]'s: its
/// `hsum8` adds each head's eight products as ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 +
/// p7)), and so does this kernel, with two positions per 512-bit register and no `hadd`
/// (there is none on 512 bits). A register holds two heads of a block of eight (a pair):
/// with 1, 2 or 4 query heads per KV head (`ADJACENT`), heads `a` and `a + kv_mul`, whose KV
/// heads are neighbours, so one 512-bit load brings both keys; otherwise heads `i` and
/// `i + 4`, their keys joined from two loads. Adding adjacent lanes twice leaves each
/// 128-bit lane with four heads' half sums, and one 128-bit shuffle per half lines up
/// [position t: 8 lanes | t + 1: 8 lanes] (lane `i` is head `lane_head[i]` of the block) for
/// the exponentials, which run on both positions at once with the running sum adding t
/// before t + 1. `SHARE`: lanes 2j and 2j + 1 read the same KV head (an even number of query
/// heads per KV head, stories260K's 2), whose values are then loaded once.
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn attention_f32_hs8_zmm<const ADJACENT: bool, const SHARE: bool>(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    att: &mut [f32],
    shape: AttnShape,
) {
    let AttnShape { kv_dim, kv_mul, .. } = shape;
    let n_heads = q.len() / 8;
    let positions = keys.len() / kv_dim;
    let pairs = positions / 2;
    let a = att.as_mut_ptr();
    let (kp, vp, qp) = (keys.as_ptr(), values.as_ptr(), q.as_ptr());
    let scale = _mm512_set1_ps(1.0 / SQRT_8);
    let zero = _mm512_setzero_ps();
    // (`insertf32x8` would need AVX-512DQ; the 64-bit lanes move the same bits.)
    let join = |lo: __m256, hi: __m256| {
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
            _mm256_castps_pd(hi),
        ))
    };
    // `hadd` within 128-bit lanes: [x0 + x1, x2 + x3, y0 + y1, y2 + y3].
    let hadd = |x: __m512, y: __m512| {
        _mm512_add_ps(_mm512_shuffle_ps::<0x88>(x, y), _mm512_shuffle_ps::<0xDD>(x, y))
    };
    let high = |x: __m512| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)));
    // The block's heads in each lane: pair j is lanes j (its first head) and j + 4.
    let lane_head: [usize; 8] = if ADJACENT {
        // The heads whose KV head is even within the block, then each one's partner.
        let first: [usize; 4] = core::array::from_fn(|j| (j / kv_mul) * 2 * kv_mul + j % kv_mul);
        core::array::from_fn(|i| if i < 4 { first[i] } else { first[i - 4] + kv_mul })
    } else {
        core::array::from_fn(|i| i)
    };
    for h0 in (0..n_heads).step_by(8) {
        let head: [usize; 8] = core::array::from_fn(|i| h0 + lane_head[i]);
        // Offset of each lane's head slice within a cache row.
        let off: [usize; 8] = core::array::from_fn(|i| (head[i] / kv_mul) * 8);
        let qv: [__m512; 4] = core::array::from_fn(|j| {
            join(_mm256_loadu_ps(qp.add(head[j] * 8)), _mm256_loadu_ps(qp.add(head[j + 4] * 8)))
        });
        let key = |row: *const f32, j: usize| {
            if ADJACENT {
                _mm512_loadu_ps(row.add(off[j]))
            } else {
                join(_mm256_loadu_ps(row.add(off[j])), _mm256_loadu_ps(row.add(off[j + 4])))
            }
        };
        // Per 128-bit lane of the result: the half sums of the four pairs' heads (lane 0:
        // lanes 0-3's heads, dims 0-3; lane 1: the same, dims 4-7; lanes 2, 3: lanes 4-7's).
        let halves = |row: *const f32| {
            let p: [__m512; 4] = core::array::from_fn(|j| _mm512_fmadd_ps(qv[j], key(row, j), zero));
            hadd(hadd(p[0], p[1]), hadd(p[2], p[3]))
        };
        let mut max2 = _mm512_set1_ps(f32::NEG_INFINITY);
        for u in 0..pairs {
            let t = 2 * u;
            let (m0, m1) = (halves(kp.add(t * kv_dim)), halves(kp.add((t + 1) * kv_dim)));
            let lo = _mm512_shuffle_f32x4::<0x88>(m0, m1);
            let hi = _mm512_shuffle_f32x4::<0xDD>(m0, m1);
            let sc = _mm512_mul_ps(_mm512_add_ps(lo, hi), scale);
            max2 = _mm512_max_ps(max2, sc);
            _mm512_storeu_ps(a.add(t * 8), sc);
        }
        let mut maxv = _mm256_max_ps(_mm512_castps512_ps256(max2), high(max2));
        if positions % 2 == 1 {
            let t = positions - 1;
            let m = halves(kp.add(t * kv_dim));
            let lo = _mm512_shuffle_f32x4::<0x88>(m, m);
            let hi = _mm512_shuffle_f32x4::<0xDD>(m, m);
            let sc =
                _mm256_mul_ps(_mm512_castps512_ps256(_mm512_add_ps(lo, hi)), _mm512_castps512_ps256(scale));
            maxv = _mm256_max_ps(maxv, sc);
            _mm256_storeu_ps(a.add(t * 8), sc);
        }
        let max2 = join(maxv, maxv);
        let mut sumv = _mm256_setzero_ps();
        for u in 0..pairs {
            let t = 2 * u;
            let e = exp16_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(a.add(t * 8)), max2));
            sumv = _mm256_add_ps(sumv, _mm512_castps512_ps256(e));
            sumv = _mm256_add_ps(sumv, high(e));
            _mm512_storeu_ps(a.add(t * 8), e);
        }
        if positions % 2 == 1 {
            let t = positions - 1;
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(a.add(t * 8)), maxv));
            sumv = _mm256_add_ps(sumv, e);
            _mm256_storeu_ps(a.add(t * 8), e);
        }
        // As `attention_blocks_avx2`: each head's weighted values summed in position order,
        // then times 1/sum.
        let mut inv = [0.0f32; 8];
        _mm256_storeu_ps(inv.as_mut_ptr(), _mm256_div_ps(_mm256_set1_ps(1.0), sumv));
        let mut acc = [_mm256_setzero_ps(); 8];
        for t in 0..positions {
            let (w, row) = (a.add(t * 8), vp.add(t * kv_dim));
            for j in 0..4 {
                let (i, k) = (2 * j, 2 * j + 1);
                let v = _mm256_loadu_ps(row.add(off[i]));
                let u = if SHARE { v } else { _mm256_loadu_ps(row.add(off[k])) };
                acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*w.add(i)), v, acc[i]);
                acc[k] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*w.add(k)), u, acc[k]);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(head[i] * 8), _mm256_mul_ps(*acc, _mm256_set1_ps(inv[i])));
        }
    }
}

/// [`exp8`] on sixteen lanes of inputs that are at most zero (a score minus the maximum), so
/// its upper clamp never acts and is left out: the same operations otherwise, the same bits.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
fn exp16_nonpositive(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.33));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(core::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
    let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-64.0));
    _mm512_maskz_mul_ps(keep, p, _mm512_castsi512_ps(e))
}

#[inline(always)]
unsafe fn attention_q8_hs8(
    out: &mut [f32],
    query: QueryQ8<'_>,
    cache: CacheQ8<'_>,
    att: &mut [f32],
    shape: AttnShape,
) {
    let AttnShape { kv_dim, kv_mul, .. } = shape;
    let n_heads = query.q.len() / 8;
    let positions = cache.keys.len() / kv_dim;
    let ng = kv_dim / 32;
    let ones = _mm256_set1_epi16(1);
    let a = att.as_mut_ptr();
    let (kp, vp) = (cache.keys.as_ptr(), cache.values.as_ptr());
    for block in 0..n_heads / 8 {
        let (ua, ub) = (2 * block, 2 * block + 1);
        let (ca, cb) = (ua / kv_mul, ub / kv_mul);
        let Quads { lane_head, qa, qb, abs_a, abs_b, qscale } = quads(query, kv_mul, block);
        // Lanes 2, 3, 6, 7 come from quad B (and its key chunk).
        const FROM_B: i32 = 0b1100_1100;
        let mut maxv = _mm256_set1_ps(f32::NEG_INFINITY);
        for t in 0..positions {
            let row = kp.add(t * kv_dim);
            let ka = _mm256_loadu_si256(row.add(ca * 32) as *const __m256i);
            let kb = _mm256_loadu_si256(row.add(cb * 32) as *const __m256i);
            let da = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(ka, qa)), ones);
            let db = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_b, _mm256_sign_epi8(kb, qb)), ones);
            let isum = _mm256_cvtepi32_ps(_mm256_hadd_epi32(da, db));
            let s = cache.key_scales.as_ptr().add(t * ng);
            let ks =
                _mm256_blend_ps::<FROM_B>(_mm256_broadcast_ss(&*s.add(ca)), _mm256_broadcast_ss(&*s.add(cb)));
            let sc = _mm256_mul_ps(_mm256_mul_ps(isum, qscale), ks);
            maxv = _mm256_max_ps(maxv, sc);
            _mm256_storeu_ps(a.add(t * 8), sc);
        }
        let mut sumv = _mm256_setzero_ps();
        for t in 0..positions {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(a.add(t * 8)), maxv));
            sumv = _mm256_add_ps(sumv, e);
            let s = cache.value_scales.as_ptr().add(t * ng);
            let vs =
                _mm256_blend_ps::<FROM_B>(_mm256_broadcast_ss(&*s.add(ca)), _mm256_broadcast_ss(&*s.add(cb)));
            _mm256_storeu_ps(a.add(t * 8), _mm256_mul_ps(e, vs));
        }
        weighted_values(out, a, vp, kv_dim, positions, (ca, cb), lane_head, sumv);
    }
}

/// Whether the vector-search distances below may run (checked once, then cached by std).
pub fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// `sum f(a_i, b_i)` over 32 floats a step in four accumulators (FMA latency hides behind the
/// other three), then 8 a step, then scalar: the AVX2 twin of `vector::metric`'s sums.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_pairs_f32(
    a: &[f32],
    b: &[f32],
    step: impl Fn(__m256, __m256, __m256) -> __m256,
    scalar: impl Fn(f32, f32) -> f32,
) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut j = 0;
    while j + 32 <= n {
        for (k, s) in acc.iter_mut().enumerate() {
            *s = step(_mm256_loadu_ps(pa.add(j + 8 * k)), _mm256_loadu_ps(pb.add(j + 8 * k)), *s);
        }
        j += 32;
    }
    while j + 8 <= n {
        acc[0] = step(_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j)), acc[0]);
        j += 8;
    }
    let mut tail = 0.0;
    while j < n {
        tail += scalar(*pa.add(j), *pb.add(j));
        j += 1;
    }
    hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + tail
}

/// Squared L2 distance.
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`has_avx2`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    sum_pairs_f32(
        a,
        b,
        |x, y, s| {
            let d = _mm256_sub_ps(x, y);
            _mm256_fmadd_ps(d, d, s)
        },
        |x, y| (x - y) * (x - y),
    )
}

/// Dot product.
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`has_avx2`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    sum_pairs_f32(a, b, |x, y, s| _mm256_fmadd_ps(x, y, s), |x, y| x * y)
}

/// `(a.b, b.b)` of int8 vectors in i32, 32 values a step with the q8 matvec's group product.
/// Values must lie in `-127..=127` (-128 has no negation).
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`has_avx2`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn i8_dot_norm(a: &[i8], b: &[i8]) -> (i32, i32) {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut ab, mut bb) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut j = 0;
    while j + 32 <= n {
        let av = _mm256_loadu_si256(pa.add(j) as *const __m256i);
        let bv = _mm256_loadu_si256(pb.add(j) as *const __m256i);
        ab = _mm256_add_epi32(ab, dot_group(pb.add(j), av, _mm256_abs_epi8(av)));
        bb = _mm256_add_epi32(bb, dot_group(pb.add(j), bv, _mm256_abs_epi8(bv)));
        j += 32;
    }
    let lanes = hsum8_epi32(&[ab, bb, ab, bb, ab, bb, ab, bb]);
    let mut out = [0i32; 8];
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, lanes);
    let (mut sab, mut sbb) = (out[0], out[1]);
    while j < n {
        let (x, y) = (*pa.add(j) as i32, *pb.add(j) as i32);
        sab += x * y;
        sbb += y * y;
        j += 1;
    }
    (sab, sbb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random test data (xorshift), no dependency needed.
    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn fast_kernels_match_the_reference() {
        let (Some(wide), Some(narrow)) = (detect(), avx2_only()) else {
            eprintln!("skipping: this CPU has no AVX2/FMA");
            return;
        };
        for k in [wide, narrow] {
            check_against_reference(k);
        }
    }

    fn check_against_reference(k: Kernels) {
        for (rows, cols) in
            [(64, 64), (172, 64), (64, 172), (7, 13), (512, 64), (3, 8), (11, 4200), (8, 4096)]
        {
            let w = data(rows * cols, 1 + rows as u64);
            let x = data(cols, 99 + cols as u64);
            let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
            (k.matvec_f32)(&mut a, &w, &x);
            reference::matvec_f32(&mut b, &w, &x);
            close(&a, &b, 1e-5);

            let ng = cols.div_ceil(32);
            let (mut wq, mut wsc) = (vec![0i8; rows * cols], vec![0.0; rows * ng]);
            for r in 0..rows {
                crate::quant::quantize_row(
                    &w[r * cols..(r + 1) * cols],
                    &mut wq[r * cols..(r + 1) * cols],
                    &mut wsc[r * ng..(r + 1) * ng],
                    32,
                );
            }
            let (mut xq, mut xsc) = (vec![0i8; cols], vec![0.0; ng]);
            crate::quant::quantize_row(&x, &mut xq, &mut xsc, 32);
            (k.matvec_q8)(&mut a, &wq, &wsc, &xq, &xsc, 32);
            reference::matvec_q8(&mut b, &wq, &wsc, &xq, &xsc, 32);
            close(&a, &b, 1e-5);

            if cols.is_multiple_of(32) {
                // The same codes as Q8_0 blocks with f16 scales: the block kernel computes
                // exactly what matvec_q8 does with those scales.
                let half: Vec<u16> = wsc.iter().map(|v| crate::gguf::f32_to_f16(*v)).collect();
                let blocks: Vec<u8> = half
                    .iter()
                    .zip(wq.chunks_exact(32))
                    .flat_map(|(h, q)| h.to_le_bytes().into_iter().chain(q.iter().map(|v| *v as u8)))
                    .collect();
                let wide: Vec<f32> = half.iter().map(|h| crate::gguf::f16_to_f32(*h)).collect();
                reference::matvec_q8(&mut a, &wq, &wide, &xq, &xsc, 32);
                reference::matvec_q8_block(&mut b, &blocks, &xq, &xsc);
                assert_eq!(a, b, "block layout, {rows} x {cols}");
                (k.matvec_q8_block)(&mut a, &blocks, &xq, &xsc);
                close(&a, &b, 1e-5);
            }
        }
        for (heads, kv_heads, hs, positions) in [
            (8, 4, 8, 1),
            (8, 4, 8, 37),
            (4, 4, 16, 64),
            (8, 2, 8, 512),
            (16, 4, 16, 33),
            (8, 8, 8, 9),
            (16, 16, 8, 5),
            (6, 6, 8, 20),
        ] {
            let shape = AttnShape { head_size: hs, kv_dim: kv_heads * hs, kv_mul: heads / kv_heads };
            let q = data(heads * hs, 5);
            let keys = data(positions * shape.kv_dim, 6);
            let values = data(positions * shape.kv_dim, 7);
            let (mut a, mut b) = (vec![0.0; heads * hs], vec![0.0; heads * hs]);
            let mut att = vec![0.0; heads.next_multiple_of(8) * positions];
            (k.attention_f32)(&mut a, &q, &keys, &values, &mut att, shape);
            reference::attention_f32(&mut b, &q, &keys, &values, &mut att, shape);
            close(&a, &b, 1e-5);

            // The same cache in int8, one scale per 32 values of each position.
            let (kd, ng) = (shape.kv_dim, shape.kv_dim.div_ceil(32));
            let (mut kq, mut ksc) = (vec![0i8; keys.len()], vec![0.0; positions * ng]);
            let (mut vq, mut vsc) = (vec![0i8; keys.len()], vec![0.0; positions * ng]);
            for t in 0..positions {
                let r = t * kd..(t + 1) * kd;
                let sr = t * ng..(t + 1) * ng;
                crate::quant::quantize_row(&keys[r.clone()], &mut kq[r.clone()], &mut ksc[sr.clone()], 32);
                crate::quant::quantize_row(&values[r.clone()], &mut vq[r], &mut vsc[sr], 32);
            }
            let (mut qq, mut qsc, mut qd) =
                (vec![0i8; q.len()], vec![0.0; q.len().div_ceil(32)], vec![0.0; q.len()]);
            crate::quant::quantize_row(&q, &mut qq, &mut qsc, 32);
            crate::quant::dequantize_row(&qq, &qsc, &mut qd, 32);
            let query = QueryQ8 { q: &qd, qq: &qq, qs: &qsc };
            let cache = CacheQ8 { keys: &kq, key_scales: &ksc, values: &vq, value_scales: &vsc };
            (k.attention_q8)(&mut a, query, cache, &mut att, shape, 32);
            reference::attention_q8(&mut b, query, cache, &mut att, shape, 32);
            close(&a, &b, 1e-5);
        }
    }

    /// The row-order f32 matvec gives exactly the floats of the column-interleaved kernel, on
    /// every row width it takes (full and masked last chunks), row counts that are and are not
    /// a multiple of eight, and a width past it (the old kernel itself).
    #[test]
    fn row_order_f32_matvec_is_bit_identical() {
        if !(detect().is_some() && std::is_x86_feature_detected!("avx512f")) {
            eprintln!("skipping: this CPU has no AVX-512F");
            return;
        }
        let widths = (1..=193).filter(|c| c % 16 == 0 || c % 16 == 1 || c % 16 == 4 || c % 16 == 15);
        for cols in widths.chain([64, 172, 4200]) {
            for rows in [1, 7, 8, 17, 64] {
                let w = data(rows * cols, 11 + (rows * cols) as u64);
                let x = data(cols, 13 + cols as u64);
                let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
                // SAFETY: AVX-512F checked above; `w` holds rows * cols values.
                unsafe {
                    matvec_f32_avx512(&mut a, &w, &x);
                    matvec_f32_avx512_rows(&mut b, &w, &x);
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{rows} x {cols}");
            }
        }
    }

    /// The repacked int8 matvec gives exactly the floats of the kernel it replaces, on rows
    /// that are and are not a multiple of eight, short last groups (whose padded read would
    /// and would not run past the matrix), codes of -128 and 127, and wide rows.
    #[test]
    fn packed_int8_matvec_is_bit_identical() {
        if !(detect().is_some()
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avxvnni"))
        {
            eprintln!("skipping: this CPU has no AVX-512 VNNI and AVX-VNNI");
            return;
        }
        for (rows, cols) in [(64, 64), (172, 64), (64, 172), (13, 40), (512, 64), (24, 4200), (16, 8)] {
            let w = data(rows * cols, 3 + rows as u64);
            let x = data(cols, 77 + cols as u64);
            let ng = cols.div_ceil(32);
            let (mut wq, mut ws) = (vec![0i8; rows * cols], vec![0.0; rows * ng]);
            for r in 0..rows {
                let (rr, sr) = (r * cols..(r + 1) * cols, r * ng..(r + 1) * ng);
                crate::quant::quantize_row(&w[rr.clone()], &mut wq[rr], &mut ws[sr], 32);
            }
            wq[0] = -128;
            wq[rows * cols - 1] = 127;
            let (mut xq, mut xs) = (vec![0i8; cols], vec![0.0; ng]);
            crate::quant::quantize_row(&x, &mut xq, &mut xs, 32);
            xq[cols - 1] = -127;
            let p = PackedQ8::new(&wq, &ws, rows, cols);
            for out_rows in [rows, rows / 2] {
                let (mut a, mut b) = (vec![0.0; out_rows], vec![0.0; out_rows]);
                matvec_q8_packed(&mut a, &p, &wq, &ws, &xq, &xs);
                matvec_q8_on::<VNNI_WIDE>(&mut b, &wq, &ws, &xq, &xs, 32);
                assert_eq!(a, b, "{rows} x {cols}, {out_rows} rows");
            }
        }
    }

    /// A query (one value zero, the rest scaled by `spread`), keys and values for heads of
    /// eight, from seeds `seed` to `seed + 2`.
    fn attention_case(
        heads: usize,
        kv_heads: usize,
        positions: usize,
        spread: f32,
        seed: u64,
    ) -> (AttnShape, Vec<f32>, Vec<f32>, Vec<f32>) {
        let shape = AttnShape { head_size: 8, kv_dim: kv_heads * 8, kv_mul: heads / kv_heads };
        let mut q = data(heads * 8, seed + positions as u64);
        q[3] = 0.0;
        q.iter_mut().for_each(|v| *v *= spread);
        let keys = data(positions * shape.kv_dim, seed + 1);
        let values = data(positions * shape.kv_dim, seed + 2);
        (shape, q, keys, values)
    }

    /// The 512-bit int8 attention gives exactly the 256-bit kernel's floats (the q8 text is
    /// the same whichever runs), on odd and even position counts, several blocks and a
    /// query with negative and zero bytes.
    #[test]
    fn wide_int8_attention_is_bit_identical() {
        assert_eq!(SQRT_8, libm::sqrtf(8.0));
        if !(detect().is_some()
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni"))
        {
            eprintln!("skipping: this CPU has no AVX-512 VNNI");
            return;
        }
        for (heads, kv_heads, positions, spread) in [
            (8, 4, 1, 1.0),
            (8, 4, 2, 1.0),
            (8, 4, 37, 30.0),
            (8, 4, 256, 3.0),
            (16, 8, 511, 1.0),
            (16, 4, 64, 8.0),
        ] {
            let (shape, q, keys, values) = attention_case(heads, kv_heads, positions, spread, 11);
            let (kd, ng) = (shape.kv_dim, shape.kv_dim / 32);
            let (mut kq, mut ksc) = (vec![0i8; keys.len()], vec![0.0; positions * ng]);
            let (mut vq, mut vsc) = (vec![0i8; keys.len()], vec![0.0; positions * ng]);
            for t in 0..positions {
                let (r, sr) = (t * kd..(t + 1) * kd, t * ng..(t + 1) * ng);
                crate::quant::quantize_row(&keys[r.clone()], &mut kq[r.clone()], &mut ksc[sr.clone()], 32);
                crate::quant::quantize_row(&values[r.clone()], &mut vq[r], &mut vsc[sr], 32);
            }
            let (mut qq, mut qsc, mut qd) = (vec![0i8; q.len()], vec![0.0; heads / 4], vec![0.0; q.len()]);
            crate::quant::quantize_row(&q, &mut qq, &mut qsc, 32);
            crate::quant::dequantize_row(&qq, &qsc, &mut qd, 32);
            let query = QueryQ8 { q: &qd, qq: &qq, qs: &qsc };
            let cache = CacheQ8 { keys: &kq, key_scales: &ksc, values: &vq, value_scales: &vsc };
            let (mut a, mut b) = (vec![0.0; heads * 8], vec![0.0; heads * 8]);
            let mut att = vec![0.0; heads * positions];
            attention_q8_on::<ZMM>(&mut a, query, cache, &mut att, shape, 32);
            attention_q8_512(&mut b, query, cache, &mut att, shape, 32);
            assert_eq!(a, b, "{heads} heads, {kv_heads} KV heads, {positions} positions");
        }
    }

    /// The 512-bit f32 attention gives the 256-bit kernel's floats bit for bit, on one and two
    /// positions, odd counts, GQA and plain multi-head shapes and large scores.
    #[test]
    fn wide_f32_attention_is_bit_identical() {
        if !(detect().is_some() && std::is_x86_feature_detected!("avx512f")) {
            eprintln!("skipping: this CPU has no AVX-512F");
            return;
        }
        for (heads, kv_heads, positions, spread) in [
            (8, 4, 1, 1.0),
            (8, 4, 2, 1.0),
            (8, 4, 37, 30.0),
            (8, 4, 346, 3.0),
            (8, 8, 5, 1.0),
            (8, 2, 33, 1.0),
            (8, 1, 12, 4.0),
            (16, 8, 511, 1.0),
            (16, 4, 64, 8.0),
            (16, 16, 3, 1.0),
            (24, 3, 9, 2.0),
            (24, 8, 7, 2.0),
        ] {
            let (shape, q, keys, values) = attention_case(heads, kv_heads, positions, spread, 21);
            let (mut a, mut b) = (vec![0.0; heads * 8], vec![0.0; heads * 8]);
            let mut att = vec![0.0; heads.next_multiple_of(8) * positions];
            attention_f32_512(&mut a, &q, &keys, &values, &mut att, shape);
            attention_f32(&mut b, &q, &keys, &values, &mut att, shape);
            assert_eq!(a, b, "{heads} heads, {kv_heads} KV heads, {positions} positions");
        }
    }

    /// Every int8 matvec kernel this CPU runs (AVX2, and AVX-VNNI where present) agrees with
    /// the reference, and all of them give the same floats, on random codes and on the
    /// extremes: weights of -128 and 127 (a GGUF may hold -128), activations of +-127, rows of
    /// one, two and many groups with a short last group, and row counts that are not
    /// multiples of eight.
    #[test]
    fn int8_matvec_kernels_agree_on_extremes() {
        let Some(wide) = detect() else {
            eprintln!("skipping: this CPU has no AVX2/FMA");
            return;
        };
        let mut kernels = vec![wide.matvec_q8, matvec_q8 as crate::kernels::MatvecQ8];
        if std::is_x86_feature_detected!("avxvnni") {
            kernels.push(matvec_q8_on::<VNNI>);
        }
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for (rows, cols) in
            [(8usize, 64usize), (16, 64), (12, 64), (172, 64), (64, 172), (5, 32), (9, 13), (24, 96), (3, 1)]
        {
            let ng = cols.div_ceil(32);
            let ws: Vec<f32> = (0..rows * ng).map(|_| (next() % 1000) as f32 / 997.0 + 0.01).collect();
            let xs: Vec<f32> = (0..ng).map(|_| (next() % 1000) as f32 / 991.0 + 0.01).collect();
            // (weight, activation) codes from a random word
            type Code = fn(u64) -> i8;
            let cases: [(Code, Code); 4] = [
                (|r| r as i8, |r| (r as i8).max(-127)),
                (|_| -128, |_| -127),
                (|_| 127, |_| 127),
                (|r| if r & 1 == 0 { -128 } else { 127 }, |r| if r & 2 == 0 { -127 } else { 127 }),
            ];
            for (wf, xf) in &cases {
                let wq: Vec<i8> = (0..rows * cols).map(|_| wf(next())).collect();
                let xq: Vec<i8> = (0..cols).map(|_| xf(next())).collect();
                let mut want = vec![0.0; rows];
                reference::matvec_q8(&mut want, &wq, &ws, &xq, &xs, 32);
                let mut first: Option<Vec<f32>> = None;
                for kernel in &kernels {
                    let mut got = vec![f32::NAN; rows];
                    kernel(&mut got, &wq, &ws, &xq, &xs, 32);
                    close(&got, &want, 1e-5);
                    assert_eq!(first.get_or_insert_with(|| got.clone()), &got, "{rows} x {cols}");
                }
            }
        }
    }

    #[test]
    fn fast_quantization_is_bit_identical() {
        let Some(k) = detect() else { return };
        for n in [32, 64, 172, 7, 300] {
            let x = data(n, n as u64);
            let ng = n.div_ceil(32);
            let (mut qa, mut sa) = (vec![0i8; n], vec![0.0; ng]);
            let (mut qb, mut sb) = (vec![0i8; n], vec![0.0; ng]);
            (k.quantize)(&x, &mut qa, &mut sa, 32);
            crate::quant::quantize_row(&x, &mut qb, &mut sb, 32);
            assert_eq!(qa, qb);
            assert_eq!(sa, sb);
        }
        // A group whose scaled values land exactly on halves.
        let x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        let (mut qa, mut sa, mut qb, mut sb) = (vec![0i8; 32], vec![0.0; 1], vec![0i8; 32], vec![0.0; 1]);
        (k.quantize)(&x, &mut qa, &mut sa, 32);
        crate::quant::quantize_row(&x, &mut qb, &mut sb, 32);
        assert_eq!(qa, qb);
    }

    #[test]
    fn vector_exp_is_within_two_ulp_and_flushes_tiny_results() {
        if detect().is_none() {
            return;
        }
        let xs: Vec<f32> = (0..20000).map(|i| -64.0 + i as f32 * 0.0076).collect();
        for chunk in xs.chunks_exact(8) {
            let mut out = [0.0f32; 8];
            // SAFETY: AVX2 and FMA were detected above.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(chunk.as_ptr()))) };
            for (x, e) in chunk.iter().zip(out) {
                let want = libm::expf(*x);
                let ulp = (want.to_bits() as i64 - e.to_bits() as i64).abs();
                assert!(ulp <= 2, "exp({x}) = {e}, want {want} ({ulp} ulp)");
            }
        }
        let tiny = [-64.01f32, -70.0, -87.0, -100.0, -1e30, f32::NEG_INFINITY, -65.0, -200.0];
        let mut out = [1.0f32; 8];
        // SAFETY: AVX2 and FMA were detected above.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(tiny.as_ptr()))) };
        assert_eq!(out, [0.0; 8]);
    }
}
