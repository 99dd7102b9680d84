//! Story templates. Every template builds its cast first and refers to the same people and
//! things all the way through, so the story stays coherent.

use super::words::{
    thing, Who, COLORS, DAY_STARTS, GLAD_FEELINGS, OUT_SPOTS, PLAY_PLACES, SAD_FEELINGS, TOYS, TRAITS,
    WEATHER,
};
use super::{a, cap, number_word, Rng};

/// One story as a list of sentences.
pub(crate) fn story(rng: &mut Rng) -> Vec<String> {
    match rng.below(12) {
        9 => seed(rng),
        10 => gift(rng),
        11 => storm(rng),
        0 => lost_and_found(rng),
        1 => sharing(rng),
        2 => problem(rng),
        3 => trip(rng),
        4 => learning(rng),
        5 => adventure(rng),
        6 => bedtime(rng),
        7 => new_friend(rng),
        _ => rainy_day(rng),
    }
}

fn seed(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let gu = Who::grown_up(rng, &hero);
    let (color, flower) = *rng.pick(&[
        ("yellow", "sunflower"),
        ("red", "rose"),
        ("pink", "rose"),
        ("white", "daisy"),
        ("purple", "tulip"),
        ("orange", "tulip"),
        ("red", "tulip"),
    ]);
    let mut s = intro(rng, &hero);
    s.push(format!("{}, {} gave {} a little seed.", rng.pick(DAY_STARTS), gu.intro, hero.name));
    if rng.chance(50) {
        s.push(say(rng, &hero, "What will it grow into?"));
    }
    s.push(say(rng, &gu, "Plant it, and you will see."));
    s.push(format!("{} put the seed in the ground and gave it some water.", hero.name));
    s.push(format!("Every day, {} watered the seed, but nothing happened.", hero.name));
    s.push(say(rng, &gu, "Be patient. Good things take time."));
    s.push("After many days, a tiny green sprout came up, and it grew taller and taller.".to_string());
    s.push(format!("One morning, {} saw {} in the garden.", hero.name, a(&format!("big {color} {flower}"))));
    s.push(say(rng, &hero, "Look! My seed is a flower now!"));
    s.push(match rng.below(2) {
        0 => format!("{} learned that waiting can be hard, but it is worth it.", hero.name),
        _ => format!("{} and {} smiled at the pretty {flower} together.", hero.name, gu.name),
    });
    s
}

fn gift(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let gu = Who::grown_up(rng, &hero);
    let (make, thing, keeps) = *rng.pick(&[
        ("drew a picture of the whole family", "picture", true),
        ("made a card with a big red heart on it", "card", true),
        ("picked some pretty flowers from the garden", "flowers", false),
        ("made a necklace out of colorful beads", "necklace", true),
        ("baked a little cake with a lot of help", "cake", false),
    ]);
    let mut s = intro(rng, &hero);
    s.push(format!(
        "{}, {} remembered that it was {}'s birthday.",
        rng.pick(DAY_STARTS),
        hero.name,
        gu.intro
    ));
    s.push(format!("{} wanted to give {} a present, but {} had no money.", cap(hero.he), gu.him, hero.he));
    s.push(format!("So {} decided to make something.", hero.he));
    s.push(format!("{} {}.", hero.name, make));
    if rng.chance(40) {
        s.push(format!("It took a long time, but {} worked very hard.", hero.he));
    }
    s.push(format!("Then {} hid the {} behind {} back.", hero.he, thing, hero.his));
    s.push(format!("When {} came in, {} jumped out.", gu.name, hero.name));
    let line = format!("Happy birthday, {}!", gu.name);
    s.push(say(rng, &hero, &line));
    s.push(format!("{} smiled and gave {} a big hug.", gu.name, hero.name));
    s.push(say(rng, &gu, "Thank you! This is the best present ever."));
    s.push(format!("{} felt warm and happy inside.", hero.name));
    s.push(if keeps && rng.chance(50) {
        format!("{} kept the {} for a very long time.", gu.name, thing)
    } else {
        "A gift made with love is the best gift of all.".to_string()
    });
    s
}

