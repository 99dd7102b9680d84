use super::*;
use crate::sample::seed_state;

#[test]
fn identical_distributions_never_reject() {
    let p = [0.5, 0.25, 0.125, 0.125];
    let mut rng = seed_state(3);
    for d in 0..4 {
        for _ in 0..1000 {
            assert_eq!(verify_draw(&p, &p, d, &mut rng), None);
        }
    }
}

#[test]
fn refusals_name_both_values() {
    assert_eq!(check_gamma(0), Err(Refusal::Gamma { gamma: 0 }));
    assert_eq!(check_gamma(MAX_GAMMA + 1), Err(Refusal::Gamma { gamma: MAX_GAMMA + 1 }));
    assert!(check_gamma(1).is_ok() && check_gamma(MAX_GAMMA).is_ok());
    let s = format!("{}", Refusal::Gamma { gamma: 17 });
    assert!(s.contains("17") && s.contains("16"), "{s}");
    let s = format!("{}", Refusal::EarlyExit { layer: 5, n_layers: 5 });
    assert!(s.contains("layer 5") && s.contains("1..=4"), "{s}");
    let s = format!("{}", Refusal::VocabSize { target: 512, draft: 32000 });
    assert!(s.contains("512") && s.contains("32000"), "{s}");
}
