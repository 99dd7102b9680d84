//! Fact documents: a few simple true sentences about one topic.

use super::{a, cap, number_word, Rng};

/// What the generator knows about an animal.
struct Animal {
    one: &'static str,
    many: &'static str,
    sound: Option<&'static str>,
    baby: Option<&'static str>,
    legs: Option<usize>,
    eats: &'static str,
    can: &'static [&'static str],
    more: &'static [&'static str],
}

const ANIMALS: &[Animal] = &[
    Animal {
        one: "cat",
        many: "cats",
        sound: Some("meow"),
        baby: Some("kitten"),
        legs: Some(4),
        eats: "fish and meat",
        can: &["run", "jump", "climb trees"],
        more: &[
            "Cats like to sleep in the sun.",
            "Cats have soft fur and long whiskers.",
            "Many cats live with people.",
        ],
    },
    Animal {
        one: "dog",
        many: "dogs",
        sound: Some("woof"),
        baby: Some("puppy"),
        legs: Some(4),
        eats: "meat",
        can: &["run fast", "swim", "dig holes"],
        more: &[
            "Dogs can smell things very well.",
            "Many dogs live with people.",
            "A dog wags its tail when it is happy.",
        ],
    },
    Animal {
        one: "cow",
        many: "cows",
        sound: Some("moo"),
        baby: Some("calf"),
        legs: Some(4),
        eats: "grass",
        can: &["walk", "swim"],
        more: &["Cows give us milk.", "Many cows live on farms."],
    },
    Animal {
        one: "duck",
        many: "ducks",
        sound: Some("quack"),
        baby: Some("duckling"),
        legs: Some(2),
        eats: "seeds and bugs",
        can: &["swim", "fly", "walk"],
        more: &["Ducks have feathers.", "Ducks like ponds and lakes.", "A duck has webbed feet."],
    },
    Animal {
        one: "sheep",
        many: "sheep",
        sound: Some("baa"),
        baby: Some("lamb"),
        legs: Some(4),
        eats: "grass",
        can: &["run", "jump"],
        more: &["Sheep have soft wool.", "People make warm clothes from wool."],
    },
    Animal {
        one: "pig",
        many: "pigs",
        sound: Some("oink"),
        baby: Some("piglet"),
        legs: Some(4),
        eats: "corn and vegetables",
        can: &["run", "swim"],
        more: &["Pigs like to roll in the mud.", "Pigs are very smart."],
    },
    Animal {
        one: "horse",
        many: "horses",
        sound: Some("neigh"),
        baby: Some("foal"),
        legs: Some(4),
        eats: "grass and hay",
        can: &["run very fast", "jump"],
        more: &["People can ride horses.", "Horses sleep standing up."],
    },
    Animal {
        one: "hen",
        many: "hens",
        sound: Some("cluck"),
        baby: Some("chick"),
        legs: Some(2),
        eats: "seeds and bugs",
        can: &["walk", "flap its wings"],
        more: &["Hens lay eggs.", "A hen has feathers."],
    },
    Animal {
        one: "bird",
        many: "birds",
        sound: Some("tweet"),
        baby: Some("chick"),
        legs: Some(2),
        eats: "seeds and worms",
        can: &["fly", "sing"],
        more: &["Birds build nests.", "Birds have feathers and wings.", "Birds lay eggs."],
    },
    Animal {
        one: "frog",
        many: "frogs",
        sound: Some("ribbit"),
        baby: Some("tadpole"),
        legs: Some(4),
        eats: "bugs",
        can: &["jump", "swim"],
        more: &["Frogs live near water.", "A frog has long back legs."],
    },
    Animal {
        one: "fish",
        many: "fish",
        sound: None,
        baby: None,
        legs: None,
        eats: "small plants and bugs",
        can: &["swim"],
        more: &["Fish live in water.", "Fish use their fins to swim.", "Fish have no legs."],
    },
    Animal {
        one: "bee",
        many: "bees",
        sound: Some("buzz"),
        baby: None,
        legs: Some(6),
        eats: "nectar from flowers",
        can: &["fly"],
        more: &["Bees make honey.", "Bees live in a hive.", "Bees help flowers grow."],
    },
    Animal {
        one: "spider",
        many: "spiders",
        sound: None,
        baby: None,
        legs: Some(8),
        eats: "bugs",
        can: &["spin a web", "climb walls"],
        more: &["Spiders catch bugs in their webs."],
    },
    Animal {
        one: "owl",
        many: "owls",
        sound: Some("hoot"),
        baby: Some("owlet"),
        legs: Some(2),
        eats: "mice and bugs",
        can: &["fly", "see in the dark"],
        more: &["Owls sleep in the day and wake up at night.", "An owl has big round eyes."],
    },
    Animal {
        one: "bear",
        many: "bears",
        sound: None,
        baby: Some("cub"),
        legs: Some(4),
        eats: "berries, fish and honey",
        can: &["climb trees", "swim"],
        more: &["Bears sleep for a long time in winter.", "Bears have thick fur."],
    },
    Animal {
        one: "lion",
        many: "lions",
        sound: None,
        baby: Some("cub"),
        legs: Some(4),
        eats: "meat",
        can: &["run fast", "roar"],
        more: &["Lions live in groups.", "A male lion has a big mane."],
    },
    Animal {
        one: "elephant",
        many: "elephants",
        sound: None,
        baby: Some("calf"),
        legs: Some(4),
        eats: "grass, leaves and fruit",
        can: &["spray water with its trunk", "swim"],
        more: &["Elephants are very big.", "An elephant has a long trunk and big ears."],
    },
    Animal {
        one: "rabbit",
        many: "rabbits",
        sound: None,
        baby: Some("kit"),
        legs: Some(4),
        eats: "grass and vegetables",
        can: &["hop", "dig"],
        more: &["Rabbits have long ears.", "Rabbits live in holes under the ground."],
    },
    Animal {
        one: "monkey",
        many: "monkeys",
        sound: None,
        baby: None,
        legs: Some(2),
        eats: "fruit and leaves",
        can: &["climb trees", "swing from branches"],
        more: &["Monkeys like bananas.", "Many monkeys have long tails."],
    },
    Animal {
        one: "giraffe",
        many: "giraffes",
        sound: None,
        baby: Some("calf"),
        legs: Some(4),
        eats: "leaves",
        can: &["run fast", "reach high branches"],
        more: &["Giraffes have very long necks.", "Giraffes are the tallest animals."],
    },
    Animal {
        one: "turtle",
        many: "turtles",
        sound: None,
        baby: None,
        legs: Some(4),
        eats: "plants and bugs",
        can: &["swim", "walk slowly"],
        more: &["A turtle has a hard shell.", "A turtle can hide in its shell."],
    },
    Animal {
        one: "mouse",
        many: "mice",
        sound: Some("squeak"),
        baby: Some("pup"),
        legs: Some(4),
        eats: "seeds and grain",
        can: &["run", "climb"],
        more: &["Mice are very small.", "A mouse has a long thin tail."],
    },
    Animal {
        one: "goat",
        many: "goats",
        sound: Some("baa"),
        baby: Some("kid"),
        legs: Some(4),
        eats: "grass and leaves",
        can: &["climb rocks", "jump"],
        more: &["Goats give us milk.", "Some goats have horns."],
    },
    Animal {
        one: "penguin",
        many: "penguins",
        sound: None,
        baby: Some("chick"),
        legs: Some(2),
        eats: "fish",
        can: &["swim", "slide on the ice"],
        more: &["Penguins are birds, but they cannot fly.", "Penguins live where it is cold."],
    },
];

