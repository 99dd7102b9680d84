//! Where the integer forward pass spends its instructions, kernel by kernel: what
//! `bench --chip esp32c3 --kernels` prints. Only the `kernel-profile` feature compiles the
//! reads; without it `time` is the bare call, so the shipped build is not the measured one
//! (the reads around each kernel add a few instructions to it).
//!
//! On a RISC-V chip the clock is the `instret` counter: under QEMU with `-icount shift=0` its
//! counts are exact. Elsewhere the profile reads zero.

/// The kernels, in the order [`take`] reports them.
#[derive(Clone, Copy)]
pub enum Kernel {
    Embed,
    Rmsnorm,
    Quantize,
    Matvec,
    Rope,
    AttentionScores,
    Softmax,
    AttentionValues,
    Swiglu,
    Residual,
    Classifier,
}

/// The names of [`Kernel`]'s variants, as printed.
pub const NAMES: [&str; 11] = [
    "embedding",
    "rmsnorm",
    "quantize",
    "matvec",
    "rope",
    "attention scores",
    "softmax",
    "attention values",
    "swiglu",
    "residual",
    "classifier",
];

#[cfg(feature = "kernel-profile")]
mod on {
    use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

    // Load and store only (rv32imc has no atomic read-modify-write); one core runs the pass.
    #[allow(clippy::declare_interior_mutable_const)]
    const ZERO: AtomicU32 = AtomicU32::new(0);
    pub static SPENT: [AtomicU32; super::NAMES.len()] = [ZERO; super::NAMES.len()];

    #[inline(always)]
    pub fn clock() -> u32 {
        #[cfg(target_arch = "riscv32")]
        {
            let v: u32;
            // SAFETY: reads a counter CSR; no memory is touched.
            unsafe { core::arch::asm!("csrr {0}, instret", out(reg) v) };
            v
        }
        #[cfg(not(target_arch = "riscv32"))]
        0
    }

    pub fn add(k: usize, n: u32) {
        SPENT[k].store(SPENT[k].load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// Runs `f`, adding its instructions to `k`'s total when profiling.
#[inline(always)]
pub(super) fn time<R>(k: Kernel, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "kernel-profile")]
    {
        let t = on::clock();
        let r = f();
        on::add(k as usize, on::clock().wrapping_sub(t));
        r
    }
    #[cfg(not(feature = "kernel-profile"))]
    {
        let _ = k;
        f()
    }
}

/// Each kernel's total since the last call (zero without the feature), and resets them.
pub fn take() -> [u32; NAMES.len()] {
    #[allow(unused_mut)]
    let mut out = [0u32; NAMES.len()];
    #[cfg(feature = "kernel-profile")]
    for (o, s) in out.iter_mut().zip(on::SPENT.iter()) {
        *o = s.load(core::sync::atomic::Ordering::Relaxed);
        s.store(0, core::sync::atomic::Ordering::Relaxed);
    }
    out
}

/// Whether this build measures kernels.
pub const ENABLED: bool = cfg!(feature = "kernel-profile");
