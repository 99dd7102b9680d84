//! `gen --speculative` as a user runs it: the same greedy text as plain `gen`, the acceptance
//! rate and tokens per target pass on stderr, and one clear line for each bad setting.

mod common;

use common::*;
use std::path::PathBuf;

fn draft() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/draft.gguf")
}

#[test]
fn greedy_speculative_text_is_the_plain_text() {
    let d = draft();
    let base = ["gen", "-p", "Once upon a time", "-n", "200"];
    let (plain, _) = ok(&base);
    let runs: [&[&str]; 4] = [
        &["--speculative", "--draft", s(&d)],
        &["--speculative", "--draft", s(&d), "--gamma", "1"],
        &["--speculative", "--draft", s(&d), "--gamma", "16"],
        &["--speculative", "--early-exit", "3", "--gamma", "2"],
    ];
    for extra in runs {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (text, err) = ok(&args);
        assert_eq!(text, plain, "{extra:?}");
        assert!(err.contains("acceptance") && err.contains("tokens per target pass"), "{err}");
    }
    // The integer path: the same text as `gen --int`.
    let base = ["gen", "--int", "-p", "Once upon a time", "-n", "200"];
    let (plain, _) = ok(&base);
    for extra in [&["--speculative", "--draft", s(&d)][..], &["--speculative", "--early-exit", "4"][..]] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (text, err) = ok(&args);
        assert_eq!(text, plain, "--int {extra:?}");
        assert!(err.contains("integer fixed-point"), "{err}");
    }
    let Some(model) = shared("models/stories260K.bin") else { return };
    let tok = shared("models/tok512.bin").unwrap();
    let base = ["gen", "-m", s(&model), "-z", s(&tok), "-p", "Once upon a time", "-n", "256"];
    let (plain, _) = ok(&base);
    let args: Vec<&str> = base.iter().chain(&["--speculative", "--early-exit", "2"]).copied().collect();
    assert_eq!(ok(&args).0, plain);
}

#[test]
fn sampling_runs_and_repeats_from_its_seed() {
    let d = draft();
    let args = ["gen", "-n", "100", "--temp", "0.8", "--top-p", "1", "--speculative", "--draft", s(&d)];
    let (a, err) = ok(&args);
    assert_eq!(ok(&args).0, a);
    assert!(err.contains("acceptance"), "{err}");
    let args = ["gen", "--int", "-n", "100", "--temp", "0.8", "--speculative", "--draft", s(&d)];
    let (a, err) = ok(&args);
    assert_eq!(ok(&args).0, a);
    assert!(err.contains("integer fixed-point"), "{err}");
}

#[test]
fn bad_settings_name_both_values() {
    let d = draft();
    let gen = |extra: &[&str]| {
        let mut args = vec!["gen", "-n", "32", "--speculative"];
        args.extend_from_slice(extra);
        run(&args)
    };
    fails_with(&gen(&["--early-exit", "0"]), "early-exit layer 0 is outside 1..=4");
    fails_with(&gen(&["--early-exit", "5"]), "early-exit layer 5 is outside 1..=4");
    fails_with(&gen(&["--early-exit", "2", "--gamma", "0"]), "gamma 0 is outside 1..=16");
    fails_with(&gen(&["--early-exit", "2", "--gamma", "17"]), "gamma 17 is outside 1..=16");
    fails_with(&gen(&[]), "--speculative needs a draft");
    fails_with(&gen(&["--draft", s(&d), "--early-exit", "2"]), "not both");
    fails_with(&gen(&["--draft", s(&d), "--temp", "0.5"]), "--top-p 1 (not 0.9)");
    let Some(model) = shared("models/stories260K.bin") else { return };
    let tok = shared("models/tok512.bin").unwrap();
    // The same vocabulary size, another tokenizer: the first differing piece of each.
    let out = run(&["gen", "-m", s(&model), "-z", s(&tok), "--speculative", "--draft", s(&d)]);
    fails_with(&out, "tokenizer differs from the target's");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the target's piece is") && err.contains("the draft's"), "{err}");
}
