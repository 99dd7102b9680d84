//! Conversion tests on the real stories260K checkpoint and its tokenizer.
#![cfg(feature = "alloc")]

mod common;

use ruvllm_esp32::convert::{load_gguf, load_llama2c, load_tokenizer_bin, HostModel, Quant};
use ruvllm_esp32::gguf::{GgmlType, Gguf, ValueType};
use ruvllm_esp32::quant;
use ruvllm_esp32::Error;

fn stories() -> Option<HostModel> {
    let model = common::read_shared("models/stories260K.bin")?;
    let tok = common::read_shared("models/tok512.bin")?;
    let mut m = load_llama2c(&model).expect("stories260K.bin loads");
    m.vocab = Some(load_tokenizer_bin(&tok, m.config.vocab_size).expect("tok512.bin loads"));
    Some(m)
}

#[test]
fn stories260k_header_and_tokenizer() {
    let Some(m) = stories() else { return };
    let c = m.config;
    assert_eq!(
        (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len),
        (64, 172, 5, 8, 4, 512, 512)
    );
    assert!(c.shared_classifier && m.output.is_none());
    assert_eq!(c.n_params(), 260_032);
    assert!(m.token_embd.iter().chain(&m.layers[4].w2).all(|x| x.is_finite()));
    let v = m.vocab.as_ref().unwrap();
    assert_eq!((v.bos, v.eos, v.pieces.len()), (1, 2, 512));
    assert_eq!(v.pieces[0], b"<unk>");
    assert_eq!(v.pieces[3], b"<0x00>");
    assert_eq!(v.pieces[258], b"<0xFF>");
    assert!(v.max_token_length as usize >= v.pieces.iter().map(|p| p.len()).max().unwrap());
}

#[test]
fn stories260k_f32_gguf_round_trip_is_bit_exact() {
    let Some(m) = stories() else { return };
    let bytes = m.to_gguf(Quant::F32).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.verify_checksum(), Ok(true));
    assert_eq!(g.get_str("general.architecture"), Ok("llama"));
    assert_eq!(g.get_u32("llama.rope.dimension_count"), Ok(8));
    assert_eq!(g.get_u32("llama.attention.head_count_kv"), Ok(4));
    let t = g.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!((t.ty, t.n_dims, t.dims), (GgmlType::F32, 2, [172, 64, 1, 1]));
    assert_eq!(g.tensor("token_embd.weight").unwrap().dims, [64, 512, 1, 1]);
    assert!(g.tensor("output.weight").is_none());
    // Exactly llama's tensors (llama.cpp refuses others): embedding, 5 layers of 9, output
    // norm. The integer path's RoPE table is metadata: 512 positions x 4 (cos, sin) pairs.
    assert_eq!(g.n_tensors(), 1 + 5 * 9 + 1);
    let rope = g.get_array("ruvllm.rope").unwrap();
    assert_eq!((rope.elem, rope.len), (ValueType::I32, 512 * 8));

    let back = load_gguf(&bytes).unwrap();
    // Bitwise comparison (== on f32 would also accept -0.0 vs 0.0).
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back.token_embd), bits(&m.token_embd));
    for (a, b) in back.layers.iter().zip(&m.layers) {
        for (x, y) in [(&a.wq, &b.wq), (&a.wk, &b.wk), (&a.w2, &b.w2), (&a.attn_norm, &b.attn_norm)] {
            assert_eq!(bits(x), bits(y));
        }
    }
    assert_eq!(back, m);

    let mut corrupt = bytes.clone();
    let at = g.data_offset() + 1000;
    corrupt[at] ^= 0x10;
    let g = Gguf::parse(&corrupt).unwrap();
    assert!(matches!(g.verify_checksum(), Err(Error::Checksum { .. })));
}

/// Max |a - b| allowed by symmetric int8 with `group`-sized groups of `orig` laid out by
/// `rows` of `cols` (flat groups when cols is the whole tensor).
fn assert_within_group_error(orig: &[f32], got: &[f32], cols: usize, group: usize) {
    assert_eq!(orig.len(), got.len());
    for (ro, rg) in orig.chunks(cols).zip(got.chunks(cols)) {
        for (go, gg) in ro.chunks(group).zip(rg.chunks(group)) {
            let amax = go.iter().fold(0f32, |m, x| m.max(x.abs()));
            let tol = amax / 127.0 * 0.5 * 1.0001 + 1e-7;
            for (x, y) in go.iter().zip(gg) {
                assert!((x - y).abs() <= tol, "{x} vs {y} (tol {tol})");
            }
        }
    }
}

