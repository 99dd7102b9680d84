//! Any llama-architecture GGUF (F32 / F16 / Q8_0 tensors, or this engine's I8 + `.scale`
//! pairs and packed ternary/binary matrices) into f32 host tensors.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::{mul, HostLayer, HostModel, HostVocab};
use crate::error::{Error, Result};
use crate::gguf::{f16_to_f32, GgmlType, Gguf, Value, Q8_0_BLOCK, Q8_0_BYTES};
use crate::model::Config;
use crate::{packed, quant};

/// Optional u32 key: absent is fine, present but wrong is an error.
fn opt_u32(g: &Gguf, key: &'static str) -> Result<Option<u32>> {
    match g.get_u32(key) {
        Ok(v) => Ok(Some(v)),
        Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn opt_f32(g: &Gguf, key: &'static str) -> Result<Option<f32>> {
    match g.get_f32(key) {
        Ok(v) => Ok(Some(v)),
        Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn req(g: &Gguf, key: &'static str) -> Result<usize> {
    g.get_u32(key).map(|v| v as usize)
}

fn f32_le(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Reads tensor `name` as a `rows x cols` f32 matrix (a vector when `rows` is 1).
fn tensor(g: &Gguf, name: &str, rows: usize, cols: usize, group: usize) -> Result<Vec<f32>> {
    if g.tensor(name).is_none() {
        if let Some(m) = packed_tensor(g, name, rows, cols)? {
            return Ok(m);
        }
        if let Some(m) = sparse_tensor(g, name, rows, cols, group)? {
            return Ok(m);
        }
    }
    let t = g.tensor(name).ok_or(Error::Missing { what: "model tensor (see llama.cpp names)" })?;
    let n = mul(rows, cols)?;
    let shape_ok = t.dims[0] == cols as u64 && t.n_elements() == n as u64;
    if !shape_ok {
        return Err(Error::Invalid { what: "tensor shape does not match the model config" });
    }
    // The GGUF parser guaranteed `data` holds exactly n elements of `ty`.
    let out = match t.ty {
        GgmlType::F32 => f32_le(t.data).collect(),
        GgmlType::F16 => {
            t.data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
        }
        GgmlType::Q8_0 if !(cols as u64).is_multiple_of(Q8_0_BLOCK) => {
            return Err(Error::Unsupported {
                what: "Q8_0 tensor whose rows are not whole blocks of 32 (the engine reads F32, F16, Q8_0 with rows of 32k, and its own int8)",
            });
        }
        GgmlType::Q8_0 => {
            let mut out = Vec::with_capacity(n);
            for b in t.data.chunks_exact(Q8_0_BYTES as usize) {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                out.extend(b[2..].iter().map(|q| *q as i8 as f32 * d));
            }
            out
        }
        GgmlType::I8 => {
            // This engine's layout: per-row groups with scales in `<name>.scale`.
            let gpr = quant::groups(cols, group);
            let sname = format!("{name}.scale");
            let st = g.tensor(&sname).ok_or(Error::Missing { what: "I8 tensor scales (<name>.scale)" })?;
            if st.ty != GgmlType::F32 || st.dims[0] != gpr as u64 || st.n_elements() != mul(rows, gpr)? as u64
            {
                return Err(Error::Invalid { what: "I8 scale tensor shape" });
            }
            let scales: Vec<f32> = f32_le(st.data).collect();
            let q = crate::gguf::as_i8(t.data);
            let mut out = vec![0f32; n];
            for ((q, s), o) in
                q.chunks_exact(cols).zip(scales.chunks_exact(gpr)).zip(out.chunks_exact_mut(cols))
            {
                quant::dequantize_row(q, s, o, group);
            }
            out
        }
        GgmlType::I32 | GgmlType::Other(_) => {
            return Err(Error::Unsupported { what: "tensor type (only F32, F16, Q8_0, I8)" })
        }
    };
    Ok(out)
}

/// This engine's packed ternary (`<name>.tern`) or binary (`<name>.bin`) matrix with its
/// per-row `<name>.scale`, dequantized (`code * scale`); `None` when neither exists.
fn packed_tensor(g: &Gguf, name: &str, rows: usize, cols: usize) -> Result<Option<Vec<f32>>> {
    for (suffix, ternary) in [("tern", true), ("bin", false)] {
        let Some(t) = g.tensor(&format!("{name}.{suffix}")) else { continue };
        let stride = if ternary { packed::ternary_row_bytes(cols) } else { packed::binary_row_bytes(cols) };
        if t.ty != GgmlType::I8 || t.dims[0] != stride as u64 || t.n_elements() != mul(rows, stride)? as u64 {
            return Err(Error::Invalid { what: "packed ternary/binary tensor shape" });
        }
        let st = g.tensor(&format!("{name}.scale")).ok_or(Error::Missing { what: "packed tensor scales" })?;
        if st.ty != GgmlType::F32 || st.dims[0] != 1 || st.n_elements() != rows as u64 {
            return Err(Error::Invalid { what: "packed scale tensor shape" });
        }
        if ternary {
            packed::validate_ternary(t.data, rows, cols)?;
        } else {
            packed::validate_binary(t.data, rows, cols)?;
        }
        let mut out = vec![0f32; mul(rows, cols)?];
        for ((row, s), o) in
            t.data.chunks_exact(stride.max(1)).zip(f32_le(st.data)).zip(out.chunks_exact_mut(cols.max(1)))
        {
            for (j, o) in o.iter_mut().enumerate() {
                let code = if ternary { packed::ternary_at(row, j) } else { packed::binary_at(row, j) };
                *o = code as f32 * s;
            }
        }
        return Ok(Some(out));
    }
    Ok(None)
}

/// This engine's sparse rows (`<name>.sparse` with the dense `<name>.scale`), dequantized as
/// the dense codes would be; `None` when there are none.
fn sparse_tensor(g: &Gguf, name: &str, rows: usize, cols: usize, group: usize) -> Result<Option<Vec<f32>>> {
    let Some(t) = g.tensor(&format!("{name}{}", crate::model::weights::SPARSE_SUFFIX)) else {
        return Ok(None);
    };
    if t.ty != GgmlType::I8 || t.n_dims != 1 {
        return Err(Error::Invalid { what: "sparse rows that are not one dimension of I8 bytes" });
    }
    let m = crate::infer::integer::sparse::SparseRows::new(t.data, rows, cols, group)?;
    let gpr = quant::groups(cols, group);
    let st = g.tensor(&format!("{name}.scale")).ok_or(Error::Missing { what: "sparse-row scales" })?;
    if st.ty != GgmlType::F32 || st.dims[0] != gpr as u64 || st.n_elements() != mul(rows, gpr)? as u64 {
        return Err(Error::Invalid { what: "sparse-row scale tensor shape" });
    }
    let scales: Vec<f32> = f32_le(st.data).collect();
    let (mut out, mut codes) = (vec![0f32; mul(rows, cols)?], vec![0i8; cols]);
    for (r, (s, o)) in scales.chunks_exact(gpr).zip(out.chunks_exact_mut(cols.max(1))).enumerate() {
        m.row_codes(r, &mut codes);
        quant::dequantize_row(&codes, s, o, group);
    }
    Ok(Some(out))
}

/// Loads a llama-architecture GGUF, dequantizing every tensor to f32, with its tokenizer when
/// the file carries a SentencePiece (`tokenizer.ggml.model` = "llama") vocabulary.
pub fn load_gguf(bytes: &[u8]) -> Result<HostModel> {
    let g = Gguf::parse(bytes)?;
    match g.get("general.architecture") {
        None | Some(Value::Str("llama")) => {}
        Some(_) => return Err(Error::Unsupported { what: "GGUF architecture other than llama" }),
    }
    let dim = req(&g, "llama.embedding_length")?;
    let n_heads = req(&g, "llama.attention.head_count")?;
    let embd = g.tensor("token_embd.weight").ok_or(Error::Missing { what: "token_embd.weight" })?;
    let vocab_size = match opt_u32(&g, "llama.vocab_size")? {
        Some(v) => v as usize,
        None => usize::try_from(embd.dims[1]).map_err(|_| Error::Invalid { what: "vocab size" })?,
    };
    let config = Config {
        dim,
        hidden_dim: req(&g, "llama.feed_forward_length")?,
        n_layers: req(&g, "llama.block_count")?,
        n_heads,
        n_kv_heads: opt_u32(&g, "llama.attention.head_count_kv")?.map_or(n_heads, |v| v as usize),
        head_dim: crate::model::config::head_dim_from(
            opt_u32(&g, crate::model::config::KEY_LENGTH)?,
            opt_u32(&g, crate::model::config::VALUE_LENGTH)?,
            dim,
            n_heads,
        )?,
        vocab_size,
        seq_len: req(&g, "llama.context_length")?,
        shared_classifier: g.tensor("output.weight").is_none(),
        norm_eps: opt_f32(&g, "llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        rope_theta: opt_f32(&g, "llama.rope.freq_base")?.unwrap_or(10000.0),
    };
    config.validate()?;
    if let Some(rd) = opt_u32(&g, "llama.rope.dimension_count")? {
        if rd as usize != config.head_size() {
            return Err(Error::Unsupported { what: "partial RoPE (rope.dimension_count != head size)" });
        }
    }
    // Every stored element takes at least one byte, so a model larger than the file can only
    // come from tensors that overlap: refuse before dequantizing them into RAM.
    // (Packed ternary/binary layers take a quarter or an eighth of a byte per weight.)
    // (Sparse rows take from 1/32 of a byte per weight, at 100% zeros.)
    let per_byte = match g.get("ruvllm.quant") {
        _ if g.get(super::SPARSE_KEY).is_some() => 32,
        Some(Value::Str("ternary" | "binary")) => 8,
        _ => 1,
    };
    if super::checked_params(&config)? / per_byte > bytes.len() {
        return Err(Error::Invalid { what: "model is larger than the file (overlapping tensors?)" });
    }
    let group = opt_u32(&g, "ruvllm.quant.group_size")?.map_or(quant::GROUP, |v| v as usize);
    if group == 0 {
        return Err(Error::Invalid { what: "ruvllm.quant.group_size" });
    }

    let (d, h, kv, v) = (dim, config.hidden_dim, config.kv_dim(), vocab_size);
    let mat = |name: &str, rows: usize, cols: usize| tensor(&g, name, rows, cols, group);
    let token_embd = mat("token_embd.weight", v, d)?;
    let mut layers = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        let name = |s: &str| format!("blk.{i}.{s}.weight");
        layers.push(HostLayer {
            attn_norm: mat(&name("attn_norm"), 1, d)?,
            wq: mat(&name("attn_q"), config.q_dim(), d)?,
            wk: mat(&name("attn_k"), kv, d)?,
            wv: mat(&name("attn_v"), kv, d)?,
            wo: mat(&name("attn_output"), d, config.q_dim())?,
            ffn_norm: mat(&name("ffn_norm"), 1, d)?,
            w1: mat(&name("ffn_gate"), h, d)?,
            w2: mat(&name("ffn_down"), d, h)?,
            w3: mat(&name("ffn_up"), h, d)?,
        });
    }
    let output_norm = mat("output_norm.weight", 1, d)?;
    let output = if config.shared_classifier { None } else { Some(mat("output.weight", v, d)?) };
    let vocab = load_vocab(&g, v)?;
    let m = HostModel { config, token_embd, layers, output_norm, output, vocab };
    m.validate()?;
    Ok(m)
}

/// SentencePiece vocabulary from `tokenizer.ggml.*`; `None` when absent or of another model
/// family (e.g. GPT-2 BPE), which this engine's tokenizer does not implement.
fn load_vocab(g: &Gguf, vocab_size: usize) -> Result<Option<HostVocab>> {
    match g.get("tokenizer.ggml.model") {
        Some(Value::Str("llama")) => {}
        _ => return Ok(None),
    }
    let tokens = g.get_array("tokenizer.ggml.tokens")?;
    if tokens.len != vocab_size {
        return Err(Error::Invalid { what: "tokenizer.ggml.tokens length != vocab size" });
    }
    // GGUF files mark spaces with U+2581 as SentencePiece does; older images of this engine
    // used plain spaces like llama2.c's tokenizer (which has a " " piece).
    let plain = tokens.str_iter().any(|p| p == b" ");
    let pieces: Vec<Vec<u8>> =
        tokens.str_iter().map(|p| if plain { p.to_vec() } else { super::plain_piece(p) }).collect();
    if pieces.len() != vocab_size {
        return Err(Error::Invalid { what: "tokenizer.ggml.tokens" });
    }
    let scores = match g.get_array("tokenizer.ggml.scores") {
        Ok(a) if a.len == vocab_size => (0..vocab_size).map(|i| a.f32_at(i)).collect::<Option<Vec<f32>>>(),
        Ok(_) => None,
        Err(Error::Missing { .. }) => Some(vec![0.0; vocab_size]),
        Err(e) => return Err(e),
    }
    .ok_or(Error::Invalid { what: "tokenizer.ggml.scores" })?;
    let bos = opt_u32(g, "tokenizer.ggml.bos_token_id")?.unwrap_or(1);
    let eos = opt_u32(g, "tokenizer.ggml.eos_token_id")?.unwrap_or(2);
    if bos as usize >= vocab_size || eos as usize >= vocab_size {
        return Err(Error::Invalid { what: "BOS/EOS id outside the vocabulary" });
    }
    let longest = pieces.iter().map(|p| p.len()).max().unwrap_or(0);
    let longest = u32::try_from(longest).map_err(|_| Error::Invalid { what: "token too long" })?;
    let max_token_length = opt_u32(g, "ruvllm.tokenizer.max_token_length")?.unwrap_or(0).max(longest);
    Ok(Some(HostVocab { pieces, scores, max_token_length, bos, eos }))
}
