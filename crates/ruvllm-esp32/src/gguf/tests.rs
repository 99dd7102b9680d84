use super::*;

#[test]
fn f16_conversion_is_exact_for_every_half() {
    for bits in 0..=u16::MAX {
        let f = f16_to_f32(bits);
        if f.is_nan() {
            assert!(f32_to_f16(f) & 0x7c00 == 0x7c00 && f32_to_f16(f) & 0x3ff != 0);
        } else {
            assert_eq!(f32_to_f16(f), bits, "{bits:#06x} -> {f}");
        }
    }
    assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8); // smallest subnormal, 2^-24
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
}

#[test]
fn bytes_for_checks_blocks() {
    assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
    assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
    assert_eq!(GgmlType::F16.bytes_for(3), Some(6));
    assert_eq!(GgmlType::I8.bytes_for(5), Some(5));
    assert_eq!(GgmlType::Other(999).bytes_for(32), None);
    assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    for id in 0..40 {
        assert_eq!(GgmlType::from_id(id).id(), id);
    }
}

#[test]
fn rejects_garbage_headers() {
    assert_eq!(Gguf::parse(b"").unwrap_err(), Error::BadMagic { expected: "GGUF" });
    assert_eq!(Gguf::parse(b"GGML\x03\0\0\0").unwrap_err(), Error::BadMagic { expected: "GGUF" });
    let mut h = [0u8; 24];
    h[..4].copy_from_slice(b"GGUF");
    h[4] = 1;
    assert!(matches!(Gguf::parse(&h), Err(Error::Unsupported { .. })));
    h[4] = 3;
    // Zero tensors, zero KVs: valid and empty.
    let g = Gguf::parse(&h).unwrap();
    assert_eq!(g.n_tensors(), 0);
    assert_eq!(g.data_section().len(), 0);
    assert_eq!(g.verify_checksum(), Ok(false));
    // Huge counts are rejected before any loop.
    h[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(Gguf::parse(&h), Err(Error::Truncated { .. })));
}

#[test]
fn as_f32_checks_alignment_and_length() {
    let v = [1.0f32, 2.0, 3.0];
    // SAFETY: viewing an f32 array as bytes.
    let b = unsafe { core::slice::from_raw_parts(v.as_ptr().cast::<u8>(), 12) };
    assert_eq!(as_f32(b).unwrap(), &v);
    assert!(matches!(as_f32(&b[..11]), Err(Error::Invalid { .. })));
    assert!(matches!(as_f32(&b[1..9]), Err(Error::Misaligned { .. })));
    assert_eq!(as_i8(&[0xff, 1]), &[-1i8, 1]);
}

#[cfg(feature = "alloc")]
mod with_writer {
    use super::super::writer::GgufWriter;
    use super::*;
    use alloc::vec::Vec;

