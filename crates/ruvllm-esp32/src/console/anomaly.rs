//! The measured constants of `anomaly`'s language score ([`LanguageCalibration`]) for the
//! built-in model. Both are fitted on the development split of `testdata/anomaly/` (and
//! corpus sentences) by
//! `cargo test -p ruvllm-cli --test anomaly_eval no_setup -- --nocapture`,
//! which fails, printing the new values, when they differ from these (after retraining the
//! built-in model, paste them here).

use crate::knowledge::LanguageCalibration;

/// With a model: the text features and the model's view of the tokens (integer path).
pub const ANOMALY_LANGUAGE: LanguageCalibration = LanguageCalibration { mean: [0.7615, 0.1067, 0.1317, 0.3192, 5.5382, 0.9527, 0.0988, 0.6868, 8.9277, 11.5332, 0.1718, 1.5427, 0.7515], scale: [0.3379, 0.2436, 0.2376, 0.1695, 2.9231, 0.1532, 0.1952, 0.4387, 4.6817, 5.6715, 0.2684, 0.527, 0.2345], weights: [-0.0223, 0.0746, -0.0447, 0.4563, 1.062, -1.2466, -0.1671, -0.8626, 2.1218, 1.3349, 0.5253, -3.4519, -2.4558], bias: 0.7682, threshold: 0.36 };

/// Without a model (a board that carries only knowledge): the text features alone.
pub const ANOMALY_TEXT: LanguageCalibration = LanguageCalibration { mean: [0.7615, 0.1067, 0.1317, 0.3192, 5.5382, 0.9527, 0.0988, 0.6868, 0.0, 0.0, 0.0, 0.0, 0.0], scale: [0.3379, 0.2436, 0.2376, 0.1695, 2.9231, 0.1532, 0.1952, 0.4387, 0.0, 0.0, 0.0, 0.0, 0.0], weights: [0.014, 0.7968, -0.8365, -1.6575, 4.6805, -1.9229, 0.4041, -4.5411, 0.0, 0.0, 0.0, 0.0, 0.0], bias: 3.9809, threshold: 0.44 };
