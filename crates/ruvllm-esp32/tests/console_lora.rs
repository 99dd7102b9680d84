//! The console's `lora` commands on the built-in model (integer engine): `lora train <text>`
//! lowers the text's loss, `lora save` keeps the adapter in the knowledge store and the next
//! boot restores it (the same loss to the last digit), `lora off` gives the base model back,
//! and each bad input (empty or too long text, a rank outside 1-2, a layer or projection that
//! does not exist, a damaged adapter, one of another model, no store, no model) gets one
//! `error:` line while the console goes on.
//!
//! `cargo test -p ruvllm-esp32 --test console_lora`

mod common;

use common::Stream;
use ruvllm_esp32::console::{replies, Board, Console, IntegerEngine, Knowledge, KnowledgeStore, NoModel};
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::lora::{model_id, DeviceLora, MAX_FILE};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::store::{RamFlash, Store, RAM_SECTOR};

type RamStore = Store<RamFlash<Vec<u8>>>;

fn builtin() -> common::Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    common::Image::new(&std::fs::read(path).unwrap())
}

fn blank_store() -> RamStore {
    let len = 8 * RAM_SECTOR;
    Store::open(RamFlash::new(vec![0xFF; len]), 0..len as u32).unwrap().0
}

/// The flash after a power cycle: the store opened again from its bytes.
fn reboot(store: RamStore) -> RamStore {
    let image = store.into_flash().into_inner();
    let len = image.len() as u32;
    Store::open(RamFlash::new(image), 0..len).unwrap().0
}

/// One console session with a fresh adapter for `model` (context `ctx`), saving to `store`
/// when given, that first restores the saved adapter as a board does at boot: each command's
/// reply, and the boot lines.
fn session(
    img: &common::Image,
    ctx: usize,
    store: Option<&mut dyn KnowledgeStore>,
    commands: &[&str],
) -> (Vec<String>, String) {
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let mut lora = Box::new(DeviceLora::EMPTY);
    let engine =
        IntegerEngine::new(&model, &mut arena, ctx).unwrap().with_lora(&mut lora, model_id(img.bytes()));
    let mut k = Box::new(Knowledge::new());
    let input: String = commands.iter().map(|c| format!("{c}\n")).collect();
    let mut console = Console::with_knowledge(Stream::new(input.as_bytes()), engine, Board::PLAIN, &mut k);
    if let Some(store) = store {
        console = console.saving_to(store);
    }
    console.restore_adapter().unwrap();
    console.run().unwrap();
    let out = String::from_utf8(console.into_parts().0.out).unwrap();
    let boot = out.split("====").next().unwrap().to_string();
    let r = replies(&out, commands).unwrap_or_else(|| panic!("{out}"));
    (r.iter().map(|s| s.to_string()).collect(), boot)
}

/// `(before, after)` of a `lora train` reply, or `(loss, loss)` of `lora loss`.
fn losses(reply: &str) -> (f64, f64) {
    let nums = |s: &str| s.split(' ').next().unwrap().parse::<f64>().unwrap();
    if let Some(rest) = reply.split("loss ").nth(1).filter(|_| reply.starts_with("lora train")) {
        let (b, a) = rest.split_once(" -> ").unwrap();
        (nums(b), nums(a))
    } else {
        let l = nums(reply.split(" tokens: ").nth(1).unwrap());
        (l, l)
    }
}

const PHRASE: &str = "My dog Biscuit sleeps under the piano.";

#[test]
fn lora_train_save_and_the_next_boot_restores_it() {
    let img = builtin();
    let mut store = blank_store();
    let loss = format!("lora loss {PHRASE}");
    let train = format!("lora train {PHRASE}");
    let cmds =
        ["lora stats", &loss, &train, &train, &loss, "lora off", &loss, "lora on", "lora save", "lora stats"];
    let (r, boot) = session(&img, 64, Some(&mut store), &cmds);
    assert!(!boot.contains("lora"), "nothing saved yet: no boot line: {boot}");
    assert!(r[0].starts_with("lora: on, rank 2 on 4.w2"), "{}", r[0]);
    assert!(r[0].contains("flash: 468 bytes"), "{}", r[0]);
    let base = losses(&r[1]).0;
    let (b1, a1) = losses(&r[2]);
    let (b2, a2) = losses(&r[3]);
    assert_eq!(b1, base, "a fresh adapter changes nothing");
    assert!(a1 < b1 && a2 < b2 && b2 == a1, "{r:?}");
    assert!(a2 < 0.97 * base, "8 steps on one phrase lower its loss by 3% at least: {r:?}");
    let trained = losses(&r[4]).0;
    assert_eq!(trained, a2);
    assert_eq!(losses(&r[6]).0, base, "lora off: the base model");
    assert_eq!(r[8], "lora: saved (468 bytes; restored at boot)");
    assert!(r[9].contains("8 steps trained, as loaded or saved"), "{}", r[9]);

    // The next boot restores it: the same loss, to the last digit.
    let mut store = reboot(store);
    let (r, boot) = session(&img, 64, Some(&mut store), &[&loss, "lora reset", &loss, "lora load", &loss]);
    assert!(boot.contains("lora: restored the saved adapter (rank 2, 468 bytes)"), "{boot}");
    assert_eq!(losses(&r[0]).0, trained, "{r:?}");
    assert!(r[1].starts_with("lora: a fresh rank-2 adapter on 4.w2"), "{}", r[1]);
    assert_eq!(losses(&r[2]).0, base);
    assert_eq!(r[3], "lora: loaded the saved adapter (468 bytes), on");
    assert_eq!(losses(&r[4]).0, trained);
}

