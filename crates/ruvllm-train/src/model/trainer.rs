//! Forward and backward passes over a batch, data-parallel over sequences.
//!
//! Each thread owns a [`Worker`]: the saved activations of one sequence (every layer's inputs,
//! normalized inputs, queries, transposed keys and values, attention outputs and log-sum-exps,
//! FFN pre-activations) and the backward scratch, all allocated once. A worker runs its
//! sequences one at a time (forward, then backward) and accumulates weight gradients in its own
//! buffer; the buffers are summed in thread order, so a given thread count always gives the
//! same bits.

use super::kernels::{self as k, Attn};
use super::{project, Layout, Params};
use ruvllm_esp32::kernels::reference::{rope, rope_table};
use ruvllm_esp32::model::Config;
use ruvllm_esp32::quant::WeightFormat;

const MM_F: usize = 0;
const ATT_F: usize = 1;
const OTHER_F: usize = 2;
const XENT: usize = 3;
const MM_B: usize = 4;
const ATT_B: usize = 5;
const OTHER_B: usize = 6;
const SECTIONS: [&str; 7] = [
    "forward matmuls (sgemm)",
    "forward attention",
    "forward other (norms, RoPE, SwiGLU, transposes, embedding)",
    "softmax + cross-entropy",
    "backward matmuls (sgemm)",
    "backward attention",
    "backward other",
];

/// Seconds per section of the forward and backward passes, summed over the sequences a
/// worker ran.
#[derive(Clone, Copy, Default, Debug)]
struct Profile {
    acc: [f64; 7],
}

impl Profile {
    fn add(&mut self, t: &Timer) {
        for (a, b) in self.acc.iter_mut().zip(&t.acc) {
            *a += b;
        }
    }
}

/// Laps of a section timer.
struct Timer {
    mark: std::time::Instant,
    acc: [f64; 7],
}

impl Timer {
    #[inline(always)]
    fn start() -> Timer {
        Timer { mark: std::time::Instant::now(), acc: [0.0; 7] }
    }

    #[inline(always)]
    fn lap(&mut self, section: usize) {
        let now = std::time::Instant::now();
        self.acc[section] += (now - self.mark).as_secs_f64();
        self.mark = now;
    }
}

/// What every worker reads: the shapes and the projected weights.
struct Ctx<'a> {
    c: &'a Config,
    layout: &'a Layout,
    /// Projected weights (what the forward pass computes with).
    w: &'a [f32],
    /// `[seq][head_size]`: (cos, sin) pairs per position, the engine's table.
    rope: &'a [f32],
    /// Maximum positions per sequence (row stride of the transposed buffers).
    stride: usize,
    simd: Simd,
    /// Attention by per-head sgemm (the comparison baseline) instead of the fused kernels.
    unfused: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Simd {
    Generic,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Simd {
    fn name(self) -> &'static str {
        match self {
            Simd::Generic => "generic",
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => "avx512",
        }
    }

    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            // RUVLLM_TRAIN_SIMD=generic|avx2 caps the instruction set (for comparisons).
            let cap = std::env::var("RUVLLM_TRAIN_SIMD").unwrap_or_default();
            if cap == "generic" {
                return Simd::Generic;
            }
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") && cap != "avx2" {
                return Simd::Avx512;
            }
            if avx2 {
                return Simd::Avx2;
            }
        }
        Simd::Generic
    }
}