fn storm(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let gu = Who::grown_up(rng, &hero);
    let mut s = intro(rng, &hero);
    s.push("One night, there was a big storm.".to_string());
    s.push("The wind blew hard, and the rain tapped on the window.".to_string());
    s.push("Then there was a loud boom of thunder!".to_string());
    s.push(format!("{} was scared and hid under {} blanket.", hero.name, hero.his));
    let call = format!("{}! I am scared!", gu.name);
    s.push(say(rng, &hero, &call));
    s.push(format!("{} came in and sat on the bed.", gu.name));
    s.push(say(rng, &gu, "Thunder is just a big noise. It cannot hurt you."));
    s.push(format!("{} held {} hand.", gu.name, hero.his));
    s.push("Soon the booms got quieter and quieter.".to_string());
    s.push(format!("{} was not scared anymore.", hero.name));
    if rng.chance(50) {
        s.push(say(rng, &hero, "Thank you for staying with me."));
    }
    s.push(format!("Soon {} fell fast asleep.", hero.he));
    s.push(match rng.below(2) {
        0 => format!("{} learned that it is fine to feel scared sometimes.", hero.name),
        _ => "Even a big storm does not last forever.".to_string(),
    });
    s
}

/// A line of dialogue with its tag: `"I lost my ball," said Tom.`, `Tom said, "I lost my
/// ball."` or `"Where is it?" asked Tom.`. `line` is one or more full sentences.
fn say(rng: &mut Rng, who: &Who, line: &str) -> String {
    let last = line.chars().last().unwrap_or('.');
    let verb = match last {
        '?' => "asked",
        '!' => *rng.pick(&["shouted", "cried", "said"]),
        _ => *rng.pick(&["said", "said", "said", "said softly"]),
    };
    match rng.below(3) {
        0 => format!("{} {}, \"{}\"", who.name, verb, line),
        1 => format!("\"{}\" {} {}.", tagged(line), who.name, verb),
        _ => {
            let verb = if verb == "said softly" { "said" } else { verb };
            format!("\"{}\" {} {}.", tagged(line), verb, who.name)
        }
    }
}

/// The quoted line before its tag: a final period becomes a comma.
fn tagged(line: &str) -> String {
    match line.strip_suffix('.') {
        Some(head) => format!("{head},"),
        None => line.to_string(),
    }
}

fn himself(who: &Who) -> &'static str {
    if who.he == "he" {
        "himself"
    } else {
        "herself"
    }
}

/// Opening sentences introducing the hero.
fn intro(rng: &mut Rng, hero: &Who) -> Vec<String> {
    let human = hero.kind == "girl" || hero.kind == "boy";
    let mut s = vec![match rng.below(4) {
        0 => format!("Once upon a time, there was {}.", hero.intro),
        1 => format!("There was once {}.", hero.intro),
        2 => format!("{} was {}.", hero.name, a(&format!("{} {}", rng.pick(TRAITS), hero.kind))),
        _ if human => format!("Once upon a time, in a small town, there lived {}.", hero.intro),
        _ => format!("Once upon a time, in a big green forest, there lived {}.", hero.intro),
    }];
    if rng.chance(35) {
        let likes = [
            "play outside",
            "sing songs",
            "run and jump",
            "look at the clouds",
            "help {his} family",
            "make new friends",
            "play with {his} toys",
            "draw pictures",
            "explore",
            "laugh",
        ];
        let like = rng.pick(&likes).replace("{his}", hero.his);
        s.push(format!("{} loved to {}.", cap(hero.he), like));
    }
    s
}

