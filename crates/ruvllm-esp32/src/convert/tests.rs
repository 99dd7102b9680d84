use super::*;
use crate::gguf::{f32_to_f16, Gguf};

/// Deterministic pseudo-random values in [-1, 1).
fn noise(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn tiny(shared: bool) -> HostModel {
    let config = Config {
        dim: 16,
        hidden_dim: 40, // not a multiple of the group: short last group per row
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 0,
        vocab_size: 260,
        seq_len: 32,
        shared_classifier: shared,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let (d, h, kv) = (16, 40, config.kv_dim());
    let layers = (0..2)
        .map(|i| HostLayer {
            attn_norm: noise(d, 10 * i),
            wq: noise(d * d, 10 * i + 1),
            wk: noise(kv * d, 10 * i + 2),
            wv: noise(kv * d, 10 * i + 3),
            wo: noise(d * d, 10 * i + 4),
            ffn_norm: noise(d, 10 * i + 5),
            w1: noise(h * d, 10 * i + 6),
            w2: noise(d * h, 10 * i + 7),
            w3: noise(h * d, 10 * i + 8),
        })
        .collect();
    let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
    pieces.push(b" the".to_vec());
    HostModel {
        config,
        token_embd: noise(260 * d, 99),
        layers,
        output_norm: noise(d, 98),
        output: if shared { None } else { Some(noise(260 * d, 97)) },
        vocab: Some(HostVocab { scores: noise(260, 5), pieces, max_token_length: 6, bos: 1, eos: 2 }),
    }
}

#[test]
fn f32_round_trip_is_bit_exact() {
    for shared in [true, false] {
        let m = tiny(shared);
        let bytes = m.to_gguf(Quant::F32).unwrap();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.verify_checksum(), Ok(true));
        assert_eq!(g.get_str("ruvllm.quant"), Ok("f32"));
        assert_eq!(g.tensor("output.weight").is_some(), !shared);
        assert_eq!(load_gguf(&bytes).unwrap(), m);
    }
}

#[test]
fn q8_round_trip_is_within_group_error() {
    let m = tiny(false);
    let bytes = m.to_gguf(Quant::Q8).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let t = g.tensor("blk.1.ffn_down.weight").unwrap();
    assert_eq!((t.ty, t.dims), (GgmlType::I8, [40, 16, 1, 1]));
    let s = g.tensor("blk.1.ffn_down.weight.scale").unwrap();
    assert_eq!((s.ty, s.dims), (GgmlType::F32, [2, 16, 1, 1]));
    assert_eq!(g.tensor("blk.0.attn_norm.weight").unwrap().ty, GgmlType::F32);
    let back = load_gguf(&bytes).unwrap();
    assert_eq!(back.vocab, m.vocab);
    assert_eq!(back.output_norm, m.output_norm);
    let close =
        |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1.0 / 127.0 * 0.5 + 1e-6);
    assert!(close(&back.token_embd, &m.token_embd));
    assert!(close(&back.layers[1].w2, &m.layers[1].w2));
    assert!(close(back.output.as_ref().unwrap(), m.output.as_ref().unwrap()));
}

#[test]
fn tokenizer_metadata_and_index() {
    let m = tiny(true);
    let bytes = m.to_gguf(Quant::F32).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    let types = g.get_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.i32_at(0), Some(2));
    assert_eq!(types.i32_at(1), Some(3));
    assert_eq!(types.i32_at(2), Some(3));
    assert_eq!(types.i32_at(3), Some(6));
    assert_eq!(types.i32_at(258), Some(6));
    assert_eq!(types.i32_at(259), Some(1));
    let index = g.get_array("ruvllm.tokenizer.index").unwrap();
    let n = 260;
    assert_eq!(index.len, 2 * n);
    let piece = |id: usize| {
        let off = index.u32_at(id).unwrap() as usize;
        let len = u64::from_le_bytes(tokens.payload[off..off + 8].try_into().unwrap()) as usize;
        &tokens.payload[off + 8..off + 8 + len]
    };
    // SentencePiece's convention, as tokenizer.ggml.model = "llama" promises other readers.
    assert_eq!(piece(259), "\u{2581}the".as_bytes());
    for (id, p) in m.vocab.as_ref().unwrap().pieces.iter().enumerate() {
        assert_eq!(piece(id), super::spm_piece(p).unwrap().as_slice());
        assert_eq!(&super::plain_piece(piece(id)), p);
    }
    let sorted: Vec<usize> = (n..2 * n).map(|i| index.u32_at(i).unwrap() as usize).collect();
    assert!(sorted.windows(2).all(|w| (piece(w[0]), w[0]) < (piece(w[1]), w[1])));
    assert_eq!(g.get_u32("ruvllm.tokenizer.max_token_length"), Ok(6));
}

