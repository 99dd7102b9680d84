//! The kind of answer a question asks for, and whether a fact holds one: a "when" question
//! wants a time, "who" a name, "where" a place, "how many" a number. Question answering
//! systems have long filtered their candidate passages this way (the answer types of the
//! TREC QA track); here it breaks near-ties among the entries [`MicroRAG::retrieve_matched`]
//! reranks, where a paraphrase shares no word with its fact and the cosines of the best few
//! are close: "when did we last put fresh cells in the fire detector" should prefer "The smoke
//! alarm batteries were replaced in January" to "The fire extinguisher is mounted next to the
//! fridge".
//!
//! Plain rules on the words, no table and no allocation: the question's type from its
//! question word or phrase, the fact's from digits, clock times, calendar and time words,
//! capitalized names and words of place.
//!
//! [`MicroRAG::retrieve_matched`]: super::MicroRAG::retrieve_matched

use super::words;

/// What a question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerType {
    /// "when", "what time", "how often": a time, a date, a day, a period.
    Time,
    /// "who": a person's name.
    Person,
    /// "where": a place.
    Place,
    /// "how many", "how much", "how long": a number.
    Number,
}

/// Two-word phrases that make a question one about time, wherever they stand.
const TIME_PHRASES: &[[&str; 2]] = &[
    ["what", "time"],
    ["what", "day"],
    ["what", "date"],
    ["what", "month"],
    ["what", "year"],
    ["how", "often"],
];
/// Two-word phrases that make a question one about a number.
const NUMBER_PHRASES: &[[&str; 2]] =
    &[["how", "many"], ["how", "much"], ["how", "long"], ["how", "far"], ["how", "old"], ["what", "number"]];

/// Words that say when.
const TIME_WORDS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "weekday",
    "weekdays",
    "weekend",
    "weekends",
    "morning",
    "mornings",
    "evening",
    "evenings",
    "night",
    "nights",
    "noon",
    "midnight",
    "today",
    "tomorrow",
    "tonight",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "every",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "hour",
    "hours",
    "minute",
    "minutes",
    "spring",
    "summer",
    "autumn",
    "winter",
];
/// Prepositions of place.
const PLACE_WORDS: &[&str] = &[
    "in", "on", "under", "behind", "beside", "next", "by", "at", "above", "below", "inside", "between",
    "near",
];

fn is_any(word: &str, list: &[&str]) -> bool {
    list.iter().any(|l| l.eq_ignore_ascii_case(word))
}

/// The answer type `question` asks for, if its words say one. Reads the words one pair at a
/// time: no buffer, whatever the question's length.
pub fn expected(question: &str) -> Option<AnswerType> {
    let mut w = words(question);
    let first = w.next()?;
    let pair = |a: &str, b: &str, phrases: &[[&str; 2]]| {
        phrases.iter().any(|p| p[0].eq_ignore_ascii_case(a) && p[1].eq_ignore_ascii_case(b))
    };
    let (mut time, mut number) = (first.eq_ignore_ascii_case("when"), false);
    let mut prev = first;
    for word in w {
        time |= pair(prev, word, TIME_PHRASES);
        number |= pair(prev, word, NUMBER_PHRASES);
        prev = word;
    }
    if time {
        Some(AnswerType::Time)
    } else if is_any(first, &["who", "whom", "whose"]) {
        Some(AnswerType::Person)
    } else if first.eq_ignore_ascii_case("where") {
        Some(AnswerType::Place)
    } else if number {
        Some(AnswerType::Number)
    } else {
        None
    }
}

/// Whether `fact` holds an answer of type `t`: a digit for a number; a clock time ("7am",
/// "18:30") or a time word for a time; a capitalized word after the first (not a month or
/// day name) for a person; a preposition of place for a place.
pub fn holds(fact: &str, t: AnswerType) -> bool {
    match t {
        AnswerType::Number => fact.bytes().any(|b| b.is_ascii_digit()),
        AnswerType::Time => {
            let mut digits_before = false;
            for w in words(fact) {
                let am_pm = w.eq_ignore_ascii_case("am") || w.eq_ignore_ascii_case("pm");
                if is_any(w, TIME_WORDS) || is_clock(w) || (am_pm && digits_before) {
                    return true;
                }
                digits_before = w.bytes().all(|b| b.is_ascii_digit());
            }
            has_colon_time(fact)
        }
        AnswerType::Person => {
            words(fact).skip(1).any(|w| w.as_bytes()[0].is_ascii_uppercase() && !is_any(w, TIME_WORDS))
        }
        AnswerType::Place => words(fact).any(|w| is_any(w, PLACE_WORDS)),
    }
}

/// "7am", "10pm", "6.30pm" (its last part): digits then am or pm.
fn is_clock(w: &str) -> bool {
    let b = w.as_bytes();
    if b.len() < 3 {
        return false;
    }
    let (digits, suffix) = b.split_at(b.len() - 2);
    digits.iter().all(u8::is_ascii_digit)
        && (suffix.eq_ignore_ascii_case(b"am") || suffix.eq_ignore_ascii_case(b"pm"))
}

/// A digit, a colon and a digit: "18:30".
fn has_colon_time(fact: &str) -> bool {
    fact.as_bytes().windows(3).any(|w| w[0].is_ascii_digit() && w[1] == b':' && w[2].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn question_words_give_the_type() {
        use AnswerType::*;
        for (q, t) in [
            ("when is the team meeting", Some(Time)),
            ("What time does the pharmacy open?", Some(Time)),
            ("how often is the filter changed", Some(Time)),
            ("who feeds the cat", Some(Person)),
            ("Where is the spare key", Some(Place)),
            ("how many tablets a day", Some(Number)),
            ("how long does the glue need", Some(Number)),
            ("what is the wifi password", None),
            ("which paint is for the fence", None),
            ("", None),
            ("%%%% ####", None),
        ] {
            assert_eq!(expected(q), t, "{q}");
        }
    }

    #[test]
    fn facts_hold_the_types_their_words_show() {
        use AnswerType::*;
        let meeting = "The team meeting is at 3pm on Thursday in room B.";
        assert!(holds(meeting, Time) && holds(meeting, Number) && holds(meeting, Place));
        assert!(holds("The bus leaves at 18:30.", Time));
        assert!(holds("Doors open at 7 am.", Time) && !holds("Room 7 is a classroom.", Time));
        assert!(holds("Greta next door feeds the cat.", Place));
        assert!(holds("My manager is Priya Shah.", Person));
        assert!(!holds("The smoke alarm batteries were replaced in January.", Person));
        assert!(!holds("The wifi password is maple-river-42.", Time));
        assert!(!holds("The fire extinguisher is mounted next to the fridge.", Time));
        assert!(!holds("Tomatoes need water.", Number));
        assert!(!holds("", Place));
        assert!(!holds("Café Müller at the pm meeting", Time) && holds("Café Müller opens 7am", Time));
    }

    proptest! {
        #[test]
        fn any_text_is_typed_without_panicking(q in "\\PC{0,300}", f in "\\PC{0,300}") {
            if let Some(t) = expected(&q) {
                let _ = holds(&f, t);
            }
            for t in [AnswerType::Time, AnswerType::Person, AnswerType::Place, AnswerType::Number] {
                let _ = holds(&q, t);
            }
        }
    }
}
