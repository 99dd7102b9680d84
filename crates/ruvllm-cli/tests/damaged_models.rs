//! Damaged and hostile model files (issue 14, "a damaged model must not run"): a changed header
//! byte, a lost checksum key, NaN weights, a header asking for a huge context, a tokenizer of
//! another size. Each gets one error line and a non-zero exit; fixtures are made here.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn builtin() -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/default.gguf")).unwrap()
}

/// Offset of the value of metadata `key` (the key's bytes, then its u32 type).
fn value_at(img: &[u8], key: &str) -> usize {
    let at = img.windows(key.len()).position(|w| w == key.as_bytes()).expect(key);
    at + key.len() + 4
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gen(path: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["gen", "-m", s(path), "-p", "Once", "-n", "16"];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn every_header_edit_of_an_image_is_refused() {
    let img = builtin();
    let put_u32 = |key: &str, v: u32| {
        let mut b = img.clone();
        let at = value_at(&b, key);
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        b
    };
    let put_f32 = |key: &str, v: f32| put_u32(key, v.to_bits());
    // blk.0.attn_q.weight's data offset pointed at token_embd.weight's (offset 0).
    let moved = {
        let mut b = img.clone();
        let name = b"blk.0.attn_q.weight";
        let at = b.windows(name.len()).position(|w| w == name).unwrap() + name.len();
        let off = at + 4 + 2 * 8 + 4; // n_dims, two dims, type
        b[off..off + 8].copy_from_slice(&0u64.to_le_bytes());
        b
    };
    let cases = [
        ("block-count.gguf", put_u32("llama.block_count", 4)),
        ("offset.gguf", moved),
        ("eps.gguf", put_f32("llama.attention.layer_norm_rms_epsilon", 1e-3)),
        ("rope-base.gguf", put_f32("llama.rope.freq_base", 5000.0)),
        ("bos-eos.gguf", put_u32("tokenizer.ggml.bos_token_id", 2)),
    ];
    for (name, bytes) in cases {
        fails_with(&gen(&write(name, &bytes), &[]), "checksum mismatch");
    }
}

#[test]
fn an_image_without_its_checksum_key_runs_only_when_the_user_allows_it() {
    let mut img = builtin();
    let at = value_at(&img, "ruvllm.checksum") - 4 - 15;
    img[at + 14] = b'X'; // ruvllm.checksuX: verification would be off
    let p = write("renamed-key.gguf", &img);
    fails_with(&gen(&p, &[]), "--allow-unverified");
    let out = gen(&p, &["--allow-unverified"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.lines().next().unwrap().contains("unverified"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Once"));
}

#[test]
fn a_gguf_of_another_tool_runs_with_a_note_that_it_is_unverified() {
    // No ruvllm.* name at all (ours renamed to custom.*): what another tool writes.
    let mut img = builtin();
    let header = ruvllm_esp32::gguf::Gguf::parse(&img).unwrap().data_offset();
    for at in 0..header - 7 {
        if &img[at..at + 7] == b"ruvllm." {
            img[at..at + 7].copy_from_slice(b"custom.");
        }
    }
    let out = gen(&write("foreign.gguf", &img), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.starts_with("note: ") && err.contains("not verified"), "{err}");
}

/// An "ak42" version 2 (int8) checkpoint of 4.3 MB: dim 1024, one head, one layer, vocab 32,
/// and `seq_len` in its header; plus a 32-token tokenizer.bin for it.
fn ak42_q8(seq_len: i32, nan_at: Option<usize>) -> (PathBuf, PathBuf) {
    let (dim, hidden, vocab, group) = (1024usize, 8usize, 32usize, 64usize);
    let mut out = Vec::new();
    out.extend_from_slice(&0x616b_3432u32.to_le_bytes());
    out.extend_from_slice(&2i32.to_le_bytes());
    for v in [dim as i32, hidden as i32, 1, 1, 1, vocab as i32, seq_len] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(1); // shared classifier
    out.extend_from_slice(&(group as i32).to_le_bytes());
    out.resize(256, 0);
    for _ in 0..3 * dim {
        out.extend_from_slice(&1.0f32.to_le_bytes()); // attn_norm, ffn_norm, output_norm
    }
    let mut q8 = |n: usize| {
        out.extend((0..n).map(|i| (i % 7) as u8));
        out.extend((0..n / group).flat_map(|_| 0.01f32.to_le_bytes()));
    };
    // token_embd, wq, wk, wv, wo, w1, w2, w3
    for n in
        [vocab * dim, dim * dim, dim * dim, dim * dim, dim * dim, hidden * dim, hidden * dim, hidden * dim]
    {
        q8(n);
    }
    if let Some(at) = nan_at {
        out[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let mut tok = 8i32.to_le_bytes().to_vec();
    for i in 0..vocab {
        let piece = format!("t{i}");
        tok.extend_from_slice(&0f32.to_le_bytes());
        tok.extend_from_slice(&(piece.len() as i32).to_le_bytes());
        tok.extend_from_slice(piece.as_bytes());
    }
    let name = format!("ak42-{seq_len}-{}", nan_at.is_some());
    (write(&format!("{name}.bin"), &out), write(&format!("{name}-tok.bin"), &tok))
}

#[test]
fn a_header_context_far_beyond_the_weights_is_refused_before_allocating() {
    let (model, tok) = ak42_q8(1 << 20, None);
    assert!(std::fs::metadata(&model).unwrap().len() < 5 << 20);
    for cmd in
        [vec!["info", s(&model), "-z", s(&tok)], vec!["gen", "-m", s(&model), "-z", s(&tok), "-n", "4"]]
    {
        fails_with(&run(&cmd), "context length");
    }
    let o = scratch("huge-ctx.gguf");
    fails_with(&run(&["convert", s(&model), "-z", s(&tok), "-o", s(&o)]), "context length");
    // The same file with a sane context converts and runs.
    let (model, tok) = ak42_q8(64, None);
    let out = run(&["gen", "-m", s(&model), "-z", s(&tok), "-n", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn nan_weights_are_refused_by_convert_and_the_loaders_naming_the_tensor() {
    // The first scale of blk.0.attn_q.weight: after the header, norms and token_embd.
    let (dim, vocab) = (1024, 32);
    let at = 256 + 3 * dim * 4 + vocab * dim + vocab * dim / 64 * 4 + dim * dim;
    let (model, tok) = ak42_q8(64, Some(at));
    let o = scratch("nan.gguf");
    fails_with(&run(&["convert", s(&model), "-z", s(&tok), "-o", s(&o)]), "blk.0.attn_q.weight");
    assert!(!o.exists());
    let text = write("nan-text.txt", b"t1 t2 t3");
    fails_with(&run(&["eval", "-m", s(&model), "-z", s(&tok), "--text", s(&text)]), "blk.0.attn_q.weight");
}

#[test]
fn tokenizer_faults_are_blamed_on_the_tokenizer_and_sizes_are_named() {
    let (model, tok) = ak42_q8(64, None);
    let bytes = std::fs::read(&tok).unwrap();
    let mut nan = bytes.clone();
    nan[4..8].copy_from_slice(&f32::NAN.to_le_bytes()); // first token's score
    let nan_tok = write("nan-score-tok.bin", &nan);
    let out = run(&["gen", "-m", s(&model), "-z", s(&nan_tok), "-n", "4"]);
    fails_with(&out, "nan-score-tok.bin: invalid: tokenizer score");
    // 40 tokens for a model of 32: refused, naming both sizes.
    let mut big = bytes.clone();
    for i in 32..40 {
        let piece = format!("u{i}");
        big.extend_from_slice(&0f32.to_le_bytes());
        big.extend_from_slice(&(piece.len() as i32).to_le_bytes());
        big.extend_from_slice(piece.as_bytes());
    }
    let big_tok = write("big-tok.bin", &big);
    fails_with(&run(&["gen", "-m", s(&model), "-z", s(&big_tok), "-n", "4"]), "40 tokens");
    fails_with(&run(&["gen", "-m", s(&model), "-z", s(&big_tok), "-n", "4"]), "has 32");
}

/// A minimal GGUF header with these string keys and no tensors.
fn gguf_with(keys: &[(&str, &str)]) -> Vec<u8> {
    let mut w = ruvllm_esp32::gguf::GgufWriter::new();
    for (k, v) in keys {
        w.add_str(k, v);
    }
    w.finish()
}

#[test]
fn another_architecture_or_tokenizer_gets_one_line_naming_what_is_supported() {
    let qwen = write("qwen.gguf", &gguf_with(&[("general.architecture", "qwen2")]));
    let out = run(&["convert", s(&qwen), "-q", "q8", "-o", s(&scratch("unused.gguf"))]);
    fails_with(&out, "architecture \"qwen2\" is not supported: this engine runs llama-architecture models");
    let gpt2 = write(
        "gpt2-tokenizer.gguf",
        &gguf_with(&[("general.architecture", "llama"), ("tokenizer.ggml.model", "gpt2")]),
    );
    let out = gen(&gpt2, &[]);
    fails_with(
        &out,
        "tokenizer model \"gpt2\" is not supported: this engine reads SentencePiece vocabularies",
    );
}
