//! The messages chips exchange and their frames: a [`Frame`] is serialized by postcard, a
//! CRC-32C (the `crc` crate's CRC_32_ISCSI) of those bytes is appended little-endian, and the
//! whole is COBS-encoded and ended by one 0x00 byte (docs/FEDERATION.md has the byte layout).
//! [`Decoder`] takes a byte stream back apart; a frame that is too long, does not decode, fails
//! its CRC or holds bytes after the message is reported and dropped, never trusted.

use serde::{Deserialize, Serialize};

/// The protocol version a [`Hello`] carries; a link whose two ends differ is refused.
pub const VERSION: u16 = 4;

/// The widest residual stream a [`Forward`] carries (a model's `dim`).
pub const MAX_DIM: usize = 1024;

/// The longest encoded frame, delimiter included: the largest message (a [`Forward`] of
/// [`MAX_DIM`] values, each a 5-byte varint at most) with its header and CRC, plus COBS's
/// overhead (one byte in 254, and one) and the 0x00.
pub const MAX_FRAME: usize = {
    let raw = 32 + 5 * MAX_DIM + 4;
    raw + raw / 254 + 2
};

/// The residual stream between stages: Q16.16 values, each a zigzag varint on the wire.
pub type Residual = heapless::Vec<i32, MAX_DIM>;

/// The widest model a tensor-parallel split runs: its [`Partial`] (up to 10 bytes a value)
/// fits [`MAX_FRAME`] as a [`Forward`] does.
pub const MAX_PARTIAL: usize = MAX_DIM / 2;

/// A node's partial accumulators of one matmul, one per residual value (units of 2^-32).
pub type Partials = heapless::Vec<i64, MAX_PARTIAL>;

/// One frame: a sequence number and a body. A data body is acknowledged by an [`Body::Ack`]
/// frame carrying the same sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub seq: u16,
    pub body: Body,
}

/// What one end says to the other.
// No allocator on a chip: the residual stays inline, and every message is as large as it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Acknowledges the data frame with this frame's sequence number.
    Ack,
    /// Opens a link: the connecting end's version, model checksum and node id.
    Hello(Hello),
    /// The accepting end agrees, with its own [`Hello`].
    Welcome(Hello),
    /// The accepting end refuses, and why.
    Refuse(Refusal),
    /// Begins sequence `stream`: every stage clears its place in it; the tail samples it at
    /// `temp_milli` / 1000 (0 = greedy) with its RNG seeded by `seed`.
    Start { stream: u8, temp_milli: u32, seed: u64 },
    /// One position of one sequence on its way down the pipeline.
    Forward(Forward),
    /// The tail's answer for a position: the sampled token, or none for a prompt position.
    Next { stream: u8, pos: u32, token: Option<u32> },
    /// A node's costs, passed on down to the coordinator at the end of a run.
    Stats(NodeStats),
    /// The run is over: each node sends its [`Body::Stats`], then passes this on.
    Finish,
    /// A node could not do its part; passed on to the coordinator, which reports it.
    Fail { node: u8, reason: FailReason },
    /// Tensor parallel, coordinator to node: one half-layer of one position.
    Round(Round),
    /// Tensor parallel, node to coordinator: its partial sums for that [`Round`].
    Partial(Partial),
    /// Pipeline, coordinator down the ring: one node's line of the ring's [`RingPlan`] (which
    /// layers it holds, where it sends on), node `index` of `count`, in ring order. The plan
    /// opens a ring (again after a re-plan onto the surviving nodes). One small frame a node,
    /// not one frame of the whole plan: a message this large in every board's enum of messages
    /// would cost each board 8 KiB of stack.
    Plan { layers: u16, index: u8, count: u8, entry: PlanEntry },
}

/// The most nodes a [`RingPlan`] names.
pub const MAX_PLAN: usize = 254;

/// One node of a [`RingPlan`]: its layers `first..end` (numbered in the whole model) and the
/// port its upstream neighbour reaches it on (a host's loopback port; 0 where none applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub node: u8,
    pub port: u16,
    pub first: u16,
    pub end: u16,
}

/// A pipeline's plan: the model's layer count and the nodes in ring order. On the wire it is
/// [`Body::Plan`] frames, one a node ([`RingPlan::parts`], [`RingPlan::take`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingPlan {
    pub layers: u16,
    /// The nodes the plan's frames announce (all of `nodes` once complete).
    pub count: u8,
    pub nodes: heapless::Vec<PlanEntry, MAX_PLAN>,
}

/// One half-layer (attention, or with `ffn` the FFN) of layer `layer` at position `pos`, over
/// the residual stream before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub stream: u8,
    pub pos: u32,
    pub layer: u16,
    pub ffn: bool,
    pub residual: Residual,
}

/// A node's answer to a [`Round`]: the same coordinates and its partial accumulators of
/// `wo` (or `w2`), empty when it holds no part of that half-layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub stream: u8,
    pub pos: u32,
    pub layer: u16,
    pub ffn: bool,
    pub acc: Partials,
}

