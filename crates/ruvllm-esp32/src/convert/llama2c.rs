//! llama2.c checkpoints (legacy fp32 "v0", "ak42" v1 fp32 and v2 int8) and tokenizer.bin; and
//! the int8 checkpoint written back ([`to_llama2c_q8`]), for llama2.c's `runq.c`.

use alloc::vec;
use alloc::vec::Vec;

use super::{f32_bytes, mul, HostLayer, HostModel, HostVocab};
use crate::error::{Error, Result};
use crate::model::Config;
use crate::quant;

/// "ak42" read as a little-endian u32.
const AK42_MAGIC: u32 = 0x616b_3432;
const AK42_HEADER: usize = 256;

/// Sequential little-endian reader; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated { what: self.what })?;
        let b = self.buf.get(self.pos..end).ok_or(Error::Truncated { what: self.what })?;
        self.pos = end;
        Ok(b)
    }

    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let b = self.take(mul(n, 4)?)?;
        Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// One export.py Q8 tensor: `n` int8 values then `n / group` f32 scales, groups running
    /// over the flattened tensor (they may straddle rows, so dequantize flat).
    fn q8(&mut self, n: usize, group: usize) -> Result<Vec<f32>> {
        if !n.is_multiple_of(group) {
            return Err(Error::Invalid { what: "ak42 tensor is not a whole number of groups" });
        }
        let q = self.take(n)?;
        let scales = self.f32s(n / group)?;
        let q: Vec<i8> = q.iter().map(|b| *b as i8).collect();
        let mut out = vec![0f32; n];
        quant::dequantize_row(&q, &scales, &mut out, group);
        Ok(out)
    }

    /// `count` consecutive tensors of `n` elements each, in fp32 or Q8.
    fn tensors(&mut self, count: usize, n: usize, group: Option<usize>) -> Result<Vec<Vec<f32>>> {
        (0..count)
            .map(|_| match group {
                Some(g) => self.q8(n, g),
                None => self.f32s(n),
            })
            .collect()
    }
}

fn dim(v: i32) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Invalid { what: "negative llama2.c header field" })
}

/// Sizes of one model's tensors, in elements.
struct Sizes {
    embd: usize,
    attn: usize,
    kv: usize,
    ffn: usize,
}

impl Sizes {
    fn new(c: &Config) -> Result<Self> {
        Ok(Sizes {
            embd: mul(c.vocab_size, c.dim)?,
            attn: mul(c.dim, c.dim)?,
            kv: mul(c.kv_dim(), c.dim)?,
            ffn: mul(c.hidden_dim, c.dim)?,
        })
    }

    /// Bytes of one stored matrix of `n` elements: fp32, or int8 plus one f32 per group.
    fn stored(n: usize, group: Option<usize>) -> Result<usize> {
        match group {
            None => mul(n, 4),
            Some(g) => n.checked_add(mul(n / g, 4)?).ok_or(Error::Invalid { what: "size overflows" }),
        }
    }

    /// Bytes of all matrices (embedding, layers, optional classifier).
    fn matrices(&self, c: &Config, group: Option<usize>) -> Result<usize> {
        let l = c.n_layers;
        let parts = [
            (1, self.embd),
            (mul(l, 2)?, self.attn),
            (mul(l, 2)?, self.kv),
            (mul(l, 3)?, self.ffn),
            (usize::from(!c.shared_classifier), self.embd),
        ];
        parts.iter().try_fold(0usize, |acc, (count, n)| {
            acc.checked_add(mul(*count, Self::stored(*n, group)?)?)
                .ok_or(Error::Invalid { what: "size overflows" })
        })
    }
}

fn check_len(have: usize, need: usize) -> Result<()> {
    if have < need {
        Err(Error::Truncated { what: "llama2.c checkpoint" })
    } else if have > need {
        Err(Error::Invalid { what: "llama2.c checkpoint has trailing bytes (wrong header?)" })
    } else {
        Ok(())
    }
}

