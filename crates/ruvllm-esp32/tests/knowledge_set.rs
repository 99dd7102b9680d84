//! The knowledge set `testdata/knowledge/facts.tsv` keeps the properties its measurements
//! rely on: at least 150 distinct facts of at most 120 bytes, at least 20 in each of six
//! everyday domains, an answer span copied from its fact, a shared-word question that shares a
//! content term with the fact and a paraphrase that shares none (terms as the library's
//! lexical retrieval sees them: `knowledge::lexical`). The development set
//! `testdata/knowledge/dev.tsv` (what retrieval is tuned on) keeps the same rules with at least
//! 50 facts, 4 in each domain, none of them a held-out fact or near one.
//! `cargo test -p ruvllm-esp32 --test knowledge_set`

use ruvllm_esp32::knowledge::lexical::Terms;
use std::collections::{BTreeMap, BTreeSet};

const DOMAINS: [&str; 6] = ["home", "workshop", "office", "garden", "health", "travel"];

#[test]
fn facts_tsv_has_the_promised_shape() {
    check_set("facts.tsv", 150, 20);
}

#[test]
fn dev_tsv_has_the_promised_shape_and_no_held_out_fact() {
    let dev = check_set("dev.tsv", 50, 4);
    let held_out = check_set("facts.tsv", 150, 20);
    // Nor a near copy: the sets were written apart, and facts sharing 30% of their words
    // (a held-out fact with another number) were left out of the development set.
    let words = |f: &str| -> BTreeSet<String> {
        f.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| w.len() > 2).map(str::to_lowercase).collect()
    };
    let held_out: Vec<(&String, BTreeSet<String>)> = held_out.iter().map(|h| (h, words(h))).collect();
    for d in &dev {
        let a = words(d);
        for (h, b) in &held_out {
            let shared = a.intersection(b).count() as f32 / a.union(b).count() as f32;
            assert!(shared < 0.3, "development fact {d:?} is near held-out fact {h:?}");
        }
    }
}

/// Checks one set's rules; returns its facts.
fn check_set(name: &str, min_rows: usize, min_per_domain: usize) -> BTreeSet<String> {
    let path = format!("{}/../../testdata/knowledge/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect(&path);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("domain\tfact\tshared_question\tparaphrase_question\tanswer"));
    let mut per_domain = BTreeMap::new();
    let mut facts = BTreeSet::new();
    let mut rows = 0;
    for (n, line) in lines.enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "{name} row {n}: {line}");
        let [domain, fact, shared, para, answer] = [cols[0], cols[1], cols[2], cols[3], cols[4]];
        assert!(DOMAINS.contains(&domain), "{name} row {n}: unknown domain {domain}");
        *per_domain.entry(domain).or_insert(0) += 1;
        assert!(facts.insert(fact.to_string()), "{name} row {n}: fact repeated");
        assert!(fact.len() <= 120, "{name} row {n}: fact longer than 120 bytes");
        assert!(!answer.is_empty() && fact.contains(answer), "{name} row {n}: answer not in fact");
        let f = Terms::of(fact);
        assert!(
            f.overlaps(&Terms::of(shared)),
            "{name} row {n}: shared question shares no content word: {shared}"
        );
        assert!(!f.overlaps(&Terms::of(para)), "{name} row {n}: paraphrase shares a content word: {para}");
        rows += 1;
    }
    assert!(rows >= min_rows, "{name}: {rows} facts");
    for d in DOMAINS {
        assert!(
            per_domain.get(d).copied().unwrap_or(0) >= min_per_domain,
            "{name} domain {d}: {per_domain:?}"
        );
    }
    facts
}
