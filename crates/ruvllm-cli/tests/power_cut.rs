//! A power cut through the host file path: `ruvllm-esp32 console --knowledge FILE` (stdin
//! piped) is killed with SIGKILL at random points during `add` and `forget`, a few hundred
//! times. Afterwards every acknowledged change (its reply was read) is in the file, and the
//! change that was cut is either wholly there (the exact text at one new id) or wholly absent.
//!
//! `POWER_CUT_ITERATIONS` sets the number of kills (default 500: about 20 s on 2 cores) and
//! `POWER_CUT_SEED` the random sequence.

#[path = "live/mod.rs"]
#[allow(dead_code)] // not every helper is used here
mod live;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use live::{restored, Live};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A change the console is asked for.
#[derive(Debug, Clone)]
enum Change {
    Add(String),
    Forget(u32),
}

const ANIMALS: [&str; 6] = ["cat", "dog", "bird", "fish", "horse", "goat"];
const PLACES: [&str; 5] = ["kitchen", "garden", "barn", "river", "hill"];

fn pick(rng: &mut Rng, model: &BTreeMap<u32, String>, n: &mut u64) -> Change {
    let forget = !model.is_empty() && (model.len() >= 24 || rng.below(5) < 2);
    if forget {
        let ids: Vec<_> = model.keys().copied().collect();
        return Change::Forget(ids[rng.below(ids.len() as u64) as usize]);
    }
    *n += 1;
    let (a, p) = (ANIMALS[rng.below(6) as usize], PLACES[rng.below(5) as usize]);
    Change::Add(format!("Fact {n}: the {a} sleeps near the {p} every {} days.", rng.below(90) + 2))
}

fn line(c: &Change) -> String {
    match c {
        Change::Add(text) => format!("add {text}"),
        Change::Forget(id) => format!("forget {id}"),
    }
}

#[test]
fn sigkill_during_add_and_forget_never_loses_an_acknowledged_change() {
    let iterations = env_or("POWER_CUT_ITERATIONS", 500);
    let mut rng = Rng(env_or("POWER_CUT_SEED", 0x5EED_C0DE) | 1);
    let dir = std::env::temp_dir().join(format!("ruvllm-power-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("knowledge.rvk");
    let mut model: BTreeMap<u32, String> = BTreeMap::new();
    let (mut n, mut acknowledged, mut applied) = (0u64, 0usize, 0usize);
    let started = Instant::now();
    for it in 0..iterations {
        let mut live =
            Live::start(&file).unwrap_or_else(|| panic!("iteration {it}: the console did not start"));
        let before = rng.below(3);
        for _ in 0..before {
            let c = pick(&mut rng, &model, &mut n);
            let reply = live.command(&line(&c)).expect("a reply");
            match c {
                Change::Add(text) => {
                    let id = reply.strip_prefix("Added knowledge #").and_then(|i| i.parse().ok());
                    let id = id.unwrap_or_else(|| panic!("iteration {it}: {reply}"));
                    model.insert(id, text);
                }
                Change::Forget(id) => {
                    assert_eq!(reply, format!("Forgot knowledge #{id}"), "iteration {it}");
                    model.remove(&id);
                }
            }
            acknowledged += 1;
        }
        // The cut: the command is sent and the process killed a random moment later, reply
        // or not (a reply not read is not an acknowledgement).
        let cut = pick(&mut rng, &model, &mut n);
        live.send(&line(&cut));
        std::thread::sleep(Duration::from_micros(rng.below(4000)));
        live.child.kill().unwrap();
        live.child.wait().unwrap();
        drop(live);

        let (r, entries) = restored(&file);
        assert_eq!(r.skipped_corrupt(), 0, "iteration {it}: {r}");
        let entries: BTreeMap<u32, String> = entries.into_iter().collect();
        if entries != model {
            let mut expected = model.clone();
            match &cut {
                Change::Add(text) => {
                    let new: Vec<_> = entries.iter().filter(|(id, _)| !model.contains_key(id)).collect();
                    assert_eq!(new.len(), 1, "iteration {it}: {entries:?} vs acknowledged {model:?}");
                    assert_eq!(new[0].1, text, "iteration {it}: the cut add is half there");
                    expected.insert(*new[0].0, text.clone());
                }
                Change::Forget(id) => {
                    expected.remove(id);
                }
            }
            assert_eq!(entries, expected, "iteration {it}: acknowledged {model:?}, cut {cut:?}");
            applied += 1;
        }
        model = entries;
    }
    eprintln!(
        "{iterations} kills in {:.1} s: {acknowledged} acknowledged changes kept, {applied} cut changes were complete, {} absent",
        started.elapsed().as_secs_f64(),
        iterations as usize - applied
    );
    let _ = std::fs::remove_dir_all(&dir);
}
