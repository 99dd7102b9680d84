//! Question-answer documents: `Fact: <fact> Question: <question> Answer: <span>`, the span
//! copied from the fact, in the one format the library's grounded answers prompt with
//! (`ruvllm_esp32::knowledge::answer`). Facts come from templates over everyday slots (times,
//! days, rooms, names, places, numbers, objects, codes, doses) across home, workshop, office,
//! garden, health and travel; each fact has several question forms, some sharing no content
//! word with it, so the model learns to copy the span the question asks for rather than to
//! remember answers.

use super::Rng;
use ruvllm_esp32::knowledge::answer::{ANSWER_TAG, FACT_TAG, QUESTION_TAG};

/// A fact being written: its text and the byte range of each slot, so that every answer is
/// a slice of the fact.
struct Fact {
    text: String,
    slots: Vec<(usize, usize)>,
    qs: Vec<(String, (usize, usize))>,
}

impl Fact {
    fn new() -> Fact {
        Fact { text: String::new(), slots: Vec::new(), qs: Vec::new() }
    }
    fn lit(&mut self, s: &str) {
        self.text.push_str(s);
    }
    /// Appends a slot; its index for [`Fact::ask`].
    fn slot(&mut self, s: &str) -> usize {
        let start = self.text.len();
        self.text.push_str(s);
        self.slots.push((start, self.text.len()));
        self.slots.len() - 1
    }
    /// `<lead><value>.`, each of `questions` answered by the value.
    fn sentence<const N: usize>(&mut self, lead: &str, value: &str, questions: [String; N]) {
        self.lit(lead);
        let s = self.slot(value);
        self.lit(".");
        for q in questions {
            self.ask(q, s, s);
        }
    }
    /// A question whose answer runs from slot `a` to slot `b` (inclusive).
    fn ask(&mut self, q: impl Into<String>, a: usize, b: usize) {
        self.qs.push((q.into(), (self.slots[a].0, self.slots[b].1)));
    }
}

const NAMES: &[&str] = &[
    "Anna",
    "Ben",
    "Carlos",
    "Dana",
    "Elif",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
    "Marco",
    "Nadia",
    "Oscar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wes",
    "Xenia",
    "Yusuf",
    "Zoe",
    "Mrs Patel",
    "Mr Okafor",
    "Dr Novak",
    "Aunt Mei",
    "Uncle Raj",
    "Grandpa Joe",
    "Mia",
    "Leo",
    "Nora",
    "Ravi",
    "Sofia",
    "Tomas",
    "Helga",
    "Kofi",
];

const WEEKDAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const CITIES: &[&str] = &[
    "Lisbon", "Oslo", "Denver", "Kyoto", "Nairobi", "Lima", "Dublin", "Porto", "Seoul", "Quebec", "Krakow",
    "Austin", "Perth", "Bergen", "Malaga", "Tallinn", "Cusco", "Hanoi", "Leeds", "Turin",
];
const WORDS: &[&str] = &[
    "maple", "tiger", "cobalt", "pebble", "falcon", "mango", "orbit", "cedar", "lemon", "rocket", "velvet",
    "harbor", "puzzle", "canyon", "violet", "walnut", "comet", "ginger", "meadow", "blue",
];
const COLORS: &[&str] = &["red", "blue", "green", "yellow", "grey", "white", "black", "orange"];
const ORDINALS: &[&str] = &["first", "second", "third", "fourth", "fifth", "sixth", "ground", "top"];

