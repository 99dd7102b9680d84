//! Word lists and characters for the story generator.

use super::{a, Rng};

pub(crate) const GIRLS: &[&str] = &[
    "Lily", "Mia", "Anna", "Lucy", "Emma", "Zoe", "Sara", "Ella", "Amy", "Ruby", "Rose", "Kate", "Jane",
    "Molly", "Daisy", "Sophie", "Grace", "Chloe", "Nora", "Ava", "Lena", "Maya", "Ivy", "Hannah", "Olivia",
    "Alice", "Eva", "Julia", "Clara", "Tina", "Nina", "Rita", "Sally", "Polly", "Jenny", "Kim", "Lola",
    "Bella", "Wendy", "Fiona", "Hazel", "Leah", "Mary", "Susie", "Amber", "Penny", "Holly", "Elsa", "Tara",
    "Lisa", "Mila", "Luna", "Ellie", "Abby", "Gina", "Heidi", "Iris", "June", "Kara", "Nell",
];

pub(crate) const BOYS: &[&str] = &[
    "Tom", "Ben", "Max", "Jack", "Sam", "Leo", "Tim", "Jake", "Finn", "Noah", "Liam", "Luke", "Adam", "Dan",
    "Joe", "Alex", "Oscar", "Harry", "Charlie", "Henry", "Oliver", "Ethan", "Ryan", "Owen", "Eli", "Toby",
    "Milo", "Bobby", "Billy", "Jimmy", "Peter", "Paul", "Mark", "Nick", "Eric", "Ivan", "Omar", "Kevin",
    "Danny", "Andy", "Leon", "Hugo", "Felix", "Jonas", "Theo", "Zack", "Bruno", "Carl", "Ricky", "Louis",
    "Arlo", "Dylan", "Evan", "Gabe", "Ian", "Kai", "Matt", "Ned", "Rory", "Seth",
];

/// Names for animal characters.
pub(crate) const PET_NAMES: &[&str] = &[
    "Pip", "Spot", "Buddy", "Fluffy", "Coco", "Rex", "Sunny", "Patch", "Bubbles", "Pepper", "Ginger",
    "Biscuit", "Muffin", "Peanut", "Snowy", "Tiny", "Rusty", "Lucky", "Bolt", "Hoppy", "Whiskers", "Button",
    "Cookie", "Ziggy", "Nibbles", "Dot", "Bingo", "Pebble", "Scout",
];

/// Animals that can be story characters (all take "a").
pub(crate) const ANIMALS: &[&str] = &[
    "cat", "dog", "rabbit", "bunny", "bird", "duck", "frog", "bear", "fox", "mouse", "pig", "puppy",
    "kitten", "squirrel", "turtle", "hedgehog", "lamb", "monkey", "lion", "tiger", "deer", "horse", "goat",
    "penguin",
];

/// Adjectives for characters (all take "a").
pub(crate) const TRAITS: &[&str] = &[
    "little", "small", "kind", "happy", "brave", "curious", "shy", "clever", "friendly", "playful", "gentle",
    "funny", "cheerful", "busy", "sweet",
];