/// One fact document as a list of sentences.
pub(crate) fn facts(rng: &mut Rng) -> Vec<String> {
    match rng.below(10) {
        0..=2 => animal(rng),
        3 => from_list(rng, "colors", COLORS),
        4 => from_list(rng, "the weather", WEATHER),
        5 => from_list(rng, "food", FOOD),
        6 => from_list(rng, "the body", BODY),
        7 => numbers(rng),
        8 => days(rng),
        _ => match rng.below(2) {
            0 => from_list(rng, "the seasons", SEASONS),
            _ => from_list(rng, "shapes", SHAPES),
        },
    }
}

fn animal(rng: &mut Rng) -> Vec<String> {
    let x = rng.pick(ANIMALS);
    let one = a(x.one);
    let mut pool: Vec<String> = Vec::new();
    pool.push(format!("{} eat {}.", cap(x.many), x.eats));
    if let Some(s) = x.sound {
        pool.push(format!("{} says {}.", cap(&one), s));
    }
    if let Some(b) = x.baby {
        pool.push(format!("A baby {} is called {}.", x.one, a(b)));
    }
    if let Some(n) = x.legs {
        pool.push(match rng.below(2) {
            0 => format!("{} has {} legs.", cap(&one), number_word(n)),
            _ => format!("{} have {} legs.", cap(x.many), number_word(n)),
        });
    }
    let can = rng.sample(x.can, 2.min(x.can.len()));
    pool.push(if can.len() == 2 {
        format!("{} can {} and {}.", cap(&one), can[0], can[1])
    } else {
        format!("{} can {}.", cap(&one), can[0])
    });
    pool.extend(x.more.iter().map(|s| s.to_string()));
    rng.shuffle(&mut pool);
    let k = rng.range(3.min(pool.len()), pool.len().min(6));
    pool.truncate(k);
    let mut s = vec![match rng.below(3) {
        0 => format!("{} are animals.", cap(x.many)),
        1 => format!("This is about {}.", x.many),
        _ => format!("Let us learn about {}.", x.many),
    }];
    s.extend(pool);
    s
}