#[test]
fn to_gguf_needs_a_vocab_and_consistent_sizes() {
    let mut m = tiny(true);
    m.layers[0].wk.pop();
    assert!(matches!(m.to_gguf(Quant::F32), Err(Error::Invalid { .. })));
    m.vocab = None;
    assert!(matches!(m.to_gguf(Quant::F32), Err(Error::Missing { .. })));
}

/// (name, source, expected after load, cols, rows)
type Mat<'a> = (&'a str, &'a Vec<f32>, &'a mut Vec<f32>, u64, u64);

/// A llama.cpp-style file: F16 and Q8_0 matrices, "▁" in pieces, no ruvllm keys.
#[test]
fn load_gguf_dequantizes_f16_and_q8_0() {
    let m = tiny(true);
    let c = m.config;
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama");
    w.add_u32("llama.context_length", 32);
    w.add_u32("llama.embedding_length", 16);
    w.add_u32("llama.block_count", 2);
    w.add_u32("llama.feed_forward_length", 40);
    w.add_u32("llama.attention.head_count", 4);
    w.add_u32("llama.attention.head_count_kv", 2);
    w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-6);
    w.add_str("tokenizer.ggml.model", "llama");
    let mut pieces: Vec<Vec<u8>> = m.vocab.as_ref().unwrap().pieces.clone();
    pieces[259] = "\u{2581}the".as_bytes().to_vec();
    let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
    w.add_str_array("tokenizer.ggml.tokens", &refs);

    let f16 = |v: &[f32]| -> (Vec<u8>, Vec<f32>) {
        let bits: Vec<u16> = v.iter().map(|x| f32_to_f16(*x)).collect();
        (
            bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
            bits.iter().map(|b| crate::gguf::f16_to_f32(*b)).collect(),
        )
    };
    // Q8_0 with a scale that is exact in f16 (its values are checked by the padded stories260K
    // image's test, whose rows are whole blocks).
    let q8_0 = |v: &[f32]| -> (Vec<u8>, Vec<f32>) {
        let (mut bytes, mut vals) = (Vec::new(), Vec::new());
        for blk in v.chunks(32) {
            let d = 1.0f32 / 64.0;
            bytes.extend_from_slice(&f32_to_f16(d).to_le_bytes());
            for x in blk {
                let q = (x / d).round().clamp(-127.0, 127.0) as i8;
                bytes.push(q as u8);
                vals.push(q as f32 * d);
            }
        }
        (bytes, vals)
    };
    let mut expect = m.clone();
    expect.config.norm_eps = 1e-6;
    let (b, v) = f16(&m.token_embd);
    w.add_tensor("token_embd.weight", &[16, 260], GgmlType::F16, b).unwrap();
    expect.token_embd = v;
    for (i, l) in m.layers.iter().enumerate() {
        let e = &mut expect.layers[i];
        let name = |s: &str| format!("blk.{i}.{s}.weight");
        w.add_tensor(&name("attn_norm"), &[16], GgmlType::F32, f32_bytes(&l.attn_norm)).unwrap();
        w.add_tensor(&name("ffn_norm"), &[16], GgmlType::F32, f32_bytes(&l.ffn_norm)).unwrap();
        let mats: [Mat; 7] = [
            ("attn_q", &l.wq, &mut e.wq, 16, 16),
            ("attn_k", &l.wk, &mut e.wk, 16, 8),
            ("attn_v", &l.wv, &mut e.wv, 16, 8),
            ("attn_output", &l.wo, &mut e.wo, 16, 16),
            ("ffn_gate", &l.w1, &mut e.w1, 16, 40),
            ("ffn_down", &l.w2, &mut e.w2, 40, 16),
            ("ffn_up", &l.w3, &mut e.w3, 16, 40),
        ];
        for (j, (n, src, dst, cols, rows)) in mats.into_iter().enumerate() {
            // Rows of 16 or 40 values are not whole Q8_0 blocks: the first one tried so is
            // refused (llama.cpp's rule too); the rest are F16.
            if i == 0 && j == 0 {
                let mut bad = w.clone();
                bad.add_tensor(&name(n), &[cols, rows], GgmlType::Q8_0, q8_0(src).0).unwrap();
                let err = load_gguf(&bad.finish()).unwrap_err();
                assert!(
                    matches!(err, Error::Unsupported { what } if what.contains("not whole blocks")),
                    "{err}"
                );
            }
            let (ty, (b, v)) = (GgmlType::F16, f16(src));
            w.add_tensor(&name(n), &[cols, rows], ty, b).unwrap();
            *dst = v;
        }
    }
    w.add_tensor("output_norm.weight", &[16], GgmlType::F32, f32_bytes(&m.output_norm)).unwrap();
    let bytes = w.finish();
    let got = load_gguf(&bytes).unwrap();
    let vocab = got.vocab.as_ref().unwrap();
    assert_eq!(vocab.pieces[259], b" the");
    assert_eq!(vocab.scores, vec![0.0; 260]);
    assert_eq!((vocab.bos, vocab.eos), (1, 2));
    expect.vocab = None;
    let got = HostModel { vocab: None, ..got };
    assert_eq!(got, expect);
    assert_eq!(got.config, Config { norm_eps: 1e-6, ..c });
}