/// One sequence's activations and gradients scratch.
struct Worker {
    /// Residual stream entering each layer, and the final one: `[L + 1][T][d]`.
    x: Vec<f32>,
    /// Residual stream after each layer's attention: `[L][T][d]`.
    xm: Vec<f32>,
    /// Inverse RMS of `x` and `xm` rows: `[L + 1][T]`, `[L][T]`.
    r1: Vec<f32>,
    r2: Vec<f32>,
    /// Normalized inputs of the attention and the FFN: `[L][T][d]`; the final one `[T][d]`.
    xn1: Vec<f32>,
    xn2: Vec<f32>,
    xnf: Vec<f32>,
    /// Roped queries `[L][T][d]`; roped keys and values transposed `[L][kv][T]`.
    q: Vec<f32>,
    kt: Vec<f32>,
    vt: Vec<f32>,
    /// Attention outputs `[L][T][d]` and log-sum-exps `[L][H][T]`.
    ao: Vec<f32>,
    lse: Vec<f32>,
    /// FFN gate and up pre-activations and the gated product: `[L][T][h]`.
    h1: Vec<f32>,
    h3: Vec<f32>,
    hg: Vec<f32>,
    /// `[T][vocab]`: logits, then probabilities, then their gradient.
    logits: Vec<f32>,
    // Scratch.
    /// `[T][dim + 2 kv_dim]`: q, k, v side by side (forward), or their gradients (backward).
    qkv: Vec<f32>,
    krow: Vec<f32>,
    vrow: Vec<f32>,
    dres: Vec<f32>,
    dxn: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dkt: Vec<f32>,
    dvt: Vec<f32>,
    dao: Vec<f32>,
    dh1: Vec<f32>,
    dh3: Vec<f32>,
    dhg: Vec<f32>,
    s1: Vec<f32>,
    s2: Vec<f32>,
    /// `T x T` scratch of the unfused baseline (empty unless it runs).
    tt: Vec<f32>,
    /// Gradient accumulator (unused by worker 0, which writes into the caller's buffer).
    grads: Vec<f32>,
    /// Seconds spent per section.
    prof: Profile,
}

impl Worker {
    fn new(c: &Config, t: usize, n_params: usize, own_grads: bool) -> Worker {
        let (d, h, kv, l, v) = (c.dim, c.hidden_dim, c.kv_dim(), c.n_layers, c.vocab_size);
        // The query and the attention's output: dim wide unless heads were removed.
        let q = c.q_dim();
        let z = |n: usize| vec![0.0f32; n];
        Worker {
            x: z((l + 1) * t * d),
            xm: z(l * t * d),
            r1: z((l + 1) * t),
            r2: z(l * t),
            xn1: z(l * t * d),
            xn2: z(l * t * d),
            xnf: z(t * d),
            q: z(l * t * q),
            kt: z(l * kv * t),
            vt: z(l * kv * t),
            ao: z(l * t * q),
            lse: z(l * c.n_heads * t),
            h1: z(l * t * h),
            h3: z(l * t * h),
            hg: z(l * t * h),
            logits: z(t * v),
            qkv: z(t * (q.max(d) + 2 * kv)),
            krow: z(t * kv),
            vrow: z(t * kv),
            dres: z(t * d),
            dxn: z(t * d),
            dq: z(t * q),
            dk: z(t * kv),
            dv: z(t * kv),
            dkt: z(kv * t),
            dvt: z(kv * t),
            dao: z(t * q),
            dh1: z(t * h),
            dh3: z(t * h),
            dhg: z(t * h),
            s1: z(2 * t),
            s2: z(t),
            tt: Vec::new(),
            grads: if own_grads { z(n_params) } else { Vec::new() },
            prof: Profile::default(),
        }
    }

