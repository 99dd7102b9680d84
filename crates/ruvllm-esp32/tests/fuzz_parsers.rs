//! Mutation fuzzing of every parser on real files: results may be Ok or Err, never a panic,
//! and never a huge allocation (the global allocator below refuses anything over 64 MiB, which
//! aborts the test). A mutated engine image is never verified (the checksum covers header and
//! data), and a NaN planted in a checkpoint or tokenizer is refused or never read. Cases per
//! property: env `FUZZ_CASES` (default 256; a quarter of it for the properties that checksum
//! whole images).
#![cfg(feature = "alloc")]

mod common;

use std::sync::OnceLock;

use proptest::prelude::*;
use ruvllm_esp32::convert::{load_gguf, load_llama2c, load_tokenizer_bin, Quant};
use ruvllm_esp32::gguf::{as_f32, as_i8, Gguf, Value};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::{partition, Error};

/// Inputs are ~1 MB; no parser may need more than a small multiple of that.
const MAX_ALLOC: usize = 64 << 20;

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::cases;

#[global_allocator]
static ALLOC: fuzz::Capped<MAX_ALLOC> = fuzz::Capped;

/// stories260K.bin, tok512.bin, their F32, Q8, ternary and binary GGUF conversions, a chip
/// flash with the Q8 one in its `model` partition, a Q8_0 image (the model padded to whole
/// 32-value blocks), a Q8 image pruned to 90% whose matrices are sparse rows, and a Q8 image
/// with one key/value head of four removed (its head size in `llama.attention.key_length`).
fn corpus() -> Option<&'static [Vec<u8>]> {
    static CORPUS: OnceLock<Option<Vec<Vec<u8>>>> = OnceLock::new();
    CORPUS
        .get_or_init(|| {
            let model = common::read_shared("models/stories260K.bin")?;
            let tok = common::read_shared("models/tok512.bin")?;
            let mut m = load_llama2c(&model).unwrap();
            m.vocab = Some(load_tokenizer_bin(&tok, 512).unwrap());
            let f32 = m.to_gguf(Quant::F32).unwrap();
            let q8 = m.to_gguf(Quant::Q8).unwrap();
            let ternary = m.to_gguf(Quant::Ternary).unwrap();
            let binary = m.to_gguf(Quant::Binary).unwrap();
            let flash = flash_with_model(&q8);
            let mut pruned = m.clone();
            let mut heads = m.clone();
            ruvllm_esp32::prune::prune_heads(&mut heads, 1).unwrap();
            let heads = heads.to_gguf(Quant::Q8).unwrap();
            m.pad_hidden(32).unwrap();
            let q8_0 = m.to_gguf(Quant::Q8).unwrap();
            ruvllm_esp32::prune::prune(&mut pruned, 0.9, ruvllm_esp32::prune::Pruning::Unstructured).unwrap();
            let (sparse, n) = pruned.to_gguf_sparse(Quant::Q8, true).unwrap();
            assert!(n > 0, "the pruned image holds sparse rows");
            Some(vec![model, tok, f32, q8, ternary, binary, flash, q8_0, sparse, heads])
        })
        .as_deref()
}

/// A flash as `ruvllm-esp32 flash` lays it out, reduced to what the model needs: a partition
/// table at 0x8000 (an app entry and the `model` data partition, then the MD5 entry), the image
/// at 0x9000.
fn flash_with_model(image: &[u8]) -> Vec<u8> {
    use md5::{Digest, Md5};
    let mut table = Vec::new();
    for (label, kind, offset, size) in
        [("factory", 0u8, 0x1_0000u32, 0x1000u32), ("model", 1, 0x9000, image.len() as u32)]
    {
        table.extend_from_slice(&[0xAA, 0x50, kind, 0]);
        table.extend_from_slice(&offset.to_le_bytes());
        table.extend_from_slice(&size.to_le_bytes());
        let mut name = [0u8; 16];
        name[..label.len()].copy_from_slice(label.as_bytes());
        table.extend_from_slice(&name);
        table.extend_from_slice(&[0; 4]);
    }
    let digest: [u8; 16] = Md5::digest(&table).into();
    table.extend_from_slice(&[0xEB, 0xEB]);
    table.extend_from_slice(&[0xFF; 14]);
    table.extend_from_slice(&digest);
    let mut flash = vec![0xFF; 0x9000];
    flash[partition::TABLE_OFFSET..partition::TABLE_OFFSET + table.len()].copy_from_slice(&table);
    flash.extend_from_slice(image);
    flash
}