/// Opening line, then several facts from the list in a random order.
fn from_list(rng: &mut Rng, topic: &str, list: &[&str]) -> Vec<String> {
    let k = rng.range(4, 7.min(list.len()));
    let mut s = vec![match rng.below(3) {
        0 => format!("Here are some facts about {topic}."),
        1 => format!("Let us learn about {topic}."),
        _ => format!("This is about {topic}."),
    }];
    s.extend(rng.sample(list, k).into_iter().map(String::from));
    s
}

const COLORS: &[&str] = &[
    "The sky is blue.",
    "Grass is green.",
    "Snow is white.",
    "A banana is yellow.",
    "A strawberry is red.",
    "A carrot is orange.",
    "Milk is white.",
    "Chocolate is brown.",
    "A lemon is yellow.",
    "Leaves are green in summer.",
    "In fall, many leaves turn red, orange and yellow.",
    "Red and yellow make orange.",
    "Blue and yellow make green.",
    "Red and blue make purple.",
    "Red and white make pink.",
    "Black and white make gray.",
    "A rainbow has many colors.",
    "The night sky is dark.",
    "A fire truck is red.",
    "Most tree trunks are brown.",
];

const WEATHER: &[&str] = &[
    "Rain falls from the clouds.",
    "We use an umbrella when it rains.",
    "Snow is cold and white.",
    "Snow falls when it is very cold.",
    "The sun gives us light and keeps us warm.",
    "Wind can move the leaves and the clouds.",
    "After the rain, we can sometimes see a rainbow.",
    "Thunder is very loud.",
    "When it is hot, we wear light clothes.",
    "When it is cold, we wear a coat, a hat and mittens.",
    "Clouds can be white or gray.",
    "Puddles form when it rains.",
    "Fog makes it hard to see far.",
    "Plants need rain and sun to grow.",
];

const FOOD: &[&str] = &[
    "Apples grow on trees.",
    "Carrots grow in the ground.",
    "Milk comes from cows.",
    "Eggs come from hens.",
    "Bread is made from wheat.",
    "Honey is made by bees.",
    "Fruits and vegetables help us grow strong.",
    "We should drink water every day.",
    "Cheese is made from milk.",
    "Bananas grow in warm places.",
    "An orange is a fruit.",
    "A potato is a vegetable.",
    "We eat breakfast in the morning.",
    "We eat dinner in the evening.",
    "Too much candy is bad for our teeth.",
    "We wash our hands before we eat.",
];

const BODY: &[&str] = &[
    "We see with our eyes.",
    "We hear with our ears.",
    "We smell with our nose.",
    "We taste with our tongue.",
    "We have two hands and two feet.",
    "Each hand has five fingers.",
    "Each foot has five toes.",
    "Our heart pumps blood all day and all night.",
    "We use our legs to walk and run.",
    "We brush our teeth every morning and every night.",
    "Sleep helps our body rest and grow.",
    "Our bones help us stand up.",
    "We breathe with our lungs.",
    "Our hair keeps our head warm.",
];

