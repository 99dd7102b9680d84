//! The knowledge set `testdata/knowledge/facts.tsv` keeps the properties its measurements
//! rely on: at least 150 distinct facts of at most 120 bytes, at least 20 in each of six
//! everyday domains, an answer span copied from its fact, a shared-word question that shares a
//! content term with the fact and a paraphrase that shares none (terms as the library's
//! lexical retrieval sees them: `knowledge::lexical`).
//! `cargo test -p ruvllm-esp32 --test knowledge_set`

use ruvllm_esp32::knowledge::lexical::Terms;
use std::collections::{BTreeMap, BTreeSet};

const DOMAINS: [&str; 6] = ["home", "workshop", "office", "garden", "health", "travel"];

#[test]
fn facts_tsv_has_the_promised_shape() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/knowledge/facts.tsv");
    let text = std::fs::read_to_string(path).expect("testdata/knowledge/facts.tsv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("domain\tfact\tshared_question\tparaphrase_question\tanswer"));
    let mut per_domain = BTreeMap::new();
    let mut facts = BTreeSet::new();
    let mut rows = 0;
    for (n, line) in lines.enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "row {n}: {line}");
        let [domain, fact, shared, para, answer] = [cols[0], cols[1], cols[2], cols[3], cols[4]];
        assert!(DOMAINS.contains(&domain), "row {n}: unknown domain {domain}");
        *per_domain.entry(domain).or_insert(0) += 1;
        assert!(facts.insert(fact), "row {n}: fact repeated");
        assert!(fact.len() <= 120, "row {n}: fact longer than 120 bytes");
        assert!(!answer.is_empty() && fact.contains(answer), "row {n}: answer not in fact");
        let f = Terms::of(fact);
        assert!(f.overlaps(&Terms::of(shared)), "row {n}: shared question shares no content word: {shared}");
        assert!(!f.overlaps(&Terms::of(para)), "row {n}: paraphrase shares a content word: {para}");
        rows += 1;
    }
    assert!(rows >= 150, "{rows} facts");
    for d in DOMAINS {
        assert!(per_domain.get(d).copied().unwrap_or(0) >= 20, "domain {d}: {per_domain:?}");
    }
}
