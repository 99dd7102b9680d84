//! Bit-packed rows of the ternary (1.58-bit) and binary (1-bit) weight formats
//! ([`crate::quant::WeightFormat`]): how the codes of [`crate::quant::ternary_code`] and
//! [`crate::quant::binary_code`] sit in the image's bytes.
//!
//! * Ternary: 2 bits per weight, 4 weights per byte, weight `j` of a row in byte `j / 4` at
//!   bits `2 (j % 4)` and up: `00` = 0, `01` = +1, `10` = -1; `11` is invalid (refused at load).
//! * Binary: 1 bit per weight, 8 per byte, weight `j` in byte `j / 8` at bit `j % 8`: `0` = +1,
//!   `1` = -1.
//!
//! Each row is padded to whole bytes (so every row starts on a byte) and the padding codes are
//! zero bits. The value of a weight is `code * scale` with one f32 scale per row.

use crate::error::{Error, Result};

/// Bytes of one packed ternary row of `cols` weights.
#[inline]
pub const fn ternary_row_bytes(cols: usize) -> usize {
    cols.div_ceil(4)
}

/// Bytes of one packed binary row of `cols` weights.
#[inline]
pub const fn binary_row_bytes(cols: usize) -> usize {
    cols.div_ceil(8)
}

/// The 2-bit field of a ternary code (`-1`, `0` or `1`; anything else is clamped).
#[inline]
pub const fn ternary_bits(code: i8) -> u8 {
    if code > 0 {
        0b01
    } else if code < 0 {
        0b10
    } else {
        0
    }
}

/// The code a 2-bit field stands for: `(b & 1) - (b >> 1)`, so the invalid `11` reads as 0
/// (the loader refuses it before any kernel sees it).
#[inline]
pub const fn ternary_value(bits: u8) -> i8 {
    (bits & 1) as i8 - ((bits >> 1) & 1) as i8
}

/// Code of weight `j` of a packed ternary row.
#[inline]
pub fn ternary_at(row: &[u8], j: usize) -> i8 {
    ternary_value(row[j / 4] >> (2 * (j % 4)))
}

/// Code of weight `j` of a packed binary row.
#[inline]
pub fn binary_at(row: &[u8], j: usize) -> i8 {
    if (row[j / 8] >> (j % 8)) & 1 != 0 {
        -1
    } else {
        1
    }
}

/// Packs one row of ternary codes into `out` (`ternary_row_bytes(codes.len())` bytes).
pub fn pack_ternary(codes: &[i8], out: &mut [u8]) {
    out.fill(0);
    for (j, c) in codes.iter().enumerate() {
        out[j / 4] |= ternary_bits(*c) << (2 * (j % 4));
    }
}

/// Packs one row of binary codes (negative = -1, else +1) into `out`.
pub fn pack_binary(codes: &[i8], out: &mut [u8]) {
    out.fill(0);
    for (j, c) in codes.iter().enumerate() {
        if *c < 0 {
            out[j / 8] |= 1 << (j % 8);
        }
    }
}

/// Checks a packed ternary matrix of `rows` rows: its length, no `11` code, zero padding.
pub fn validate_ternary(q: &[u8], rows: usize, cols: usize) -> Result<()> {
    let stride = ternary_row_bytes(cols);
    if Some(q.len()) != rows.checked_mul(stride) {
        return Err(Error::Invalid { what: "packed ternary tensor size does not match its rows" });
    }
    // Bits of the last byte of a row that hold weights (the rest is padding).
    let tail = match cols % 4 {
        0 => 0xff,
        r => (1u8 << (2 * r)) - 1,
    };
    for row in q.chunks_exact(stride.max(1)) {
        for b in row {
            // A pair of bits `11` anywhere: both bits of one field set.
            if b & (b >> 1) & 0b0101_0101 != 0 {
                return Err(Error::Invalid { what: "ternary weight with the invalid 2-bit code 3" });
            }
        }
        if row.last().is_some_and(|b| b & !tail != 0) {
            return Err(Error::Invalid { what: "packed ternary row with non-zero padding" });
        }
    }
    Ok(())
}

/// Checks a packed binary matrix of `rows` rows: its length and zero padding.
pub fn validate_binary(q: &[u8], rows: usize, cols: usize) -> Result<()> {
    let stride = binary_row_bytes(cols);
    if Some(q.len()) != rows.checked_mul(stride) {
        return Err(Error::Invalid { what: "packed binary tensor size does not match its rows" });
    }
    let tail = match cols % 8 {
        0 => 0xff,
        r => (1u8 << r) - 1,
    };
    if q.chunks_exact(stride.max(1)).any(|row| row.last().is_some_and(|b| b & !tail != 0)) {
        return Err(Error::Invalid { what: "packed binary row with non-zero padding" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_with_padding() {
        for cols in [1usize, 3, 4, 5, 8, 9, 172] {
            let codes: std::vec::Vec<i8> = (0..cols).map(|j| ((j * 7 + 3) % 3) as i8 - 1).collect();
            let mut t = std::vec![0u8; ternary_row_bytes(cols)];
            pack_ternary(&codes, &mut t);
            validate_ternary(&t, 1, cols).unwrap();
            let mut b = std::vec![0u8; binary_row_bytes(cols)];
            pack_binary(&codes, &mut b);
            validate_binary(&b, 1, cols).unwrap();
            for (j, c) in codes.iter().enumerate() {
                assert_eq!(ternary_at(&t, j), *c);
                assert_eq!(binary_at(&b, j), if *c < 0 { -1 } else { 1 });
            }
        }
    }

    #[test]
    fn invalid_codes_and_padding_are_refused() {
        assert!(validate_ternary(&[0b1100_0000], 1, 4).is_err());
        assert!(validate_ternary(&[0b0000_0011], 1, 4).is_err());
        assert!(validate_ternary(&[0b0110_1001], 1, 4).is_ok());
        assert!(validate_ternary(&[0b0100_0000], 1, 3).is_err());
        assert!(validate_ternary(&[0, 0], 1, 4).is_err());
        assert!(validate_binary(&[0b1000_0000], 1, 7).is_err());
        assert!(validate_binary(&[0b0100_0000], 1, 7).is_ok());
        assert!(validate_binary(&[0; 3], 2, 9).is_err());
        assert!(validate_binary(&[0; 4], usize::MAX, 9).is_err());
    }
}