/// Runs every parser over `bytes` and touches everything a successful parse exposes.
fn exercise(bytes: &[u8]) {
    if let Ok(g) = Gguf::parse(bytes) {
        for (k, v) in g.kvs() {
            assert!(g.get(k).is_some());
            if let Value::Array(a) = v {
                let n = a.str_iter().count();
                assert!(n == 0 || n == a.len);
                let _ = (a.u32_at(a.len.saturating_sub(1)), a.i32_at(0), a.f32_at(usize::MAX));
            }
        }
        for t in g.tensors() {
            let _ = (t.n_elements(), as_f32(t.data), as_i8(t.data).len());
            assert!(g.tensor(t.name).is_some());
        }
        let _ = g.verify_checksum();
        let _ = (g.get_u32("llama.block_count"), g.get_f32("llama.rope.freq_base"));
        let _ = (g.get_str("general.architecture"), g.get_array("tokenizer.ggml.tokens"));
    }
    if let Ok(m) = load_gguf(bytes) {
        if m.vocab.is_some() {
            let _ = m.to_gguf(Quant::Q8);
        }
    }
    // The engine's loader (the checksum is skipped so mutations reach the tensor checks: packed
    // sizes, 2-bit code 3, padding), and every weight of what it accepts read back.
    let img = common::Image::new(bytes);
    if let Ok(m) = <Model<'_>>::from_gguf_unverified(img.bytes()) {
        let mut row = vec![0f32; m.config.dim.max(m.config.hidden_dim)];
        let mut sparse = false;
        for l in &m.layers {
            for w in [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3] {
                sparse |= matches!(w, ruvllm_esp32::model::Matrix::Sparse { .. });
                for r in 0..w.rows() {
                    w.row_into(r, &mut row[..w.cols()], m.group);
                }
            }
        }
        // Sparse rows or heads of their own size the loader accepted, through the integer path.
        if sparse || m.config.head_dim > 0 {
            use ruvllm_esp32::infer::IntState;
            let mut arena = vec![0i32; IntState::arena_len(&m, 2)];
            if let Ok(mut st) = IntState::new(&m, &mut arena, 2) {
                let _ = st.forward(&m, 1, 0);
            }
        }
    }
    // A partition table, and the model found through one (a board's boot).
    if let Ok(t) = partition::Table::parse(bytes) {
        for p in t.iter() {
            let _ = p.bytes(bytes);
        }
    }
    if let Ok((_, image)) = partition::model_image(img.bytes()) {
        let _ = <Model<'_>>::from_gguf(image);
    }
    let _ = load_llama2c(bytes);
    for n in [512, 3, 100_000] {
        let _ = load_tokenizer_bin(bytes, n);
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        pos: usize,
        bit: u8,
    },
    /// Little-endian write of `width` bytes of `value`, mostly into header fields.
    Overwrite {
        pos: usize,
        value: u64,
        width: usize,
    },
    Truncate {
        at: usize,
    },
    Insert {
        pos: usize,
        bytes: Vec<u8>,
    },
    Delete {
        pos: usize,
        len: usize,
    },
}

fn position() -> impl Strategy<Value = usize> {
    // Headers (GGUF metadata incl. the tokenizer, llama2.c config) sit near the start.
    // A partition table sits at 0x8000.
    prop_oneof![0usize..64, 0usize..512, 0usize..16_384, 0x8000usize..0x8080, any::<usize>()]
}

fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            2,
            3,
            4,
            8,
            9,
            24,
            31,
            32,
            255,
            256,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            1 << 32,
            1 << 40,
            i64::MAX as u64,
            u64::MAX,
            u64::MAX - 7,
        ]),
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (position(), 0u8..8).prop_map(|(pos, bit)| Mutation::Flip { pos, bit }),
        4 => (position(), extreme(), prop::sample::select(vec![1usize, 2, 4, 8]))
            .prop_map(|(pos, value, width)| Mutation::Overwrite { pos, value, width }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => (position(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(pos, bytes)| Mutation::Insert { pos, bytes }),
        1 => (position(), 1usize..64).prop_map(|(pos, len)| Mutation::Delete { pos, len }),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len();
    if len == 0 {
        return;
    }
    match m {
        Mutation::Flip { pos, bit } => data[pos % len] ^= 1 << bit,
        Mutation::Overwrite { pos, value, width } => {
            let p = pos % len;
            let end = (p + width).min(len);
            data[p..end].copy_from_slice(&value.to_le_bytes()[..end - p]);
        }
        Mutation::Truncate { at } => data.truncate(at % len),
        Mutation::Insert { pos, bytes } => {
            let p = pos % (len + 1);
            data.splice(p..p, bytes.iter().copied());
        }
        Mutation::Delete { pos, len: n } => {
            let p = pos % len;
            data.drain(p..(p + n).min(len));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_files_never_panic(which in 0usize..10, muts in prop::collection::vec(mutation(), 1..6)) {
        let Some(corpus) = corpus() else { return Ok(()) };
        let mut data = corpus[which].clone();
        for m in &muts {
            apply(&mut data, m);
        }
        exercise(&data);
    }

    #[test]
    fn random_bytes_never_panic(
        prefix in prop::sample::select(vec![&b""[..], b"GGUF\x03\0\0\0", b"GGUF\x02\0\0\0", b"24ka\x02\0\0\0", b"24ka\x01\0\0\0"]),
        body in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut data = prefix.to_vec();
        data.extend_from_slice(&body);
        exercise(&data);
    }
}

/// An attention pattern spec as a user might type it: a known or garbled name, then fields
/// of digits (any size), words or nothing.
fn pattern_spec() -> impl Strategy<Value = String> {
    let name =
        prop::sample::select(vec!["full", "window", "strided", "dilated", "bigbird", "", "BigBird", "x"]);
    let field = prop_oneof!["[0-9]{1,3}", "[0-9]{1,25}", "[a-z]{0,3}", Just(String::new())];
    (name, prop::collection::vec(field, 0..6))
        .prop_map(|(n, f)| f.iter().fold(n.to_string(), |s, x| s + ":" + x))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Any spec is parsed or refused (never a panic), and a parsed pattern lists, at any
    /// position of the cache, ascending distinct positions up to it, within its bound.
    #[test]
    fn attention_pattern_specs_parse_or_refuse_and_select_within_bound(
        spec in pattern_spec(),
        cache in 1usize..1200,
        at in any::<usize>(),
    ) {
        let Ok(p) = ruvllm_esp32::infer::Pattern::parse(&spec, cache) else { return Ok(()) };
        let mut out = vec![0u32; p.bound(cache)];
        for pos in [0, at % cache, cache - 1] {
            let n = p.select(pos, &mut out);
            prop_assert!(n >= 1 && n <= out.len(), "{} at {}: {}", spec, pos, n);
            prop_assert!(out[..n].windows(2).all(|w| w[0] < w[1]) && out[n - 1] as usize == pos);
        }
    }
}

/// Offsets of every score in a llama2.c tokenizer.bin of `n` tokens.
fn score_offsets(tok: &[u8], n: usize) -> Vec<usize> {
    let mut at = 4;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(at);
        let len = i32::from_le_bytes(tok[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 4).max(16), failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever bytes a mutation changes (header, metadata, tensor infos, data, a flash's
    /// partition table), an image that differs from what `convert` wrote never verifies: the
    /// chip's boot check and the host's load refuse it. (Only a mutation that removes every
    /// `ruvllm.*` name could make it pass as a foreign, unverified GGUF.)
    #[test]
    fn mutated_images_never_verify(which in 2usize..10, muts in prop::collection::vec(mutation(), 1..5)) {
        let Some(corpus) = corpus() else { return Ok(()) };
        let original: &[u8] = if which == 6 { &corpus[3] } else { &corpus[which] };
        let mut data = corpus[which].clone();
        for m in &muts {
            apply(&mut data, m);
        }
        let img = common::Image::new(&data);
        let image = if which == 6 {
            match partition::model_image(img.bytes()) {
                Ok((_, image)) => image,
                Err(_) => return Ok(()),
            }
        } else {
            img.bytes()
        };
        if image != original {
            let verified = <Model<'_>>::from_gguf(image).is_ok_and(|m| m.checksum_verified);
            prop_assert!(!verified, "a mutated image verified: {muts:?}");
            if let Ok(g) = Gguf::parse(image) {
                prop_assert!(g.verify_checksum() != Ok(true));
                prop_assert!(g.verify_checksum().is_err() || !g.is_own());
            }
        }
    }

    /// A NaN or infinity anywhere in stories260K's weights is refused naming a tensor, or lands
    /// where the loader reads nothing (the legacy file's RoPE table, recomputed by convert).
    #[test]
    fn a_planted_non_finite_weight_is_refused_or_unread(k in any::<usize>(), inf: bool) {
        let Some(corpus) = corpus() else { return Ok(()) };
        let mut data = corpus[0].clone();
        let at = 28 + 4 * (k % ((data.len() - 28) / 4));
        let bad = if inf { f32::INFINITY } else { f32::NAN };
        data[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        match load_llama2c(&data) {
            Err(Error::NonFinite { .. }) => {}
            Ok(m) => {
                static CLEAN: OnceLock<ruvllm_esp32::convert::HostModel> = OnceLock::new();
                let clean = CLEAN.get_or_init(|| load_llama2c(&corpus[0]).unwrap());
                prop_assert!(&m == clean, "a NaN at {} was read", at);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    /// A non-finite score anywhere in tok512.bin is refused, and the error blames the tokenizer.
    #[test]
    fn a_planted_non_finite_score_is_refused(k in 0usize..512, inf: bool) {
        let Some(corpus) = corpus() else { return Ok(()) };
        let mut tok = corpus[1].clone();
        let at = score_offsets(&tok, 512)[k];
        tok[at..at + 4].copy_from_slice(&(if inf { f32::NEG_INFINITY } else { f32::NAN }).to_le_bytes());
        let err = load_tokenizer_bin(&tok, 512).unwrap_err();
        prop_assert!(err.to_string().contains("tokenizer score"), "{}", err);
    }
}

/// Each real file and its conversions parse cleanly before mutation (the fuzzer's baseline).
#[test]
fn corpus_is_valid() {
    let Some(c) = corpus() else { return };
    assert!(load_llama2c(&c[0]).is_ok());
    assert!(load_tokenizer_bin(&c[1], 512).is_ok());
    let (_, image) = partition::model_image(&c[6]).expect("the flash's model partition");
    assert_eq!(image, &c[3][..]);
    for g in c[2..6].iter().chain(&c[7..]) {
        assert_eq!(Gguf::parse(g).unwrap().verify_checksum(), Ok(true));
        assert!(load_gguf(g).unwrap().vocab.is_some());
        assert!(<Model<'_>>::from_gguf(common::Image::new(g).bytes()).is_ok());
    }
}
