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
        0.7635, 0.1053, 0.1312, 0.3209, 5.5197, 0.9539, 0.0986, 0.691, 0.6452, 0.5249, 0.1695, 0.7194,
        0.7557, 0.4119,
    ],
    scale: [
        0.3362, 0.2422, 0.2363, 0.1696, 2.8993, 0.149, 0.1941, 0.4372, 4.3543, 5.2663, 0.2673, 0.2452,
        0.2325, 4.1715,
    ],
    weights: [
        0.096, 0.3413, -0.4864, 0.3348, 1.0509, -0.9594, -0.4635, -0.715, 1.699, 1.3276, 0.5041, -2.8452,
        -2.4272, 1.4856,
    ],
    bias: 0.5078,
    threshold: 0.32,
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

/// The text-only score ([`ANOMALY_TEXT`]) above which `anomaly` answers without running the
/// model: no normal line of `testdata/anomaly/` (development or held-out split) scores above
/// it, while most random keys, symbols, hex, blobs, code and SQL do, so they cost no forward
/// pass. Checked by `cargo test -p ruvllm-cli --test anomaly_eval no_setup`, which reports how
/// many lines it decides.
pub const ANOMALY_TEXT_CERTAIN: f32 = 0.95;
