//! The session as a host drives it, with the host's imports collected per thread.

use super::*;
use std::path::Path;

/// Types `line` and returns what the console wrote back.
fn run(session: &mut Session, line: &str) -> String {
    host::take_written();
    session.feed(format!("{line}\r").as_bytes());
    host::take_written()
}

#[test]
fn knowledge_comes_back_from_the_image_the_host_saved() {
    let mut first = Session::start(&[]);
    assert!(host::take_written().contains("RuvLLM ESP32 Ready!"));
    assert!(run(&mut first, "add The capital of Freedonia is Fredville.").contains("Added knowledge #1"));
    let image = host::saved().expect("add hands the image to the host before it replies");
    assert_eq!(image.len(), KNOWLEDGE_IMAGE_BYTES);
    drop(first);

    let mut second = Session::start(&image);
    assert!(host::take_written().contains("knowledge: restored 1 entry"));
    let reply = run(&mut second, "ask What is the capital of Freedonia?");
    assert!(reply.contains("Found: The capital of Freedonia is Fredville."), "{reply}");
}

#[test]
fn a_save_the_host_refuses_is_one_error_line_and_undone() {
    let mut s = Session::start(&[]);
    host::fail_saves(true);
    let reply = run(&mut s, "add The capital of Freedonia is Fredville.");
    host::fail_saves(false);
    assert!(reply.contains("error:") && reply.contains("did not keep the knowledge"), "{reply}");
    assert!(host::saved().is_none());
    assert!(!run(&mut s, "ask What is the capital of Freedonia?").contains("Fredville"));
}

#[test]
fn damaged_saved_knowledge_turns_saving_off_and_the_console_runs() {
    let mut s = Session::start(&[1, 2, 3]);
    assert!(host::take_written().contains("saving is off"));
    assert!(run(&mut s, "anomaly xqzv kkjw pplq zzxv").contains("\r\nANOMALY (score"));
}

#[test]
fn files_that_are_no_model_are_refused_in_one_line_and_the_model_stays() {
    let not_a_model = model_image(b"just some notes\n", None).unwrap_err();
    assert!(not_a_model.starts_with("this file is not a model: drop a GGUF file"), "{not_a_model}");
    let huge = model_image(&vec![0u8; MAX_MODEL_BYTES + 1], None).unwrap_err();
    assert!(huge.contains("choose a smaller one"), "{huge}");
    let mut damaged = load::BUILTIN_MODEL.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    let damaged = model_image(&damaged, None).unwrap_err();
    assert!(damaged.starts_with("the model file is damaged"), "{damaged}");
    let no_tokenizer = model_image(&0x616b_3432u32.to_le_bytes(), None).unwrap_err();
    assert!(no_tokenizer.starts_with("not a llama2.c model"), "{no_tokenizer}");

    let mut s = Session::start(&[]);
    assert!(run(&mut s, "info").contains("parameters: 233152"));
}

#[test]
fn a_llama2c_model_with_its_tokenizer_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models");
    let (Ok(model), Ok(tok)) =
        (std::fs::read(dir.join("stories260K.bin")), std::fs::read(dir.join("tok512.bin")))
    else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{} is missing (CI=true)", dir.display());
        eprintln!("skipped: {}/stories260K.bin and tok512.bin are absent", dir.display());
        return;
    };
    let mut s = Session::start(&[]);
    s.switch(model_image(&model, Some(&tok)).unwrap()).unwrap();
    assert!(host::take_written().contains("context 512 positions"));
    assert!(run(&mut s, "gen Once upon a time")
        .starts_with("gen Once upon a time\r\nOnce upon a time, there was"));
}

#[test]
fn the_plan_is_the_native_info_plan_of_the_model() {
    let s = Session::start(&[]);
    let plan = s.plan_json();
    // `ruvllm-esp32 info` on the built-in model: 294048-byte image, integer arena 97700 bytes
    // on the chips without an FPU, every chip fits at full context 256.
    assert!(
        plan.starts_with(r#"{"image":294048,"context":256,"parameters":233152,"chips":[{"chip":"esp32","#),
        "{plan}"
    );
    assert!(plan.contains(r#"{"chip":"esp32c3","data_ram":409600,"arena_budget":319488,"image_budget":3145728,"fpu":false,"path":"integer","arena_full":97700,"max_context":256,"flash_ok":true,"fits":true}"#), "{plan}");
}

#[test]
fn stop_ends_a_generation_like_ctrl_c() {
    let mut s = Session::start(&[]);
    let full = run(&mut s, "gen Once upon a time");
    host::stop_after(10);
    let stopped = run(&mut s, "gen Once upon a time");
    assert!(stopped.contains("^C"), "{stopped}");
    assert!(stopped.len() < full.len() / 2, "{stopped}");
    // The next command runs whole.
    assert_eq!(run(&mut s, "gen Once upon a time"), full);
}
