//! Ternary (1.58-bit) and binary (1-bit) weights: the kernels against dequantize-then-f32, the
//! stored values against `quant::project_row` bit for bit, stories260K through the float and
//! the integer paths, and corrupt packed tensors.

mod common;

use ruvllm_esp32::convert::{self, HostModel, Quant};
use ruvllm_esp32::gguf::Gguf;
use ruvllm_esp32::infer::{self, IntState, State};
use ruvllm_esp32::kernels::{reference, Kernels, MatvecPacked};
use ruvllm_esp32::model::{Matrix, Model, Precision};
use ruvllm_esp32::quant::{self, WeightFormat};
use ruvllm_esp32::{packed, tokenizer, Error};

const FORMATS: [(Quant, WeightFormat, Precision); 2] = [
    (Quant::Ternary, WeightFormat::Ternary, Precision::Ternary),
    (Quant::Binary, WeightFormat::Binary, Precision::Binary),
];

/// xorshift64 values in [-1, 1), with a few exact zeros and outliers like real weights.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            match i % 53 {
                0 => 0.0,
                7 => v * 6.0,
                _ => v,
            }
        })
        .collect()
}

/// Packs a `rows x cols` matrix as the converter does: codes, row bytes and row scales.
fn pack(format: WeightFormat, w: &[f32], cols: usize) -> (Vec<u8>, Vec<f32>) {
    let stride = match format {
        WeightFormat::Ternary => packed::ternary_row_bytes(cols),
        _ => packed::binary_row_bytes(cols),
    };
    let rows = w.len() / cols;
    let (mut q, mut s) = (vec![0u8; rows * stride], vec![0f32; rows]);
    for ((row, q), s) in w.chunks_exact(cols).zip(q.chunks_exact_mut(stride)).zip(&mut s) {
        *s = quant::absmean(row);
        let codes: Vec<i8> = match format {
            WeightFormat::Ternary => row.iter().map(|v| quant::ternary_code(*v, *s)).collect(),
            _ => row.iter().map(|v| quant::binary_code(*v)).collect(),
        };
        match format {
            WeightFormat::Ternary => packed::pack_ternary(&codes, q),
            _ => packed::pack_binary(&codes, q),
        }
    }
    (q, s)
}

#[test]
fn kernels_match_dequantize_then_f32() {
    let group = quant::GROUP;
    // stories260K's shapes (hidden 172 = 5 x 32 + 12) and rows of odd lengths.
    for (rows, cols) in [(64usize, 64usize), (172, 64), (64, 172), (9, 37), (3, 5)] {
        let w = values(rows as u64 * 1000 + cols as u64, rows * cols);
        let x = values(cols as u64 + 7, cols);
        let (mut xq, mut xs) = (vec![0i8; cols], vec![0f32; cols.div_ceil(group)]);
        quant::quantize_row(&x, &mut xq, &mut xs, group);
        let mut xd = vec![0f32; cols];
        quant::dequantize_row(&xq, &xs, &mut xd, group);
        for (_, format, _) in FORMATS {
            let (q, s) = pack(format, &w, cols);
            // The reference: every weight dequantized to what project_row gives, f32 products
            // summed in f64.
            let mut want = vec![0f64; rows];
            let mut bound = vec![0f64; rows];
            for (r, row) in w.chunks_exact(cols).enumerate() {
                let mut p = vec![0f32; cols];
                quant::project_row(format, row, &mut p);
                for (a, b) in p.iter().zip(&xd) {
                    want[r] += (*a as f64) * (*b as f64);
                    bound[r] += (*a as f64 * *b as f64).abs();
                }
            }
            let detected = Kernels::detect();
            let kernels = match format {
                WeightFormat::Ternary => [reference::matvec_ternary as MatvecPacked, detected.matvec_ternary],
                _ => [reference::matvec_binary as MatvecPacked, detected.matvec_binary],
            };
            for kernel in kernels {
                let mut out = vec![f32::NAN; rows];
                kernel(&mut out, &q, &s, &xq, &xs, group);
                for r in 0..rows {
                    let err = (out[r] as f64 - want[r]).abs();
                    assert!(
                        err <= 1e-5 * bound[r] + 1e-30,
                        "{format:?} {rows}x{cols} row {r}: {} vs {} (bound {})",
                        out[r],
                        want[r],
                        bound[r]
                    );
                }
            }
        }
    }
}

