//! `lora train` while input arrives: lines typed during the training run after it, and Ctrl-C
//! ends the training after the step under way (the adapter keeps the steps taken).

use super::*;
use crate::infer::IntState;
use crate::lora::DeviceLora;
use crate::model::Model;
use std::vec;

const TRAIN: &[u8] = b"lora train My dog Biscuit sleeps under the piano.\n";

fn lora_session(script: Script) -> String {
    let (words, len) = builtin();
    let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
    let model: Model<'_> = Model::from_gguf(bytes).unwrap();
    let mut arena = vec![0i32; IntState::arena_len(&model, 32)];
    let mut lora = std::boxed::Box::new(DeviceLora::EMPTY);
    let engine = IntegerEngine::new(&model, &mut arena, 32).unwrap().with_lora(&mut lora, 1);
    let mut c = Console::new(script, engine, Board::PLAIN);
    c.run().unwrap();
    String::from_utf8_lossy(&c.io.out).into_owned()
}

#[test]
fn ctrl_c_stops_lora_train_after_a_step_and_typed_lines_run_after_it() {
    let out = lora_session(Script::timed(&[
        (0, TRAIN),
        (0, b"lora stats\n"),
        (1, b"\x03"),
        (usize::MAX, b"lora stats\n"),
        (usize::MAX, b"quit\n"),
    ]));
    assert!(out.contains("lora train: 22 tokens, 2 steps (stopped): loss "), "{out}");
    assert!(out.contains("^C (dropped 1 typed-ahead line, 11 bytes)\r\n> lora stats\r\n"), "{out}");
    assert!(out.contains(", 2 steps trained, unsaved changes"), "{out}");
    // Without Ctrl-C: every step, then the line typed meanwhile.
    let out = lora_session(Script::timed(&[(0, TRAIN), (0, b"lora stats\n"), (usize::MAX, b"quit\n")]));
    assert!(out.contains("lora train: 22 tokens, 4 steps: loss "), "{out}");
    assert!(
        out.contains("> lora stats\r\nlora: on, rank 2 on 4.w2 (feed-forward down projection), 4 steps"),
        "{out}"
    );
}
