//! `clear` (with and without saving, a failed save at every step), `reset`, `set temp`
//! parsing, `info` / `features` without a model, and the figures of `stats` / `stats json`
//! under a microsecond counter.

use super::*;

/// What `store` restores into a new Knowledge.
fn saved(store: &mut RamStore) -> Knowledge {
    let mut again = Knowledge::new();
    again.restore(store).unwrap();
    again
}

#[test]
fn clear_forgets_everything_and_a_saving_console_saves_it_first() {
    let mut store = blank_store();
    let mut k = std::boxed::Box::new(Knowledge::new());
    let out = saving_session(
        &[b"add one cat\nadd two dogs\nadd three birds\nforget 2\n", b"clear\n", b"ask one cat\n", b"quit\n"],
        &mut k,
        &mut store,
    );
    assert!(out.contains("> clear\r\nCleared 2 knowledge entries and 3 anomaly references\r\n> "), "{out}");
    assert!(out.contains("> ask one cat\r\nNo results found\r\n"), "{out}");
    assert_eq!((k.len(), k.references().0, k.threshold()), (0, 0, None));
    let mut store = reopen(store);
    let again = saved(&mut store);
    assert_eq!((again.len(), again.references().0), (0, 0));
    // The cleared knowledge takes new adds, and those are saved as before.
    let out = saving_session(&[b"add four fish\n", b"clear\n", b"clear\n"], &mut k, &mut store);
    assert!(out.contains("> add four fish\r\nAdded knowledge #"), "{out}");
    assert!(out.contains("Cleared 1 knowledge entry and 1 anomaly reference\r\n"), "{out}");
    assert!(out.contains("Cleared 0 knowledge entries and 0 anomaly references\r\n"), "{out}");
    // Without a knowledge store the command says so.
    let out = session(&[b"clear\n"], Board::PLAIN);
    assert!(out.contains("error: this console has no knowledge store"), "{out}");
}

#[test]
fn a_failed_save_stops_clear_and_ram_keeps_what_the_store_keeps() {
    // 3 entries: each removal is entry + flush (calls 0-5), then the detector's header + flush.
    for (fail_at, reply, left) in [
        (0, "error: not saved, nothing changed: storage: test flash failure", (3, 3)),
        (1, "error: not saved, nothing changed: storage: test flash failure", (3, 3)),
        (
            2,
            "error: clear stopped after 1 of 3 entries, the rest are kept: not saved: storage: test flash failure",
            (2, 3),
        ),
        (
            6,
            "error: clear stopped after 3 of 3 entries, the rest are kept: not saved: storage: test flash failure",
            (0, 3),
        ),
        (7, "error: clear stopped after 3 of 3 entries, the rest are kept: not saved: storage: test flash failure", (0, 3)),
    ] {
        let mut store = Failing { inner: blank_store(), fail: None };
        let mut k = std::boxed::Box::new(Knowledge::new());
        saving_session(&[b"add one cat\nadd two dogs\nadd three birds\n"], &mut k, &mut store);
        store.fail = Some(fail_at);
        let out = saving_session(&[b"clear\n"], &mut k, &mut store);
        assert!(out.contains(&format!("> clear\r\n{reply}\r\n> ")), "fail at {fail_at}: {out}");
        assert_eq!((k.len(), k.references().0), left, "fail at {fail_at}");
        let mut again = std::boxed::Box::new(Knowledge::new());
        let r = again.restore(&mut store).unwrap();
        assert_eq!((r.entries.loaded, r.detector.loaded, r.skipped_corrupt()), (left.0, left.1, 0), "{fail_at}");
    }
}

#[test]
fn set_temp_takes_decimals_without_floats_and_reset_restores_the_defaults() {
    let out = session(
        &[
            b"set temp .5\nset temp 1.250\nset temp 10\nset temp 1.\nset temp 0\n",
            b"set temp 10.001\nset temp .\nset temp +1\nset temp 0,5\nset temp 1 2\nset seed 0\n",
            b"set steps 3\ngen a\n",
            b"reset\nstats\nquit\n",
        ],
        Board::PLAIN,
    );
    for want in
        ["temp 0.5\r\n", "temp 1.25\r\n", "temp 10\r\n", "temp 1\r\n", "temp 0 (greedy)\r\n", "seed 0\r\n"]
    {
        assert!(out.contains(&format!("\r\n{want}")), "{want}: {out}");
    }
    let bad = "error: temp must be a number from 0 to 10 with at most 3 decimals (usage: set temp <t>)";
    assert_eq!(out.matches(bad).count(), 4, "{out}");
    assert_eq!(out.matches("error: usage: set steps <n> | set temp <t>").count(), 1, "{out}");
    assert!(out.contains("reset: steps 16, temp 0 (greedy), seed 42; counters zeroed"), "{out}");
    let stats = out.rsplit("> stats\r\n").next().unwrap();
    assert!(
        stats.contains("generations: 0, tokens generated: 0")
            && stats.contains("settings: steps 16, temp 0, seed 42"),
        "{stats}"
    );
}

#[test]
fn without_a_model_info_and_features_say_so() {
    let out = knowledge_session(&[b"info\nfeatures\nquit\n"], NoModel, Board::PLAIN);
    assert!(out.contains("> info\r\nmodel: none (no language model on this board)\r\n> "), "{out}");
    assert!(out.contains("generation: none (no language model)\r\nsampler: none\r\n"), "{out}");
    assert!(out.contains("knowledge saving: off (RAM only)\r\nmeasuring: none\r\n"), "{out}");
    let out = session(&[b"features\nquit\n"], Board::PLAIN);
    assert!(out.contains("knowledge: none\r\n"), "{out}");
}

#[test]
fn stats_reports_tokens_per_second_under_a_microsecond_counter_and_json_agrees() {
    fn micros() -> u64 {
        use core::sync::atomic::{AtomicU64, Ordering};
        static T: AtomicU64 = AtomicU64::new(0);
        T.fetch_add(1000, Ordering::Relaxed)
    }
    let board = Board { name: "test \"board\"", counter: Some(micros), counter_unit: "us", ram: None };
    // Echo: 1 prompt token, 3 generated: 3 positions in 1000 us each generation.
    let out = session(&[b"set steps 3\ngen a\n", b"gen b\n", b"stats\nstats json\nquit\n"], board);
    assert!(out.contains("last generation: 3 positions, 333 us/token, 3000.0 tok/s\r\n"), "{out}");
    assert!(out.contains("all generations: 6 positions, 333 us/token, 3000.0 tok/s\r\n"), "{out}");
    let json = out.split("> stats json\r\n").nth(1).unwrap().split("\r\n").next().unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(v["board"], "test \"board\"");
    assert_eq!(v["generations"], 2);
    assert_eq!(v["tokens_generated"], 6);
    assert_eq!(v["all_per_token"], 333);
    assert_eq!(v["tokens_per_second"], 3000.0);
    assert_eq!(v["unit"], "us");
    assert_eq!(v["ram"]["arena"], 1234);
    assert!(v.get("entries").is_none(), "no knowledge, no knowledge figures: {json}");
}
