use super::*;
use crate::model::Model;
use proptest::prelude::*;

/// A table as ESP-IDF and espflash write it: entries, then the MD5 entry (when `md5`), then
/// erased flash.
fn table(entries: &[(&str, u8, u8, u32, u32)], md5: bool) -> Vec<u8> {
    let mut t = Vec::new();
    for &(label, kind, subtype, offset, size) in entries {
        t.extend_from_slice(&ENTRY_MAGIC);
        t.extend_from_slice(&[kind, subtype]);
        t.extend_from_slice(&offset.to_le_bytes());
        t.extend_from_slice(&size.to_le_bytes());
        let mut l = [0u8; 16];
        l[..label.len()].copy_from_slice(label.as_bytes());
        t.extend_from_slice(&l);
        t.extend_from_slice(&0u32.to_le_bytes());
    }
    if md5 {
        let digest: [u8; 16] = Md5::digest(&t).into();
        t.extend_from_slice(&MD5_MAGIC);
        t.extend_from_slice(&[0xFF; 14]);
        t.extend_from_slice(&digest);
    }
    t.resize(TABLE_LEN, 0xFF);
    t
}

const LAYOUT: [(&str, u8, u8, u32, u32); 4] = [
    ("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000),
    ("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000),
    ("factory", TYPE_APP, 0x00, 0x1_0000, 0x10_0000),
    ("model", TYPE_DATA, 0x80, 0x11_0000, 0x2F_0000),
];

/// The project's built-in model.
fn builtin() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf"))
        .expect("crates/ruvllm-cli/data/default.gguf")
}

/// A 4 MiB flash with the table and `image` in the model partition, the rest erased. Backed by
/// u128 words so the image keeps the 16-byte alignment the chip's mapping gives it.
fn flash_with(image: &[u8], md5: bool) -> Vec<u128> {
    let mut words = vec![u128::MAX; (4 << 20) / 16];
    let flash: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    flash[TABLE_OFFSET..TABLE_OFFSET + TABLE_LEN].copy_from_slice(&table(&LAYOUT, md5));
    flash[0x11_0000..0x11_0000 + image.len()].copy_from_slice(image);
    words
}

#[test]
fn reads_every_entry_of_a_table_with_its_md5() {
    let t = table(&LAYOUT, true);
    let parsed = Table::parse(&t).unwrap();
    assert!(parsed.md5_checked());
    let got: Vec<_> = parsed.iter().map(|p| (p.label, p.kind, p.subtype, p.offset, p.size)).collect();
    assert_eq!(got, LAYOUT);
    assert_eq!(parsed.find("factory").unwrap().offset, 0x1_0000);
    assert_eq!(parsed.find("ota_0"), Err(Error::Missing { what: "ota_0" }));
}

#[test]
fn a_table_without_md5_is_read_unchecked() {
    let t = table(&LAYOUT, false);
    let parsed = Table::parse(&t).unwrap();
    assert!(!parsed.md5_checked());
    assert_eq!(parsed.iter().count(), 4);
}

#[test]
fn refuses_blank_corrupt_and_malformed_tables() {
    // Erased or never-written flash is blank (no table, no error to report); a table is not.
    assert!(is_blank(&[0xFF; 64]) && is_blank(&[0x00; 64]) && is_blank(&[]));
    assert!(!is_blank(&table(&LAYOUT, true)) && !is_blank(&[0x12; 64]));
    assert!(matches!(Table::parse(&[0xFF; TABLE_LEN]), Err(Error::Missing { .. })));
    assert!(matches!(Table::parse(&[0x00; TABLE_LEN]), Err(Error::BadMagic { .. })));
    assert!(matches!(Table::parse(&[]), Err(Error::Missing { .. })));

    // One flipped bit in an entry: the MD5 no longer matches.
    let mut t = table(&LAYOUT, true);
    t[3 * ENTRY_LEN + 5] ^= 0x01;
    assert_eq!(
        Table::parse(&t).unwrap_err(),
        Error::Invalid { what: "partition table MD5 (the table is corrupt)" }
    );

    let mut t = table(&LAYOUT, false);
    t[12] = 0xC3; // a lone UTF-8 lead byte in the first label
    assert_eq!(Table::parse(&t).unwrap_err(), Error::Invalid { what: "partition label (not UTF-8)" });

    let t = table(&[("huge", TYPE_DATA, 0, 0xFFFF_0000, 0x2_0000)], false);
    assert_eq!(
        Table::parse(&t).unwrap_err(),
        Error::Invalid { what: "partition span (offset + size overflows)" }
    );
}

#[test]
fn finds_the_model_in_its_partition_and_the_engine_loads_it() {
    let src = builtin();
    let words = flash_with(&src, true);
    let flash: &[u8] = bytemuck::cast_slice(&words);
    let (part, image) = model_image(flash).unwrap();
    assert_eq!((part.label, part.offset), ("model", 0x11_0000));
    // The erased tail is not part of the image: exactly the file, so its checksum verifies.
    assert_eq!(image, &src[..]);
    let model: Model<'_> = Model::from_gguf(image).expect("the model loads from its partition");
    assert_eq!(model.config.n_layers, 5);
}

#[test]
fn a_missing_or_damaged_model_partition_is_a_clear_error() {
    let words = flash_with(&[], true);
    let flash: &[u8] = bytemuck::cast_slice(&words);
    assert_eq!(model_image(flash).unwrap_err(), Error::BadMagic { expected: "GGUF" });

    let t = table(&LAYOUT[..3], true);
    let mut flash = vec![0xFFu8; 4 << 20];
    flash[TABLE_OFFSET..TABLE_OFFSET + TABLE_LEN].copy_from_slice(&t);
    assert_eq!(
        model_image(&flash).unwrap_err(),
        Error::Missing { what: "a `model` partition in the partition table" }
    );
    // A flash smaller than the table says: the model partition runs past its end.
    let mut small = vec![0xFFu8; 0x20_0000];
    small[TABLE_OFFSET..TABLE_OFFSET + TABLE_LEN].copy_from_slice(&table(&LAYOUT, true));
    assert_eq!(model_image(&small).unwrap_err(), Error::Invalid { what: "partition beyond the flash" });
    assert!(matches!(model_image(&small[..0x100]), Err(Error::Truncated { .. })));

    // A flipped byte inside the image: found, but the engine's checksum refuses it.
    let src = builtin();
    let mut words = flash_with(&src, true);
    let flash: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    flash[0x11_0000 + src.len() - 100] ^= 0x40;
    let (_, image) = model_image(flash).unwrap();
    let refused: Result<Model<'_>> = Model::from_gguf(image);
    assert!(matches!(refused, Err(Error::Checksum { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes as a table or as a whole (small) flash: an error or a table, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(t) = Table::parse(&bytes) {
            for p in t.iter() {
                let _ = p.bytes(&bytes);
            }
        }
        let mut flash = vec![0xFFu8; TABLE_OFFSET];
        flash.extend_from_slice(&bytes);
        let _ = model_image(&flash);
    }

    /// Any changed byte among the entries or the MD5 entry is caught.
    #[test]
    fn every_changed_byte_of_an_md5_table_is_caught(at in 0usize..5 * ENTRY_LEN, x in 1u8..=255) {
        let mut t = table(&LAYOUT, true);
        t[at] ^= x;
        prop_assert!(Table::parse(&t).is_err());
    }
}
