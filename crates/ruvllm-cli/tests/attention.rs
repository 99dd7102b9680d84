//! `--attention`: full (the default) or a sliding window through a ring-buffer cache, and one
//! clear line for every pattern the tool does not run.

mod common;

use common::*;

#[test]
fn a_window_that_holds_the_run_is_full_attention() {
    let base = ["gen", "-p", "Once upon a time", "-n", "200"];
    let (plain, _) = ok(&base);
    for pattern in ["full", "window:200", "window:256"] {
        let args: Vec<&str> = base.iter().copied().chain(["--attention", pattern]).collect();
        assert_eq!(ok(&args).0, plain, "{pattern}");
    }
    // A short window changes the text: attention really is cut.
    let args: Vec<&str> = base.iter().copied().chain(["--attention", "window:8"]).collect();
    assert_ne!(ok(&args).0, plain);
}

#[test]
fn a_window_runs_past_the_context_and_scores_a_text_in_one_pass() {
    // The built-in model's context is 256 positions; this greedy story runs on past them, on
    // the float and on the integer path.
    for int in [&[][..], &["--int"][..]] {
        let mut args = vec!["gen", "-p", "Once upon a time", "-n", "2000", "--attention", "window:64"];
        args.extend_from_slice(int);
        let (text, err) = ok(&args);
        let positions: usize = err
            .split("achieved tok/s: ")
            .nth(1)
            .and_then(|r| r.split(['(', ' ']).nth(2))
            .unwrap()
            .parse()
            .unwrap();
        assert!(text.starts_with("Once upon a time") && positions > 256, "{int:?}: {err}");
    }
    let heldout = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/heldout.txt");
    let (full, _) = ok(&["eval", "--text", heldout]);
    let (windowed, _) = ok(&["eval", "--text", heldout, "--attention", "window:128"]);
    let number = |s: &str, key: &str| -> f64 {
        s.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().parse().unwrap()
    };
    // Whole windows of the context lose a token of context each; one pass does not.
    assert!(number(&windowed, "tokens:") > number(&full, "tokens:"));
    let (a, b) = (number(&full, "perplexity:"), number(&windowed, "perplexity:"));
    assert!((a - b).abs() / a < 0.05, "full {a}, window:128 {b}");
}

#[test]
fn bad_patterns_name_both_values() {
    let gen = |pattern: &str| run(&["gen", "-n", "16", "--attention", pattern]);
    fails_with(&gen("window:0"), "a window of 0 positions is outside 1..=256");
    fails_with(&gen("window:300"), "a window of 300 positions is outside 1..=256");
    fails_with(&gen("window:many"), "--attention window:many: write it as window:N");
    fails_with(&gen("strided:0"), "--attention strided:0: a stride of 0 is outside 1..=256");
    fails_with(&gen("dilated:2:0"), "a count of 0 positions is outside 1..=256");
    fails_with(&gen("bigbird:1:0:2"), "a local window of 0 positions is outside 1..=256");
    fails_with(&gen("bigbird:1:8:100"), "a random count of 100 positions is outside 0..=64");
    fails_with(&gen("bigbird:1:8"), "write it as bigbird:GLOBAL:LOCAL:RANDOM[:SEED]");
    fails_with(&gen("sparse"), "--attention sparse: unknown pattern sparse; use full, window:N, strided:S");
    fails_with(&run(&["gen", "-n", "300"]), "--steps 300 is outside 1..=256");
    fails_with(
        &run(&["gen", "-n", "2000000", "--attention", "window:8"]),
        "--steps 2000000 is outside 1..=1000000",
    );
}

#[test]
fn sparse_patterns_run_on_every_path_and_cover_full_attention_when_they_list_everything() {
    for path in [&[][..], &["--int"][..], &["--quant", "f32"][..]] {
        let mut base = vec!["gen", "-p", "Once upon a time", "-n", "120"];
        base.extend_from_slice(path);
        let (plain, _) = ok(&base);
        for pattern in ["strided:1", "dilated:1", "bigbird:0:120:0"] {
            let args: Vec<&str> = base.iter().copied().chain(["--attention", pattern]).collect();
            assert_eq!(ok(&args).0, plain, "{path:?} {pattern}");
        }
        for pattern in ["strided:4", "dilated:2:16", "bigbird:1:4:2:7"] {
            let args: Vec<&str> = base.iter().copied().chain(["--attention", pattern]).collect();
            let (text, _) = ok(&args);
            assert!(text.starts_with("Once upon a time") && text != plain, "{path:?} {pattern}");
        }
    }
    let heldout = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/heldout.txt");
    let (full, _) = ok(&["eval", "--text", heldout]);
    assert_eq!(ok(&["eval", "--text", heldout, "--attention", "strided:1"]).0, full);
    let (strided, _) = ok(&["eval", "--text", heldout, "--attention", "strided:16"]);
    assert_ne!(strided, full);
}

#[test]
fn info_shows_the_ram_of_each_pattern_on_each_chip() {
    let (text, _) = ok(&["info"]);
    assert!(text.contains("RAM by attention pattern"), "{text}");
    let (json, _) = ok(&["info", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for chip in v["chips"].as_array().unwrap() {
        let ram = &chip["attention_ram_bytes"];
        let b = |p: &str| ram[p].as_u64().unwrap_or_else(|| panic!("{p} missing: {chip}"));
        // The built-in model's context is 256: a ring of 64 positions holds a quarter of the
        // cache; the sparse patterns add their scratch to the whole cache.
        assert!(b("window:64") < b("full") / 2, "{chip}");
        for p in ["strided:16", "dilated:2:64", "bigbird:1:32:8:0"] {
            assert!(b(p) > b("full"), "{p}: {chip}");
        }
    }
}
