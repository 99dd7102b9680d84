//! The `vector-bench` board: a `MicroHNSW` in .bss built over the base vectors of a blob linked
//! into flash, then every query searched once per ef_search value. `instret` is read around
//! each insert and each search (exact under `-icount shift=0`); the host
//! (`ruvllm-esp32 index bench --chip esp32c3`) computes recall from the printed ids.
//!
//! Output, one record a line, space-separated:
//! `vb index <storage> <n> <dim> <m> <m0> <up> <ef_construction> <k>`,
//! `vb insert <total instructions> <min> <max>`,
//! `vb ef <ef_search>`, then `vb q <query> <instructions> <id>...` for each query,
//! `vb exact` and the same query lines for the brute-force scan (`search_exact`),
//! `vb ram <size_of index> <static bytes> <stack peak while inserting> <stack peak while
//! searching>`, `vb end`.

use crate::uart::Uart;
use crate::{exit, instret, paint_stack, ram_use, Aligned, Fmt};
use core::fmt::Write as _;
use core::mem::{size_of, MaybeUninit};
use core::ptr::addr_of_mut;
use ruvllm_esp32::vector::{HNSWConfig, MicroHNSW, SearchResult};

// N, NQ, DIM, K, M, M0, UP, EF_CONSTRUCTION, EFS, SEED, METRIC, Store, STORAGE, DATA:
// computed by build.rs from the blob's header.
include!(concat!(env!("OUT_DIR"), "/vectors.rs"));

/// Base vectors then queries, f32 little-endian after the header, read from flash.
static BLOB: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("RUVLLM_VECTORS_BLOB")));

type Index = MicroHNSW<DIM, N, Store, M0, UP>;

/// The index, in .bss: RAM the linker accounts for (the link fails when it does not fit).
static mut INDEX: MaybeUninit<Index> = MaybeUninit::uninit();

/// Vector `i` of the blob (base vectors first, then the queries).
fn row(i: usize, out: &mut [f32; DIM]) {
    let start = DATA + 4 * DIM * i;
    for (x, b) in out.iter_mut().zip(BLOB.0[start..start + 4 * DIM].chunks_exact(4)) {
        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Out of line, so run's own frame stays small and each phase's stack peak is its own.
#[inline(never)]
fn insert(index: &mut Index, v: &[f32]) -> ruvllm_esp32::Result<u16> {
    index.insert(v)
}

/// The graph search, or the brute-force scan when `exact`.
#[inline(never)]
fn search(
    index: &mut Index,
    q: &[f32],
    out: &mut [SearchResult],
    exact: bool,
) -> ruvllm_esp32::Result<usize> {
    if exact {
        index.search_exact(q, out)
    } else {
        index.search_into(q, out)
    }
}

pub fn run(mut uart: Uart) -> ! {
    let mut w = Fmt(&mut uart);
    // What reading the counter twice costs, taken off every measurement.
    let a = instret();
    let overhead = instret() - a;
    let _ = writeln!(w, "vb index {STORAGE} {N} {DIM} {M} {M0} {UP} {EF_CONSTRUCTION} {K}");
    let cfg =
        HNSWConfig { m: M, ef_construction: EF_CONSTRUCTION, ef_search: EFS[0], metric: METRIC, seed: SEED };
    // SAFETY: run is called once and never returns, so this is the only reference to INDEX.
    let index = Index::new_in(unsafe { &mut *addr_of_mut!(INDEX) }, cfg);
    let mut v = [0.0f32; DIM];
    let (mut total, mut min, mut max) = (0u64, u64::MAX, 0u64);
    for i in 0..N {
        row(i, &mut v);
        let t0 = instret();
        let r = insert(index, &v);
        let t = (instret() - t0).saturating_sub(overhead);
        if let Err(e) = r {
            let _ = writeln!(w, "error: insert {i}: {e}");
            exit(4);
        }
        total += t;
        min = min.min(t);
        max = max.max(t);
    }
    let _ = writeln!(w, "vb insert {total} {min} {max}");
    let insert_stack = ram_use().stack_bytes;
    paint_stack();
    let mut out = [SearchResult { id: 0, distance: 0.0 }; K];
    // One pass per ef_search value, then one brute-force pass (ef 0 marks it).
    for ef in EFS.into_iter().chain([0]) {
        if ef == 0 {
            let _ = writeln!(w, "vb exact");
        } else {
            index.set_ef_search(ef);
            let _ = writeln!(w, "vb ef {ef}");
        }
        for q in 0..NQ {
            row(N + q, &mut v);
            let t0 = instret();
            let r = search(index, &v, &mut out, ef == 0);
            let t = (instret() - t0).saturating_sub(overhead);
            let n = match r {
                Ok(n) => n,
                Err(e) => {
                    let _ = writeln!(w, "error: query {q}: {e}");
                    exit(5);
                }
            };
            let _ = write!(w, "vb q {q} {t}");
            for r in &out[..n] {
                let _ = write!(w, " {}", r.id);
            }
            let _ = writeln!(w);
        }
    }
    let ram = ram_use();
    let _ =
        writeln!(w, "vb ram {} {} {insert_stack} {}", size_of::<Index>(), ram.static_bytes, ram.stack_bytes);
    let _ = writeln!(w, "vb end");
    exit(0)
}