#[test]
fn bad_lora_input_gets_one_error_line_each() {
    let img = builtin();
    let mut store = blank_store();
    let long = format!("lora train {}", "Biscuit likes the red ball. ".repeat(6));
    let bad = [
        "lora",
        "lora dance",
        "lora train",
        "lora loss",
        "lora train  ",
        long.as_str(),
        "lora reset 0",
        "lora reset 3",
        "lora reset two",
        "lora reset 2 9.w2",
        "lora reset 2 w2",
        "lora reset 2 4.wx",
        "lora reset 2 1.wq",
        "lora reset 1 4.w2 extra",
        "lora save now",
        "lora load",
    ];
    let mut cmds = bad.to_vec();
    cmds.push("lora reset 1 4.w2");
    cmds.push("lora stats");
    let (r, _) = session(&img, 32, Some(&mut store), &cmds);
    for (c, reply) in bad.iter().zip(&r) {
        assert!(reply.starts_with("error: ") && !reply.contains('\n'), "{c:?}: {reply:?}");
    }
    assert!(r[5].contains("longer than the context of 32"), "{}", r[5]);
    assert!(r[9].contains("layers 0 to 4"), "{}", r[9]);
    assert!(r[11].contains("projection \"wx\" does not exist"), "{}", r[11]);
    assert!(r[12].contains("(4.w2)"), "{}", r[12]);
    assert!(r[15].contains("no adapter saved"), "{}", r[15]);
    assert!(r[16].starts_with("lora: a fresh rank-1 adapter on 4.w2"), "{}", r[16]);
    assert!(r[17].contains("rank 1"), "{}", r[17]);

    // A damaged saved adapter, and one of another model, are refused at boot and by lora load.
    let (r, _) = session(&img, 32, Some(&mut store), &["lora save"]);
    assert!(r[0].starts_with("lora: saved"), "{r:?}");
    let mut file = [0u8; MAX_FILE];
    let n = store.load_adapter(&mut file).unwrap().unwrap();
    let mut damaged = file[..n].to_vec();
    damaged[40] ^= 1;
    let mut other = file[..n].to_vec();
    other[8] ^= 1; // the base model's checksum, then the file's own CRC made right again
    let crc = ruvllm_esp32::gguf::crc32(&other[..n - 4]);
    other[n - 4..].copy_from_slice(&crc.to_le_bytes());
    for (bytes, why) in [(&damaged, "checksum mismatch"), (&other, "different model")] {
        store.save_adapter(bytes).unwrap();
        let (r, boot) = session(&img, 32, Some(&mut store), &["lora load", "lora stats"]);
        assert!(boot.contains("lora: the saved adapter is refused") && boot.contains(why), "{boot}");
        assert!(r[0].starts_with("error: the saved adapter is refused") && r[0].contains(why), "{r:?}");
        assert!(r[1].contains("0 steps trained"), "a fresh adapter still: {r:?}");
    }

    // No store: save has nowhere to go; no model: no adapter.
    let (r, _) = session(&img, 32, None, &["lora save", "lora load"]);
    assert!(r[0].starts_with("error: saving is off here"), "{r:?}");
    assert!(r[1].starts_with("error: no adapter saved"), "{r:?}");
    let mut k = Box::new(Knowledge::new());
    let mut c =
        Console::with_knowledge(Stream::new(b"lora stats\nlora train hi\n"), NoModel, Board::PLAIN, &mut k);
    c.run().unwrap();
    let out = String::from_utf8(c.into_parts().0.out).unwrap();
    let r = replies(&out, &["lora stats", "lora train hi"]).unwrap();
    assert!(r.iter().all(|l| l.starts_with("error: ") && l.contains("no MicroLoRA adapter here")), "{r:?}");
}