#[test]
fn stories260k_q8_gguf_is_within_quantization_error() {
    let Some(m) = stories() else { return };
    let bytes = m.to_gguf(Quant::Q8).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.verify_checksum(), Ok(true));
    assert_eq!(g.get_str("ruvllm.quant"), Ok("q8"));
    assert_eq!(g.get_u32("ruvllm.quant.group_size"), Ok(quant::GROUP as u32));
    let t = g.tensor("blk.2.ffn_down.weight").unwrap();
    assert_eq!((t.ty, t.dims), (GgmlType::I8, [172, 64, 1, 1]));
    let s = g.tensor("blk.2.ffn_down.weight.scale").unwrap();
    assert_eq!((s.ty, s.dims), (GgmlType::F32, [6, 64, 1, 1]));
    assert_eq!(g.tensor("token_embd.weight.scale").unwrap().dims, [2, 512, 1, 1]);
    assert!(bytes.len() < 450_000, "q8 file is {} bytes", bytes.len());

    let back = load_gguf(&bytes).unwrap();
    assert_eq!(back.config, m.config);
    assert_eq!(back.vocab, m.vocab);
    assert_eq!(back.output_norm, m.output_norm);
    let (d, h) = (m.config.dim, m.config.hidden_dim);
    assert_within_group_error(&m.token_embd, &back.token_embd, d, quant::GROUP);
    for (a, b) in m.layers.iter().zip(&back.layers) {
        assert_eq!(a.attn_norm, b.attn_norm);
        assert_eq!(a.ffn_norm, b.ffn_norm);
        for (x, y) in
            [(&a.wq, &b.wq), (&a.wk, &b.wk), (&a.wv, &b.wv), (&a.wo, &b.wo), (&a.w1, &b.w1), (&a.w3, &b.w3)]
        {
            assert_within_group_error(x, y, d, quant::GROUP);
        }
        assert_within_group_error(&a.w2, &b.w2, h, quant::GROUP);
    }
}