const SEASONS: &[&str] = &[
    "There are four seasons in a year.",
    "The four seasons are spring, summer, fall and winter.",
    "In spring, flowers begin to grow.",
    "In spring, many baby animals are born.",
    "Summer is the hottest season.",
    "In summer, we can swim and play outside.",
    "In fall, the leaves fall from the trees.",
    "Winter is the coldest season.",
    "In winter, it can snow.",
    "After winter comes spring.",
    "After summer comes fall.",
];

const SHAPES: &[&str] = &[
    "A circle is round.",
    "A ball is round.",
    "A square has four sides.",
    "A triangle has three sides.",
    "A rectangle has four sides, and two of them are long.",
    "A wheel is a circle.",
    "A box has six sides.",
    "A star can have five points.",
    "A door is a rectangle.",
    "A slice of pizza looks like a triangle.",
];

const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

fn days(rng: &mut Rng) -> Vec<String> {
    let mut pool = vec![
        "There are seven days in a week.".to_string(),
        "The days of the week are Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday."
            .to_string(),
        "Saturday and Sunday are the weekend.".to_string(),
        "A day has morning, afternoon, evening and night.".to_string(),
        "The sun rises in the morning.".to_string(),
        "The sun sets in the evening.".to_string(),
        "There are twelve months in a year.".to_string(),
    ];
    for _ in 0..2 {
        let d = rng.below(7);
        pool.push(format!("After {} comes {}.", DAYS[d], DAYS[(d + 1) % 7]));
    }
    let d = rng.below(7);
    pool.push(format!("The day before {} is {}.", DAYS[d], DAYS[(d + 6) % 7]));
    rng.shuffle(&mut pool);
    pool.truncate(rng.range(4, 7));
    let mut s = vec!["Let us learn about the days of the week.".to_string()];
    s.extend(pool);
    s
}

fn numbers(rng: &mut Rng) -> Vec<String> {
    let mut s = vec![rng
        .pick(&[
            "Let us learn about numbers.",
            "Numbers help us count.",
            "Here are some facts about numbers.",
        ])
        .to_string()];
    let n = rng.range(4, 8);
    for _ in 0..n {
        s.push(match rng.below(7) {
            0 => {
                let (x, y) = (rng.range(1, 10), rng.range(1, 10));
                format!("{} plus {} is {}.", cap(number_word(x)), number_word(y), number_word(x + y))
            }
            1 => {
                let x = rng.range(2, 20);
                let y = rng.range(1, x - 1);
                format!("{} minus {} is {}.", cap(number_word(x)), number_word(y), number_word(x - y))
            }
            2 => {
                let x = rng.range(1, 19);
                format!("After {} comes {}.", number_word(x), number_word(x + 1))
            }
            3 => {
                let x = rng.range(1, 20);
                let y = rng.range(0, x - 1);
                format!("{} is more than {}.", cap(number_word(x)), number_word(y))
            }
            4 => {
                let x = rng.range(1, 20);
                let kind = if x.is_multiple_of(2) { "an even" } else { "an odd" };
                format!("{} is {} number.", cap(number_word(x)), kind)
            }
            5 => {
                let (x, y) = (rng.range(1, 5), rng.range(1, 5));
                let thing = rng.pick(&["apples", "balls", "cookies", "stars", "ducks", "books"]);
                format!(
                    "If you have {} and get {} more, you have {}.",
                    count(x, thing),
                    number_word(y),
                    count(x + y, thing)
                )
            }
            _ => {
                let x = rng.range(3, 10);
                let words: Vec<&str> = (1..=x).map(number_word).collect();
                format!("{} and {}.", cap(&words[..x - 1].join(", ")), words[x - 1])
            }
        });
    }
    s
}

/// "one apple", "three apples" (`things` is a regular plural).
fn count(n: usize, things: &str) -> String {
    if n == 1 {
        format!("one {}", things.strip_suffix('s').unwrap_or(things))
    } else {
        format!("{} {things}", number_word(n))
    }
}
