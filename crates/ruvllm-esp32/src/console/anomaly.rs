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
        0.7635, 0.1053, 0.1312, 0.3209, 5.5197, 0.9539, 0.0986, 0.691, 4.3677, 0.0592, 0.6452, 0.5249,
        0.1695, 0.7194, 0.7557, 0.4119,
    ],
    scale: [
        0.3362, 0.2422, 0.2363, 0.1696, 2.8993, 0.149, 0.1941, 0.4372, 1.9449, 0.1113, 4.3543, 5.2663,
        0.2673, 0.2452, 0.2325, 4.1715,
    ],
    weights: [
        0.1392, 0.3318, -0.5382, 0.496, 0.9367, -0.9571, -0.4207, -0.5789, 1.6547, 0.2902, 1.4837, 1.207,
        0.4361, -2.4699, -2.2769, 1.2991,
    ],
    bias: 0.9724,
    threshold: 0.29,
};

/// Without a model (a board that carries only knowledge): the text features alone.
pub const ANOMALY_TEXT: LanguageCalibration = LanguageCalibration {
    mean: [
        0.7635, 0.1053, 0.1312, 0.3209, 5.5197, 0.9539, 0.0986, 0.691, 4.3677, 0.0592, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0,
    ],
    scale: [
        0.3362, 0.2422, 0.2363, 0.1696, 2.8993, 0.149, 0.1941, 0.4372, 1.9449, 0.1113, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0,
    ],
    weights: [
        -0.3778, 1.0398, -0.5282, 1.2796, 2.5022, -1.8837, 0.5741, -2.117, 6.0272, 0.6213, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0,
    ],
    bias: 3.6822,
    threshold: 0.23,
};

/// The text-only score ([`ANOMALY_TEXT`]) above which `anomaly` answers without running the
/// model: no normal line of `testdata/anomaly/` (development or held-out split) scores above
/// it, while most random keys, symbols, hex, blobs, code and SQL do, so they cost no forward
/// pass. Checked by `cargo test -p ruvllm-cli --test anomaly_eval no_setup`, which reports how
/// many lines it decides.
pub const ANOMALY_TEXT_CERTAIN: f32 = 0.95;

/// The text-only score ([`ANOMALY_TEXT`]) below which `anomaly` answers NORMAL without running
/// the model: no anomalous line of `testdata/anomaly/` (development or held-out split) scores
/// below twice this, while most everyday lines do (the character trigram surprise tells
/// English from letters at random), so they cost no forward pass either. Checked by the same
/// test.
pub const ANOMALY_TEXT_CLEAR: f32 = 0.05;