fn lost_and_found(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let helper = Who::helper(rng, &hero);
    let (desc, noun) = thing(rng, TOYS);
    let place = rng.pick(PLAY_PLACES);
    let spots = rng.sample(OUT_SPOTS, 3);
    let sad = rng.pick(SAD_FEELINGS);
    let mut s = intro(rng, &hero);
    s.push(match rng.below(3) {
        0 => format!("{} had {}.", cap(hero.he), a(&desc)),
        1 => format!("{} had {}, and {} loved it very much.", hero.name, a(&desc), hero.he),
        _ => format!("{}'s favorite thing was {}.", hero.name, a(&desc)),
    });
    s.push(format!("{}, {} took the {} to the {}.", rng.pick(DAY_STARTS), hero.name, noun, place));
    if rng.chance(20) {
        s.push(rng.pick(WEATHER).to_string());
    }
    if rng.chance(50) {
        s.push(format!("{} played with the {} for a long time.", cap(hero.he), noun));
    }
    s.push(match rng.below(2) {
        0 => format!("When it was time to go home, {} could not find the {}.", hero.name, noun),
        _ => format!("Then {} looked around, but the {} was gone!", hero.name, noun),
    });
    s.push(match rng.below(2) {
        0 => format!("{} felt very {}.", hero.name, sad),
        _ => format!("{} was so {} that {} began to cry.", cap(hero.he), sad, hero.he),
    });
    s.push(format!("{} looked {} and {}, but it was not there.", cap(hero.he), spots[0], spots[1]));
    s.push(format!("Just then, {} came by.", helper.intro));
    let q = format!("Why are you so {}, {}?", sad, hero.name);
    s.push(say(rng, &helper, &q));
    let l = format!("I lost my {desc}.");
    s.push(say(rng, &hero, &l));
    if rng.chance(50) {
        let offer = rng.pick(&["Do not worry. I will help you look.", "Let us look for it together."]);
        s.push(say(rng, &helper, offer));
    }
    s.push(match rng.below(2) {
        0 => format!("They looked together, and soon {} found the {} {}!", helper.name, noun, spots[2]),
        _ => format!("{} looked {}. There was the {}!", helper.name, spots[2], noun),
    });
    let thanks = format!("Thank you, {}!", helper.name);
    if rng.chance(25) {
        s.push(format!("{} gave {} a big hug.", hero.name, helper.him));
    }
    s.push(say(rng, &hero, &thanks));
    s.push(format!("{} was {} again.", hero.name, rng.pick(&["happy", "glad"])));
    s.push(match rng.below(4) {
        0 => format!("From that day on, {} kept the {} in a safe place.", hero.he, noun),
        1 => "It is good to ask for help when you need it.".to_string(),
        2 => format!("{} never lost {} {} again.", cap(hero.he), hero.his, noun),
        _ => format!("{} learned that friends help each other.", hero.name),
    });
    s
}

fn sharing(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let friend = Who::friend(rng, &hero);
    let food = rng.pick(&[
        "cookies",
        "strawberries",
        "grapes",
        "crackers",
        "cherries",
        "apples",
        "carrots",
        "muffins",
        "plums",
        "cupcakes",
    ]);
    let n = 2 * rng.range(2, 4);
    let place = rng.pick(PLAY_PLACES);
    let mut s = intro(rng, &hero);
    let gu = Who::grown_up(rng, &hero);
    s.push(match rng.below(2) {
        0 => format!(
            "{}, {} went to the {} with {} {}.",
            rng.pick(DAY_STARTS),
            hero.name,
            place,
            number_word(n),
            food
        ),
        _ => format!(
            "{}, {} gave {} {} {} for a snack, and {} went to the {}.",
            rng.pick(DAY_STARTS),
            gu.intro,
            hero.name,
            number_word(n),
            food,
            hero.name,
            place
        ),
    });
    let seat = rng.pick(&["under a tree", "on a big rock", "on the soft grass", "on a bench"]);
    s.push(format!("{} sat down {seat} and saw {}.", cap(hero.he), friend.intro));
    s.push(match rng.below(2) {
        0 => format!("{} was sitting all alone and looked {}.", friend.name, rng.pick(SAD_FEELINGS)),
        _ => format!("{} had no snack, and {} looked hungry.", friend.name, friend.he),
    });
    let hi = format!("Are you hungry, {}?", friend.name);
    s.push(say(rng, &hero, &hi));
    s.push(say(rng, &friend, "Yes, I forgot my snack at home."));
    s.push(format!("{} wanted to eat all the {}, but then {} had a good idea.", hero.name, food, hero.he));
    let half = number_word(n / 2);
    s.push(format!(
        "{} gave {} {} to {} and kept {} for {}.",
        cap(hero.he),
        half,
        food,
        friend.name,
        half,
        himself(&hero)
    ));
    let thanks = format!("Thank you, {}!", hero.name);
    s.push(say(rng, &friend, &thanks));
    s.push(format!("The two friends ate the {} together and laughed.", food));
    s.push(match rng.below(4) {
        0 => "Sharing made them both happy.".to_string(),
        1 => "When we share, everyone is happy.".to_string(),
        2 => format!("{} learned that sharing is fun.", hero.name),
        _ => format!("From that day on, {} and {} were best friends.", hero.name, friend.name),
    });
    s
}