    fn sample() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add_str("general.architecture", "llama");
        w.add_u32("a.u32", 7);
        w.add_i32("a.i32", -3);
        w.add_f32("a.f32", 0.5);
        w.add_bool("a.bool", true);
        w.add_str_array("a.strs", &[b"x", b"", b"\xffyz"]);
        w.add_f32_array("a.f32s", &[1.0, -2.0]);
        w.add_i32_array("a.i32s", &[5, -6]);
        w.add_u32_array("a.u32s", &[9, 10, 11]);
        let f: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor("t.f32", &[3, 2], GgmlType::F32, f).unwrap();
        w.add_tensor("t.i8", &[5], GgmlType::I8, &[1u8, 2, 3, 4, 5][..]).unwrap();
        w.add_tensor("t.q8", &[32], GgmlType::Q8_0, [0u8; 34].to_vec()).unwrap();
        w.finish()
    }

    /// `get` and `tensor` step over what they skip without decoding it: they find exactly
    /// what a full walk finds, for every key and name, and nothing for absent ones.
    #[test]
    fn lookups_agree_with_a_full_walk() {
        let bytes = sample();
        let g = Gguf::parse(&bytes).unwrap();
        for (k, v) in g.kvs() {
            assert_eq!(format!("{:?}", g.get(k)), format!("{:?}", Some(v)), "{k}");
        }
        for t in g.tensors() {
            let found = g.tensor(t.name).unwrap();
            assert_eq!((found.name, found.dims, found.ty, found.data), (t.name, t.dims, t.ty, t.data));
        }
        for absent in ["", "a", "a.u3", "a.u32x", "t.f3", "t.q8 "] {
            assert!(g.get(absent).is_none() && g.tensor(absent).is_none(), "{absent:?}");
        }
    }

    #[test]
    fn writer_output_reads_back() {
        let bytes = sample();
        assert_eq!(bytes, sample(), "writer output is deterministic");
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.verify_checksum(), Ok(true));
        assert_eq!(g.get_str("general.architecture"), Ok("llama"));
        assert_eq!(g.get_u32("a.u32"), Ok(7));
        assert_eq!(g.get_u32("a.i32"), Err(Error::Invalid { what: "a.i32" }));
        assert_eq!(g.get_u32("nope"), Err(Error::Missing { what: "nope" }));
        assert_eq!(g.get_f32("a.f32"), Ok(0.5));
        assert!(matches!(g.get("a.bool"), Some(Value::Bool(true))));
        let strs = g.get_array("a.strs").unwrap();
        assert_eq!(strs.len, 3);
        let v: Vec<&[u8]> = strs.str_iter().collect();
        assert_eq!(v, [&b"x"[..], b"", b"\xffyz"]);
        let f = g.get_array("a.f32s").unwrap();
        assert_eq!((f.f32_at(0), f.f32_at(1), f.f32_at(2)), (Some(1.0), Some(-2.0), None));
        assert_eq!(g.get_array("a.i32s").unwrap().i32_at(1), Some(-6));
        assert_eq!(g.get_array("a.u32s").unwrap().u32_at(2), Some(11));
        assert_eq!(g.get_array("a.u32s").unwrap().i32_at(0), None, "element type is checked");
        assert_eq!(g.kvs().count(), 11);

        let t = g.tensor("t.f32").unwrap();
        assert_eq!((t.n_dims, t.dims, t.ty, t.n_elements()), (2, [3, 2, 1, 1], GgmlType::F32, 6));
        let t8 = g.tensor("t.i8").unwrap();
        assert_eq!(as_i8(t8.data), &[1, 2, 3, 4, 5]);
        assert_eq!(g.tensor("t.q8").unwrap().data.len(), 34);
        assert_eq!(g.tensors().count(), 3);
        for t in g.tensors() {
            let off = t.data.as_ptr() as usize - bytes.as_ptr() as usize;
            assert_eq!(off % 32, 0, "{} aligned", t.name);
        }
        assert_eq!(g.data_offset() % 32, 0);
    }

    #[test]
    fn checksum_detects_a_flipped_data_byte() {
        let mut bytes = sample();
        let off = Gguf::parse(&bytes).unwrap().data_offset();
        bytes[off + 5] ^= 1;
        let g = Gguf::parse(&bytes).unwrap();
        assert!(matches!(g.verify_checksum(), Err(Error::Checksum { .. })));
    }

    #[test]
    fn writer_rejects_mismatched_data() {
        let mut w = GgufWriter::new();
        assert!(w.add_tensor("x", &[3], GgmlType::F32, [0u8; 8].to_vec()).is_err());
        assert!(w.add_tensor("x", &[31], GgmlType::Q8_0, [0u8; 34].to_vec()).is_err());
        assert!(w.add_tensor("x", &[], GgmlType::F32, Vec::new()).is_err());
        assert!(w.add_tensor("x", &[u64::MAX, 2], GgmlType::F32, Vec::new()).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for n in 0..bytes.len() {
            // Cutting into the tensor data or header must fail, never panic; cutting only the
            // final padding can't happen because the last tensor ends on the boundary.
            let _ = Gguf::parse(&bytes[..n]).map(|g| (g.kvs().count(), g.tensors().count()));
        }
        let off = Gguf::parse(&bytes).unwrap().data_offset();
        assert!(Gguf::parse(&bytes[..off - 1]).is_err());
    }

    #[test]
    fn tensor_out_of_range_or_misaligned_is_rejected() {
        let bytes = sample();
        let g = Gguf::parse(&bytes).unwrap();
        // Offset field of the last tensor info sits 8 bytes before the padding.
        let tail = {
            let mut p = g.data_offset();
            while bytes[p - 1] == 0 {
                p -= 1;
            }
            p
        };
        // Last tensor info ends with its u64 offset (= 64 here, non-zero), locate by value.
        let q8_off =
            g.tensor("t.q8").unwrap().data.as_ptr() as usize - bytes.as_ptr() as usize - g.data_offset();
        let pos = (0..tail).rev().find(|&p| bytes[p..p + 8] == (q8_off as u64).to_le_bytes()).unwrap();
        let mut b = bytes.clone();
        b[pos..pos + 8].copy_from_slice(&(q8_off as u64 + 1).to_le_bytes());
        assert!(matches!(Gguf::parse(&b), Err(Error::Misaligned { .. })));
        b[pos..pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(Gguf::parse(&b), Err(Error::Truncated { .. })));
        b[pos..pos + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Gguf::parse(&b).is_err());
    }
}

#[test]
fn checksum_is_the_ieee_crc32() {
    // The standard check value of CRC-32/ISO-HDLC.
    assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
}