fn stories() -> Option<HostModel> {
    let model = common::read_shared("models/stories260K.bin")?;
    let tok = common::read_shared("models/tok512.bin")?;
    let mut host = convert::load_llama2c(&model).unwrap();
    host.vocab = Some(convert::load_tokenizer_bin(&tok, host.config.vocab_size).unwrap());
    Some(host)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every weight of a converted image, read back, is `project_row` of the f32 original, bit for
/// bit; the embeddings are the q8 ones.
#[test]
fn stored_values_are_project_row_bit_for_bit() {
    let Some(host) = stories() else { return };
    let q8 = common::Image::new(&host.to_gguf(Quant::Q8).unwrap());
    let q8 = <Model<'_>>::from_gguf(q8.bytes()).unwrap();
    for (quant, format, precision) in FORMATS {
        let bytes = host.to_gguf(quant).unwrap();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.get_str("ruvllm.quant"), Ok(quant.name()));
        assert!(g.tensor("blk.0.attn_q.weight").is_none(), "no plain tensor for packed bytes");
        let img = common::Image::new(&bytes);
        let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
        assert_eq!(model.precision, precision);
        assert!(matches!(model.token_embd, Matrix::Q8 { .. }));
        let d = host.config.dim;
        let (mut a, mut b) = (vec![0f32; d], vec![0f32; d]);
        for r in 0..host.config.vocab_size {
            model.token_embd.row_into(r, &mut a, model.group);
            q8.token_embd.row_into(r, &mut b, q8.group);
            assert_eq!(bits(&a), bits(&b));
        }
        for (hl, l) in host.layers.iter().zip(&model.layers) {
            for (orig, m) in [
                (&hl.wq, l.wq),
                (&hl.wk, l.wk),
                (&hl.wv, l.wv),
                (&hl.wo, l.wo),
                (&hl.w1, l.w1),
                (&hl.w2, l.w2),
                (&hl.w3, l.w3),
            ] {
                assert!(matches!(
                    (m, precision),
                    (Matrix::Ternary { .. }, Precision::Ternary) | (Matrix::Binary { .. }, Precision::Binary)
                ));
                let cols = m.cols();
                let (mut got, mut want) = (vec![0f32; cols], vec![0f32; cols]);
                for (r, row) in orig.chunks_exact(cols).enumerate() {
                    m.row_into(r, &mut got, model.group);
                    quant::project_row(format, row, &mut want);
                    assert_eq!(bits(&got), bits(&want), "{format:?} row {r}");
                }
            }
        }
        // The host loader reads the packed image back to the same values.
        let back = convert::load_gguf(&bytes).unwrap();
        for (hl, bl) in host.layers.iter().zip(&back.layers) {
            let mut want = vec![0f32; hl.w2.len()];
            for (o, w) in
                hl.w2.chunks_exact(host.config.hidden_dim).zip(want.chunks_exact_mut(host.config.hidden_dim))
            {
                quant::project_row(format, o, w);
            }
            assert_eq!(bits(&bl.w2), bits(&want));
        }
        // Flash: the layer matrices take 2 or 1 bits a weight plus a scale a row.
        let packed_bytes: usize = model
            .layers
            .iter()
            .flat_map(|l| [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3])
            .map(|m| m.bytes())
            .sum();
        eprintln!("{}: image {} bytes, layer matrices {packed_bytes} bytes", quant.name(), bytes.len());
    }
}

fn heldout() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/heldout.txt")).unwrap()
}

fn encode(model: &Model<'_>, text: &[u8]) -> Vec<u32> {
    let mut tokens = vec![0u32; text.len() + 3];
    let n = tokenizer::encode(&model.vocab, text, true, false, &mut tokens).unwrap();
    tokens.truncate(n);
    tokens
}

