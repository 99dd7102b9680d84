//! The integer path's innermost loop for RISC-V chips (ESP32-C3/C6), written out in assembly:
//! the compiler, left to itself, reloads each activation once per row or spills the unrolled
//! loop's registers to the stack. Here every value of a group of 32 costs one activation load
//! shared by four rows, then a weight load, a multiply and an add per row: 3.25 instructions
//! a multiply-add, with no loop or pointer arithmetic (the offsets are immediates).
//! The board test checks the result against the host's portable kernel, token for token.

/// One value `j` of [`dot4`]: `x[j]` times `w_r[j]` added into `s_r` for the four rows; two
/// temporaries alternate so a load's result is not used by the next instruction.
macro_rules! step {
    ($j:literal) => {
        concat!(
            "lb {t}, ",
            $j,
            "({x})\n",
            "lb {a}, ",
            $j,
            "({w0})\n",
            "lb {b}, ",
            $j,
            "({w1})\n",
            "mul {a}, {a}, {t}\n",
            "mul {b}, {b}, {t}\n",
            "add {s0}, {s0}, {a}\n",
            "add {s1}, {s1}, {b}\n",
            "lb {a}, ",
            $j,
            "({w2})\n",
            "lb {b}, ",
            $j,
            "({w3})\n",
            "mul {a}, {a}, {t}\n",
            "mul {b}, {b}, {t}\n",
            "add {s2}, {s2}, {a}\n",
            "add {s3}, {s3}, {b}\n",
        )
    };
}

/// Four rows' exact sums over one group of 32 activations (`super::dot4_portable`'s values).
#[inline(always)]
pub(super) fn dot4(x: &[i8; 32], w: [&[i8; 32]; 4]) -> [i32; 4] {
    let (mut s0, mut s1, mut s2, mut s3) = (0i32, 0i32, 0i32, 0i32);
    // SAFETY: reads 32 bytes at each of five pointers that come from references to arrays of
    // 32 bytes; writes only the named registers.
    unsafe {
        core::arch::asm!(
            concat!(
                step!(0), step!(1), step!(2), step!(3), step!(4), step!(5), step!(6), step!(7),
                step!(8), step!(9), step!(10), step!(11), step!(12), step!(13), step!(14), step!(15),
                step!(16), step!(17), step!(18), step!(19), step!(20), step!(21), step!(22), step!(23),
                step!(24), step!(25), step!(26), step!(27), step!(28), step!(29), step!(30), step!(31),
            ),
            x = in(reg) x.as_ptr(),
            w0 = in(reg) w[0].as_ptr(),
            w1 = in(reg) w[1].as_ptr(),
            w2 = in(reg) w[2].as_ptr(),
            w3 = in(reg) w[3].as_ptr(),
            s0 = inout(reg) s0,
            s1 = inout(reg) s1,
            s2 = inout(reg) s2,
            s3 = inout(reg) s3,
            t = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack, readonly, pure),
        );
    }
    [s0, s1, s2, s3]
}
