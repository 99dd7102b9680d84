//! cluster.toml: the published layout (`[cluster] name, chips, topology`, then one
//! `[[chips.nodes]] id, role, port, layers` per chip), plus the model it was planned for and
//! the link's timing. [`ClusterFile::check`] validates a file against the model it will run,
//! one clear sentence per problem.

use anyhow::{bail, Result};
use ruvllm_esp32::federation::link::LinkConfig;
use ruvllm_esp32::federation::wire::VERSION;
use ruvllm_esp32::federation::{plan, Role};
use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub cluster: ClusterSection,
    pub model: ModelSection,
    #[serde(default)]
    pub link: LinkSection,
    pub chips: Chips,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    pub chips: usize,
    /// "pipeline" (contiguous layer ranges) or "tensor" (heads and FFN rows of every layer).
    pub topology: String,
    /// The federation protocol version the nodes speak (absent: this build's).
    #[serde(default = "protocol_version")]
    pub protocol: u16,
}

fn protocol_version() -> u16 {
    VERSION
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The model file (absent: the built-in model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The llama2.c tokenizer.bin a llama2.c checkpoint needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    pub layers: usize,
    pub dim: usize,
    /// CRC-32 of the integer-path image, 8 hex digits: every node must hold this image.
    pub checksum: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSection {
    /// UART speed between boards.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Milliseconds a sender waits for an acknowledgement before sending again.
    #[serde(default = "default_ack_ms")]
    pub ack_ms: u64,
    /// Resends before a node counts as gone.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Share of the bytes each link end corrupts on purpose (a fault test; 0 normally).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub corrupt: f64,
}

fn default_baud() -> u32 {
    115_200
}
fn default_ack_ms() -> u64 {
    LinkConfig::default().ack_ms
}
fn default_retries() -> u32 {
    LinkConfig::default().retries
}
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Default for LinkSection {
    fn default() -> Self {
        LinkSection {
            baud: default_baud(),
            ack_ms: default_ack_ms(),
            retries: default_retries(),
            corrupt: 0.0,
        }
    }
}

impl LinkSection {
    pub fn config(&self) -> LinkConfig {
        LinkConfig { ack_ms: self.ack_ms, retries: self.retries }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chips {
    pub nodes: Vec<NodeEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: i64,
    pub role: String,
    /// A TCP port on loopback (a node process), or a board's serial port.
    pub port: toml::Value,
    /// [first, last], inclusive.
    pub layers: [i64; 2],
    /// This node's own model file, when it differs from `[model] path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// How the nodes share the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Contiguous layer ranges, one after another.
    Pipeline,
    /// Some heads and FFN rows of every layer on each node, partial sums reduced.
    Tensor,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Pipeline => "pipeline",
            Topology::Tensor => "tensor",
        }
    }
}

/// A node as the run uses it, in pipeline order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: u8,
    pub role: Role,
    pub port: u16,
    pub layers: Range<usize>,
    pub model: Option<String>,
}

/// Most nodes a cluster may have (node ids are bytes; 255 is the coordinator's).
pub const MAX_NODES: usize = 254;

/// The first TCP port `cluster --chips N` gives a node (node i gets this + i).
pub const BASE_PORT: u16 = 47_000;

impl ClusterFile {
    /// The plan of `chips` nodes over a model, with loopback ports from `base_port`.
    pub fn plan(
        name: &str,
        path: Option<String>,
        layers: usize,
        dim: usize,
        checksum: u32,
        chips: usize,
        topology: Topology,
    ) -> Result<Self> {
        let entry = |chip: usize, role: Role, layers: Range<usize>| NodeEntry {
            id: chip as i64,
            role: role.as_str().to_string(),
            port: toml::Value::Integer(BASE_PORT as i64 + chip as i64),
            layers: [layers.start as i64, layers.end as i64 - 1],
            model: None,
        };
        let nodes = match topology {
            Topology::Pipeline => plan(layers, chips)?.map(|s| entry(s.chip, s.role, s.layers)).collect(),
            Topology::Tensor => (0..chips).map(|i| entry(i, Role::Shard, 0..layers)).collect(),
        };
        Ok(ClusterFile {
            cluster: ClusterSection {
                name: name.to_string(),
                chips,
                topology: topology.as_str().into(),
                protocol: VERSION,
            },
            model: ModelSection { path, tokenizer: None, layers, dim, checksum: format!("{checksum:08x}") },
            link: LinkSection::default(),
            chips: Chips { nodes },
        })
    }

    /// Parses cluster.toml's text (`what` names it in errors).
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{what}: {}", e.message().trim_end()))
    }

    /// The nodes' ids in the file's order: bytes other than the coordinator's, each once.
    fn node_ids(&self) -> Result<Vec<u8>> {
        let mut ids = Vec::with_capacity(self.chips.nodes.len());
        for e in &self.chips.nodes {
            let id = u8::try_from(e.id).ok().filter(|id| *id != u8::MAX);
            let Some(id) = id else { bail!("node id {}: use 0 to {}", e.id, MAX_NODES) };
            if ids.contains(&id) {
                bail!("duplicate node id {id}: each [[chips.nodes]] needs its own id");
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Every node's serial port (`cluster flash`, `cluster monitor`): each a device that
    /// exists (unless `must_exist` is false, for a flash image written instead), each once.
    pub fn serial_ports(&self, must_exist: bool) -> Result<Vec<(u8, String)>> {
        let n = self.chips.nodes.len();
        if n == 0 || n > MAX_NODES {
            bail!("[[chips.nodes]]: {n} nodes; a cluster has 1 to {MAX_NODES}");
        }
        let mut ports: Vec<(u8, String)> = Vec::with_capacity(n);
        for (e, id) in self.chips.nodes.iter().zip(self.node_ids()?) {
            let port = match &e.port {
                toml::Value::String(s) if !must_exist || std::path::Path::new(s).exists() => s.clone(),
                toml::Value::String(s) => {
                    bail!("node {id}: port \"{s}\" does not exist (is the board plugged in? `ruvllm-esp32 ports` lists them)")
                }
                v => bail!(
                    "node {id}: port {v} is not a serial port: give each board's device, e.g. port = \"/dev/ttyUSB0\""
                ),
            };
            if let Some((other, _)) = ports.iter().find(|(_, p)| *p == port) {
                bail!("nodes {other} and {id} both use port {port}");
            }
            ports.push((id, port));
        }
        Ok(ports)
    }

    /// The topology named in `[cluster]`.
    pub fn topology(&self) -> Result<Topology> {
        match self.cluster.topology.as_str() {
            "pipeline" => Ok(Topology::Pipeline),
            "tensor" => Ok(Topology::Tensor),
            t => bail!("topology \"{t}\": use \"pipeline\" or \"tensor\""),
        }
    }

    /// The nodes (in pipeline order; for the tensor topology in the file's order, which is the
    /// order of their shards), after checking the file against the model it runs (`layers`,
    /// `dim`, and, when given, `checksum`, the CRC-32 of the image).
    pub fn check(&self, layers: usize, dim: usize, checksum: Option<u32>) -> Result<Vec<Node>> {
        let c = &self.cluster;
        let topology = self.topology()?;
        if c.protocol != VERSION {
            bail!(
                "[cluster] protocol = {}, but this build speaks federation protocol version {VERSION}: update every node to one version, then re-plan",
                c.protocol
            );
        }
        let n = self.chips.nodes.len();
        if n == 0 || n > MAX_NODES {
            bail!("[[chips.nodes]]: {n} nodes; a cluster has 1 to {MAX_NODES}");
        }
        if c.chips != n {
            bail!("[cluster] chips = {} but {n} [[chips.nodes]] are listed", c.chips);
        }
        if self.model.layers != layers || self.model.dim != dim {
            bail!(
                "cluster.toml was planned for a model with {} layers of width {}; this model has {layers} of width {dim} (re-plan with `cluster --chips {n}`)",
                self.model.layers,
                self.model.dim
            );
        }
        let want = checksum.map(|c| format!("{c:08x}"));
        if let Some(want) = want.filter(|w| !self.model.checksum.eq_ignore_ascii_case(w)) {
            bail!(
                "the model's checksum {want} differs from cluster.toml's {} (it was planned for another model image: re-plan with `cluster --chips {n}`)",
                self.model.checksum
            );
        }
        let (link, cfg) = (&self.link, self.link.config());
        if !(1..=60_000).contains(&cfg.ack_ms) || cfg.retries > 10_000 || !(0.0..=0.5).contains(&link.corrupt)
        {
            bail!("[link]: ack_ms must be 1 to 60000, retries at most 10000, corrupt 0 to 0.5");
        }
        let ids = self.node_ids()?;
        let mut nodes = Vec::with_capacity(n);
        for (e, id) in self.chips.nodes.iter().zip(ids) {
            let [a, b] = e.layers;
            if a < 0 || b < a {
                bail!("node {id}: layers = [{a}, {b}] is not a range [first, last] of layers");
            }
            if b as usize >= layers {
                bail!(
                    "node {id}: layers = [{a}, {b}], but the model has {layers} layers (0 to {})",
                    layers - 1
                );
            }
            let port = match &e.port {
                toml::Value::Integer(p) => match u16::try_from(*p) {
                    Ok(p) if p > 0 => p,
                    _ => bail!("node {id}: port {p} is not a TCP port (1 to 65535)"),
                },
                toml::Value::String(s) if std::path::Path::new(s).exists() => bail!(
                    "node {id}: port \"{s}\" is a serial port; `cluster run` runs the nodes as processes on loopback TCP ports (1 to 65535)"
                ),
                toml::Value::String(s) => bail!("node {id}: port \"{s}\" does not exist (a TCP port number or a serial device)"),
                v => bail!("node {id}: port {v} is neither a TCP port number nor a serial device"),
            };
            if let Some(m) = nodes.iter().find(|m: &&Node| m.port == port) {
                bail!("nodes {} and {id} both use port {port}", m.id);
            }
            let role = match e.role.as_str() {
                "single" => Role::Single,
                "head" => Role::Head,
                "middle" => Role::Middle,
                "tail" => Role::Tail,
                "shard" => Role::Shard,
                r => bail!(
                    "node {id}: role \"{r}\": use head, middle, tail or single (pipeline), or shard (tensor)"
                ),
            };
            nodes.push(Node { id, role, port, layers: a as usize..b as usize + 1, model: e.model.clone() });
        }
        if topology == Topology::Tensor {
            for m in &nodes {
                if m.role != Role::Shard || m.layers != (0..layers) {
                    bail!(
                        "node {}: in the tensor topology every node holds a part of every layer: role = \"shard\", layers = [0, {}]",
                        m.id,
                        layers - 1
                    );
                }
            }
            return Ok(nodes);
        }
        nodes.sort_by_key(|m| m.layers.start);
        let mut next = 0;
        for (i, m) in nodes.iter().enumerate() {
            if m.layers.start > next {
                bail!(
                    "layers {next} to {} are held by no node: the nodes must cover every layer",
                    m.layers.start - 1
                );
            }
            if m.layers.start < next {
                let other = nodes[i - 1].id;
                bail!(
                    "nodes {other} and {} both hold layer {}: each layer belongs to one node",
                    m.id,
                    m.layers.start
                );
            }
            next = m.layers.end;
            let want = match (i, n) {
                (_, 1) => Role::Single,
                (0, _) => Role::Head,
                (i, n) if i == n - 1 => Role::Tail,
                _ => Role::Middle,
            };
            if m.role != want {
                bail!(
                    "node {}: role \"{}\", but holding layers {} to {} it is the {}",
                    m.id,
                    m.role.as_str(),
                    m.layers.start,
                    m.layers.end - 1,
                    want.as_str()
                );
            }
        }
        if next < layers {
            bail!("layers {next} to {} are held by no node: the nodes must cover every layer", layers - 1);
        }
        Ok(nodes)
    }
}