fn config_from(h: &[i32; 7], shared: bool) -> Result<Config> {
    let c = Config {
        dim: dim(h[0])?,
        hidden_dim: dim(h[1])?,
        n_layers: dim(h[2])?,
        n_heads: dim(h[3])?,
        n_kv_heads: dim(h[4])?,
        head_dim: 0,
        vocab_size: dim(h[5])?,
        seq_len: dim(h[6])?,
        shared_classifier: shared,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    c.validate()?;
    Ok(c)
}

/// Loads a llama2.c checkpoint: legacy fp32 (v0), or an "ak42" file of version 1 (fp32) or 2
/// (int8, dequantized by flat groups exactly as export.py quantized them).
pub fn load_llama2c(bytes: &[u8]) -> Result<HostModel> {
    let mut r = Reader { buf: bytes, pos: 0, what: "llama2.c header" };
    let mut h = [0i32; 7];
    let first = r.i32()?;
    if first as u32 == AK42_MAGIC {
        let version = r.i32()?;
        for v in h.iter_mut() {
            *v = r.i32()?;
        }
        let flags = r.take(5)?;
        let shared = match flags[0] {
            0 => false,
            1 => true,
            _ => return Err(Error::Invalid { what: "ak42 shared_classifier flag" }),
        };
        let group = match version {
            1 => None,
            2 => {
                let g = i32::from_le_bytes([flags[1], flags[2], flags[3], flags[4]]);
                Some(dim(g).ok().filter(|g| *g > 0).ok_or(Error::Invalid { what: "ak42 group size" })?)
            }
            _ => return Err(Error::Unsupported { what: "ak42 version (only 1 and 2)" }),
        };
        let c = config_from(&h, shared)?;
        let s = Sizes::new(&c)?;
        let norms = mul(mul(c.n_layers, 2)?.checked_add(1).ok_or(Error::Invalid { what: "size" })?, c.dim)?;
        let need = mul(norms, 4)?
            .checked_add(s.matrices(&c, group)?)
            .and_then(|n| n.checked_add(AK42_HEADER))
            .ok_or(Error::Invalid { what: "size overflows" })?;
        check_len(bytes.len(), need)?;
        let mut r = Reader { buf: bytes, pos: AK42_HEADER, what: "ak42 weights" };
        let l = c.n_layers;
        let attn_norm = r.tensors(l, c.dim, None)?;
        let ffn_norm = r.tensors(l, c.dim, None)?;
        let output_norm = r.f32s(c.dim)?;
        let token_embd = r.tensors(1, s.embd, group)?.pop().unwrap_or_default();
        let mats = Matrices {
            wq: r.tensors(l, s.attn, group)?,
            wk: r.tensors(l, s.kv, group)?,
            wv: r.tensors(l, s.kv, group)?,
            wo: r.tensors(l, s.attn, group)?,
            w1: r.tensors(l, s.ffn, group)?,
            w2: r.tensors(l, s.ffn, group)?,
            w3: r.tensors(l, s.ffn, group)?,
        };
        let output = if shared { None } else { r.tensors(1, s.embd, group)?.pop() };
        let m = HostModel {
            config: c,
            token_embd,
            layers: mats.into_layers(attn_norm, ffn_norm),
            output_norm,
            output,
            vocab: None,
        };
        m.validate()?;
        return Ok(m);
    }

    // Legacy v0: 7 i32, negative vocab size = separate classifier.
    h[0] = first;
    for v in h.iter_mut().skip(1) {
        *v = r.i32()?;
    }
    let shared = h[5] > 0;
    h[5] = h[5].checked_abs().ok_or(Error::Invalid { what: "vocab size" })?;
    let c = config_from(&h, shared)?;
    let s = Sizes::new(&c)?;
    let norms = mul(mul(c.n_layers, 2)?.checked_add(1).ok_or(Error::Invalid { what: "size" })?, c.dim)?;
    // Two legacy RoPE tables of seq_len * head_size / 2 floats each.
    let rope = mul(c.seq_len, c.head_size())?;
    let need = [mul(norms, 4)?, s.matrices(&c, None)?, mul(rope, 4)?, 28]
        .iter()
        .try_fold(0usize, |a, b| a.checked_add(*b))
        .ok_or(Error::Invalid { what: "size overflows" })?;
    check_len(bytes.len(), need)?;
    let mut r = Reader { buf: bytes, pos: 28, what: "llama2.c weights" };
    let l = c.n_layers;
    let token_embd = r.f32s(s.embd)?;
    let attn_norm = r.tensors(l, c.dim, None)?;
    let wq = r.tensors(l, s.attn, None)?;
    let wk = r.tensors(l, s.kv, None)?;
    let wv = r.tensors(l, s.kv, None)?;
    let wo = r.tensors(l, s.attn, None)?;
    let ffn_norm = r.tensors(l, c.dim, None)?;
    let w1 = r.tensors(l, s.ffn, None)?;
    let w2 = r.tensors(l, s.ffn, None)?;
    let w3 = r.tensors(l, s.ffn, None)?;
    let output_norm = r.f32s(c.dim)?;
    r.take(mul(rope, 4)?)?;
    let output = if shared { None } else { Some(r.f32s(s.embd)?) };
    let mats = Matrices { wq, wk, wv, wo, w1, w2, w3 };
    let m = HostModel {
        config: c,
        token_embd,
        layers: mats.into_layers(attn_norm, ffn_norm),
        output_norm,
        output,
        vocab: None,
    };
    m.validate()?;
    Ok(m)
}

/// The group of [`to_llama2c_q8`]: as llama2.c's `export.py` picks it (64, halved until it
/// divides `dim`), and also dividing the FFN width, since `runq.c` quantizes the FFN's
/// activation in the same groups and skips a last partial one. `None` when the model has no
/// llama2.c form (heads of another size than `dim / n_heads`).
pub fn llama2c_group(c: &Config) -> Option<usize> {
    if c.q_dim() != c.dim || c.dim == 0 {
        return None;
    }
    let mut g = 64;
    while !c.dim.is_multiple_of(g) || !c.hidden_dim.is_multiple_of(g) {
        g /= 2;
    }
    Some(g)
}

/// `m` as llama2.c's int8 checkpoint ("ak42" version 2, what `export.py --version 2` writes
/// and `runq.c` reads): a 256-byte header, the fp32 norms, then the token embedding and every
/// matrix (all `wq`, then all `wk`, ...; the classifier last when not shared) as int8 values
/// followed by one f32 scale per group of [`llama2c_group`] values, quantized by
/// [`quant::quantize_row`] (`max|x| / 127`, rounded half away from zero, as `export.py`).
pub fn to_llama2c_q8(m: &HostModel) -> Result<Vec<u8>> {
    let c = &m.config;
    let group = llama2c_group(c).ok_or(Error::Unsupported {
        what: "llama2.c checkpoints hold heads of dim / n_heads values only (heads were removed)",
    })?;
    let mut out = Vec::new();
    out.extend_from_slice(&AK42_MAGIC.to_le_bytes());
    out.extend_from_slice(&2i32.to_le_bytes());
    for v in [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len, group] {
        let v = i32::try_from(v)
            .map_err(|_| Error::Invalid { what: "model size beyond llama2.c's i32 header" })?;
        out.extend_from_slice(&v.to_le_bytes());
        if out.len() == 36 {
            // After the seven sizes: the shared-classifier flag, then the group size.
            out.push(u8::from(m.output.is_none()));
        }
    }
    out.resize(AK42_HEADER, 0);
    m.layers.iter().for_each(|l| out.extend(f32_bytes(&l.attn_norm)));
    m.layers.iter().for_each(|l| out.extend(f32_bytes(&l.ffn_norm)));
    out.extend(f32_bytes(&m.output_norm));
    let mut q8 = |v: &[f32]| {
        let (mut q, mut scales) = (vec![0i8; v.len()], vec![0f32; quant::groups(v.len(), group)]);
        quant::quantize_row(v, &mut q, &mut scales, group);
        out.extend(q.iter().map(|&b| b as u8));
        out.extend(f32_bytes(&scales));
    };
    q8(&m.token_embd);
    let picks: [fn(&HostLayer) -> &Vec<f32>; 7] =
        [|l| &l.wq, |l| &l.wk, |l| &l.wv, |l| &l.wo, |l| &l.w1, |l| &l.w2, |l| &l.w3];
    for pick in picks {
        m.layers.iter().for_each(|l| q8(pick(l)));
    }
    if let Some(o) = &m.output {
        q8(o);
    }
    Ok(out)
}

/// Per-layer matrices as read in llama2.c's "all wq, then all wk, ..." order.
struct Matrices {
    wq: Vec<Vec<f32>>,
    wk: Vec<Vec<f32>>,
    wv: Vec<Vec<f32>>,
    wo: Vec<Vec<f32>>,
    w1: Vec<Vec<f32>>,
    w2: Vec<Vec<f32>>,
    w3: Vec<Vec<f32>>,
}

impl Matrices {
    fn into_layers(self, attn_norm: Vec<Vec<f32>>, ffn_norm: Vec<Vec<f32>>) -> Vec<HostLayer> {
        let Matrices { wq, wk, wv, wo, w1, w2, w3 } = self;
        let mut it = (
            attn_norm.into_iter(),
            wq.into_iter(),
            wk.into_iter(),
            wv.into_iter(),
            wo.into_iter(),
            ffn_norm.into_iter(),
            w1.into_iter(),
            w2.into_iter(),
            w3.into_iter(),
        );
        core::iter::from_fn(|| {
            Some(HostLayer {
                attn_norm: it.0.next()?,
                wq: it.1.next()?,
                wk: it.2.next()?,
                wv: it.3.next()?,
                wo: it.4.next()?,
                ffn_norm: it.5.next()?,
                w1: it.6.next()?,
                w2: it.7.next()?,
                w3: it.8.next()?,
            })
        })
        .collect()
    }
}

/// llama2.c tokenizer.bin: i32 max_token_length, then per token f32 score, i32 length and the
/// piece bytes. BOS is 1 and EOS is 2 as in llama2.c; their pieces `"\n<s>\n"`/`"\n</s>\n"`
/// get SentencePiece's names `<s>`/`</s>` (what llama.cpp expects of a "llama" tokenizer).
pub fn load_tokenizer_bin(bytes: &[u8], vocab_size: usize) -> Result<HostVocab> {
    let mut r = Reader { buf: bytes, pos: 0, what: "tokenizer.bin" };
    let max_len =
        u32::try_from(r.i32()?).map_err(|_| Error::Invalid { what: "tokenizer max_token_length" })?;
    // Each token takes at least 8 bytes: refuse sizes the input cannot hold before allocating.
    if !(3..=crate::model::config::MAX_VOCAB).contains(&vocab_size) || vocab_size > bytes.len() / 8 {
        return Err(Error::Invalid { what: "tokenizer vocab size does not fit the file" });
    }
    let mut pieces = Vec::with_capacity(vocab_size);
    let mut scores = Vec::with_capacity(vocab_size);
    let mut longest = 0u32;
    for i in 0..vocab_size {
        if r.pos == bytes.len() {
            return Err(Error::VocabMismatch { tokenizer: i, model: vocab_size });
        }
        let score = f32::from_le_bytes(
            r.take(4)?.try_into().map_err(|_| Error::Truncated { what: "tokenizer.bin" })?,
        );
        if !score.is_finite() {
            return Err(Error::Invalid { what: "tokenizer score is not finite (NaN or infinite)" });
        }
        let len = u32::try_from(r.i32()?).map_err(|_| Error::Invalid { what: "negative token length" })?;
        let piece = r.take(len as usize)?;
        longest = longest.max(len);
        pieces.push(match (i, piece) {
            (1, b"\n<s>\n") => b"<s>".to_vec(),
            (2, b"\n</s>\n") => b"</s>".to_vec(),
            _ => piece.to_vec(),
        });
        scores.push(score);
    }
    if r.pos < bytes.len() {
        // The file has no count of its own: more entries mean a tokenizer of a larger
        // vocabulary, which would be silently cut to the model's. Count them to say so.
        let mut tokenizer = vocab_size;
        while r.pos < bytes.len() {
            r.take(4)?;
            let len =
                u32::try_from(r.i32()?).map_err(|_| Error::Invalid { what: "negative token length" })?;
            r.take(len as usize)?;
            tokenizer += 1;
        }
        return Err(Error::VocabMismatch { tokenizer, model: vocab_size });
    }
    Ok(HostVocab { pieces, scores, max_token_length: max_len.max(longest), bos: 1, eos: 2 })
}