/// One of `xs` (a `&str`, where `Rng::pick` would infer `str`).
fn pick(rng: &mut Rng, xs: &[&'static str]) -> &'static str {
    xs[rng.below(xs.len())]
}

fn num(rng: &mut Rng, lo: usize, hi: usize) -> String {
    rng.range(lo, hi).to_string()
}

/// A clock time: "7am", "6:30 pm", "14:45", "noon", "half past four".
fn time(rng: &mut Rng) -> String {
    let h = rng.range(1, 12);
    let ampm = if rng.chance(50) { "am" } else { "pm" };
    let mm = *rng.pick(&["00", "15", "30", "45", "10", "20", "40", "50"]);
    match rng.below(9) {
        0..=2 => format!("{h}{ampm}"),
        3 | 4 => format!("{h}:{mm}{ampm}"),
        5 => format!("{h}:{mm} {ampm}"),
        6 => format!("{}:{mm}", rng.range(6, 22)),
        7 => rng.pick(&["noon", "midnight", "midday"]).to_string(),
        _ => format!("{} {}", rng.pick(&["half past", "quarter past", "quarter to"]), super::number_word(h)),
    }
}

/// When something happens on the calendar: "on Thursday", "every Monday", "on weekdays".
fn day(rng: &mut Rng) -> String {
    let d = *rng.pick(WEEKDAYS);
    match rng.below(6) {
        0..=2 => format!("on {d}"),
        3 => format!("every {d}"),
        4 => format!("on {d} {}", rng.pick(&["morning", "afternoon", "evening"])),
        _ => rng
            .pick(&["on weekdays", "on weekends", "every day", "every other day", "twice a week"])
            .to_string(),
    }
}

/// A date: "March 3", "the 14th of May".
fn date(rng: &mut Rng) -> String {
    let m = *rng.pick(MONTHS);
    let d = rng.range(1, 28);
    let suffix = match d {
        1 | 21 => "st",
        2 | 22 => "nd",
        3 | 23 => "rd",
        _ => "th",
    };
    if rng.chance(50) {
        format!("{m} {d}")
    } else {
        format!("the {d}{suffix} of {m}")
    }
}

/// A room: "room B", "room 214", "the blue room", "meeting room 3".
fn room(rng: &mut Rng) -> String {
    let letter = (b'A' + rng.below(8) as u8) as char;
    match rng.below(6) {
        0 => format!("room {letter}"),
        1 => format!("room {}", rng.range(1, 450)),
        2 => format!("the {} room", rng.pick(COLORS)),
        3 => format!("meeting room {}", rng.range(1, 9)),
        _ => rng
            .pick(&[
                "the kitchen",
                "the garage",
                "the basement",
                "the library",
                "the main hall",
                "the gym",
                "the canteen",
                "the attic",
                "the back office",
                "the community centre",
                "the school hall",
            ])
            .to_string(),
    }
}

/// A password or code: "maple42", "cedar-7719", "4821".
fn code(rng: &mut Rng, digits_only: bool) -> String {
    if digits_only || rng.chance(20) {
        return format!("{}", rng.range(1000, 999_999));
    }
    let w = *rng.pick(WORDS);
    match rng.below(3) {
        0 => format!("{w}{}", rng.range(1, 99)),
        1 => format!("{w}-{}", rng.range(100, 9999)),
        _ => format!("{}{w}{}", rng.pick(WORDS), rng.range(1, 9)),
    }
}

/// A place for a thing: "under the blue flower pot", "in the top drawer of the desk".
fn spot(rng: &mut Rng) -> String {
    let prep = *rng.pick(&["under", "in", "behind", "on", "next to", "above", "inside"]);
    let adj = if rng.chance(40) { format!("{} ", rng.pick(COLORS)) } else { String::new() };
    let obj = *rng.pick(&[
        "flower pot",
        "top drawer",
        "toolbox",
        "shelf",
        "sink",
        "front door",
        "fridge",
        "bookcase",
        "workbench",
        "boiler",
        "washing machine",
        "coat rack",
        "garden shed",
        "filing cabinet",
        "glove box",
        "bread bin",
        "desk",
        "stairs",
        "mailbox",
        "wardrobe",
    ]);
    let place = if rng.chance(35) {
        format!(
            " in {}",
            rng.pick(&[
                "the kitchen",
                "the garage",
                "the hall",
                "the bedroom",
                "the office",
                "the shed",
                "the car"
            ])
        )
    } else {
        String::new()
    };
    format!("{prep} the {adj}{obj}{place}")
}

/// An event with question forms that share no content word with its name.
const EVENTS: &[(&str, &[&str])] = &[
    ("team meeting", &["our weekly staff get-together", "the group catch-up"]),
    ("book club", &["the reading circle", "the novel discussion"]),
    ("yoga class", &["the stretching lesson", "my exercise session"]),
    ("dentist appointment", &["the checkup for my teeth", "my visit about my teeth"]),
    ("piano lesson", &["music practice with the tutor", "the keyboard tutoring"]),
    ("fire drill", &["the practice evacuation", "the emergency rehearsal"]),
    ("band practice", &["rehearsal with the musicians", "the jam session"]),
    ("football training", &["soccer practice", "the kickabout"]),
    ("budget review", &["the spending check", "the finance discussion"]),
    ("school concert", &["the kids' show", "the children's performance"]),
    ("vet visit", &["the checkup for the dog", "the animal doctor trip"]),
    ("parent evening", &["the talk with the teachers", "the chat about grades"]),
    ("safety briefing", &["the talk on hazards", "the accident prevention session"]),
    ("choir rehearsal", &["singing practice", "the vocal group"]),
    ("garden club", &["the plant lovers' gathering", "the allotment group"]),
    ("physio session", &["the appointment for my back", "my rehab exercises"]),
];

fn event(rng: &mut Rng, f: &mut Fact) {
    let (ev, para) = *rng.pick(EVENTS);
    let (t, d, r) = (format!("at {}", time(rng)), day(rng), format!("in {}", room(rng)));
    let p = *rng.pick(para);
    f.lit(&format!("The {ev} is "));
    let (ti, di, ri);
    match rng.below(3) {
        0 => {
            ti = f.slot(&t);
            f.lit(" ");
            di = f.slot(&d);
            f.lit(" ");
            ri = f.slot(&r);
            f.ask(format!("When is the {ev}?"), ti, ri);
            f.ask(format!("When is {p}?"), ti, ri);
            f.ask(format!("What day is the {ev}?"), di, di);
        }
        1 => {
            di = f.slot(&d);
            f.lit(" ");
            ti = f.slot(&t);
            f.lit(" ");
            ri = f.slot(&r);
            f.ask(format!("When is the {ev}?"), di, ri);
            f.ask(format!("When is {p}?"), di, ri);
            f.ask(format!("Which day is {p}?"), di, di);
        }
        _ => {
            ri = f.slot(&r);
            f.lit(" ");
            ti = f.slot(&t);
            f.lit(" ");
            di = f.slot(&d);
            f.ask(format!("When is the {ev}?"), ti, di);
            f.ask(format!("When is {p}?"), ti, di);
            f.ask(format!("What day is {p}?"), di, di);
        }
    }
    f.lit(".");
    f.ask(format!("What time is the {ev}?"), ti, ti);
    f.ask(format!("At what hour is {p}?"), ti, ti);
    f.ask(format!("Where is the {ev}?"), ri, ri);
    f.ask(format!("Where do we go for {p}?"), ri, ri);
}

/// Secrets: (thing, shared-word questions, questions sharing no content word, digits only).
const SECRETS: &[(&str, &[&str], &[&str], bool)] = &[
    (
        "wifi password",
        &["What is the wifi password?", "Tell me the wifi password."],
        &["How do I get online?", "What do I type to join the internet?"],
        false,
    ),
    (
        "door code",
        &["What is the door code?", "Which code opens the door?"],
        &["How do I get into the building?", "Which digits let me in?"],
        true,
    ),
    (
        "alarm code",
        &["What is the alarm code?", "Which code turns off the alarm?"],
        &["How do I silence the siren?", "What stops the burglar bell?"],
        true,
    ),
    (
        "guest network password",
        &["What is the guest network password?"],
        &["How can visitors get online?", "What do friends type for internet?"],
        false,
    ),
    (
        "locker combination",
        &["What is the locker combination?"],
        &["How do I open my gym storage box?"],
        true,
    ),
    ("bike lock code", &["What is the bike lock code?"], &["How do I unlock my bicycle?"], true),
    ("printer PIN", &["What is the printer PIN?"], &["Which number releases my copies?"], true),
    ("safe combination", &["What is the safe combination?"], &["How do I open the strongbox?"], true),
    (
        "laptop password",
        &["What is the laptop password?"],
        &["How do I log into my notebook computer?"],
        false,
    ),
    (
        "gate code",
        &["What is the gate code?", "Which code opens the gate?"],
        &["How do I get past the entrance barrier?"],
        true,
    ),
];

fn secret(rng: &mut Rng, f: &mut Fact) {
    let (thing, shared, para, digits) = *rng.pick(SECRETS);
    let c = code(rng, digits);
    let lead = *rng.pick(&["The {} is ", "Our {} is ", "The {} is set to ", "The {} has been changed to "]);
    f.lit(&lead.replace("{}", thing));
    let s = f.slot(&c);
    f.lit(".");
    for q in shared.iter().chain(para.iter()) {
        f.ask(*q, s, s);
    }
}

/// Things kept somewhere: (item, phrases for it that share no content word).
const ITEMS: &[(&str, &[&str])] = &[
    ("spare key", &["the backup for getting in", "the extra way into the house"]),
    ("first aid kit", &["the bandages", "the plasters and medicine box"]),
    ("flashlight", &["the torch", "something to see in the dark"]),
    ("fuse box", &["the electrical panel", "the breakers"]),
    ("ladder", &["the steps for reaching the roof"]),
    ("passport", &["my travel document", "my ID for flying"]),
    ("phone charger", &["the cable for my mobile"]),
    ("fire extinguisher", &["the thing that puts out flames"]),
    ("water shutoff valve", &["the main tap for the house", "the stopcock"]),
    ("tape measure", &["the tool for lengths"]),
    ("soldering iron", &["the tool for joining wires"]),
    ("seed packets", &["the things I sow"]),
    ("insulin pens", &["my diabetes injections"]),
    ("boarding passes", &["our plane tickets"]),
    ("car keys", &["what starts the vehicle"]),
    ("hedge trimmer", &["the tool for cutting bushes"]),
    ("stapler", &["the thing that clips paper together"]),
    ("spare fuses", &["replacements for a blown circuit"]),
];

fn item(rng: &mut Rng, f: &mut Fact) {
    let (it, para) = *rng.pick(ITEMS);
    let where_ = spot(rng);
    let lead = *rng.pick(&["The {} is ", "The {} is kept ", "We keep the {} ", "You can find the {} "]);
    f.lit(&super::cap(&lead.replace("{}", it)));
    let s = f.slot(&where_);
    f.lit(".");
    let p = *rng.pick(para);
    f.ask(format!("Where is the {it}?"), s, s);
    f.ask(format!("Where do we keep the {it}?"), s, s);
    f.ask(format!("Where can I find {p}?"), s, s);
    f.ask(format!("Where is {p}?"), s, s);
}

/// Machines on a schedule: (thing, verb, base verb, phrases sharing no content word).
const MACHINES: &[(&str, &str, &str, &[&str])] = &[
    ("pump", "runs", "run", &["When does the water start flowing?"]),
    ("sprinkler", "runs", "run", &["When does the lawn get sprayed?"]),
    ("heating", "comes on", "come on", &["When does the house warm up?"]),
    ("dishwasher", "runs", "run", &["When are the plates cleaned?"]),
    ("porch light", "turns on", "turn on", &["When does the front lamp light up?"]),
    ("backup", "runs", "run", &["When are the files copied?"]),
    ("robot vacuum", "cleans", "clean", &["When is the floor swept?"]),
    ("compressor", "starts", "start", &["When does the air tank fill?"]),
    ("greenhouse fan", "switches on", "switch on", &["When is the glasshouse ventilated?"]),
    ("dehumidifier", "runs", "run", &["When is the damp air dried?"]),
    ("bread maker", "starts", "start", &["When does the loaf begin baking?"]),
    ("pool filter", "runs", "run", &["When is the swimming water cleaned?"]),
];

fn machine(rng: &mut Rng, f: &mut Fact) {
    let (m, verb, base, para) = *rng.pick(MACHINES);
    f.lit(&format!("The {m} {verb} "));
    let t = f.slot(&format!("at {}", time(rng)));
    f.lit(" ");
    let d = f.slot(&day(rng));
    f.lit(".");
    f.ask(format!("When does the {m} {base}?"), t, d);
    f.ask(format!("What time does the {m} {base}?"), t, t);
    f.ask(format!("How often does the {m} {base}?"), d, d);
    for q in para.iter() {
        f.ask(*q, t, d);
    }
}

const FOODS: &[&str] = &[
    "peanuts",
    "shellfish",
    "milk",
    "eggs",
    "wheat",
    "strawberries",
    "sesame",
    "penicillin",
    "bee stings",
    "cats",
    "pollen",
    "soy",
];
const MEDS: &[&str] = &[
    "ibuprofen",
    "vitamin D",
    "metformin",
    "the blood pressure pills",
    "iron tablets",
    "the inhaler",
    "paracetamol",
    "insulin",
    "the eye drops",
    "antibiotics",
];
const DEPTS: &[&str] =
    &["sales", "finance", "support", "design", "marketing", "research", "legal", "shipping"];
const HOTELS: &[&str] = &[
    "Hotel Aurora",
    "the Grand Palace",
    "the Blue Anchor Inn",
    "Hotel Mirador",
    "the Riverside Lodge",
    "the Old Mill",
    "Hostel Sol",
    "the Pine Tree Hotel",
];
const PLANTS: &[&str] = &[
    "the tomato plants",
    "roses",
    "the lemon trees",
    "the cucumbers",
    "the orchids",
    "the strawberries",
    "the basil plants",
    "the apple trees",
    "the peppers",
    "the ferns",
];

/// Things looked after on a schedule: (thing, done to it, the verb for that).
const CHORES: &[(&str, &str, &str)] = &[
    ("the trash", "collected", "collect"),
    ("the recycling", "picked up", "pick up"),
    ("the air filter", "changed", "change"),
    ("the smoke alarm battery", "replaced", "replace"),
    ("the gutter", "cleaned", "clean"),
    ("the grass verge", "mowed", "mow"),
    ("the compost bin", "emptied", "empty"),
    ("the bird feeder", "refilled", "refill"),
    ("the printer toner", "replaced", "replace"),
    ("the chainsaw chain", "sharpened", "sharpen"),
    ("the fire alarm", "tested", "test"),
    ("the car", "serviced", "service"),
    ("the fish tank", "cleaned", "clean"),
    ("the boiler", "inspected", "inspect"),
    ("the hedge", "trimmed", "trim"),
    ("the bedding", "washed", "wash"),
    ("the first aid box", "checked", "check"),
    ("the coffee machine", "descaled", "descale"),
];

/// A schedule: "every Tuesday morning before 7am", "on the second Monday of the month".
fn schedule(rng: &mut Rng) -> String {
    let d = pick(rng, WEEKDAYS);
    match rng.below(5) {
        0 => format!("every {d} {} before {}", pick(rng, &["morning", "evening"]), time(rng)),
        1 => format!("on the {} {d} of the month", pick(rng, &["first", "second", "third", "last"])),
        2 => format!("every {} weeks", rng.range(2, 6)),
        3 => {
            pick(rng, &["once a month", "every spring", "twice a year", "every evening", "every other week"])
                .to_string()
        }
        _ => day(rng),
    }
}

fn chore(rng: &mut Rng, f: &mut Fact) {
    let (thing, done, verb) = *rng.pick(CHORES);
    f.lit(&super::cap(thing));
    if rng.chance(50) {
        f.sentence(
            &format!(" is {done} "),
            &schedule(rng),
            [
                format!("When is {thing} {done}?"),
                format!("How often is {thing} {done}?"),
                format!("How often do we {verb} {thing}?"),
            ],
        );
    } else {
        f.lit(&format!(" was last {done} "));
        let when = match rng.below(3) {
            0 => format!("on {}", date(rng)),
            1 => format!("in {}", pick(rng, MONTHS)),
            _ => format!("last {}", pick(rng, WEEKDAYS)),
        };
        let s = f.slot(&when);
        f.lit(".");
        f.ask(format!("When was {thing} last {done}?"), s, s);
        f.ask(format!("When did we last {verb} {thing}?"), s, s);
    }
}

/// Someone who does a task: (task, question about who, one sharing no content word).
const TASKS: &[(&str, &str, &str)] = &[
    (
        "waters the garden in summer",
        "Who waters the garden?",
        "Who sprinkles the flower beds when it is hot?",
    ),
    ("feeds the cat on weekends", "Who feeds the cat?", "Who gives the kitty its dinner on Saturdays?"),
    (
        "picks up the kids on Fridays",
        "Who picks up the kids?",
        "Who collects the children at the end of the week?",
    ),
    ("has the spare key", "Who has the spare key?", "Who can let us in if we are locked out?"),
    ("fixes the printer", "Who fixes the printer?", "Who repairs the copier?"),
    ("orders the office supplies", "Who orders the office supplies?", "Who buys pens and paper for work?"),
    ("mows the lawn", "Who mows the lawn?", "Who cuts the grass?"),
    ("drives us to the airport", "Who drives us to the airport?", "Who gives us a lift for the flight?"),
    ("checks the beehives", "Who checks the beehives?", "Who looks after the bees?"),
    ("books the meeting rooms", "Who books the meeting rooms?", "Who reserves space for our get-togethers?"),
];

fn helper(rng: &mut Rng, f: &mut Fact) {
    let (task, q, para) = *rng.pick(TASKS);
    let who = format!(
        "{}{}",
        pick(rng, &["", "Our neighbour ", "My sister ", "Our friend ", "My colleague ", "Cousin "]),
        pick(rng, NAMES)
    );
    let s = f.slot(&who);
    f.lit(&format!(" {task}."));
    f.ask(q, s, s);
    f.ask(para, s, s);
}

fn person(rng: &mut Rng, f: &mut Fact) {
    let n = *rng.pick(NAMES);
    match rng.below(7) {
        0 => {
            f.sentence(
                &format!("{n}'s phone number is "),
                &format!("{} {}", num(rng, 100, 999), num(rng, 1000, 9999)),
                [
                    format!("What is {n}'s phone number?"),
                    format!("How do I call {n}?"),
                    format!("How can I ring {n}?"),
                ],
            );
        }
        1 => {
            f.sentence(
                &format!("{n} is allergic to "),
                pick(rng, FOODS),
                [
                    format!("What is {n} allergic to?"),
                    format!("What makes {n} ill?"),
                    format!("What must {n} avoid?"),
                ],
            );
        }
        2 => {
            let med = *rng.pick(MEDS);
            f.lit(&format!("{n} takes "));
            let dose = f.slot(&format!(
                "{} {}",
                rng.pick(&["one", "two", "half a", "5", "10", "250", "500", "20"]),
                rng.pick(&["tablet", "tablets", "mg", "ml", "puffs", "drops", "units"])
            ));
            f.lit(" of ");
            let m = f.slot(med);
            f.lit(" ");
            let when = f.slot(pick(
                rng,
                &[
                    "every morning",
                    "twice a day",
                    "after dinner",
                    "before bed",
                    "every six hours",
                    "with breakfast",
                    "once a week",
                    "three times a day",
                ],
            ));
            f.lit(".");
            f.ask(format!("How much {med} does {n} take?"), dose, dose);
            f.ask(format!("What is {n}'s dose?"), dose, dose);
            f.ask(format!("When does {n} take {med}?"), when, when);
            f.ask(format!("How often is {n} medicated?"), when, when);
            f.ask(format!("What medicine does {n} take?"), m, m);
        }
        3 => {
            f.sentence(
                &format!("{n}'s birthday is "),
                &format!("on {}", date(rng)),
                [format!("When is {n}'s birthday?"), format!("When was {n} born?")],
            );
        }
        4 => {
            let d = *rng.pick(DEPTS);
            let s = f.slot(n);
            f.lit(&format!(" manages the {d} team."));
            f.ask(format!("Who manages the {d} team?"), s, s);
            f.ask(format!("Who is the boss of {d}?"), s, s);
            f.ask(format!("Who runs {d}?"), s, s);
        }
        5 => {
            f.sentence(
                &format!("{n} lives "),
                &format!("in {}", rng.pick(CITIES)),
                [format!("Where does {n} live?"), format!("Which town is {n}'s home?")],
            );
        }
        _ => {
            let role = *rng.pick(&[
                "plumber",
                "electrician",
                "babysitter",
                "doctor",
                "landlord",
                "mechanic",
                "dog walker",
            ]);
            f.sentence(
                &format!("Our {role} is "),
                n,
                [format!("Who is our {role}?"), format!("Who is the {role}?")],
            );
        }
    }
}

fn numbers(rng: &mut Rng, f: &mut Fact) {
    match rng.below(7) {
        0 => {
            let (thing, para) = *rng.pick(&[
                ("thermostat", "How warm is the house kept?"),
                ("fridge", "How cold is the food kept?"),
                ("water heater", "How hot is the boiler water?"),
                ("freezer", "How cold is the ice box?"),
                ("oven", "How hot should the baking be?"),
            ]);
            f.sentence(
                &format!("The {thing} is set to "),
                &format!("{} degrees", rng.range(1, 230)),
                [format!("What is the {thing} set to?"), para.to_string()],
            );
        }
        1 => {
            let plant = *rng.pick(PLANTS);
            f.lit(&super::cap(plant));
            f.lit(" need watering ");
            let w = f.slot("when the soil moisture drops");
            f.lit(" ");
            let b = f.slot(&format!("below {} percent", rng.range(10, 60)));
            f.lit(".");
            f.ask(format!("When do {plant} need watering?"), w, b);
            f.ask(format!("How dry can {plant} get?"), b, b);
            f.ask(format!("When should I give {plant} a drink?"), w, b);
        }
        2 => {
            let tool = *rng.pick(&[
                "lathe",
                "chainsaw",
                "mower",
                "drill press",
                "table saw",
                "generator",
                "bandsaw",
            ]);
            f.sentence(
                &format!("The {tool} needs oil "),
                &format!("every {} hours", rng.range(2, 200)),
                [
                    format!("How often does the {tool} need oil?"),
                    format!("When should I lubricate the {tool}?"),
                ],
            );
        }
        3 => {
            let thing = *rng.pick(&[
                "wall plugs",
                "shelf brackets",
                "hinges",
                "the fence posts",
                "tiles",
                "the birdhouse",
            ]);
            f.lit("Use ");
            let s = f.slot(&format!("a {} mm", rng.range(2, 14)));
            f.lit(&format!(" drill bit for {thing}."));
            f.ask(format!("What size drill bit for {thing}?"), s, s);
            f.ask(format!("How wide a hole for {thing}?"), s, s);
        }
        4 => {
            let p = *rng.pick(&[
                "garden project",
                "kitchen remodel",
                "team offsite",
                "holiday",
                "website",
                "roof repair",
            ]);
            f.lit(&format!("The {p} budget is "));
            let s =
                f.slot(&format!("{} {}", rng.range(2, 950) * 10, rng.pick(&["dollars", "euros", "pounds"])));
            f.lit(".");
            f.ask(format!("What is the {p} budget?"), s, s);
            f.ask(format!("How much can we spend on the {p}?"), s, s);
        }
        5 => {
            let tyre = *rng.pick(&["car", "bike", "van", "trailer"]);
            f.sentence(
                &format!("The {tyre} tyres need "),
                &format!("{} psi", rng.range(25, 110)),
                [
                    format!("What pressure do the {tyre} tyres need?"),
                    format!("How much air for the {tyre} wheels?"),
                ],
            );
        }
        _ => {
            let plant = *rng.pick(PLANTS);
            f.lit(&super::cap(plant));
            f.sentence(
                " were planted ",
                &format!("on {}", date(rng)),
                [format!("When were {plant} planted?"), format!("When did {plant} go in the ground?")],
            );
        }
    }
}

fn travel(rng: &mut Rng, f: &mut Fact) {
    let c = *rng.pick(CITIES);
    match rng.below(6) {
        0 => {
            f.lit(&format!("The flight to {c} leaves "));
            let t = f.slot(&format!("at {}", time(rng)));
            f.lit(" from ");
            let g = f.slot(&format!("gate {}{}", (b'A' + rng.below(6) as u8) as char, rng.range(1, 40)));
            f.lit(".");
            f.ask(format!("When does the flight to {c} leave?"), t, t);
            f.ask(format!("What time is the plane to {c}?"), t, t);
            f.ask(format!("Which gate is the flight to {c}?"), g, g);
            f.ask(format!("Where do we board for {c}?"), g, g);
        }
        1 => {
            f.sentence(
                &format!("The train to {c} leaves from "),
                &format!("platform {}", rng.range(1, 20)),
                [
                    format!("Which platform is the train to {c}?"),
                    format!("Where do I catch the rail service to {c}?"),
                ],
            );
        }
        2 => {
            f.sentence(
                &format!("Our hotel in {c} is "),
                pick(rng, HOTELS),
                [
                    format!("What is our hotel in {c}?"),
                    format!("Where are we sleeping in {c}?"),
                    format!("Where are we staying in {c}?"),
                ],
            );
        }
        3 => {
            f.lit("The car is parked ");
            let l = f.slot(&format!("on level {}", rng.range(1, 9)));
            f.lit(" ");
            let r = f.slot(&format!("in row {}", (b'A' + rng.below(12) as u8) as char));
            f.lit(".");
            f.ask("Where is the car parked?", l, r);
            f.ask("Where did we leave the vehicle?", l, r);
            f.ask("Which level is the car on?", l, l);
        }
        4 => {
            f.lit("The taxi is booked for ");
            let t = f.slot(&time(rng));
            f.lit(".");
            f.ask("When is the taxi booked for?", t, t);
            f.ask("What time is the cab coming?", t, t);
        }
        _ => {
            f.lit("The passport expires ");
            let s = f.slot(&format!("in {} {}", rng.pick(MONTHS), rng.range(2026, 2039)));
            f.lit(".");
            f.ask("When does the passport expire?", s, s);
            f.ask("Until when is my travel document valid?", s, s);
        }
    }
}

fn office(rng: &mut Rng, f: &mut Fact) {
    match rng.below(4) {
        0 => {
            let (r, para) = *rng.pick(&[
                ("quarterly report", "the numbers for the quarter"),
                ("tax return", "the form for the revenue office"),
                ("expense claim", "my receipts"),
                ("grant proposal", "the funding application"),
                ("design review", "the drawings"),
            ]);
            f.lit(&format!("The {r} is due "));
            let d = f.slot(&day(rng));
            f.lit(" ");
            let t = f.slot(&format!("at {}", time(rng)));
            f.lit(".");
            f.ask(format!("When is the {r} due?"), d, t);
            f.ask(format!("What is the deadline for {para}?"), d, t);
        }
        1 => {
            let d = *rng.pick(DEPTS);
            f.sentence(
                &format!("The {d} office is "),
                &format!("on the {} floor", rng.pick(ORDINALS)),
                [format!("Where is the {d} office?"), format!("Which floor is {d} on?")],
            );
        }
        2 => {
            f.lit("The office opens ");
            let o = f.slot(&format!("at {}", time(rng)));
            f.lit(" and closes ");
            let c = f.slot(&format!("at {}", time(rng)));
            f.lit(".");
            f.ask("When does the office open?", o, o);
            f.ask("When can I get into work?", o, o);
            f.ask("When does the office close?", c, c);
            f.ask("What time is the workplace locked?", c, c);
        }
        _ => {
            let n = *rng.pick(NAMES);
            f.sentence(
                &format!("{n}'s extension is "),
                &num(rng, 100, 9999),
                [format!("What is {n}'s extension?"), format!("Which number reaches {n} at work?")],
            );
        }
    }
}

/// A fact from a random template, with its questions.
fn fact(rng: &mut Rng) -> Fact {
    let mut f = Fact::new();
    match rng.below(11) {
        0 | 1 => event(rng, &mut f),
        2 => secret(rng, &mut f),
        3 => item(rng, &mut f),
        4 => machine(rng, &mut f),
        5 => person(rng, &mut f),
        6 => numbers(rng, &mut f),
        7 => travel(rng, &mut f),
        8 => chore(rng, &mut f),
        9 => helper(rng, &mut f),
        _ => office(rng, &mut f),
    }
    f
}

/// A fact from a random template and all of its question forms (as the user would type them:
/// lower-case, no final `?`), for training retrieval to bring questions to their fact.
pub fn fact_and_questions(rng: &mut Rng) -> (String, Vec<String>) {
    let f = fact(rng);
    let questions = f.qs.iter().map(|(q, _)| q.trim_end_matches('?').to_ascii_lowercase()).collect();
    (f.text, questions)
}

/// A fact from a random template as a user types it, one of its questions, and the byte range
/// of the fact that answers it (the answer a question-answer document copies).
pub fn triple(rng: &mut Rng) -> (String, String, (usize, usize)) {
    let f = fact(rng);
    let (q, (a, b)) = &f.qs[rng.below(f.qs.len())];
    // Users type facts and questions loosely: sometimes without the final stop, lower-case.
    let mut fact = f.text.clone();
    if rng.chance(25) {
        fact.pop();
    }
    let question = if rng.chance(50) {
        let mut q = q.to_ascii_lowercase();
        q.pop();
        q
    } else {
        q.clone()
    };
    (fact, question, (*a, *b))
}

/// One question-answer document: a fact from a random template, one of its questions, and
/// the answer copied from the fact.
pub fn qa(rng: &mut Rng) -> String {
    let (fact, question, (a, b)) = triple(rng);
    format!("{FACT_TAG} {fact} {QUESTION_TAG} {question} {ANSWER_TAG} {}", &fact[a..b])
}
