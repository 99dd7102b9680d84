//! The measured constants of `anomaly`'s language score ([`LanguageCalibration`]) for the
//! built-in model. Both are fitted on the development split of `testdata/anomaly/` (and
//! corpus sentences) by
//! `cargo test -p ruvllm-cli --test anomaly_eval no_setup -- --nocapture`,
//! which fails, printing the new values, when they differ from these (after retraining the
//! built-in model, paste them here).

use crate::knowledge::LanguageCalibration;

/// With a model: the text features and the model's view of the tokens (integer path).
pub const ANOMALY_LANGUAGE: LanguageCalibration = LanguageCalibration {
    mean: [
        0.7635, 0.1053, 0.1312, 0.3209, 5.5197, 0.9539, 0.0986, 0.691, 0.9683, -1.0757, 0.1695, 0.7194,
        0.7557, 0.6987,
    ],
    scale: [
        0.3362, 0.2422, 0.2363, 0.1696, 2.8993, 0.149, 0.1941, 0.4372, 4.675, 5.6591, 0.2673, 0.2452, 0.2325,
        4.4661,
    ],
    weights: [
        0.2035, 0.0763, -0.3677, 0.1172, 0.9957, -1.0301, -0.2011, -1.0709, 1.3674, 0.8317, 0.6685, -3.2964,
        -2.8079, 1.2261,
    ],
    bias: 0.8028,
    threshold: 0.42,
};

/// Without a model (a board that carries only knowledge): the text features alone.
pub const ANOMALY_TEXT: LanguageCalibration = LanguageCalibration {
    mean: [0.7635, 0.1053, 0.1312, 0.3209, 5.5197, 0.9539, 0.0986, 0.691, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    scale: [0.3362, 0.2422, 0.2363, 0.1696, 2.8993, 0.149, 0.1941, 0.4372, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    weights: [
        0.1456, 0.7423, -0.968, -1.6285, 4.5553, -1.8945, 0.3802, -4.7944, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ],
    bias: 3.8567,
    threshold: 0.5,
};
