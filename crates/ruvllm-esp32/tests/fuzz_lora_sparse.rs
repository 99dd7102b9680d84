//! Mutation fuzzing of the two formats issue 19 added, from real files: a MicroLoRA adapter
//! file (trained a few steps on the built-in model) with its own CRC made right again after
//! each mutation, so the mutations reach the header and shape checks, and sparse rows of the
//! built-in model's pruned matrices. Every input is refused or read, never a panic; what is
//! read is used (an adapter in a forward pass, sparse rows in a product). Cases per property:
//! env `FUZZ_CASES` (default 256).
#![cfg(feature = "alloc")]

mod common;

use std::sync::OnceLock;

use proptest::prelude::*;
use ruvllm_esp32::infer::integer::sparse::{encode, encoded_len, matvec_sparse, prune_codes, SparseRows};
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::lora::{model_id, IntLora, LoraConfig, LoraTrainer, MAX_FILE};
use ruvllm_esp32::model::{Matrix, Model};

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::cases;

fn image() -> &'static common::Image {
    static IMAGE: OnceLock<common::Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
        common::Image::new(&std::fs::read(path).unwrap())
    })
}

/// An adapter file of the built-in model, after 2 training steps.
fn adapter_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let model: Model<'_> = Model::from_gguf(image().bytes()).unwrap();
        let mut arena = vec![0i32; IntState::arena_len(&model, 16)];
        let mut state = IntState::new(&model, &mut arena, 16).unwrap();
        let mut t = <LoraTrainer>::new(&model, LoraConfig::default()).unwrap();
        for _ in 0..2 {
            t.step(&model, &mut state, &[1, 400, 300, 200, 100]).unwrap();
        }
        let mut buf = vec![0u8; MAX_FILE];
        let n = t.adapter().write(model_id(image().bytes()), &mut buf).unwrap();
        buf.truncate(n);
        buf
    })
}

/// (codes, scales, rows, cols, group, encoding) of the built-in model's w1, 70% pruned.
type SparseFixture = (Vec<i8>, Vec<f32>, usize, usize, usize, Vec<u8>);

fn sparse_fixture() -> &'static SparseFixture {
    static FIXTURE: OnceLock<SparseFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let model: Model<'_> = Model::from_gguf(image().bytes()).unwrap();
        let Matrix::Q8 { q, s, rows, cols } = model.layers[0].w1 else { panic!("q8") };
        let mut codes = q.to_vec();
        prune_codes(&mut codes, q.len() * 7 / 10);
        let mut bytes = vec![0u8; encoded_len(&codes, cols, model.group)];
        encode(&codes, cols, model.group, &mut bytes).unwrap();
        (codes, s.to_vec(), rows, cols, model.group, bytes)
    })
}

/// Flips, overwrites, truncations and insertions at random places.
fn mutate(data: &mut Vec<u8>, muts: &[(u8, usize, u8)]) {
    for &(kind, at, v) in muts {
        let at = at % (data.len() + 1);
        match kind % 4 {
            0 if at < data.len() => data[at] ^= 1 << (v % 8),
            1 if at < data.len() => data[at] = v,
            2 => data.truncate(at),
            _ => data.insert(at, v),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_adapter_files_are_refused_or_applied(
        muts in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..5)
    ) {
        let model: Model<'_> = Model::from_gguf(image().bytes()).unwrap();
        let mut file = adapter_file().to_vec();
        mutate(&mut file, &muts);
        // The file's own CRC made right, so the checks behind it are reached.
        if file.len() >= 4 {
            let n = file.len() - 4;
            let crc = ruvllm_esp32::gguf::crc32(&file[..n]);
            file[n..].copy_from_slice(&crc.to_le_bytes());
        }
        let id = model_id(image().bytes());
        if let Ok(lora) = <IntLora>::read(&file, id, &model.config) {
            let mut arena = vec![0i32; IntState::arena_len(&model, 4)];
            let mut state = IntState::new(&model, &mut arena, 4).unwrap();
            state.forward_lora(&model, 1, 0, Some(&lora)).unwrap();
        }
    }

    #[test]
    fn mutated_sparse_rows_are_refused_or_multiplied(
        muts in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..5),
        extra_rows in 0usize..2,
    ) {
        let (_, s, rows, cols, group, bytes) = sparse_fixture();
        let mut b = bytes.clone();
        mutate(&mut b, &muts);
        let rows = rows - extra_rows;
        if let Ok(m) = SparseRows::new(&b, rows, *cols, *group) {
            let (xq, xs) = (vec![3i8; *cols], vec![0x0001_0000i32; cols.div_ceil(*group)]);
            let mut out = vec![0i32; rows];
            matvec_sparse(&mut out, &m, s, &xq, &xs);
        }
    }
}

#[test]
fn fixtures_are_valid() {
    let model: Model<'_> = Model::from_gguf(image().bytes()).unwrap();
    assert!(<IntLora>::read(adapter_file(), model_id(image().bytes()), &model.config).is_ok());
    let (codes, _, rows, cols, group, bytes) = sparse_fixture();
    assert!(SparseRows::new(bytes, *rows, *cols, *group).is_ok());
    assert!(codes.iter().filter(|&&c| c == 0).count() >= codes.len() * 7 / 10);
}
