//! Compute kernels. `reference` is the scalar definition of each operation; fast paths (x86
//! AVX2 on the host) are selected once at run time and tested against it.

pub mod reference;
#[cfg(all(target_arch = "x86_64", feature = "std"))]
pub mod x86;

/// The host's repacked int8 matrices ([`x86::PackedModel`]); elsewhere a type with no value,
/// so a state never holds one.
#[cfg(all(target_arch = "x86_64", feature = "std"))]
pub use x86::{PackedModel, PackedQ8};
#[cfg(not(all(target_arch = "x86_64", feature = "std")))]
pub enum PackedModel {}
#[cfg(not(all(target_arch = "x86_64", feature = "std")))]
pub enum PackedQ8 {}

/// Shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub head_size: usize,
    /// Width of one position's keys (n_kv_heads * head_size).
    pub kv_dim: usize,
    /// Query heads per key/value head.
    pub kv_mul: usize,
}

pub type MatvecF32 = fn(&mut [f32], &[f32], &[f32]);
pub type MatvecQ8 = fn(&mut [f32], &[i8], &[f32], &[i8], &[f32], usize);
/// out, Q8_0 rows (blocks of an f16 scale and 32 int8), activation and its scales in groups of 32.
pub type MatvecQ8Block = fn(&mut [f32], &[u8], &[i8], &[f32]);
/// out, packed rows, row scales, activation, activation scales, group: ternary or binary.
pub type MatvecPacked = fn(&mut [f32], &[u8], &[f32], &[i8], &[f32], usize);
pub type AttentionF32 = fn(&mut [f32], &[f32], &[f32], &[f32], &mut [f32], AttnShape);
pub type Swiglu = fn(&mut [f32], &[f32]);
/// x, q, scales, group: as [`crate::quant::quantize_row`], bit for bit.
pub type Quantize = fn(&[f32], &mut [i8], &mut [f32], usize);
/// out, query, cache, scratch, shape, group.
pub type AttentionQ8 = fn(&mut [f32], QueryQ8<'_>, CacheQ8<'_>, &mut [f32], AttnShape, usize);

/// The query of the INT8 path: quantized with the cache's group size (`qq`, `qs`), and the
/// same values dequantized (`q`) for kernels that multiply in f32.
#[derive(Debug, Clone, Copy)]
pub struct QueryQ8<'a> {
    pub q: &'a [f32],
    pub qq: &'a [i8],
    pub qs: &'a [f32],
}

/// One layer's int8 KV cache up to the current position: `[positions][kv_dim]` values with
/// `groups(kv_dim)` scales per position.
#[derive(Debug, Clone, Copy)]
pub struct CacheQ8<'a> {
    pub keys: &'a [i8],
    pub key_scales: &'a [f32],
    pub values: &'a [i8],
    pub value_scales: &'a [f32],
}

/// The kernels one forward pass uses; the rest are always the reference ones because they
/// are a negligible share of the time.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub name: &'static str,
    pub matvec_f32: MatvecF32,
    pub matvec_q8: MatvecQ8,
    pub matvec_q8_block: MatvecQ8Block,
    pub matvec_ternary: MatvecPacked,
    pub matvec_binary: MatvecPacked,
    pub attention_f32: AttentionF32,
    pub swiglu: Swiglu,
    pub attention_q8: AttentionQ8,
    pub quantize: Quantize,
}

impl Kernels {
    pub const REFERENCE: Kernels = Kernels {
        name: "scalar",
        matvec_f32: reference::matvec_f32,
        matvec_q8: reference::matvec_q8,
        matvec_q8_block: reference::matvec_q8_block,
        matvec_ternary: reference::matvec_ternary,
        matvec_binary: reference::matvec_binary,
        attention_f32: reference::attention_f32,
        swiglu: reference::swiglu,
        attention_q8: reference::attention_q8,
        quantize: crate::quant::quantize_row,
    };

    /// The fastest kernels this CPU supports.
    pub fn detect() -> Kernels {
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        if let Some(k) = x86::detect() {
            return k;
        }
        Self::REFERENCE
    }
}

impl core::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name)
    }
}