/// Writes an "ak42" checkpoint like llama2.c's export.py: version 2 quantizes every tensor in
/// flat groups of `group` (crossing rows), int8 data followed by its scales; version 1 is fp32.
fn write_ak42(m: &HostModel, version: i32, group: usize) -> Vec<u8> {
    let c = m.config;
    let mut out = Vec::new();
    out.extend_from_slice(&0x616b_3432u32.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    for v in [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    out.push(c.shared_classifier as u8);
    if version == 2 {
        out.extend_from_slice(&(group as i32).to_le_bytes());
    }
    out.resize(256, 0);
    let f32s = |out: &mut Vec<u8>, v: &[f32]| v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    for l in &m.layers {
        f32s(&mut out, &l.attn_norm);
    }
    for l in &m.layers {
        f32s(&mut out, &l.ffn_norm);
    }
    f32s(&mut out, &m.output_norm);
    let mut mats: Vec<&[f32]> = vec![&m.token_embd];
    type Pick = fn(&ruvllm_esp32::convert::HostLayer) -> &[f32];
    let picks: [Pick; 7] = [|l| &l.wq, |l| &l.wk, |l| &l.wv, |l| &l.wo, |l| &l.w1, |l| &l.w2, |l| &l.w3];
    for p in picks {
        mats.extend(m.layers.iter().map(p));
    }
    if let Some(o) = &m.output {
        mats.push(o);
    }
    for w in mats {
        if version == 1 {
            f32s(&mut out, w);
            continue;
        }
        assert_eq!(w.len() % group, 0);
        let mut q = vec![0i8; w.len()];
        let mut s = vec![0f32; w.len() / group];
        quant::quantize_row(w, &mut q, &mut s, group);
        out.extend(q.iter().map(|v| *v as u8));
        f32s(&mut out, &s);
    }
    out
}

#[test]
fn ak42_v2_int8_dequantizes_by_flat_groups() {
    let Some(m) = stories() else { return };
    // export.py picks the largest power of two <= 64 dividing dim: 64 here, so w1/w2/w3 groups
    // (172 columns) straddle rows.
    let bytes = write_ak42(&m, 2, 64);
    let got = load_llama2c(&bytes).unwrap();
    assert_eq!(got.config, m.config);
    assert_eq!(got.output_norm, m.output_norm);
    assert_within_group_error(&m.token_embd, &got.token_embd, m.token_embd.len(), 64);
    for (a, b) in m.layers.iter().zip(&got.layers) {
        assert_eq!(a.attn_norm, b.attn_norm);
        for (x, y) in [
            (&a.wq, &b.wq),
            (&a.wk, &b.wk),
            (&a.wv, &b.wv),
            (&a.wo, &b.wo),
            (&a.w1, &b.w1),
            (&a.w2, &b.w2),
            (&a.w3, &b.w3),
        ] {
            assert_within_group_error(x, y, x.len(), 64);
        }
    }
    // Truncation and bad group sizes (zero, not dividing the tensors) are errors.
    let mut bad = bytes.clone();
    bad.truncate(bytes.len() - 1);
    assert!(matches!(load_llama2c(&bad), Err(Error::Truncated { .. })));
    let mut bad = bytes.clone();
    bad[37..41].copy_from_slice(&0i32.to_le_bytes());
    assert!(load_llama2c(&bad).is_err());
    bad[37..41].copy_from_slice(&7i32.to_le_bytes());
    assert!(load_llama2c(&bad).is_err());
}

#[test]
fn ak42_v1_fp32_is_bit_exact() {
    let Some(m) = stories() else { return };
    let got = load_llama2c(&write_ak42(&m, 1, 0)).unwrap();
    assert_eq!(HostModel { vocab: m.vocab.clone(), ..got }, m);
}

#[test]
fn llama2c_rejects_absurd_headers() {
    let Some(model) = common::read_shared("models/stories260K.bin") else {
        return;
    };
    for (field, value) in [(0, i32::MAX), (1, -5), (2, 100_000), (5, i32::MIN), (6, 0), (4, 3)] {
        let mut b = model.clone();
        b[field * 4..field * 4 + 4].copy_from_slice(&value.to_le_bytes());
        assert!(load_llama2c(&b).is_err(), "field {field} = {value}");
    }
    let mut b = model.clone();
    b.push(0);
    assert!(matches!(load_llama2c(&b), Err(Error::Invalid { .. })));
    assert!(matches!(load_llama2c(&model[..model.len() - 4]), Err(Error::Truncated { .. })));
    assert!(load_tokenizer_bin(b"\x10\0\0\0", 512).is_err());
}

#[test]
fn stories260k_padded_to_whole_blocks_is_a_standard_q8_0_image() {
    let Some(mut m) = stories() else { return };
    m.pad_hidden(32).unwrap();
    assert_eq!(m.config.hidden_dim, 192);
    let bytes = m.to_gguf(Quant::Q8).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    // llama's tensors only, every matrix Q8_0 (no .scale tensors): what llama.cpp computes with.
    assert_eq!(g.n_tensors(), 1 + 5 * 9 + 1);
    let t = g.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!((t.ty, t.dims), (GgmlType::Q8_0, [192, 64, 1, 1]));
    assert_eq!(g.tensor("token_embd.weight").unwrap().ty, GgmlType::Q8_0);
    assert_eq!(g.tensor("blk.0.attn_norm.weight").unwrap().ty, GgmlType::F32);
    // Read back (dequantized), every value is within half a step of its block's f16 scale.
    let back = load_gguf(&bytes).unwrap();
    for (a, b) in [(&back.token_embd, &m.token_embd), (&back.layers[3].w2, &m.layers[3].w2)] {
        for (x, y) in a.chunks(32).zip(b.chunks(32)) {
            let amax = y.iter().fold(0f32, |s, v| s.max(v.abs()));
            let step = amax / 127.0 * (1.0 + 1e-3);
            assert!(x.iter().zip(y).all(|(p, q)| (p - q).abs() <= step / 2.0 + 1e-7));
        }
    }
    // Without the padding (172 is not a multiple of 32), q8 stays int8 + scales.
    let plain = stories().unwrap().to_gguf(Quant::Q8).unwrap();
    let g = Gguf::parse(&plain).unwrap();
    assert_eq!(g.tensor("blk.0.ffn_down.weight").unwrap().ty, GgmlType::I8);
}