fn problem(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let human = hero.kind == "girl" || hero.kind == "boy";
    let mut s = intro(rng, &hero);
    let day = rng.pick(DAY_STARTS);
    let color = rng.pick(COLORS);
    let sad = rng.pick(SAD_FEELINGS);
    let (helper, plea, fix, after) = match rng.below(6) {
        0 => {
            let place = rng.pick(&["park", "field", "meadow"]);
            s.push(format!("{day}, {} was flying {} {color} kite in the {place}.", hero.name, hero.his));
            s.push("The wind was strong.".to_string());
            s.push("Suddenly the kite flew into a tall tree and got stuck.".to_string());
            s.push(format!("{} jumped and jumped, but {} could not reach it.", hero.name, hero.he));
            let helper = Who::grown_up(rng, &hero);
            let fix = format!("{} got a long stick and gently pulled the kite down.", helper.name);
            (helper, "My kite is stuck in the tree!".to_string(), fix, "Soon the kite was flying high again.")
        }
        1 => {
            s.push(format!(
                "{day}, {} was playing with {} {color} ball next to the pond.",
                hero.name, hero.his
            ));
            s.push("The ball rolled into the water and floated away.".to_string());
            s.push(format!("{} could not swim, so {} could not get it.", hero.name, hero.he));
            let mut helper = Who::friend(rng, &hero);
            helper.name = rng.pick(&["Quack", "Splash", "Puddle", "Paddles"]).to_string();
            helper.kind = "duck".to_string();
            helper.intro = format!("a friendly duck named {}", helper.name);
            let fix = format!(
                "{} swam out and pushed the ball back to the shore with {} beak.",
                helper.name, helper.his
            );
            (helper, "My ball is in the water!".to_string(), fix, "Then they played with the ball together.")
        }
        2 => {
            let spread = rng.pick(&["honey", "jam"]);
            s.push(format!("{day}, {} wanted some {spread} on {} bread.", hero.name, hero.his));
            s.push(format!("But {} could not open the jar.", hero.he));
            s.push(format!("{} twisted and pulled, but the lid would not move.", cap(hero.he)));
            let helper = Who::grown_up(rng, &hero);
            let fix = format!("{} twisted the lid hard. Pop! The jar opened.", helper.name);
            let after = "The bread with the sweet treat was very good.";
            (helper, "I cannot open this jar. Can you help me?".to_string(), fix, after)
        }
        3 => {
            let (toy, part) = *rng.pick(&[
                ("toy car", "wheel"),
                ("toy train", "wheel"),
                ("toy robot", "arm"),
                ("doll", "arm"),
            ]);
            s.push(format!("{day}, {}'s {color} {toy} fell off the table and broke.", hero.name));
            s.push(format!("One {part} came off."));
            s.push(format!("{} tried to put it back, but it would not stay.", cap(hero.he)));
            let helper = Who::grown_up(rng, &hero);
            let fix = format!("{} found some glue and fixed the {part}. It was as good as new.", helper.name);
            let plea = format!("My {toy} is broken!");
            (helper, plea, fix, "Then they played with it together.")
        }
        4 if !human => {
            s.push(format!("{day}, {} went for a walk in the forest.", hero.name));
            s.push(format!("{} followed a butterfly deeper and deeper into the trees.", cap(hero.he)));
            s.push(format!("Soon {} did not know the way home.", hero.he));
            let mut helper = Who::friend(rng, &hero);
            helper.kind = "owl".to_string();
            helper.intro = format!("a wise old owl named {}", helper.name);
            let fix = format!(
                "{} flew up high and looked around. Then {} showed {} the way home.",
                helper.name, helper.he, hero.name
            );
            (
                helper,
                "I am lost. I cannot find my home.".to_string(),
                fix,
                "Soon they could see the little house.",
            )
        }
        _ => {
            let place = rng.pick(PLAY_PLACES);
            s.push(format!(
                "{day}, {} was running in the {place} when {} fell and hurt {} knee.",
                hero.name, hero.he, hero.his
            ));
            s.push(format!("It hurt a lot, and {} began to cry.", hero.he));
            let helper = Who::grown_up(rng, &hero);
            let fix = format!("{} washed the knee and put a bandage on it.", helper.name);
            (helper, "I fell down and hurt my knee.".to_string(), fix, "Soon the knee felt much better.")
        }
    };
    s.push(format!("{} felt {}.", hero.name, sad));
    s.push(format!("Just then, {} came by.", helper.intro));
    let q = if rng.chance(50) {
        format!("What is wrong, {}?", hero.name)
    } else {
        "Why are you sad?".to_string()
    };
    s.push(say(rng, &helper, &q));
    s.push(say(rng, &hero, &plea));
    let offer = *rng.pick(&["Do not worry. I can help.", "I will help you.", "Let me help you."]);
    s.push(say(rng, &helper, offer));
    s.push(fix);
    let thanks = format!("Thank you, {}!", helper.name);
    s.push(say(rng, &hero, &thanks));
    s.push(after.to_string());
    s.push(match rng.below(3) {
        0 => format!("{} was {} again.", hero.name, rng.pick(GLAD_FEELINGS)),
        1 => "It is always good to help others.".to_string(),
        _ => format!("{} learned that it is fine to ask for help.", hero.name),
    });
    s
}