pub(crate) const COLORS: &[&str] =
    &["red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "black", "brown"];

/// Describing words for things.
pub(crate) const THING_ADJS: &[&str] = &["big", "small", "little", "shiny", "old", "new", "pretty"];

/// Toys and things a child can carry and lose.
pub(crate) const TOYS: &[&str] = &[
    "ball",
    "kite",
    "doll",
    "teddy bear",
    "toy car",
    "toy boat",
    "hat",
    "scarf",
    "book",
    "drum",
    "balloon",
    "yo-yo",
    "toy robot",
    "marble",
    "whistle",
    "mitten",
    "shoe",
    "toy train",
    "bucket",
    "crayon",
];

/// Outdoor places to play.
pub(crate) const PLAY_PLACES: &[&str] =
    &["park", "garden", "backyard", "beach", "meadow", "playground", "field", "hill", "forest", "farm"];

/// Outdoor places where something small can hide.
pub(crate) const OUT_SPOTS: &[&str] = &[
    "under a big leaf",
    "behind a tree",
    "in the tall grass",
    "next to the pond",
    "in a bush",
    "under a bench",
    "near the gate",
    "behind a big rock",
    "under the slide",
    "by the fence",
    "in a pile of leaves",
    "next to a flower bed",
];

/// Feelings when something goes wrong.
pub(crate) const SAD_FEELINGS: &[&str] = &["sad", "upset", "worried", "unhappy"];

/// Feelings when things go well.
pub(crate) const GLAD_FEELINGS: &[&str] = &["happy", "glad", "proud", "excited"];

pub(crate) const WEATHER: &[&str] = &[
    "The sun was shining and the sky was blue.",
    "It was a warm and sunny day.",
    "It was a windy day, and the leaves danced in the air.",
    "The sky was gray and cloudy.",
    "The air was warm and fresh.",
    "The birds were singing in the trees.",
    "It was a bright spring day.",
    "A soft wind was blowing.",
];

pub(crate) const DAY_STARTS: &[&str] =
    &["One day", "One morning", "One sunny day", "One afternoon", "Early one morning", "One fine day"];

/// A story character: a name, what they are, and matching pronouns.
#[derive(Clone, Debug)]
pub(crate) struct Who {
    pub name: String,
    /// What they are ("girl", "rabbit").
    pub kind: String,
    /// Subject pronoun (he, she).
    pub he: &'static str,
    /// Object pronoun (him, her).
    pub him: &'static str,
    /// Possessive (his, her).
    pub his: &'static str,
    /// How they are first introduced ("a little girl named Lily", "her mom").
    pub intro: String,
}

fn pronouns(female: bool) -> (&'static str, &'static str, &'static str) {
    if female {
        ("she", "her", "her")
    } else {
        ("he", "him", "his")
    }
}

impl Who {
    fn new(name: &str, kind: &str, female: bool, intro: String) -> Who {
        let (he, him, his) = pronouns(female);
        Who { name: name.to_string(), kind: kind.to_string(), he, him, his, intro }
    }

    /// A child or a young animal as the hero of a story.
    pub fn hero(rng: &mut Rng) -> Who {
        let female = rng.chance(50);
        let adj = rng.pick(TRAITS);
        if rng.chance(68) {
            let name = if female { rng.pick(GIRLS) } else { rng.pick(BOYS) };
            let kind = if female { "girl" } else { "boy" };
            let intro = format!("{} named {}", a(&format!("{adj} {kind}")), name);
            Who::new(name, kind, female, intro)
        } else {
            let name = rng.pick(PET_NAMES);
            let kind = rng.pick(ANIMALS);
            let intro = format!("{} named {}", a(&format!("{adj} {kind}")), name);
            Who::new(name, kind, female, intro)
        }
    }

    /// A child of the same kind as `hero` (another child, or an animal), never `hero` by name.
    pub fn friend(rng: &mut Rng, hero: &Who) -> Who {
        loop {
            let female = rng.chance(50);
            let human = hero.kind == "girl" || hero.kind == "boy";
            let f = if human {
                let name = if female { rng.pick(GIRLS) } else { rng.pick(BOYS) };
                let kind = if female { "girl" } else { "boy" };
                let intro = format!("{} named {}", a(&format!("{} {kind}", rng.pick(TRAITS))), name);
                Who::new(name, kind, female, intro)
            } else {
                let name = rng.pick(PET_NAMES);
                let kind = rng.pick(ANIMALS);
                let intro = format!("{} named {}", a(&format!("{} {kind}", rng.pick(TRAITS))), name);
                Who::new(name, kind, female, intro)
            };
            if f.name != hero.name {
                return f;
            }
        }
    }

    /// A grown-up of the hero's family: Mom, Dad, Grandma or Grandpa.
    pub fn grown_up(rng: &mut Rng, hero: &Who) -> Who {
        let (name, female) =
            *rng.pick(&[("Mom", true), ("Dad", false), ("Grandma", true), ("Grandpa", false)]);
        let intro = format!("{} {}", hero.his, name.to_ascii_lowercase());
        Who::new(name, "grown-up", female, intro)
    }

    /// Someone who comes to help: a grown-up, a friend ("his friend Ben") or a kind animal.
    pub fn helper(rng: &mut Rng, hero: &Who) -> Who {
        match rng.below(3) {
            0 => Who::grown_up(rng, hero),
            1 => {
                let mut f = Who::friend(rng, hero);
                f.intro = format!("{} friend {}", hero.his, f.name);
                f
            }
            _ => loop {
                let female = rng.chance(50);
                let name = rng.pick(PET_NAMES);
                let kind = rng.pick(&["owl", "dog", "bear", "horse", "goat", "duck", "squirrel", "rabbit"]);
                let adj = rng.pick(&["kind", "wise old", "friendly", "big", "helpful", "old"]);
                let intro = format!("{} named {}", a(&format!("{adj} {kind}")), name);
                if *name != hero.name {
                    return Who::new(name, kind, female, intro);
                }
            },
        }
    }
}

/// A thing with a color or a describing word: "red ball", "shiny marble".
pub(crate) fn thing(rng: &mut Rng, nouns: &[&str]) -> (String, String) {
    let noun = rng.pick(nouns).to_string();
    let adj = if rng.chance(60) { rng.pick(COLORS) } else { rng.pick(THING_ADJS) };
    (format!("{adj} {noun}"), noun)
}