/// Post-training ternary/binary stories260K is a bad model (the trainer does QAT); what must
/// hold is that it runs on both paths and that they agree.
#[test]
fn stories260k_ternary_and_binary_run_and_both_paths_agree() {
    let Some(host) = stories() else { return };
    for (quant, _, precision) in FORMATS {
        let img = common::Image::new(&host.to_gguf(quant).unwrap());
        let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
        assert_eq!(model.precision, precision);
        let prompt = encode(&model, b"Once upon a time");
        let steps = 64;
        // Float path (q8 activations), scalar and detected kernels.
        let mut texts = Vec::new();
        for kernels in [Kernels::REFERENCE, Kernels::detect()] {
            let mut arena = vec![0f32; State::arena_len(&model, steps)];
            let mut state = State::new(&model, &mut arena, steps, kernels).unwrap();
            let mut sampler = ruvllm_esp32::sample::Sampler::new(0.0, 0.9, 0, 1);
            let mut scratch = vec![ruvllm_esp32::sample::ProbIndex::default(); model.config.vocab_size];
            let mut out = Vec::new();
            let st =
                infer::generate(&model, &mut state, &mut sampler, &mut scratch, &prompt, steps, |b, _| {
                    out.extend_from_slice(b)
                })
                .unwrap();
            assert!(st.generated > 0);
            texts.push(out);
        }
        // Integer path.
        let mut arena = vec![0i32; IntState::arena_len(&model, steps)];
        let mut state = IntState::new(&model, &mut arena, steps).unwrap();
        let mut int_text = Vec::new();
        infer::generate_int(&model, &mut state, &prompt, steps, |b, _| int_text.extend_from_slice(b))
            .unwrap();
        eprintln!("{} float: {}", quant.name(), String::from_utf8_lossy(&texts[0]));
        eprintln!("{} integer: {}", quant.name(), String::from_utf8_lossy(&int_text));
        assert!(int_text.starts_with(b"Once upon a time"));

        // Held-out perplexity on both paths.
        let tokens = encode(&model, &heldout());
        let ctx = model.config.seq_len;
        let mut arena = vec![0f32; State::arena_len(&model, ctx)];
        let pf = infer::score(
            &model,
            &mut State::new(&model, &mut arena, ctx, Kernels::detect()).unwrap(),
            &tokens,
        )
        .unwrap()
        .perplexity();
        let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
        let pi = infer::score(&model, &mut IntState::new(&model, &mut arena, ctx).unwrap(), &tokens)
            .unwrap()
            .perplexity();
        let rel = (pi - pf).abs() / pf;
        eprintln!(
            "{}: held-out perplexity float {pf:.4}, integer {pi:.4} ({:.3}% apart)",
            quant.name(),
            rel * 100.0
        );
        assert!(pf.is_finite() && pi.is_finite());
        assert!(rel < 0.02, "{}: integer {pi} vs float {pf}", quant.name());
    }
}

/// Byte offset of tensor `name`'s data inside `bytes`.
fn data_offset(bytes: &[u8], name: &str) -> usize {
    let g = Gguf::parse(bytes).unwrap();
    g.tensor(name).unwrap().data.as_ptr() as usize - bytes.as_ptr() as usize
}

#[test]
fn corrupt_packed_tensors_give_typed_errors() {
    let Some(host) = stories() else { return };
    let load = |img: &common::Image| <Model<'_>>::from_gguf_unverified(img.bytes()).map(|_| ());
    for quant in [Quant::Ternary, Quant::Binary] {
        let bytes = host.to_gguf(quant).unwrap();
        let suffix = if quant == Quant::Ternary { "tern" } else { "bin" };
        let name = format!("blk.2.ffn_down.weight.{suffix}");
        let off = data_offset(&bytes, &name);
        let mut img = common::Image::new(&bytes);
        assert_eq!(load(&img), Ok(()));
        // Rows of hidden_dim 172: ternary 43 bytes (no padding), binary 22 bytes (4 bits).
        if quant == Quant::Ternary {
            img.bytes_mut()[off + 5] |= 0b0000_1100; // code 3
            assert!(matches!(load(&img), Err(Error::Invalid { .. })), "{:?}", load(&img));
        } else {
            img.bytes_mut()[off + 21] |= 0x80; // padding bit
            assert!(matches!(load(&img), Err(Error::Invalid { .. })), "{:?}", load(&img));
        }
        // The checked loader reports the checksum first.
        assert!(matches!(<Model<'_>>::from_gguf(img.bytes()), Err(Error::Checksum { .. })));
        // The host loader refuses it too.
        let mut b = bytes.clone();
        b.copy_from_slice(img.bytes());
        assert!(convert::load_gguf(&b).is_err());
    }
}