/// A destination: the place, things to see, things to do.
struct Trip {
    place: &'static str,
    sights: &'static [&'static str],
    acts: &'static [&'static str],
}

const TRIPS: &[Trip] = &[
    Trip {
        place: "beach",
        sights: &["big waves", "white shells", "a little crab", "a sailboat", "many seagulls"],
        acts: &[
            "built a sandcastle",
            "swam in the sea",
            "looked for shells",
            "ate ice cream on the sand",
            "played in the waves",
        ],
    },
    Trip {
        place: "zoo",
        sights: &[
            "a tall giraffe",
            "a big elephant",
            "a sleepy lion",
            "funny monkeys",
            "a striped zebra",
            "penguins",
        ],
        acts: &[
            "fed the goats",
            "watched the penguins swim",
            "had a picnic under a tree",
            "took pictures of the animals",
            "rode a little train",
        ],
    },
    Trip {
        place: "farm",
        sights: &["brown cows", "pigs in the mud", "a big red barn", "baby chicks", "a white horse"],
        acts: &["fed the hens", "rode a pony", "picked apples", "collected eggs", "played in the hay"],
    },
    Trip {
        place: "lake",
        sights: &["ducks", "little fish", "a green frog", "tall trees", "a wooden boat"],
        acts: &[
            "went on a boat ride",
            "fed the ducks",
            "had a picnic",
            "threw stones into the water",
            "went for a swim",
        ],
    },
    Trip {
        place: "mountains",
        sights: &["tall trees", "a little stream", "a deer", "big rocks", "an eagle"],
        acts: &[
            "walked up a hill",
            "had a picnic",
            "sat by a little stream",
            "looked for pine cones",
            "counted the birds",
        ],
    },
    Trip {
        place: "city",
        sights: &["tall buildings", "busy streets", "a big fountain", "many people", "red buses"],
        acts: &[
            "rode on a bus",
            "ate pizza",
            "visited a museum",
            "looked at the bright lights",
            "went to a toy shop",
        ],
    },
];

