//! Sparse rows for q8 matrices pruned without structure (`convert --prune S`): only the
//! non-zero int8 codes are kept, with their place, and the kernel skips the zeros.
//!
//! **Format** ([`encode`]), row after row; in each row, group after group (the q8 groups of
//! `group` columns, whose scales stay as the dense matrix has them): a count byte `n`, then `n`
//! pairs (column within the group `u8`, code `i8`), columns increasing. A group with no
//! non-zero code is its count byte alone. Bytes: `rows x groups + 2 x non-zeros`, so the
//! format is smaller than the dense codes from 50% sparsity on (at groups of 32).
//!
//! **Kernel** ([`matvec_sparse`]): each group's exact integer sum over its non-zero codes, then
//! the same scaling and rounding as the dense kernel ([`matvec_dense`], the integer path's own
//! q8 kernel): the zeros add nothing to an exact integer sum, and a group with none left adds
//! 0, so the output is bit-identical to the dense kernel on the same codes.
//!
//! **When** ([`BREAK_EVEN`]): a kept code costs a byte load more than a dense one (its column)
//! and the dense kernel runs four rows through each activation load (unrolled on rv32), so the
//! sparse kernel only wins well past half zeros: on the QEMU ESP32-C3 board it takes more
//! instructions than the dense kernel at 70% zeros on some matrix of the built-in model's layer
//! and fewer at 75% on all of them (docs/BENCHMARKS.md, "Pruning", `ruvllm-esp32 board
//! --sparse-bench`).

use super::{matvec, quantize, sat32, scaled, shr_round, QMat, Scale, ACC, FRAC};
use crate::error::{Error, Result};

/// Widest group the format takes (a count and a column fit a byte).
pub const MAX_GROUP: usize = 255;

/// Sparsity (in percent, of a matrix's codes) from which [`matvec_sparse`] takes fewer
/// instructions than [`matvec_dense`] on the QEMU ESP32-C3 board; below it the dense kernel is
/// kept ([`prefer_sparse`]).
pub const BREAK_EVEN: u32 = 75;

/// Whether a matrix with `zeros` of its `codes` zero should run sparse ([`BREAK_EVEN`]).
pub fn prefer_sparse(zeros: usize, codes: usize) -> bool {
    codes > 0 && zeros as u64 * 100 >= BREAK_EVEN as u64 * codes as u64
}

/// Magnitude pruning of int8 codes in place: the `zeros` codes smallest in magnitude become
/// zero (ties: the first in order), by a histogram of magnitudes, without allocating.
pub fn prune_codes(q: &mut [i8], zeros: usize) {
    let mut hist = [0usize; 129];
    q.iter().for_each(|&c| hist[c.unsigned_abs() as usize] += 1);
    // The magnitude `t` at which the count is reached, and how many codes of it go.
    let (mut below, mut t) = (0, 0);
    while t < 128 && below + hist[t] < zeros {
        below += hist[t];
        t += 1;
    }
    let mut at_t = zeros.min(q.len()) - below.min(zeros);
    for c in q.iter_mut() {
        let m = c.unsigned_abs() as usize;
        if m < t {
            *c = 0;
        } else if m == t && at_t > 0 {
            *c = 0;
            at_t -= 1;
        }
    }
}

/// Bytes [`encode`] writes for the row-major codes `q` of `cols` columns.
pub fn encoded_len(q: &[i8], cols: usize, group: usize) -> usize {
    let rows = q.len() / cols.max(1);
    rows * cols.div_ceil(group.max(1)) + 2 * q.iter().filter(|&&c| c != 0).count()
}

/// Writes the sparse rows of the row-major codes `q` (`cols` columns, groups of `group`) to
/// `out`: their length, or an error for a shape that does not fit or too small an `out`.
pub fn encode(q: &[i8], cols: usize, group: usize, out: &mut [u8]) -> Result<usize> {
    check_shape(q.len(), cols, group)?;
    let need = encoded_len(q, cols, group);
    let have = out.len();
    let out = out.get_mut(..need).ok_or(Error::BufferTooSmall { need, have })?;
    let mut at = 0;
    for row in q.chunks_exact(cols) {
        for g in row.chunks(group) {
            let count = at;
            at += 1;
            for (i, &c) in g.iter().enumerate().filter(|(_, &c)| c != 0) {
                out[at] = i as u8;
                out[at + 1] = c as u8;
                at += 2;
            }
            out[count] = ((at - count - 1) / 2) as u8;
        }
    }
    Ok(at)
}

fn check_shape(codes: usize, cols: usize, group: usize) -> Result<()> {
    if cols == 0 || !codes.is_multiple_of(cols) || group == 0 || group > MAX_GROUP {
        return Err(Error::Invalid {
            what: "sparse rows: a shape or group that does not fit (groups of 1 to 255)",
        });
    }
    Ok(())
}

/// Sparse rows checked against their shape: every count, column and length is in range, so the
/// kernel reads them without a bounds failure (hostile bytes are an error here, not a panic).
#[derive(Clone, Copy, Debug)]
pub struct SparseRows<'a> {
    bytes: &'a [u8],
    rows: usize,
    cols: usize,
    group: usize,
}

