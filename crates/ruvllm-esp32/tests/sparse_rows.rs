//! Sparse rows (`infer::integer::sparse`) on the built-in model's q8 matrices, pruned by
//! magnitude to 0-95%: the sparse kernel's output is bit-identical to the integer path's dense
//! kernel on the same codes, the encoding has the size the format gives, and damaged encodings
//! are refused, never a panic.
//!
//! `cargo test -p ruvllm-esp32 --features std --test sparse_rows` (the image tests need `alloc`)

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

#[cfg(feature = "alloc")]
/// The built-in model pruned (unstructured) to `sparsity`, as images with sparse rows (and how
/// many matrices went sparse) and stored dense.
fn pruned_images(sparsity: f32) -> (Vec<u8>, usize, Vec<u8>) {
    use ruvllm_esp32::convert::{load_gguf, Quant};
    use ruvllm_esp32::prune::{prune, Pruning};
    let mut host = load_gguf(builtin().bytes()).unwrap();
    prune(&mut host, sparsity, Pruning::Unstructured).unwrap();
    let (sparse, n) = host.to_gguf_sparse(Quant::Q8, true).unwrap();
    (sparse, n, host.to_gguf(Quant::Q8).unwrap())
}

/// An image whose pruned matrices are stored as sparse rows computes exactly what the same
/// image stored dense computes: the integer path (single positions and batches, logits bit for
/// bit), the float path with the reference kernels (bit for bit) and with this host's fastest.
/// Below the break-even nothing goes sparse and the image is the dense one, byte for byte.
#[cfg(feature = "alloc")]
#[test]
fn a_pruned_image_with_sparse_rows_computes_what_the_dense_image_computes() {
    use ruvllm_esp32::infer::{IntBatch, IntState, State};
    use ruvllm_esp32::kernels::Kernels;
    let (same, n, dense) = pruned_images(0.5);
    assert_eq!((n, &same), (0, &dense), "50%: below the break-even, every matrix dense");
    for sparsity in [0.75, 0.9] {
        let (sparse, n, dense) = pruned_images(sparsity);
        assert_eq!(n, 35, "{sparsity}: every block matrix of the 5 layers is past the break-even");
        assert!(sparse.len() < dense.len());
        let (si, di) = (common::Image::new(&sparse), common::Image::new(&dense));
        let s: Model<'_> = Model::from_gguf(si.bytes()).unwrap();
        let d: Model<'_> = Model::from_gguf(di.bytes()).unwrap();
        assert!(s.checksum_verified);
        assert!(s.layers.iter().all(|l| matches!(l.w2, Matrix::Sparse { .. })));
        assert!(matches!(d.layers[0].w2, Matrix::Q8 { .. }));
        let tokens = [1u32, 300, 45, 77, 12, 400, 9, 250, 3, 60];
        let seq = 16;
        let int_logits = |m: &Model<'_>| {
            let mut a = vec![0i32; IntState::arena_len(m, seq)];
            let mut st = IntState::new(m, &mut a, seq).unwrap();
            tokens.iter().enumerate().map(|(p, &t)| st.forward(m, t, p).unwrap().to_vec()).collect::<Vec<_>>()
        };
        let singles = int_logits(&s);
        assert_eq!(singles, int_logits(&d), "{sparsity}: integer path");
        // The batch path reads the sparse rows tile by tile.
        let mut a = vec![0i32; IntState::arena_len(&s, seq)];
        let mut st = IntState::new(&s, &mut a, seq).unwrap();
        let mut ba = vec![0i32; IntBatch::arena_len(&s, 8)];
        let mut batch = IntBatch::new(&s, &mut ba, 8).unwrap();
        st.forward_batch(&s, &mut batch, &tokens[..8], 0, true).unwrap();
        for (i, want) in singles.iter().take(8).enumerate() {
            assert_eq!(batch.logits(i), &want[..], "{sparsity}: integer batch, position {i}");
        }
        for (exact, k) in [(true, Kernels::REFERENCE), (false, Kernels::detect())] {
            let float_logits = |m: &Model<'_>| {
                let mut a = vec![0f32; State::arena_len(m, seq)];
                let mut st = State::new(m, &mut a, seq, k).unwrap();
                tokens
                    .iter()
                    .enumerate()
                    .map(|(p, &t)| st.forward(m, t, p).unwrap().to_vec())
                    .collect::<Vec<_>>()
            };
            let (fs, fd) = (float_logits(&s), float_logits(&d));
            if exact {
                assert_eq!(fs, fd, "{sparsity}: float path, reference kernels");
            }
            // Other kernels sum in another order: the same to rounding.
            for (a, b) in fs.iter().flatten().zip(fd.iter().flatten()) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{sparsity} {k:?}: {a} vs {b}");
            }
        }
        // Read back to f32 (re-conversion, `train --init`): the dense image's weights.
        let (hs, hd) = (
            ruvllm_esp32::convert::load_gguf(&sparse).unwrap(),
            ruvllm_esp32::convert::load_gguf(&dense).unwrap(),
        );
        assert_eq!(hs.layers, hd.layers, "{sparsity}: host loader");
    }
}

/// Damaged sparse rows in an image (a count past its group, a column out of range or out of
/// order, a length that does not match, a wrong tensor type or shape) are refused by the
/// chip's loader and the host's, with an error, never a panic.
#[cfg(feature = "alloc")]
#[test]
fn damaged_sparse_rows_in_an_image_are_refused() {
    use ruvllm_esp32::gguf::Gguf;
    let (sparse, _, _) = pruned_images(0.9);
    let g = Gguf::parse(&sparse).unwrap();
    let t = g.tensor("blk.0.ffn_down.weight.sparse").unwrap();
    let at = t.data.as_ptr() as usize - sparse.as_ptr() as usize;
    let len = t.data.len();
    // The first group's count byte and its first pair.
    let first = t.data[0] as usize;
    assert!(first > 0, "the first group keeps a code");
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("count past the group", {
            let mut b = sparse.clone();
            b[at] = 33;
            b
        }),
        ("column out of range", {
            let mut b = sparse.clone();
            b[at + 1] = 200;
            b
        }),
        ("columns out of order", {
            // The first group keeping two codes: its second column made its first's.
            let mut g = 0;
            while t.data[g] < 2 {
                g += 1 + 2 * t.data[g] as usize;
            }
            let mut b = sparse.clone();
            b[at + g + 3] = b[at + g + 1];
            b
        }),
        ("one count short", {
            let mut b = sparse.clone();
            b[at] -= 1;
            b
        }),
        ("the last group running past the end", {
            let (mut g, mut last) = (0, 0);
            while g < len {
                last = g;
                g += 1 + 2 * t.data[g] as usize;
            }
            let mut b = sparse.clone();
            b[at + last] += 1;
            b
        }),
    ];
    for (what, bytes) in damaged {
        let img = common::Image::new(&bytes);
        let e = <Model<'_>>::from_gguf_unverified(img.bytes());
        assert!(e.is_err(), "{what}: the engine's loader accepted it");
        assert!(ruvllm_esp32::convert::load_gguf(&bytes).is_err(), "{what}: the host loader accepted it");
        // The whole image's checksum refuses it too.
        assert!(<Model<'_>>::from_gguf(img.bytes()).is_err(), "{what}");
    }
}