    /// Forward over `tokens` (`len <= stride` positions), leaving the logits in `self.logits`.
    /// With `targets`, also turns the logits into `scale * d(loss)/d(logits)` and returns the
    /// summed cross-entropy (nats).
    fn run(
        &mut self,
        cx: &Ctx<'_>,
        tokens: &[u32],
        targets: Option<&[u32]>,
        scale: f32,
        grads: Option<&mut [f32]>,
    ) -> f64 {
        match cx.simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() saw these features on this CPU.
            Simd::Avx2 => unsafe { self.run_avx2(cx, tokens, targets, scale, grads) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Simd::Avx512 => unsafe { self.run_avx512(cx, tokens, targets, scale, grads) },
            Simd::Generic => self.run_inner::<8>(cx, tokens, targets, scale, grads),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(
        &mut self,
        cx: &Ctx<'_>,
        tokens: &[u32],
        targets: Option<&[u32]>,
        scale: f32,
        grads: Option<&mut [f32]>,
    ) -> f64 {
        self.run_inner::<8>(cx, tokens, targets, scale, grads)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run_avx512(
        &mut self,
        cx: &Ctx<'_>,
        tokens: &[u32],
        targets: Option<&[u32]>,
        scale: f32,
        grads: Option<&mut [f32]>,
    ) -> f64 {
        self.run_inner::<16>(cx, tokens, targets, scale, grads)
    }

    #[inline(always)]
    fn run_inner<const L: usize>(
        &mut self,
        cx: &Ctx<'_>,
        tokens: &[u32],
        targets: Option<&[u32]>,
        scale: f32,
        grads: Option<&mut [f32]>,
    ) -> f64 {
        self.forward::<L>(cx, tokens);
        let Some(targets) = targets else { return 0.0 };
        let t0 = std::time::Instant::now();
        let loss = self.cross_entropy(cx, targets, scale);
        self.prof.acc[XENT] += t0.elapsed().as_secs_f64();
        if let Some(g) = grads {
            self.backward::<L>(cx, tokens, g);
        }
        loss
    }

    #[inline(always)]
    fn forward<const L: usize>(&mut self, cx: &Ctx<'_>, tokens: &[u32]) {
        let c = cx.c;
        let (d, h, kv, v) = (c.dim, c.hidden_dim, c.kv_dim(), c.vocab_size);
        let (hs, st, t_len) = (c.head_size(), cx.stride, tokens.len());
        let w = cx.w;
        let embd = &w[cx.layout.token_embd.clone()];
        let attn = Attn {
            len: t_len,
            stride: st,
            n_heads: c.n_heads,
            head_size: hs,
            kv_mul: c.n_heads / c.n_kv_heads,
        };
        let mut tm = Timer::start();
        for (t, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            assert!(tok < v, "token {tok} outside the vocabulary");
            self.x[t * d..(t + 1) * d].copy_from_slice(&embd[tok * d..(tok + 1) * d]);
        }
        tm.lap(OTHER_F);
        let qd = c.q_dim();
        for (l, lw) in cx.layout.layers.iter().enumerate() {
            let td = l * st * d..(l + 1) * st * d;
            let tq = l * st * qd..(l + 1) * st * qd;
            let (x, rest) = self.x[l * st * d..].split_at_mut(st * d);
            let x_next = &mut rest[..st * d];
            let xn1 = &mut self.xn1[td.clone()];
            let r1 = &mut self.r1[l * st..(l + 1) * st];
            let anorm = &w[lw.attn_norm.clone()];
            for t in 0..t_len {
                r1[t] = k::rmsnorm(&mut xn1[t * d..(t + 1) * d], &x[t * d..(t + 1) * d], anorm, c.norm_eps);
            }
            tm.lap(OTHER_F);
            // wq, wk and wv are consecutive in the layout: one product for all three.
            let nqkv = qd + 2 * kv;
            k::matmul_xwt(&mut self.qkv, xn1, &w[lw.wq.start..lw.wv.end], t_len, d, nqkv, 0.0);
            tm.lap(MM_F);
            let q = &mut self.q[tq.clone()];
            for t in 0..t_len {
                let row = &self.qkv[t * nqkv..(t + 1) * nqkv];
                q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                self.krow[t * kv..(t + 1) * kv].copy_from_slice(&row[qd..qd + kv]);
                self.vrow[t * kv..(t + 1) * kv].copy_from_slice(&row[qd + kv..]);
            }
            for t in 0..t_len {
                let table = &cx.rope[t * hs..(t + 1) * hs];
                rope(&mut q[t * qd..(t + 1) * qd], table);
                rope(&mut self.krow[t * kv..(t + 1) * kv], table);
            }
            let kvr = l * kv * st..(l + 1) * kv * st;
            let (kt, vt) = (&mut self.kt[kvr.clone()], &mut self.vt[kvr]);
            k::transpose(kt, &self.krow, t_len, kv, st);
            k::transpose(vt, &self.vrow, t_len, kv, st);
            if t_len < st {
                // The blocked kernels read whole blocks of positions: keep the tail finite.
                for row in kt.chunks_exact_mut(st).chain(vt.chunks_exact_mut(st)) {
                    row[t_len..].fill(0.0);
                }
            }
            tm.lap(OTHER_F);
            let ao = &mut self.ao[tq.clone()];
            let lse = &mut self.lse[l * c.n_heads * st..(l + 1) * c.n_heads * st];
            if cx.unfused {
                self.tt.resize(2 * st * st, 0.0);
                k::attention_unfused(ao, lse, q, kt, vt, &mut self.tt, attn);
            } else {
                attend::<L>(ao, lse, q, kt, vt, &mut self.s1, attn);
            }
            tm.lap(ATT_F);
            let xm = &mut self.xm[td.clone()];
            xm[..t_len * d].copy_from_slice(&x[..t_len * d]);
            k::matmul_xwt(xm, ao, &w[lw.wo.clone()], t_len, qd, d, 1.0);
            tm.lap(MM_F);
            let xn2 = &mut self.xn2[td.clone()];
            let r2 = &mut self.r2[l * st..(l + 1) * st];
            let fnorm = &w[lw.ffn_norm.clone()];
            for t in 0..t_len {
                r2[t] = k::rmsnorm(&mut xn2[t * d..(t + 1) * d], &xm[t * d..(t + 1) * d], fnorm, c.norm_eps);
            }
            tm.lap(OTHER_F);
            let th = l * st * h..(l + 1) * st * h;
            let (h1, h3, hg) = (&mut self.h1[th.clone()], &mut self.h3[th.clone()], &mut self.hg[th]);
            k::matmul_xwt(h1, xn2, &w[lw.w1.clone()], t_len, d, h, 0.0);
            k::matmul_xwt(h3, xn2, &w[lw.w3.clone()], t_len, d, h, 0.0);
            tm.lap(MM_F);
            k::swiglu(&mut hg[..t_len * h], &h1[..t_len * h], &h3[..t_len * h]);
            tm.lap(OTHER_F);
            x_next[..t_len * d].copy_from_slice(&xm[..t_len * d]);
            k::matmul_xwt(x_next, hg, &w[lw.w2.clone()], t_len, h, d, 1.0);
            tm.lap(MM_F);
        }
        let nl = c.n_layers;
        let xf = &self.x[nl * st * d..(nl + 1) * st * d];
        let onorm = &w[cx.layout.output_norm.clone()];
        for t in 0..t_len {
            self.r1[nl * st + t] =
                k::rmsnorm(&mut self.xnf[t * d..(t + 1) * d], &xf[t * d..(t + 1) * d], onorm, c.norm_eps);
        }
        tm.lap(OTHER_F);
        k::matmul_xwt(&mut self.logits, &self.xnf, embd, t_len, d, v, 0.0);
        tm.lap(MM_F);
        self.prof.add(&tm);
    }

    /// Summed cross-entropy of `targets`; replaces the logits by `scale * (p - onehot)`.
    #[inline(always)]
    fn cross_entropy(&mut self, cx: &Ctx<'_>, targets: &[u32], scale: f32) -> f64 {
        let v = cx.c.vocab_size;
        let mut loss = 0.0f64;
        for (row, &y) in self.logits.chunks_exact_mut(v).zip(targets) {
            let y = y as usize;
            assert!(y < v, "target {y} outside the vocabulary");
            let m = k::max(row);
            let target = row[y];
            let sum = k::exp_shift_sum(row, m);
            loss += (m + sum.ln() - target) as f64;
            let inv = scale / sum;
            for p in row.iter_mut() {
                *p *= inv;
            }
            row[y] -= scale;
        }
        loss
    }

    #[inline(always)]
    fn backward<const L: usize>(&mut self, cx: &Ctx<'_>, tokens: &[u32], g: &mut [f32]) {
        let c = cx.c;
        let (d, h, kv, v) = (c.dim, c.hidden_dim, c.kv_dim(), c.vocab_size);
        let (hs, st, t_len) = (c.head_size(), cx.stride, tokens.len());
        let (w, lay) = (cx.w, cx.layout);
        let attn = Attn {
            len: t_len,
            stride: st,
            n_heads: c.n_heads,
            head_size: hs,
            kv_mul: c.n_heads / c.n_kv_heads,
        };
        let embd = &w[lay.token_embd.clone()];
        let mut tm = Timer::start();
        // Classifier (shared with the embedding) and the final norm.
        k::matmul_dw(&mut g[lay.token_embd.clone()], &self.logits, &self.xnf, t_len, d, v);
        k::matmul_xw(&mut self.dxn, &self.logits, embd, t_len, d, v, 0.0);
        tm.lap(MM_B);
        let nl = c.n_layers;
        self.dres[..t_len * d].fill(0.0);
        k::rmsnorm_backward_rows(
            &mut self.dres[..t_len * d],
            &mut g[lay.output_norm.clone()],
            &self.dxn[..t_len * d],
            &self.x[nl * st * d..(nl + 1) * st * d][..t_len * d],
            &w[lay.output_norm.clone()],
            &self.r1[nl * st..nl * st + t_len],
        );
        tm.lap(OTHER_B);
        let qd = c.q_dim();
        for (l, lw) in lay.layers.iter().enumerate().rev() {
            let td = l * st * d..(l + 1) * st * d;
            let tq = l * st * qd..(l + 1) * st * qd;
            let th = l * st * h..(l + 1) * st * h;
            // FFN.
            let (h1, h3, hg) = (&self.h1[th.clone()], &self.h3[th.clone()], &self.hg[th]);
            k::matmul_xw(&mut self.dhg, &self.dres, &w[lw.w2.clone()], t_len, h, d, 0.0);
            k::matmul_dw(&mut g[lw.w2.clone()], &self.dres, hg, t_len, h, d);
            tm.lap(MM_B);
            let n = t_len * h;
            k::swiglu_backward(&mut self.dh1[..n], &mut self.dh3[..n], &self.dhg[..n], &h1[..n], &h3[..n]);
            tm.lap(OTHER_B);
            let xn2 = &self.xn2[td.clone()];
            k::matmul_xw(&mut self.dxn, &self.dh1, &w[lw.w1.clone()], t_len, d, h, 0.0);
            k::matmul_xw(&mut self.dxn, &self.dh3, &w[lw.w3.clone()], t_len, d, h, 1.0);
            k::matmul_dw(&mut g[lw.w1.clone()], &self.dh1, xn2, t_len, d, h);
            k::matmul_dw(&mut g[lw.w3.clone()], &self.dh3, xn2, t_len, d, h);
            tm.lap(MM_B);
            k::rmsnorm_backward_rows(
                &mut self.dres[..t_len * d],
                &mut g[lw.ffn_norm.clone()],
                &self.dxn[..t_len * d],
                &self.xm[td.clone()][..t_len * d],
                &w[lw.ffn_norm.clone()],
                &self.r2[l * st..l * st + t_len],
            );
            tm.lap(OTHER_B);
            // Attention.
            let ao = &self.ao[tq.clone()];
            k::matmul_xw(&mut self.dao, &self.dres, &w[lw.wo.clone()], t_len, qd, d, 0.0);
            k::matmul_dw(&mut g[lw.wo.clone()], &self.dres, ao, t_len, qd, d);
            let kvr = l * kv * st..(l + 1) * kv * st;
            self.dkt.fill(0.0);
            self.dvt.fill(0.0);
            tm.lap(MM_B);
            let q = &self.q[tq];
            let lse = &self.lse[l * c.n_heads * st..(l + 1) * c.n_heads * st];
            if cx.unfused {
                k::attention_backward_unfused(
                    (&mut self.dq, &mut self.dkt, &mut self.dvt),
                    &self.dao,
                    lse,
                    q,
                    &self.kt[kvr.clone()],
                    &self.vt[kvr],
                    &mut self.tt,
                    attn,
                );
            } else {
                attend_backward::<L>(
                    (&mut self.dq, &mut self.dkt, &mut self.dvt),
                    &self.dao,
                    ao,
                    lse,
                    q,
                    &self.kt[kvr.clone()],
                    &self.vt[kvr],
                    (&mut self.s1, &mut self.s2),
                    attn,
                );
            }
            tm.lap(ATT_B);
            k::untranspose(&mut self.dk, &self.dkt, t_len, kv, st);
            k::untranspose(&mut self.dv, &self.dvt, t_len, kv, st);
            for t in 0..t_len {
                let table = &cx.rope[t * hs..(t + 1) * hs];
                k::rope_backward(&mut self.dq[t * qd..(t + 1) * qd], table);
                k::rope_backward(&mut self.dk[t * kv..(t + 1) * kv], table);
            }
            tm.lap(OTHER_B);
            let nqkv = qd + 2 * kv;
            for t in 0..t_len {
                let row = &mut self.qkv[t * nqkv..(t + 1) * nqkv];
                row[..qd].copy_from_slice(&self.dq[t * qd..(t + 1) * qd]);
                row[qd..qd + kv].copy_from_slice(&self.dk[t * kv..(t + 1) * kv]);
                row[qd + kv..].copy_from_slice(&self.dv[t * kv..(t + 1) * kv]);
            }
            tm.lap(OTHER_B);
            let xn1 = &self.xn1[td.clone()];
            let wqkv = lw.wq.start..lw.wv.end;
            k::matmul_xw(&mut self.dxn, &self.qkv, &w[wqkv.clone()], t_len, d, nqkv, 0.0);
            k::matmul_dw(&mut g[wqkv], &self.qkv, xn1, t_len, d, nqkv);
            tm.lap(MM_B);
            k::rmsnorm_backward_rows(
                &mut self.dres[..t_len * d],
                &mut g[lw.attn_norm.clone()],
                &self.dxn[..t_len * d],
                &self.x[td][..t_len * d],
                &w[lw.attn_norm.clone()],
                &self.r1[l * st..l * st + t_len],
            );
            tm.lap(OTHER_B);
        }
        let ge = &mut g[lay.token_embd.clone()];
        for (t, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            k::axpy(&mut ge[tok * d..(tok + 1) * d], 1.0, &self.dres[t * d..(t + 1) * d]);
        }
        tm.lap(OTHER_B);
        self.prof.add(&tm);
    }
}

/// Forward and backward passes for batches of `batch` sequences of `seq` positions, on
/// `threads` threads, for a model of one config and one weight format.
pub struct Trainer {
    config: Config,
    layout: Layout,
    batch: usize,
    seq: usize,
    stride: usize,
    format: WeightFormat,
    /// Projected weights.
    proj: Vec<f32>,
    rope: Vec<f32>,
    workers: Vec<Worker>,
    simd: Simd,
    unfused: bool,
    /// Seconds projecting weights and reducing gradients.
    extra: [f64; 2],
}

impl Trainer {
    /// Buffers for `threads` workers (at least one) of one sequence of `seq` positions each.
    pub fn new(config: &Config, batch: usize, seq: usize, threads: usize, format: WeightFormat) -> Trainer {
        config.validate().expect("valid config");
        assert!(batch >= 1 && seq >= 1, "batch and seq must be positive");
        let threads = threads.clamp(1, batch);
        let layout = Layout::new(config);
        // The passes multiply by wq, wk, wv as one matrix.
        assert!(layout.layers.iter().all(|l| l.wq.end == l.wk.start && l.wk.end == l.wv.start));
        let hs = config.head_size();
        // Row stride of the per-position buffers: whole blocks of 16 positions.
        let stride = seq.next_multiple_of(16);
        let mut rope = vec![0.0f32; seq * hs];
        for (pos, table) in rope.chunks_exact_mut(hs).enumerate() {
            rope_table(table, pos, hs, config.rope_theta);
        }
        let workers = (0..threads).map(|i| Worker::new(config, stride, layout.len, i > 0)).collect();
        Trainer {
            config: *config,
            proj: vec![0.0; layout.len],
            layout,
            batch,
            seq,
            stride,
            format,
            rope,
            workers,
            simd: Simd::detect(),
            unfused: false,
            extra: [0.0; 2],
        }
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn seq(&self) -> usize {
        self.seq
    }

    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Seconds spent in each section of the passes since the trainer was made (or
    /// [`Trainer::reset_profile`]), summed over the workers (so with several threads the total
    /// exceeds the wall time).
    pub fn profile(&self) -> Vec<(&'static str, f64)> {
        let mut total = Profile::default();
        for w in &self.workers {
            total.acc.iter_mut().zip(&w.prof.acc).for_each(|(a, b)| *a += b);
        }
        let mut out: Vec<_> = SECTIONS.iter().copied().zip(total.acc).collect();
        out.push(("project weights (QAT), once per step", self.extra[0]));
        out.push(("sum the threads' gradients", self.extra[1]));
        out
    }

    pub fn reset_profile(&mut self) {
        for w in &mut self.workers {
            w.prof = Profile::default();
        }
        self.extra = [0.0; 2];
    }

    /// The kernel set in use: "avx512", "avx2", "generic", or "unfused" (the baseline).
    pub fn kernels(&self) -> &'static str {
        if self.unfused {
            "unfused"
        } else {
            self.simd.name()
        }
    }

    /// Switches to another kernel set ("avx512", "avx2" or "generic", for tests and
    /// comparisons; "unfused" is the best of them with attention computed as per-head matrix
    /// products instead, the baseline the fused kernels are measured against); false (and no
    /// change) if this CPU lacks it.
    pub fn set_kernels(&mut self, name: &str) -> bool {
        let want = match name {
            "unfused" => {
                self.simd = Simd::detect();
                self.unfused = true;
                return true;
            }
            "generic" => Simd::Generic,
            #[cfg(target_arch = "x86_64")]
            "avx2" if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => Simd::Avx2,
            #[cfg(target_arch = "x86_64")]
            "avx512" if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") => {
                Simd::Avx512
            }
            _ => return false,
        };
        self.simd = want;
        self.unfused = false;
        true
    }

    fn check(&self, p: &Params) {
        assert_eq!(p.config, self.config, "params of another config");
        assert_eq!(p.len(), self.layout.len);
    }

    /// `d(mean loss)/d(params)` into `grads` (overwritten); returns the mean cross-entropy in
    /// nats per token. `tokens` holds `batch` rows of `seq + 1` ids: inputs `[..seq]`, targets
    /// `[1..]`.
    pub fn forward_backward(&mut self, p: &Params, tokens: &[u32], grads: &mut [f32]) -> f32 {
        self.check(p);
        assert_eq!(tokens.len(), self.batch * (self.seq + 1), "tokens must be batch rows of seq + 1");
        assert_eq!(grads.len(), p.len());
        let t0 = std::time::Instant::now();
        project(&self.config, self.format, &p.data, &mut self.proj);
        self.extra[0] += t0.elapsed().as_secs_f64();
        grads.fill(0.0);
        let total = self.run_batch(tokens, Some(grads));
        (total / (self.batch * self.seq) as f64) as f32
    }

    /// Mean loss without gradients; `tokens` holds 1..=batch rows of `seq + 1`.
    pub fn loss(&mut self, p: &Params, tokens: &[u32]) -> f32 {
        self.check(p);
        let rows = tokens.len() / (self.seq + 1);
        assert!(rows >= 1 && rows <= self.batch && tokens.len() == rows * (self.seq + 1));
        project(&self.config, self.format, &p.data, &mut self.proj);
        let total = self.run_batch(tokens, None);
        (total / (rows * self.seq) as f64) as f32
    }

    /// The logits at every position of one sequence (`len <= seq`): `[len][vocab]`.
    pub fn logits(&mut self, p: &Params, tokens: &[u32]) -> Vec<f32> {
        self.check(p);
        assert!(!tokens.is_empty() && tokens.len() <= self.seq);
        project(&self.config, self.format, &p.data, &mut self.proj);
        let cx = Ctx {
            c: &self.config,
            layout: &self.layout,
            w: &self.proj,
            rope: &self.rope,
            stride: self.stride,
            simd: self.simd,
            unfused: self.unfused,
        };
        let w = &mut self.workers[0];
        w.run(&cx, tokens, None, 0.0, None);
        w.logits[..tokens.len() * self.config.vocab_size].to_vec()
    }

    /// Runs every row of `tokens` (forward, and backward when `grads` is given), split over the
    /// workers in contiguous blocks; returns the summed loss.
    fn run_batch(&mut self, tokens: &[u32], grads: Option<&mut [f32]>) -> f64 {
        let row = self.seq + 1;
        let rows = tokens.len() / row;
        let scale = 1.0 / (rows * self.seq) as f32;
        let cx = Ctx {
            c: &self.config,
            layout: &self.layout,
            w: &self.proj,
            rope: &self.rope,
            stride: self.stride,
            simd: self.simd,
            unfused: self.unfused,
        };
        let n = self.workers.len().min(rows);
        let with_grads = grads.is_some();
        let mut g0 = grads;
        let work = |w: &mut Worker, part: &[u32], g: Option<&mut [f32]>| -> f64 {
            let mut g = g;
            let mut sum = 0.0;
            for r in part.chunks_exact(row) {
                sum += w.run(&cx, &r[..row - 1], Some(&r[1..]), scale, g.as_deref_mut());
            }
            sum
        };
        let bounds: Vec<usize> = (0..=n).map(|i| i * rows / n * row).collect();
        let losses: Vec<f64> = if n == 1 {
            vec![work(&mut self.workers[0], tokens, g0.as_deref_mut())]
        } else {
            std::thread::scope(|s| {
                let mut handles = Vec::new();
                let (first, rest) = self.workers.split_at_mut(1);
                for (i, w) in rest.iter_mut().take(n - 1).enumerate() {
                    let part = &tokens[bounds[i + 1]..bounds[i + 2]];
                    let work = &work;
                    handles.push(s.spawn(move || {
                        if with_grads {
                            w.grads.fill(0.0);
                        }
                        let mut g = std::mem::take(&mut w.grads);
                        let loss = work(w, part, with_grads.then_some(&mut g[..]));
                        w.grads = g;
                        loss
                    }));
                }
                let mut out = vec![work(&mut first[0], &tokens[bounds[0]..bounds[1]], g0.as_deref_mut())];
                out.extend(handles.into_iter().map(|h| h.join().expect("worker panicked")));
                out
            })
        };
        let t0 = std::time::Instant::now();
        if let Some(g) = g0 {
            for w in &self.workers[1..n] {
                for (a, b) in g.iter_mut().zip(&w.grads) {
                    *a += b;
                }
            }
        }
        self.extra[1] += t0.elapsed().as_secs_f64();
        losses.iter().sum()
    }
}

/// Attention forward through the register-blocked kernel when the head size has one.
#[inline(always)]
fn attend<const L: usize>(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    s: &mut [f32],
    a: Attn,
) {
    #[cfg(target_arch = "x86_64")]
    if L == 16 {
        // SAFETY: L = 16 only inside `run_avx512`, chosen after detecting AVX-512F.
        unsafe {
            match (a.head_size, a.kv_mul) {
                (8, 2) => return super::x86::attention_grouped::<8, 2>(out, lse, q, kt, vt, s, a),
                (16, 2) => return super::x86::attention_grouped::<16, 2>(out, lse, q, kt, vt, s, a),
                _ => {}
            }
            match a.head_size {
                8 => return super::x86::attention::<8>(out, lse, q, kt, vt, s, a),
                16 => return super::x86::attention::<16>(out, lse, q, kt, vt, s, a),
                32 => return super::x86::attention::<32>(out, lse, q, kt, vt, s, a),
                _ => {}
            }
        }
    }
    match a.head_size {
        8 => k::attention_blocked::<8, L>(out, lse, q, kt, vt, s, a),
        16 => k::attention_blocked::<16, L>(out, lse, q, kt, vt, s, a),
        32 => k::attention_blocked::<32, L>(out, lse, q, kt, vt, s, a),
        _ => k::attention(out, lse, q, kt, vt, s, a),
    }
}

/// Attention backward, dispatched like [`attend`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_backward<const L: usize>(
    (dq, dkt, dvt): (&mut [f32], &mut [f32], &mut [f32]),
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    scratch: (&mut [f32], &mut [f32]),
    a: Attn,
) {
    #[cfg(target_arch = "x86_64")]
    if L == 16 {
        // SAFETY: as in `attend`.
        unsafe {
            match (a.head_size, a.kv_mul) {
                (8, 2) => {
                    return super::x86::attention_backward_grouped::<8, 2>(
                        dq, dkt, dvt, dout, out, lse, q, kt, vt, a,
                    )
                }
                (16, 2) => {
                    return super::x86::attention_backward_grouped::<16, 2>(
                        dq, dkt, dvt, dout, out, lse, q, kt, vt, a,
                    )
                }
                _ => {}
            }
            match a.head_size {
                8 => return super::x86::attention_backward::<8>(dq, dkt, dvt, dout, out, lse, q, kt, vt, a),
                16 => {
                    return super::x86::attention_backward::<16>(dq, dkt, dvt, dout, out, lse, q, kt, vt, a)
                }
                32 => {
                    return super::x86::attention_backward::<32>(dq, dkt, dvt, dout, out, lse, q, kt, vt, a)
                }
                _ => {}
            }
        }
    }
    match a.head_size {
        8 => k::attention_backward_blocked::<8, L>(dq, dkt, dvt, dout, out, lse, q, kt, vt, a),
        16 => k::attention_backward_blocked::<16, L>(dq, dkt, dvt, dout, out, lse, q, kt, vt, a),
        32 => k::attention_backward_blocked::<32, L>(dq, dkt, dvt, dout, out, lse, q, kt, vt, a),
        _ => k::attention_backward(dq, dkt, dvt, dout, out, lse, q, kt, vt, scratch, a),
    }
}