fn trip(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let t = rng.pick(TRIPS);
    let sights = rng.sample(t.sights, 2);
    let acts = rng.sample(t.acts, 3);
    let mut s = intro(rng, &hero);
    s.push(format!(
        "{}, {} and {} family went to the {}.",
        rng.pick(DAY_STARTS),
        hero.name,
        hero.his,
        t.place
    ));
    s.push(format!("They went by {}.", rng.pick(&["car", "bus", "train"])));
    if rng.chance(40) {
        s.push(rng.pick(WEATHER).to_string());
    }
    s.push(match rng.below(2) {
        0 => format!("The ride was long, so {} looked out the window.", hero.he),
        _ => format!("{} was so excited that {} could not sit still.", hero.name, hero.he),
    });
    let at = if matches!(t.place, "city" | "mountains") { "In" } else { "At" };
    s.push(format!("{at} the {}, {} saw {} and {}.", t.place, hero.he, sights[0], sights[1]));
    let wow = rng.pick(&["This is so much fun!", "I love it here!", "Can we stay all day?", "Look at that!"]);
    s.push(say(rng, &hero, wow));
    s.push(format!("First, they {}.", acts[0]));
    s.push(format!("Then they {}.", acts[1]));
    s.push(format!("After that, they {}.", acts[2]));
    s.push("When the sun went down, they went home.".to_string());
    s.push(format!("{} was tired but very {}.", hero.name, rng.pick(&["happy", "glad"])));
    s.push(match rng.below(3) {
        0 => say(rng, &hero, "Can we go again soon?"),
        1 => format!("That night, {} dreamed about the {}.", hero.he, t.place),
        _ => "It was the best day ever.".to_string(),
    });
    s
}

fn learning(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let (he, his, me) = (hero.he, hero.his, himself(&hero));
    let (skill, fail, tip, success) = match rng.below(9) {
        0 => (
            "ride a bike".to_string(),
            format!("{he} got on the bike, but {he} wobbled and fell down."),
            "Keep pedaling and look ahead.",
            format!("{he} rode all the way down the street."),
        ),
        1 => (
            "swim".to_string(),
            format!("{he} splashed and splashed, but {he} did not move forward."),
            "Kick your legs and move your arms.",
            format!("{he} swam all the way to the other side of the pool."),
        ),
        2 => (
            "read".to_string(),
            "the words in the book were hard.".to_string(),
            "Sound out each letter, one at a time.",
            format!("{he} read a whole book all by {me}."),
        ),
        3 => (
            format!("tie {his} shoes"),
            "the laces got all tangled up.".to_string(),
            "Make two loops and cross them.",
            format!("{he} tied both shoes all by {me}."),
        ),
        4 => (
            "whistle".to_string(),
            format!("{he} blew and blew, but only air came out."),
            "Make your lips round and blow softly.",
            format!("{he} whistled a happy song."),
        ),
        5 => (
            "jump rope".to_string(),
            format!("the rope hit {his} feet again and again."),
            "Jump when the rope is near your feet.",
            format!("{he} jumped ten times without stopping."),
        ),
        6 => (
            "climb a tree".to_string(),
            format!("{he} slipped and slid back down."),
            "Hold on tight and take one small step at a time.",
            format!("{he} climbed up to the first big branch."),
        ),
        7 => (
            "draw a horse".to_string(),
            format!("{his} horse looked like a potato."),
            "Start with the big shapes, then add the small parts.",
            format!("{he} drew a beautiful horse with a long tail."),
        ),
        _ => (
            "count to twenty".to_string(),
            format!("{he} always forgot what comes after twelve."),
            "After twelve comes thirteen. Say it with me.",
            format!("{he} counted all the way to twenty."),
        ),
    };
    let helper = if rng.chance(65) { Who::grown_up(rng, &hero) } else { Who::helper(rng, &hero) };
    let mut s = intro(rng, &hero);
    s.push(match rng.below(2) {
        0 => format!("{} wanted to learn to {}.", hero.name, skill),
        _ => format!("More than anything, {} wanted to {}.", hero.name, skill),
    });
    s.push(format!("{} tried hard. {}", cap(he), cap(&fail)));
    s.push(format!("{} felt {}.", hero.name, rng.pick(SAD_FEELINGS)));
    if rng.chance(50) {
        let moan = *rng.pick(&["I cannot do it!", "This is too hard!", "I will never learn!"]);
        s.push(say(rng, &hero, moan));
    }
    s.push(match rng.below(3) {
        0 => format!("Then {} came to help.", helper.intro),
        1 => format!("Just then, {} saw {}.", helper.intro, hero.him),
        _ => format!("Soon {} came over.", helper.intro),
    });
    let line = format!("Do not give up. {tip}");
    s.push(say(rng, &helper, &line));
    s.push(format!("So {} practiced again and again.", hero.name));
    s.push(format!("At last, {success}"));
    s.push(say(rng, &hero, "I did it!"));
    s.push(format!("{} smiled, and {} felt very proud.", helper.name, hero.name));
    s.push(match rng.below(3) {
        0 => format!("{} learned that practice helps us learn new things.", hero.name),
        1 => "If you keep trying, you can do hard things.".to_string(),
        _ => "Never give up, and you will get better every day.".to_string(),
    });
    s
}

