//! The console's memory of `gen` and `ask` exchanges (`console::memory`): recalled by a later
//! `ask`, expired after its TTL in exchanges, evicted at capacity by the published rule.

use super::*;
use crate::knowledge::MemoryType;

fn reply<'a>(out: &'a str, line: &str, nth: usize) -> &'a str {
    out.split(&format!("> {line}\r\n")).nth(nth).unwrap().split("\r\n> ").next().unwrap()
}

#[test]
fn a_later_ask_recalls_the_earlier_exchange_like_it() {
    let adds = add_facts();
    let out = knowledge_session(
        &[
            &adds,
            b"set steps 2\n",
            b"ask where does the cat sleep\n",
            b"gen Once upon a time\n",
            b"ask where is the cat sleeping\n",
            b"ask who fixes old bicycles\n",
            b"ask once upon a time\n",
            b"stats\n",
            b"quit\n",
        ],
        Echo,
        Board::PLAIN,
    );
    // The first ask has nothing to recall; the paraphrase recalls it, after its facts.
    assert!(!reply(&out, "ask where does the cat sleep", 1).contains("Recalled:"), "{out}");
    let again = reply(&out, "ask where is the cat sleeping", 1);
    let want = format!(
        "Recalled: ask where does the cat sleep -> {} (memory #1, 2 exchanges ago, similarity ",
        FACTS[0]
    );
    let (found, recalled) = again.split_once(&want).unwrap_or_else(|| panic!("{out}"));
    assert!(found.starts_with("Found: "), "{out}");
    // An unrelated question recalls nothing.
    assert!(!reply(&out, "ask who fixes old bicycles", 1).contains("Recalled:"), "{out}");
    // The Recalled line comes last, after the facts and the answer.
    assert!(recalled.ends_with("%)") && !recalled.contains('\n'), "{out}");
    // `gen` is remembered with what it printed (Echo: the prompt, then "!" a step).
    assert!(
        reply(&out, "ask once upon a time", 1).contains("Recalled: gen Once upon a time!! (memory #2, "),
        "{out}"
    );
    // Every exchange that found something is a memory (the bicycle ask and the last found
    // no fact above the threshold).
    let stats = reply(&out, "stats", 1);
    assert!(
        stats.contains(&format!("memory: 3/{MEMORY_CAP} exchanges (3 episodic, 0 factual, 0 procedural), ")),
        "{out}"
    );
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn a_gen_memory_expires_after_its_ttl_in_exchanges_and_an_ask_memory_does_not() {
    let mut k = Knowledge::new();
    k.add("The cat sleeps on the warm kitchen floor every afternoon.").unwrap();
    let story = k.remember("gen", "Once upon a time", "Once upon a time there was a cat.").unwrap();
    let question = k.remember_ask("where does the cat sleep", 1).unwrap();
    let (story, question) = (u32::from(story.id) + 1, u32::from(question.id) + 1);
    // GEN_MEMORY_TTL exchanges in all, the gen itself first: it is still there before the last.
    for i in 2..GEN_MEMORY_TTL {
        k.remember("gen", "", &format!("a story about number {i}")).unwrap();
    }
    assert_eq!(k.memory_text(story), Some("gen Once upon a time there was a cat."));
    assert!(k.recall("once upon a time there was a cat").is_some_and(|m| m.id == story));
    k.remember("gen", "", "one more story").unwrap();
    assert_eq!(k.memory_text(story), None, "expired after {GEN_MEMORY_TTL} exchanges");
    assert!(k.recall("once upon a time there was a cat").is_none_or(|m| m.id != story));
    // The ask of the same age has no TTL.
    assert!(k.memory_text(question).unwrap().starts_with("ask where does the cat sleep -> The cat"));
    // Expired entries are freed, so stats counts only the live ones: the ask and the gens of
    // the last TTL exchanges.
    for i in 0..GEN_MEMORY_TTL {
        k.remember("gen", "", &format!("filler number {i}")).unwrap();
    }
    assert_eq!(k.memory_use().len, GEN_MEMORY_TTL as usize + 1, "{:?}", k.memory_use());
}

#[test]
fn a_full_memory_evicts_the_lowest_retention_the_oldest_of_equal_importance() {
    let mut k = Knowledge::new();
    k.add("The cat sleeps on the warm kitchen floor every afternoon.").unwrap();
    for i in 0..MEMORY_CAP {
        let s = k.remember("ask", &format!("question number {i}"), "an answer").unwrap();
        assert_eq!((s.id as usize, s.evicted), (i, None));
    }
    assert_eq!(k.memory_use().len, MEMORY_CAP);
    // Retention = 0.25 * 2^(-age / half-life) + 0.15 * importance: equal importance, so the
    // oldest has the lowest and goes.
    let s = k.remember("ask", "question number 32", "an answer").unwrap();
    let evicted = s.evicted.expect("a full memory evicts");
    assert_eq!((s.id, evicted.id, evicted.created), (0, 0, 1));
    assert_eq!(k.memory_text(1), Some("ask question number 32 -> an answer"));
    assert_eq!(k.memory_text(2), Some("ask question number 1 -> an answer"));
    // And so on, oldest first: a gen (importance 0.25) expires after its TTL of 16 exchanges
    // before its retention falls below that of the oldest ask (about 21 exchanges).
    let s = k.remember("ask", "question number 33", "an answer").unwrap();
    assert_eq!(s.evicted.map(|e| (e.id, e.kind, e.created)), Some((1, MemoryType::Episodic, 2)));
    assert_eq!(k.memory_use().len, MEMORY_CAP);
}

#[test]
fn clear_forgets_the_memories_and_an_empty_ask_stores_nothing() {
    let out = knowledge_session(
        &[
            b"ask where is the cat\n",
            b"ask %%%% ####\n",
            b"stats\n",
            b"add The cat sleeps in the kitchen.\n",
            b"ask where is the cat\n",
            b"clear\n",
            b"stats\n",
            b"quit\n",
        ],
        NoModel,
        Board::PLAIN,
    );
    // An empty store: no result, whatever the question, and nothing remembered.
    assert_eq!(reply(&out, "ask where is the cat", 1), "No results found");
    assert_eq!(reply(&out, "ask %%%% ####", 1), "No results found");
    assert!(reply(&out, "stats", 1).contains(&format!("memory: 0/{MEMORY_CAP} exchanges")), "{out}");
    assert_eq!(reply(&out, "clear", 1), "Cleared 1 knowledge entry and 1 anomaly reference; forgot 1 memory");
    assert!(reply(&out, "stats", 2).contains(&format!("memory: 0/{MEMORY_CAP} exchanges")), "{out}");
}