#[test]
fn load_gguf_rejects_wrong_shapes_and_missing_tensors() {
    let m = tiny(true);
    let bytes = m.to_gguf(Quant::F32).unwrap();
    // Drop one tensor by renaming it in place (same length name).
    let at = bytes.windows(19).position(|w| w == b"blk.1.ffn_up.weight").unwrap();
    let mut b = bytes.clone();
    b[at] = b'X';
    assert!(matches!(load_gguf(&b), Err(Error::Missing { .. })));
    assert!(matches!(load_gguf(b"GGUF"), Err(Error::Truncated { .. })));
}

/// `m` as a llama2.c "ak42" version 1 (fp32) checkpoint.
fn ak42_v1(m: &HostModel) -> Vec<u8> {
    let c = &m.config;
    let mut out = Vec::new();
    out.extend_from_slice(&0x616b_3432u32.to_le_bytes());
    out.extend_from_slice(&1i32.to_le_bytes());
    for v in [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    out.push(u8::from(c.shared_classifier));
    out.resize(256, 0);
    let mut put = |v: &[f32]| out.extend(f32_bytes(v));
    m.layers.iter().for_each(|l| put(&l.attn_norm));
    m.layers.iter().for_each(|l| put(&l.ffn_norm));
    put(&m.output_norm);
    put(&m.token_embd);
    for pick in [
        |l: &HostLayer| l.wq.clone(),
        |l: &HostLayer| l.wk.clone(),
        |l: &HostLayer| l.wv.clone(),
        |l: &HostLayer| l.wo.clone(),
        |l: &HostLayer| l.w1.clone(),
        |l: &HostLayer| l.w2.clone(),
        |l: &HostLayer| l.w3.clone(),
    ] {
        m.layers.iter().for_each(|l| put(&pick(l)));
    }
    if let Some(o) = &m.output {
        put(o);
    }
    out
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let m = tiny(false);
    let back = load_llama2c(&ak42_v1(&m)).unwrap();
    assert_eq!(HostModel { vocab: m.vocab.clone(), ..back }, m, "the checkpoint writer round-trips");
    for bad in [f32::NAN, f32::INFINITY] {
        let mut n = m.clone();
        n.layers[1].wq[5] = bad;
        let want = Error::NonFinite { tensor: "attn_q.weight", layer: Some(1) };
        assert_eq!(load_llama2c(&ak42_v1(&n)), Err(want));
        assert_eq!(n.to_gguf(Quant::Q8), Err(want), "convert refuses it too");
        let mut n = m.clone();
        n.output.as_mut().unwrap()[0] = bad;
        assert_eq!(
            load_llama2c(&ak42_v1(&n)),
            Err(Error::NonFinite { tensor: "output.weight", layer: None })
        );
    }
    let msg = Error::NonFinite { tensor: "attn_q.weight", layer: Some(1) }.to_string();
    assert!(msg.contains("blk.1.attn_q.weight"), "{msg}");

    // An engine image whose scale is NaN, checksum re-stamped: the in-place loader refuses it.
    let img = m.to_gguf(Quant::Q8).unwrap();
    let g = Gguf::parse(&img).unwrap();
    let base = img.as_ptr() as usize;
    let at = g.tensor("blk.0.ffn_up.weight.scale").unwrap().data.as_ptr() as usize - base;
    let crc_at = {
        let key = img.windows(15).position(|w| w == b"ruvllm.checksum").unwrap();
        key + 15 + 4
    };
    let mut bad = img.clone();
    bad[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let crc = crate::gguf::image_crc(&bad, crc_at);
    bad[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    let words: Vec<u64> = bad
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect();
    let aligned = &bytemuck::cast_slice::<u64, u8>(&words)[..bad.len()];
    assert_eq!(Gguf::parse(aligned).unwrap().verify_checksum(), Ok(true));
    let err = crate::model::Model::<'_, 8>::from_gguf(aligned).unwrap_err();
    assert_eq!(err, Error::NonFinite { tensor: "ffn_up.weight", layer: Some(0) });
    assert_eq!(load_gguf(aligned).unwrap_err(), err);
}

#[test]
fn a_context_beyond_the_weights_is_refused_before_any_allocation() {
    // An ak42 file stores no RoPE table, so nothing in its length bounds seq_len: the header
    // check refuses a context whose table would outgrow the weights.
    let mut m = tiny(true);
    m.config.seq_len = 1 << 20;
    let err = load_llama2c(&ak42_v1(&m)).unwrap_err();
    assert!(matches!(err, Error::Invalid { what } if what.starts_with("context length")), "{err}");
}

#[test]
fn a_tokenizer_of_another_vocabulary_size_is_refused_naming_both() {
    let voc = tiny(true).vocab.unwrap();
    let bin = |n: usize, scores: &[f32]| {
        let mut out = 6i32.to_le_bytes().to_vec();
        for (p, s) in voc.pieces.iter().zip(scores).take(n) {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&(p.len() as i32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    };
    assert_eq!(load_tokenizer_bin(&bin(260, &voc.scores), 260).unwrap(), voc);
    assert_eq!(
        load_tokenizer_bin(&bin(260, &voc.scores), 250),
        Err(Error::VocabMismatch { tokenizer: 260, model: 250 })
    );
    assert_eq!(
        load_tokenizer_bin(&bin(200, &voc.scores), 260),
        Err(Error::VocabMismatch { tokenizer: 200, model: 260 })
    );
    let mut scores = voc.scores.clone();
    scores[7] = f32::NAN;
    let err = load_tokenizer_bin(&bin(260, &scores), 260).unwrap_err();
    assert!(err.to_string().contains("tokenizer score"), "{err}");
}

#[test]
fn every_header_byte_is_covered_by_the_checksum() {
    let img = tiny(true).to_gguf(Quant::Q8).unwrap();
    let g = Gguf::parse(&img).unwrap();
    assert_eq!(g.verify_checksum(), Ok(true));
    for p in 0..g.data_offset() {
        for bit in [0x01u8, 0x20, 0x80] {
            let mut b = img.clone();
            b[p] ^= bit;
            let refused = Gguf::parse(&b).map_or(true, |g| g.verify_checksum().is_err());
            assert!(refused, "flipping {bit:#x} at header byte {p} was not refused");
        }
    }
}

/// The int8 llama2.c checkpoint reads back (by the ak42 v2 reader, as `runq.c` lays it out)
/// as its weights quantized in its groups: dim 16 and FFN 40 take groups of 8.
#[test]
fn llama2c_q8_checkpoint_round_trips() {
    for shared in [false, true] {
        let m = tiny(shared);
        let group = llama2c_group(&m.config).unwrap();
        assert_eq!(group, 8);
        let bytes = to_llama2c_q8(&m).unwrap();
        assert_eq!(&bytes[..4], b"24ka", "the magic of export.py");
        let back = load_llama2c(&bytes).unwrap();
        assert_eq!(back.config, m.config);
        let rounded = |v: &[f32]| {
            let (mut q, mut s, mut out) =
                (vec![0i8; v.len()], vec![0f32; v.len() / group], vec![0f32; v.len()]);
            quant::quantize_row(v, &mut q, &mut s, group);
            quant::dequantize_row(&q, &s, &mut out, group);
            out
        };
        assert_eq!(back.token_embd, rounded(&m.token_embd));
        assert_eq!(back.output, m.output.as_deref().map(rounded));
        assert_eq!(back.output_norm, m.output_norm);
        for (b, l) in back.layers.iter().zip(&m.layers) {
            assert_eq!((&b.attn_norm, &b.ffn_norm), (&l.attn_norm, &l.ffn_norm));
            for (x, y) in [(&b.wq, &l.wq), (&b.wk, &l.wk), (&b.wv, &l.wv), (&b.wo, &l.wo), (&b.w1, &l.w1)] {
                assert_eq!(*x, rounded(y));
            }
            assert_eq!((&b.w2, &b.w3), (&rounded(&l.w2), &rounded(&l.w3)));
        }
    }
    // Heads narrower than dim / n_heads have no llama2.c form.
    let mut m = tiny(true);
    m.config.head_dim = 2;
    assert!(llama2c_group(&m.config).is_none());
    assert!(matches!(to_llama2c_q8(&m), Err(Error::Unsupported { .. })));
}
