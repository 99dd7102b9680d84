//! The `sparse-bench` board: no console. It takes the q8 matrices of the linked model's first
//! layer (wq, w1, w2), prunes a RAM copy of each by magnitude to 0-95% zeros, and counts the
//! instructions (`instret`, exact under `-icount shift=0`) of one product with the dense
//! kernel and one with the sparse rows (`infer::integer::sparse`); the two outputs must be equal
//! (else it exits with status 1). The break-even sparsity comes from these counts
//! (docs/BENCHMARKS.md, "Pruning": `ruvllm-esp32 board --sparse-bench`).
//!
//! Output, one record a line: `sb <matrix> <rows> <cols> <percent zeros> <dense instructions>
//! <sparse instructions> <dense bytes> <sparse bytes>`, then `sb end`.

use crate::uart::Uart;
use crate::{exit, instret, Fmt, IMAGE, LAYERS};
use core::fmt::Write as _;
use core::ptr::addr_of_mut;
use ruvllm_esp32::infer::integer::sparse::{
    encode, matvec_dense, matvec_sparse, prune_codes, quantize_activation, SparseRows,
};
use ruvllm_esp32::model::{Matrix, Model};

/// Largest matrix the benchmark copies (codes), and its widest side.
const MAX_CODES: usize = 16 * 1024;
const MAX_SIDE: usize = 512;

static mut CODES: [i8; MAX_CODES] = [0; MAX_CODES];
/// A group's count byte per row and group, two bytes per kept code at most.
static mut SPARSE: [u8; 3 * MAX_CODES] = [0; 3 * MAX_CODES];

pub fn run(mut uart: Uart) -> ! {
    let model: Model<'static, LAYERS> = match Model::from_gguf(&IMAGE.0) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(Fmt(&mut uart), "sb error the model image is refused: {e}");
            exit(2)
        }
    };
    let group = model.group;
    let Some(layer) = model.layers.first() else { exit(2) };
    // SAFETY: run is called once from main and never returns: the only references.
    let (codes, sparse) = unsafe { (&mut *addr_of_mut!(CODES), &mut *addr_of_mut!(SPARSE)) };
    for (name, m) in [("wq", &layer.wq), ("w1", &layer.w1), ("w2", &layer.w2)] {
        let Matrix::Q8 { q, s, rows, cols } = *m else {
            let _ = writeln!(Fmt(&mut uart), "sb error {name} is not a q8 matrix");
            exit(2)
        };
        if q.len() > MAX_CODES || cols > MAX_SIDE || rows > MAX_SIDE {
            let _ = writeln!(Fmt(&mut uart), "sb skip {name} {rows} {cols}");
            continue;
        }
        // An activation of the matrix's width: a fixed ramp with both signs, in Q16.16.
        let mut x = [0i32; MAX_SIDE];
        for (i, v) in x[..cols].iter_mut().enumerate() {
            *v = ((i as i32 * 7919) % 131_072) - 65_536;
        }
        let (mut xq, mut xs) = ([0i8; MAX_SIDE], [0i32; MAX_SIDE]);
        quantize_activation(&x[..cols], &mut xq, &mut xs, group);
        for percent in [0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 90, 95] {
            let codes = &mut codes[..q.len()];
            codes.copy_from_slice(q);
            prune_codes(codes, q.len() * percent / 100);
            let Ok(n) = encode(codes, cols, group, sparse) else { exit(2) };
            let Ok(rows_sparse) = SparseRows::new(&sparse[..n], rows, cols, group) else { exit(2) };
            let (mut dense, mut fast) = ([0i32; MAX_SIDE], [0i32; MAX_SIDE]);
            let t0 = instret();
            matvec_dense(&mut dense[..rows], codes, s, cols, &xq, &xs, group);
            let t1 = instret();
            matvec_sparse(&mut fast[..rows], &rows_sparse, s, &xq, &xs);
            let t2 = instret();
            let _ = writeln!(
                Fmt(&mut uart),
                "sb {name} {rows} {cols} {percent} {} {} {} {n}",
                t1 - t0,
                t2 - t1,
                q.len()
            );
            if dense[..rows] != fast[..rows] {
                let _ = writeln!(Fmt(&mut uart), "sb error {name} at {percent}%: sparse differs from dense");
                exit(1)
            }
        }
    }
    let _ = writeln!(Fmt(&mut uart), "sb end");
    exit(0)
}