fn adventure(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let (found, follow) = *rng.pick(&[
        ("a narrow path behind the garden", "followed the path"),
        ("a small door at the bottom of an old tree", "opened the door and went inside"),
        ("an old map in a box", "followed the map"),
        ("a trail of little footprints", "followed the footprints"),
        ("a little boat by the river", "got into the boat and rowed down the river"),
        ("a big hole under the fence", "crawled through the hole"),
    ]);
    let discovery = rng.pick(&[
        "a secret garden full of bright flowers",
        "a family of baby foxes",
        "a tiny house where mice lived",
        "a pond with golden fish",
        "a cave with sparkly rocks",
        "a field of tall sunflowers",
        "an old tree full of singing birds",
    ]);
    let mut s = intro(rng, &hero);
    s.push(format!("{}, {} found {}.", rng.pick(DAY_STARTS), hero.name, found));
    let wonder = rng.pick(&["Where does it go?", "I wonder what is there.", "What could it be?"]);
    s.push(say(rng, &hero, wonder));
    s.push(format!("{} was a little scared, but {} was also curious.", hero.name, hero.he));
    s.push(format!("So {} took a deep breath and {}.", hero.he, follow));
    s.push(format!("At the end, {} found {}!", hero.he, discovery));
    if rng.chance(40) {
        let friend = Who::friend(rng, &hero);
        s.push(format!("There {} met {}.", hero.he, friend.intro));
        s.push(say(rng, &friend, "Hello! Do you want to play?"));
        s.push(format!("{} and {} played until the sun began to set.", hero.name, friend.name));
    } else {
        s.push(format!("{} could not believe {} eyes.", hero.name, hero.his));
    }
    let gu = Who::grown_up(rng, &hero);
    s.push(format!("Then {} ran home to tell {} all about it.", hero.name, gu.intro));
    s.push(say(rng, &gu, "What a great adventure!"));
    if rng.chance(50) {
        s.push(format!("That night, {} dreamed of {}.", hero.name, discovery));
    }
    s
}

