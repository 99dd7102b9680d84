//! Pipeline parallelism over several chips (the `federation` feature): which contiguous range
//! of a model's transformer layers each chip holds, and its role in the pipeline ([`plan`]; the
//! host's `ruvllm-esp32 cluster` writes it as cluster.toml), the messages and frames chips
//! exchange ([`wire`]), a reliable link over any `embedded-io-async` byte stream ([`link`]),
//! and what each node and the coordinator do with them ([`pipeline`]). docs/FEDERATION.md
//! describes the wire format.
//!
//! The head chip also holds the token embeddings and reads the prompt; the tail chip holds the
//! final norm and the classifier and samples the next token, which goes back to the head; a
//! single chip holds everything; middle chips hold layers only. Between stages one activation
//! vector (`dim` values) crosses the link per token.
//!
//! ```
//! use ruvllm_esp32::federation::{plan, Role};
//! let stages: Vec<_> = plan(5, 2)?.collect();
//! assert_eq!((stages[0].role, stages[0].layers.clone()), (Role::Head, 0..3));
//! assert_eq!((stages[1].role, stages[1].layers.clone()), (Role::Tail, 3..5));
//! # Ok::<(), ruvllm_esp32::Error>(())
//! ```

#[cfg(feature = "alloc")]
pub mod cut;
pub mod link;
pub mod pipeline;
pub mod tensor;
pub mod wire;

use core::ops::Range;

use crate::error::{Error, Result};

/// What a chip does besides its layers (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only chip: everything.
    Single,
    /// Embeddings and the prompt, then its layers.
    Head,
    /// Layers only.
    Middle,
    /// Its layers, then the final norm, the classifier and sampling.
    Tail,
    /// Tensor parallel ([`tensor`]): some heads and FFN rows of every layer.
    Shard,
}

impl Role {
    /// The name cluster.toml uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Head => "head",
            Role::Middle => "middle",
            Role::Tail => "tail",
            Role::Shard => "shard",
        }
    }
}

/// One chip of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position in the pipeline, from 0.
    pub chip: usize,
    pub role: Role,
    /// The transformer layers it holds, never empty.
    pub layers: Range<usize>,
}

/// The stages of [`plan`], in pipeline order.
#[derive(Debug, Clone)]
pub struct Plan {
    layers: usize,
    chips: usize,
    next: usize,
    start: usize,
}

/// Splits `layers` layers over `chips` chips: contiguous, in order, as even as possible (the
/// first `layers % chips` chips get one more). Every chip holds at least one layer, so `chips`
/// must be 1 to `layers`.
pub fn plan(layers: usize, chips: usize) -> Result<Plan> {
    if chips == 0 || chips > layers {
        return Err(Error::Invalid { what: "chip count must be 1 to the model's layer count" });
    }
    Ok(Plan { layers, chips, next: 0, start: 0 })
}

impl Iterator for Plan {
    type Item = Stage;

    fn next(&mut self) -> Option<Stage> {
        let (i, n) = (self.next, self.chips);
        if i == n {
            return None;
        }
        let len = self.layers / n + usize::from(i < self.layers % n);
        let layers = self.start..self.start + len;
        self.start += len;
        self.next += 1;
        let role = match i {
            _ if n == 1 => Role::Single,
            0 => Role::Head,
            _ if i == n - 1 => Role::Tail,
            _ => Role::Middle,
        };
        Some(Stage { chip: i, role, layers })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.chips - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Plan {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split covers the layers once, in order, sizes differing by at most one, larger
    /// first; roles by position; impossible counts are errors.
    #[test]
    fn plans_cover_every_layer_once() {
        for layers in 1..40 {
            for chips in 1..=layers {
                let stages: std::vec::Vec<Stage> = plan(layers, chips).unwrap().collect();
                assert_eq!(stages.len(), chips);
                assert_eq!(stages[0].layers.start, 0);
                assert_eq!(stages[chips - 1].layers.end, layers);
                for w in stages.windows(2) {
                    assert_eq!(w[0].layers.end, w[1].layers.start);
                    assert!(
                        w[0].layers.len() == w[1].layers.len() || w[0].layers.len() == w[1].layers.len() + 1
                    );
                }
                for (i, s) in stages.iter().enumerate() {
                    assert_eq!(s.chip, i);
                    assert!(!s.layers.is_empty());
                    let want = match (i, chips) {
                        (_, 1) => Role::Single,
                        (0, _) => Role::Head,
                        (i, n) if i == n - 1 => Role::Tail,
                        _ => Role::Middle,
                    };
                    assert_eq!(s.role, want);
                }
            }
            assert!(plan(layers, 0).is_err());
            assert!(plan(layers, layers + 1).is_err());
        }
        let roles: std::vec::Vec<&str> = plan(5, 3).unwrap().map(|s| s.role.as_str()).collect();
        assert_eq!(roles, ["head", "middle", "tail"]);
    }
}