impl<'a> SparseRows<'a> {
    pub fn new(bytes: &'a [u8], rows: usize, cols: usize, group: usize) -> Result<Self> {
        check_shape(
            rows.checked_mul(cols).ok_or(Error::Invalid { what: "sparse rows: too many" })?,
            cols,
            group,
        )?;
        const BAD: Error = Error::Invalid { what: "sparse rows: damaged (a count or column out of range)" };
        let mut at = 0;
        for _ in 0..rows {
            for start in (0..cols).step_by(group) {
                let len = group.min(cols - start);
                let n = *bytes.get(at).ok_or(BAD)? as usize;
                let pairs = bytes.get(at + 1..at + 1 + 2 * n).ok_or(BAD)?;
                let mut last = None;
                for p in pairs.chunks_exact(2) {
                    let i = p[0] as usize;
                    if i >= len || last.is_some_and(|l| i <= l) {
                        return Err(BAD);
                    }
                    last = Some(i);
                }
                at += 1 + 2 * n;
            }
        }
        if at != bytes.len() {
            return Err(BAD);
        }
        Ok(SparseRows { bytes, rows, cols, group })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn group(&self) -> usize {
        self.group
    }

    /// The encoding's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Byte offset of row `r` (at most `rows`): rows differ in length, so a scan over the
    /// count bytes before it. Checked at construction, so every count read is in range.
    fn row_offset(&self, r: usize) -> usize {
        let mut at = 0;
        for _ in 0..r.min(self.rows) * self.cols.div_ceil(self.group) {
            at += 1 + 2 * self.bytes[at] as usize;
        }
        at
    }

    /// Rows `r` (clamped to the matrix) as sparse rows of their own.
    pub fn sub(&self, r: core::ops::Range<usize>) -> SparseRows<'a> {
        let (start, end) = (r.start.min(self.rows), r.end.min(self.rows).max(r.start.min(self.rows)));
        let (a, b) = (self.row_offset(start), self.row_offset(end));
        SparseRows { bytes: &self.bytes[a..b], rows: end - start, ..*self }
    }

    /// Calls `f(column, code)` for each kept code of row `r`, columns increasing.
    pub fn for_row(&self, r: usize, mut f: impl FnMut(usize, i8)) {
        let one = self.sub(r..r + 1);
        let mut at = 0;
        for g0 in (0..one.rows * self.cols).step_by(self.group) {
            let n = one.bytes[at] as usize;
            for p in one.bytes[at + 1..at + 1 + 2 * n].chunks_exact(2) {
                f(g0 + p[0] as usize, p[1] as i8);
            }
            at += 1 + 2 * n;
        }
    }

    /// Row `r`'s codes, dense, into `out` (`cols` values; zeros where none is kept).
    pub fn row_codes(&self, r: usize, out: &mut [i8]) {
        out[..self.cols].fill(0);
        self.for_row(r, |c, v| out[c] = v);
    }

    /// Bytes of the encoding.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// `out = W x` in Q16.16 over sparse rows `m` with the dense matrix's group scales `s` (one
/// per row and group), from the int8 activation `xq` and its packed group scales `xs`
/// ([`quantize_activation`]): bit-identical to [`matvec_dense`] on the same codes.
pub fn matvec_sparse(out: &mut [i32], m: &SparseRows<'_>, s: &[f32], xq: &[i8], xs: &[i32]) {
    matvec_bits(out, m, bytemuck::cast_slice(s), xq, xs)
}

/// [`matvec_sparse`] with the scales as IEEE-754 bits (the integer path's view of the image).
/// `out` may be shorter than the matrix: its first rows.
pub(super) fn matvec_bits(out: &mut [i32], m: &SparseRows<'_>, s: &[u32], xq: &[i8], xs: &[i32]) {
    let (cols, group) = (m.cols, m.group);
    let ng = cols.div_ceil(group);
    let (b, xq, xs) = (m.bytes, &xq[..cols], &xs[..ng]);
    let mut at = 0;
    for (o, ws) in out.iter_mut().take(m.rows).zip(s.chunks_exact(ng)) {
        let mut acc = 0i64;
        for (g, (sx, sw)) in xs.iter().zip(ws).enumerate() {
            let n = b[at] as usize;
            let pairs = &b[at + 1..at + 1 + 2 * n];
            at += 1 + 2 * n;
            if n == 0 {
                continue;
            }
            let xg = &xq[g * group..(g * group + group).min(cols)];
            let mut isum = 0i32;
            for p in pairs.chunks_exact(2) {
                // SAFETY: `SparseRows::new` checked every column against its group's width,
                // which is `xg`'s length.
                isum += p[1] as i8 as i32 * unsafe { *xg.get_unchecked(p[0] as usize) } as i32;
            }
            acc = acc.saturating_add(scaled(isum, *sw, Scale::unpack(*sx)));
        }
        *o = sat32(shr_round(acc, ACC - FRAC as i32));
    }
}

/// The integer path's dense q8 kernel: `out = W x` for row-major codes `q` of `cols` columns
/// with group scales `s`.
pub fn matvec_dense(out: &mut [i32], q: &[i8], s: &[f32], cols: usize, xq: &[i8], xs: &[i32], group: usize) {
    matvec(out, &QMat { q, s: bytemuck::cast_slice(s), cols }, xq, xs, group)
}

/// An activation (Q16.16) as the integer path quantizes it for a matrix: int8 codes in `xq`
/// and one packed scale per group in `xs`.
pub fn quantize_activation(x: &[i32], xq: &mut [i8], xs: &mut [i32], group: usize) {
    quantize(x, xq, xs, group)
}
