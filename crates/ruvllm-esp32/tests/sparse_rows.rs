//! Sparse rows (`infer::integer::sparse`) on the built-in model's q8 matrices, pruned by
//! magnitude to 0-95%: the sparse kernel's output is bit-identical to the integer path's dense
//! kernel on the same codes, the encoding has the size the format gives, and damaged encodings
//! are refused, never a panic.
//!
//! `cargo test -p ruvllm-esp32 --test sparse_rows`

mod common;

use ruvllm_esp32::infer::integer::sparse::{
    encode, encoded_len, matvec_dense, matvec_sparse, prefer_sparse, prune_codes, quantize_activation,
    SparseRows, BREAK_EVEN,
};
use ruvllm_esp32::model::{Matrix, Model};

fn builtin() -> common::Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    common::Image::new(&std::fs::read(path).unwrap())
}

/// splitmix64, for activations.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The codes with the `percent` smallest in magnitude set to zero (ties by position), by
/// sorting: what `prune_codes` must give.
fn pruned(q: &[i8], percent: usize) -> Vec<i8> {
    let mut order: Vec<usize> = (0..q.len()).collect();
    order.sort_by_key(|&i| (q[i].unsigned_abs(), i));
    let mut out = q.to_vec();
    for &i in &order[..q.len() * percent / 100] {
        out[i] = 0;
    }
    let mut fast = q.to_vec();
    prune_codes(&mut fast, q.len() * percent / 100);
    assert_eq!(fast, out, "prune_codes at {percent}%");
    out
}

#[test]
fn sparse_rows_are_bit_exact_with_the_dense_kernel_on_pruned_model_matrices() {
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let group = model.group;
    let mut seed = 7u64;
    let mut checked = 0;
    for layer in &model.layers {
        for m in [&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.w1, &layer.w2, &layer.w3] {
            let Matrix::Q8 { q, s, rows, cols } = *m else { panic!("the built-in model is q8") };
            for percent in [0, 25, 50, 75, 90, 95, 100] {
                let codes = pruned(q, percent);
                let mut bytes = vec![0u8; encoded_len(&codes, cols, group)];
                let n = encode(&codes, cols, group, &mut bytes).unwrap();
                assert_eq!(n, bytes.len());
                let zeros = codes.iter().filter(|&&c| c == 0).count();
                assert_eq!(n, rows * cols.div_ceil(group) + 2 * (codes.len() - zeros));
                let sparse = SparseRows::new(&bytes, rows, cols, group).unwrap();
                for _ in 0..3 {
                    let x: Vec<i32> = (0..cols).map(|_| (next(&mut seed) as i32) >> 12).collect();
                    let mut xq = vec![0i8; cols];
                    let mut xs = vec![0i32; cols.div_ceil(group)];
                    quantize_activation(&x, &mut xq, &mut xs, group);
                    let (mut dense, mut fast) = (vec![0i32; rows], vec![0i32; rows]);
                    matvec_dense(&mut dense, &codes, s, cols, &xq, &xs, group);
                    matvec_sparse(&mut fast, &sparse, s, &xq, &xs);
                    assert_eq!(dense, fast, "{rows}x{cols} at {percent}%");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 5 * 7 * 7 * 3, "{checked}");
    assert!(!prefer_sparse(0, 100) && prefer_sparse(95, 100) && !prefer_sparse(0, 0));
    assert!(prefer_sparse(BREAK_EVEN as usize, 100) && !prefer_sparse(BREAK_EVEN as usize - 1, 100));
}

#[test]
fn damaged_or_misshapen_sparse_rows_are_refused() {
    let codes: Vec<i8> = (0..8 * 64).map(|i| if i % 3 == 0 { (i % 127) as i8 } else { 0 }).collect();
    let mut bytes = vec![0u8; encoded_len(&codes, 64, 32)];
    encode(&codes, 64, 32, &mut bytes).unwrap();
    assert!(SparseRows::new(&bytes, 8, 64, 32).is_ok());
    // Every single-byte change either still decodes to a valid shape or is an error; never a panic.
    for i in 0..bytes.len() {
        for v in [0u8, 1, 31, 32, 33, 200, 255] {
            let mut bad = bytes.clone();
            bad[i] = v;
            let _ = SparseRows::new(&bad, 8, 64, 32);
        }
    }
    let mut bad = bytes.clone();
    bad[0] = 33; // more pairs than the group has columns
    assert!(SparseRows::new(&bad, 8, 64, 32).is_err());
    assert!(SparseRows::new(&bytes[..bytes.len() - 1], 8, 64, 32).is_err(), "truncated");
    assert!(SparseRows::new(&[bytes.clone(), vec![0]].concat(), 8, 64, 32).is_err(), "trailing");
    assert!(SparseRows::new(&bytes, 9, 64, 32).is_err(), "more rows than encoded");
    assert!(SparseRows::new(&bytes, 8, 64, 0).is_err() && SparseRows::new(&bytes, 8, 64, 256).is_err());
    assert!(SparseRows::new(&bytes, usize::MAX, 64, 32).is_err());
    assert!(encode(&codes, 64, 32, &mut [0u8; 10]).is_err(), "too small a buffer");
    assert!(
        encode(&codes, 0, 32, &mut bytes.clone()).is_err() && encode(&codes, 60, 32, &mut bytes).is_err()
    );
}