fn bedtime(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let parent = Who::grown_up(rng, &hero);
    let mut s = intro(rng, &hero);
    s.push(match rng.below(2) {
        0 => "It was late, and the sky was dark.".to_string(),
        _ => "The day was over, and it was time for bed.".to_string(),
    });
    s.push(format!("{} took a warm bath and put on {} {} pajamas.", hero.name, hero.his, rng.pick(COLORS)));
    s.push(format!("Then {} brushed {} teeth.", hero.he, hero.his));
    let tale = rng.pick(&[
        "a brave little mouse",
        "a dragon who was afraid of the dark",
        "a boat that sailed to the moon",
        "a bear who loved honey",
        "a star that fell from the sky",
        "a train that could talk",
        "a tiny fish in a big sea",
    ]);
    s.push(format!("{} read {} a story about {}.", cap(&parent.intro), hero.him, tale));
    if rng.chance(50) {
        s.push(say(rng, &hero, "Can you read it one more time?"));
        s.push(format!("{} smiled and read it again.", parent.name));
    }
    let toy = rng.pick(&["teddy bear", "soft bunny", "old doll", "toy dog", "blanket"]);
    s.push(format!("{} hugged {} {}.", hero.name, hero.his, toy));
    s.push(
        rng.pick(&[
            "Outside, the moon was bright and the stars were shining.",
            "Outside, the wind was blowing softly.",
            "Outside, an owl was hooting in the tree.",
        ])
        .to_string(),
    );
    let gn = format!("Good night, {}. Sleep well.", hero.name);
    s.push(say(rng, &parent, &gn));
    let gn2 = format!("Good night, {}.", parent.name);
    s.push(say(rng, &hero, &gn2));
    s.push(format!("Soon {} was fast asleep.", hero.name));
    let dream = rng.pick(&[
        "flying over the clouds",
        "a big chocolate cake",
        "playing with {his} friends",
        "swimming with the fish",
        "the story {he} had heard",
    ]);
    s.push(format!(
        "{} dreamed about {}.",
        cap(hero.he),
        dream.replace("{his}", hero.his).replace("{he}", hero.he)
    ));
    if rng.chance(40) {
        s.push("The end.".to_string());
    }
    s
}

fn new_friend(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let friend = Who::friend(rng, &hero);
    let game = rng.pick(&["tag", "hide and seek", "catch", "ball"]);
    let mut s = intro(rng, &hero);
    s.push(format!("{}, {} came to live next door to {}.", rng.pick(DAY_STARTS), friend.intro, hero.name));
    s.push(format!("{} did not know anyone, and {} stood alone.", friend.name, friend.he));
    s.push(format!("{} walked over and smiled.", hero.name));
    let hi = format!("Hello! My name is {}. What is your name?", hero.name);
    s.push(say(rng, &hero, &hi));
    let me = format!("My name is {}.", friend.name);
    s.push(say(rng, &friend, &me));
    let ask = format!("Do you want to play {game} with me?");
    s.push(say(rng, &hero, &ask));
    s.push(say(rng, &friend, "Yes, I would love to!"));
    s.push(format!("They played {game} all afternoon."));
    s.push(format!("{} laughed and was not lonely anymore.", friend.name));
    s.push(match rng.below(3) {
        0 => format!("From that day on, {} and {} were best friends.", hero.name, friend.name),
        1 => "A kind hello can make a new friend.".to_string(),
        _ => format!("{} was {} that {} had a new friend.", hero.name, rng.pick(GLAD_FEELINGS), hero.he),
    });
    s
}

fn rainy_day(rng: &mut Rng) -> Vec<String> {
    let hero = Who::hero(rng);
    let gu = Who::grown_up(rng, &hero);
    let place = rng.pick(PLAY_PLACES);
    let acts = rng.sample(
        &[
            "built a fort with blankets and pillows",
            "painted a big picture",
            "baked cookies",
            "played a board game",
            "made a puppet show",
            "read books under a blanket",
            "danced to happy music",
        ],
        2,
    );
    let mut s = intro(rng, &hero);
    s.push(format!("{} wanted to have a picnic in the {}.", hero.name, place));
    s.push(format!("But when {} woke up, it was raining.", hero.he));
    if rng.chance(40) {
        s.push("Big drops of rain fell on the window.".to_string());
    }
    s.push(format!("{} felt {}.", hero.name, rng.pick(SAD_FEELINGS)));
    s.push(say(rng, &hero, "Now we cannot go outside!"));
    s.push(say(rng, &gu, "We can have fun inside too."));
    s.push(format!("First, {} and {} {}.", hero.name, gu.name, acts[0]));
    s.push(format!("Then they {}.", acts[1]));
    s.push("After a while, the rain stopped.".to_string());
    s.push(format!("{} looked out the window and saw a big rainbow in the sky!", hero.name));
    s.push(say(rng, &hero, "Look! A rainbow!"));
    s.push("It was a good day after all.".to_string());
    s
}
