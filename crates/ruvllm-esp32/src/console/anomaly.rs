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
        0.7629, 0.106, 0.1311, 0.3204, 5.5261, 0.9539, 0.0988, 0.6905, 0.6382, 0.5204, 0.1707, 0.7168,
        0.7553, 0.4044,
    ],
    scale: [
        0.336, 0.2421, 0.2363, 0.1693, 2.8962, 0.149, 0.1941, 0.4369, 4.3636, 5.2729, 0.267, 0.2431, 0.2322,
        4.1818,
    ],
    weights: [
        0.0991, 0.3392, -0.4884, 0.334, 1.045, -0.962, -0.4645, -0.7136, 1.6989, 1.3302, 0.5012, -2.8394,
        -2.4227, 1.4869,
    ],
    bias: 0.534,
    threshold: 0.32,
};

/// Without a model (a board that carries only knowledge): the text features alone.
pub const ANOMALY_TEXT: LanguageCalibration = LanguageCalibration {
    mean: [0.7629, 0.106, 0.1311, 0.3204, 5.5261, 0.9539, 0.0988, 0.6905, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    scale: [0.336, 0.2421, 0.2363, 0.1693, 2.8962, 0.149, 0.1941, 0.4369, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    weights: [
        0.3732, 0.3228, -0.8615, -1.6125, 4.5113, -1.8774, 0.3776, -4.8942, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ],
    bias: 3.6241,
    threshold: 0.49,
};