/// The first words on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    /// CRC-32 of the model image the coordinator runs (each node compares its own).
    pub model: u32,
    /// The sender's node id (the coordinator's is [`COORDINATOR`]).
    pub node: u8,
}

/// The node id the coordinator uses in its [`Hello`].
pub const COORDINATOR: u8 = u8::MAX;

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The two ends speak different protocol versions.
    Version { theirs: u16, ours: u16 },
    /// The refusing node holds a different model image than the coordinator.
    Model { theirs: u32, ours: u32, node: u8 },
}

/// Why a node failed mid-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailReason {
    /// The position does not fit the node's context, or another bad step.
    BadStep,
    /// The residual stream does not have the model's `dim` values.
    BadResidual,
    /// The stream number is outside the node's sequences.
    BadStream,
    /// A message that has no place at this point.
    Unexpected,
    /// A [`RingPlan`] that does not cover the model's layers once, in order, or names this
    /// node not exactly once.
    BadPlan,
    /// The plan gives this node layers its model image does not hold (a board that links
    /// only its own layers' cut cannot take more).
    Layers,
}

/// A position of a sequence: the token at `pos`, the residual stream after the stages it
/// went through (empty from the coordinator), and whether the tail samples after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub stream: u8,
    pub pos: u32,
    pub token: u32,
    pub sample: bool,
    pub residual: Residual,
}

/// What a node did over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub node: u8,
    /// Microseconds spent in its layers.
    pub busy_us: u64,
    /// Positions it ran.
    pub positions: u32,
    /// Bytes it wrote to its downstream link, acknowledgements of its upstream link included.
    pub sent_bytes: u64,
    /// Frames it sent again after no acknowledgement came in time.
    pub retransmits: u32,
    /// Frames it received that failed COBS, CRC or decoding, or were too long.
    pub bad_frames: u32,
    /// A board's peak RAM in bytes: its static data (the arena included) and its stack's
    /// high-water mark; 0 from a host process.
    pub peak_ram: u32,
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than [`MAX_FRAME`] before its delimiter.
    Oversized,
    /// Not valid COBS.
    Cobs,
    /// The CRC does not match the bytes.
    Crc,
    /// The bytes are not a message, or bytes follow the message.
    Malformed,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FrameError::Oversized => "frame longer than the protocol allows",
            FrameError::Cobs => "frame is not valid COBS",
            FrameError::Crc => "frame failed its CRC",
            FrameError::Malformed => "frame holds no valid message",
        })
    }
}

/// CRC-32C (Castagnoli), the frame check.
pub const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Encodes `frame` into `buf` (at least [`MAX_FRAME`] bytes suffice for every frame) and
/// returns the bytes to write, the trailing 0x00 included. `None` when `buf` is too small.
pub fn encode<'b>(frame: &Frame, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    use postcard::ser_flavors::{crc::CrcModifier, Cobs, Slice};
    let flavor = CrcModifier::new(Cobs::try_new(Slice::new(buf)).ok()?, CRC.digest());
    postcard::serialize_with_flavor(frame, flavor).ok().map(|b| &*b)
}

/// Reassembles frames from a byte stream, within `N` bytes (use [`MAX_FRAME`]).
pub struct Decoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// The current frame outgrew `buf`: its bytes are dropped up to the next delimiter.
    overflow: bool,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Decoder { buf: [0; N], len: 0, overflow: false }
    }
}

impl<const N: usize> Decoder<N> {
    /// Feeds `bytes` up to the end of the first frame in them: how many were consumed, and
    /// that frame (or why it was dropped) when one ended. Empty frames (two delimiters in a
    /// row) are skipped silently.
    pub fn feed(&mut self, bytes: &[u8]) -> (usize, Option<Result<Frame, FrameError>>) {
        for (i, &b) in bytes.iter().enumerate() {
            if b != 0 {
                if self.len < N {
                    self.buf[self.len] = b;
                    self.len += 1;
                } else {
                    self.overflow = true;
                }
                continue;
            }
            let (len, overflow) = (self.len, self.overflow);
            self.len = 0;
            self.overflow = false;
            if overflow {
                return (i + 1, Some(Err(FrameError::Oversized)));
            }
            if len > 0 {
                return (i + 1, Some(self.decode(len)));
            }
        }
        (bytes.len(), None)
    }

    fn decode(&mut self, len: usize) -> Result<Frame, FrameError> {
        let n = cobs::decode_in_place(&mut self.buf[..len]).map_err(|_| FrameError::Cobs)?;
        match postcard::take_from_bytes_crc32::<Frame>(&self.buf[..n], CRC.digest()) {
            Ok((frame, [])) => Ok(frame),
            Err(postcard::Error::DeserializeBadCrc) => Err(FrameError::Crc),
            _ => Err(FrameError::Malformed),
        }
    }
}
