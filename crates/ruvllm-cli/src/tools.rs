//! `cluster`: the pipeline-parallel plan over several chips (cluster.toml), `cluster run`
//! (every node a process on loopback, this process the coordinator) and the node process.

use crate::commands;
use crate::image::{self, Image};
use crate::ModelArgs;
use anyhow::{anyhow, bail, Context, Result};
use ruvllm_cli::cluster::config::{ClusterFile, Node, Topology};
use ruvllm_cli::cluster::{self, host_link, Job, Line, NodeSpec, RunReport};
use ruvllm_cli::{input, outln};
use ruvllm_esp32::federation::link::LinkConfig;
use ruvllm_esp32::federation::wire::RingPlan;
use ruvllm_esp32::infer::Shard;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};

/// The header of a written cluster.toml (the values below it are serialized by the toml
/// crate, so any model path gives valid TOML).
const HEADER: &str = "# ruvllm-esp32 cluster: pipeline parallel over {chips} chip(s).
# Written by `ruvllm-esp32 cluster --chips {chips}`; run it with
#   ruvllm-esp32 cluster run --config THIS_FILE --prompt \"Once upon a time\" --steps 64
# Each node holds a contiguous range of the model's transformer layers
# (layers = [first, last], inclusive). The head also holds the token embeddings;
# the tail holds the final norm and the classifier and samples the next token,
# which goes back to the coordinator (a single node holds everything).
# Between stages the residual stream (dim values) crosses the link per token.
# port: the node's TCP port on loopback for `cluster run`. model.checksum: the
# CRC-32 of the model image every node must hold. link: UART speed between boards,
# the acknowledgement timeout (ms) and the resends before a node counts as gone.

";

/// The header of a tensor-parallel cluster.toml.
const TENSOR_HEADER: &str = "# ruvllm-esp32 cluster: tensor parallel over {chips} chip(s).
# Written by `ruvllm-esp32 cluster --chips {chips} --topology tensor`; run it with
#   ruvllm-esp32 cluster run --config THIS_FILE --prompt \"Once upon a time\" --steps 64
# Every node (role shard, layers = all) holds some attention heads and some FFN rows of
# every layer, chosen from the model's shape in the order the nodes are listed; the
# coordinator holds the embeddings and the classifier, sends each half-layer's residual
# stream to the nodes and adds up their partial sums.
# port: the node's TCP port on loopback for `cluster run`. model.checksum: the
# CRC-32 of the model image every node must hold. link: UART speed between boards,
# the acknowledgement timeout (ms) and the resends before a node counts as gone.

";

/// A shard as the plan and the run print it.
fn describe(s: &Shard) -> String {
    let part = |r: &std::ops::Range<usize>| match r.len() {
        0 => "none".to_string(),
        _ => format!("{}..={}", r.start, r.end - 1),
    };
    format!("heads {}, FFN rows {}", part(&s.heads), part(&s.hidden))
}

/// Most bytes of a cluster.toml read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The integer path's image of `args` and its CRC-32 (what every node must hold).
fn load(args: &ModelArgs) -> Result<(Image, u32)> {
    let img = commands::load_int(args, None)?;
    let sum = crc32fast::hash(img.bytes());
    Ok((img, sum))
}

/// `cluster --chips N`: plan `chips` nodes over the model's layers and write cluster.toml.
pub fn plan(
    args: &ModelArgs,
    chips: usize,
    output: &Path,
    baud: u32,
    tensor: bool,
    force: bool,
) -> Result<()> {
    let (img, checksum) = load(args)?;
    let model = img.model()?;
    let layers = model.config.n_layers;
    let shards = if tensor { Some(cluster::tensor_shards(&model, chips)?) } else { None };
    if shards.is_none() && (chips < 1 || chips > layers) {
        bail!(
            "--chips {chips}: use 1 to {layers} (the {} has {layers} layers, at least one a chip)",
            args.name()
        );
    }
    if output.exists() && !force {
        bail!("{}: already exists (pass --force to overwrite)", output.display());
    }
    let absolute =
        |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string();
    let mut file = ClusterFile::plan(
        &args.name(),
        args.model.as_deref().map(absolute),
        layers,
        model.config.dim,
        checksum,
        chips,
        if tensor { Topology::Tensor } else { Topology::Pipeline },
    )?;
    file.model.tokenizer = args.tokenizer.as_deref().map(absolute);
    file.link.baud = baud;
    let body = toml::to_string(&file).context("writing cluster.toml")?;
    let header = if tensor { TENSOR_HEADER } else { HEADER };
    let text = header.replace("{chips}", &chips.to_string()) + &body;
    // Atomic, regular files only, through a symlink: as `convert -o`.
    ruvllm_train::run::checkpoint::write_atomic(output, text.as_bytes())?;
    match shards {
        Some(shards) => shards.iter().enumerate().for_each(|(i, s)| eprintln!("chip {i}: {}", describe(s))),
        None => {
            for s in ruvllm_esp32::federation::plan(layers, chips)? {
                eprintln!("chip {}: layers {}..={}", s.chip, s.layers.start, s.layers.end - 1);
            }
        }
    }
    outln!("{}", output.display());
    Ok(())
}

/// cluster.toml, read within bounds and parsed.
pub(crate) fn read_config(path: &Path) -> Result<ClusterFile> {
    let bytes = input::read_input(path, "cluster.toml", MAX_CONFIG_BYTES)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))?;
    ClusterFile::parse(text, &path.display().to_string())
}

/// The model a node (or, with `None`, the coordinator) runs, as cluster.toml names it.
fn model_args(file: &ClusterFile, node: Option<&Node>) -> ModelArgs {
    let path = node.and_then(|n| n.model.clone()).or_else(|| file.model.path.clone());
    ModelArgs { model: path.map(PathBuf::from), tokenizer: file.model.tokenizer.as_ref().map(PathBuf::from) }
}

/// What `cluster run` asks for.
pub struct RunArgs {
    pub config: PathBuf,
    pub prompt: String,
    pub steps: usize,
    pub temp: f32,
    pub seed: u64,
    /// Each node a QEMU board instead of a process.
    pub qemu: bool,
    /// A pipeline of processes re-plans onto the nodes that survive a failure.
    pub replan: bool,
}

/// A piece of the generated text to stdout, at once.
fn write(piece: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(piece).and_then(|()| out.flush()).map_err(ruvllm_cli::out::write_error)
}

/// Seconds a node process may take to load its model and join the ring.
const STARTUP: Duration = Duration::from_secs(60);

/// `cluster run`: every node of cluster.toml as a process on loopback, this process the
/// coordinator; stdout gets exactly what `gen --int` prints, stderr the costs.
pub fn run(args: RunArgs) -> Result<()> {
    let file = read_config(&args.config)?;
    let (img, checksum) = load(&model_args(&file, None))?;
    let model = img.model()?;
    let nodes = file.check(model.config.n_layers, model.config.dim, Some(checksum))?;
    commands::check_steps(&model, args.steps)?;
    let prompt = commands::encode_prompt(&model, &args.prompt, args.steps)?;
    let temp_milli = (args.temp * 1000.0).round() as u32;
    let shards = match file.topology()? {
        Topology::Tensor => Some(cluster::tensor_shards(&model, nodes.len())?),
        Topology::Pipeline => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if args.qemu {
        let job = Job { prompt: &prompt, steps: args.steps, temp_milli, seed: args.seed };
        let report = rt.block_on(run_boards(&file, &nodes, &img, &job, shards.as_deref()))?;
        print_report(&report, &nodes, &file, Busy::Instructions);
        return Ok(());
    }
    let job = Job { prompt: &prompt, steps: args.steps, temp_milli, seed: args.seed };
    let (report, last) =
        rt.block_on(coordinate(&args, &file, &nodes, &model, checksum, &job, shards.as_deref()))?;
    let busy = if shards.is_some() { Busy::Star } else { Busy::Micros };
    print_report(&report, &last, &file, busy);
    Ok(())
}

/// `cluster run --qemu`: one QEMU ESP32-C3 board per node, built around the model with the
/// node's layers, its UART a TCP socket on the node's port; this process relays between them.
async fn run_boards(
    file: &ClusterFile,
    nodes: &[Node],
    img: &Image,
    job: &Job<'_>,
    shards: Option<&[Shard]>,
) -> Result<RunReport> {
    let tc = crate::board::Toolchain::find()?;
    let dir = std::env::temp_dir().join(format!("ruvllm-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let result = boards_in(file, nodes, img, job, shards, &tc, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[allow(clippy::too_many_arguments)]
async fn boards_in(
    file: &ClusterFile,
    nodes: &[Node],
    img: &Image,
    job: &Job<'_>,
    shards: Option<&[Shard]>,
    tc: &crate::board::Toolchain,
    dir: &Path,
) -> Result<RunReport> {
    let mut boards = Vec::with_capacity(nodes.len());
    let mut checksums = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        // A board links only its part of the model (so a model too big for one chip fits
        // several): a pipeline board its layers' cut, a tensor board its shard's.
        let bytes = match shards {
            Some(s) if s.len() > 1 => ruvllm_esp32::federation::cut::shard(img.bytes(), &s[i])
                .map_err(|e| anyhow!("node {}: cutting its shard from the model: {e}", n.id))?,
            Some(_) => img.bytes().to_vec(),
            None => ruvllm_esp32::federation::cut::cut(img.bytes(), n.layers.clone())
                .map_err(|e| anyhow!("node {}: cutting its layers from the model: {e}", n.id))?,
        };
        let image = dir.join(format!("node-{}.gguf", n.id));
        std::fs::write(&image, &bytes).with_context(|| format!("{}: cannot write", image.display()))?;
        checksums.push(crc32fast::hash(&bytes));
        let spec = format!("{}:{}:{}", n.id, n.layers.start, n.layers.end - 1);
        let tensor = shards.map(|s| format!("{i}:{}", s.len()));
        let built = crate::board::build_node(tc, &image, &spec, tensor.as_deref())
            .with_context(|| format!("node {}", n.id))?;
        let elf = dir.join(format!("node-{}.elf", n.id));
        std::fs::copy(&built, &elf).with_context(|| format!("{}: cannot write", elf.display()))?;
        let flash = std::fs::read(&elf).ok().and_then(|b| crate::board::flash_bytes(&b)).unwrap_or(0);
        let serial = format!("tcp:127.0.0.1:{},server=on,wait=on", n.port);
        let cmd = crate::board::qemu_serial(tc, &elf, &["-serial", &serial]);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting QEMU for node {}", n.id))?;
        // QEMU's own complaints (a port in use), without its note that it waits for us.
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let id = n.id;
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.contains("QEMU waiting for connection") {
                    eprintln!("node {id}: {line}");
                }
            }
        });
        let part = match shards {
            Some(s) => describe(&s[i]),
            None => format!("layers {}..={}", n.layers.start, n.layers.end - 1),
        };
        eprintln!(
            "node {}: QEMU board (pid {}), UART on port {}, {part}, model image {} bytes, flash {flash} bytes",
            n.id,
            child.id().unwrap_or(0),
            n.port,
            bytes.len()
        );
        boards.push(child);
    }
    // An emulated board boots slowly (it verifies the model's checksum first): give it time to
    // acknowledge, at least half a second a send and a minute in all.
    let cfg = file.link.config();
    let cfg = LinkConfig { ack_ms: cfg.ack_ms.max(500), retries: cfg.retries.max(120) };
    let line = Line { corrupt: file.link.corrupt, baud: 0, seed: 0xb0 };
    let mut links = Vec::with_capacity(nodes.len());
    for n in nodes {
        let s = connect(n.port, Instant::now() + STARTUP).await.map_err(|e| anyhow!("node {}: {e}", n.id))?;
        links.push(host_link(s, cfg, Line { seed: line.seed + n.id as u64, ..line }));
    }
    let model = img.model()?;
    let answer_ms = cfg.give_up_ms();
    let report = match shards {
        Some(s) => {
            cluster::coordinate_tensor(&model, &checksums, &mut links, s, job, answer_ms, write).await?
        }
        None => cluster::coordinate_boards(&model, &checksums, &mut links, job, answer_ms, write).await?,
    };
    write(b"\n")?;
    drop(links);
    for (mut b, n) in boards.into_iter().zip(nodes) {
        match tokio::time::timeout(Duration::from_secs(10), b.wait()).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => bail!("node {}: the board exited with {s}", n.id),
            _ => bail!("node {}: the board did not stop after the run", n.id),
        }
    }
    Ok(report)
}

/// What the node processes report to the coordinator.
enum NodeEvent {
    Line(u8, String),
    Exit(u8, std::process::ExitStatus),
}

async fn coordinate(
    args: &RunArgs,
    file: &ClusterFile,
    nodes: &[Node],
    model: &ruvllm_esp32::model::Model<'_>,
    checksum: u32,
    job: &Job<'_>,
    shards: Option<&[Shard]>,
) -> Result<(RunReport, Vec<Node>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.context("the coordinator's port on loopback")?;
    let back = listener.local_addr()?.port();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let exe = std::env::current_exe().context("locating this program to start the nodes")?;
    let mut children = Vec::new();
    for n in nodes {
        let mut cmd = tokio::process::Command::new(&exe);
        if image::ALLOW_UNVERIFIED.load(std::sync::atomic::Ordering::Relaxed) {
            cmd.arg("--allow-unverified");
        }
        if args.replan {
            cmd.args(["cluster", "node", "--rejoin"]);
        } else {
            cmd.args(["cluster", "node"]);
        }
        cmd.args(["--id", &n.id.to_string(), "--next", &back.to_string(), "--config"]);
        cmd.arg(&args.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting node {}", n.id))?;
        let part = match shards {
            Some(s) => describe(&s[children.len()]),
            None => format!("layers {}..={}", n.layers.start, n.layers.end - 1),
        };
        eprintln!("node {}: pid {}, port {}, {part}", n.id, child.id().unwrap_or(0), n.port);
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let (tx, id) = (events_tx.clone(), n.id);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(NodeEvent::Line(id, line));
            }
        });
        children.push(child);
    }
    // Each child's exit, as it happens (the children are killed if this run ends first).
    for (child, n) in children.into_iter().zip(nodes) {
        let (tx, id) = (events_tx.clone(), n.id);
        tokio::spawn(async move {
            let mut child = child;
            if let Ok(status) = child.wait().await {
                let _ = tx.send(NodeEvent::Exit(id, status));
            }
        });
    }
    drop(events_tx);

    let cfg = file.link.config();
    let corrupt = file.link.corrupt;
    let mut log = Log::default();
    // A ring given its plan (or, tensor parallel, a star of shards), formed again over the
    // nodes still running when one stops (with --no-replan, or when none is left, the run
    // stops naming it).
    let answer_ms = cfg.give_up_ms() * (nodes.len() as u64 + 1);
    let jobs = [Job { ..*job }];
    let mut progress = cluster::Progress::new(&jobs)?;
    let mut alive: Vec<&Node> = nodes.iter().collect();
    let mut lost: Option<(String, Instant)> = None;
    let layers = model.config.n_layers;
    loop {
        let members: Vec<(u8, u16)> = alive.iter().map(|n| (n.id, n.port)).collect();
        let plan = match shards {
            Some(_) => RingPlan::tensor(layers, &members),
            None => RingPlan::over(layers, &members),
        };
        let plan = plan.map_err(|e| anyhow!("re-planning: {e}"))?;
        let replayed_before = progress.replayed;
        // The attempt in a block of its own: dropped (a failed ring's links closed) before
        // `progress` and `alive` are looked at again.
        let result = {
            let run = async {
                if shards.is_some() {
                    let shards = cluster::tensor_shards(model, alive.len())?;
                    let mut links = Vec::with_capacity(alive.len());
                    for (i, n) in alive.iter().enumerate() {
                        let s = connect(n.port, Instant::now() + STARTUP)
                            .await
                            .map_err(|e| anyhow!("node {}: {e}", n.id))?;
                        links.push(host_link(s, cfg, Line { corrupt, baud: 0, seed: 0xc0 + i as u64 }));
                    }
                    let report = cluster::coordinate_tensor_from(
                        model,
                        &vec![checksum; alive.len()],
                        &mut links,
                        &shards,
                        Some(&plan),
                        &mut progress,
                        cfg.give_up_ms() * 2,
                        write,
                    )
                    .await?;
                    write(b"\n")?;
                    return Ok(report);
                }
                let head = connect(alive[0].port, Instant::now() + STARTUP)
                    .await
                    .map_err(|e| anyhow!("node {}: {e}", alive[0].id))?;
                let head = host_link(head, cfg, Line { corrupt, baud: 0, seed: 0xc0 });
                let tail = async {
                    let (s, _) = tokio::time::timeout(STARTUP, listener.accept()).await.map_err(|_| {
                        anyhow!("the tail node did not connect back within {} s", STARTUP.as_secs())
                    })??;
                    s.set_nodelay(true)?;
                    Ok(host_link(s, cfg, Line { corrupt, baud: 0, seed: 0xc1 }))
                };
                let report = cluster::coordinate_ring(
                    model,
                    checksum,
                    head,
                    tail,
                    Some(&plan),
                    &mut progress,
                    answer_ms,
                    |_, p| write(p),
                )
                .await?;
                write(b"\n")?;
                Ok::<_, anyhow::Error>(report)
            };
            tokio::pin!(run);
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    Some(ev) = events.recv() => {
                        if log.take(ev) {
                            break Err(anyhow!("a node stopped"));
                        }
                    }
                }
            }
        };
        if let Some((why, at)) = &lost {
            if progress.replayed > replayed_before {
                let took = progress.replay_done.map_or(Duration::ZERO, |d| d.duration_since(*at));
                eprintln!(
                    "cluster: recovered from {why} in {:.1} ms: {} position(s) replayed through the new plan",
                    took.as_secs_f64() * 1e3,
                    progress.replayed - replayed_before
                );
            }
        }
        let e = match result {
            Ok(report) => {
                finish(&mut events, &mut log, nodes.len(), cfg).await?;
                // The nodes as the last plan has them (their layers after a re-plan).
                if shards.is_some() {
                    return Ok((report, alive.into_iter().cloned().collect()));
                }
                let roles = ruvllm_esp32::federation::plan(layers, alive.len())?;
                let last = alive
                    .iter()
                    .zip(roles)
                    .map(|(n, s)| Node { role: s.role, layers: s.layers, ..(*n).clone() })
                    .collect();
                return Ok((report, last));
            }
            Err(e) => e,
        };
        let at = Instant::now();
        // The nodes' own account (a killed node first) beats the coordinator's view of a
        // closed link: give them a moment to say it.
        let exited = log.exited;
        let quiet = Duration::from_millis(if args.replan { 1000 } else { 200 });
        while let Ok(Some(ev)) = tokio::time::timeout(quiet, events.recv()).await {
            log.take(ev);
            if args.replan && log.exited > exited {
                break;
            }
        }
        let gone = log.gone();
        let before = alive.len();
        alive.retain(|n| !gone.contains(&n.id));
        let cause = log.cause().unwrap_or(e);
        if !args.replan {
            return Err(cause);
        }
        if let Some((why, _)) = &lost {
            if alive.len() == before {
                // Nothing new went away: the re-formed ring itself failed (a node that cannot
                // take its new layers says so here).
                return Err(anyhow!("{why}; re-planning onto the other nodes failed: {cause}"));
            }
        }
        if alive.is_empty() || alive.len() == before {
            return Err(cause);
        }
        let why = format!("{cause}").replace(" before the run ended", "");
        let ids: Vec<String> = alive.iter().map(|n| n.id.to_string()).collect();
        let what = if shards.is_some() { "shards of the" } else { "the" };
        eprintln!("cluster: {why}; re-planning {what} {layers} layers over node(s) {}", ids.join(", "));
        lost = Some((why, at));
        log.forget();
    }
}

/// After a run: waits for the node processes to end (they do once the run's Finish passed).
async fn finish(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<NodeEvent>,
    log: &mut Log,
    nodes: usize,
    cfg: LinkConfig,
) -> Result<()> {
    // The nodes end once the run's Finish has passed them.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.give_up_ms() + 2000);
    while log.exited < nodes {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => {
                if log.take(ev) {
                    return Err(log.cause().unwrap_or_else(|| anyhow!("a node failed")));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(())
}

/// What the node processes said and how they ended.
#[derive(Default)]
struct Log {
    errors: Vec<String>,
    exited: usize,
    /// Nodes that ended on a signal (killed), and ones that failed otherwise.
    killed: Vec<(u8, i32)>,
    failed: Vec<(u8, std::process::ExitStatus)>,
}

impl Log {
    /// Records `ev`; true when a node failed. Error lines are kept for the cause, other lines
    /// shown.
    fn take(&mut self, ev: NodeEvent) -> bool {
        use std::os::unix::process::ExitStatusExt;
        match ev {
            NodeEvent::Line(id, line) => {
                match line.strip_prefix("error: ") {
                    Some(e) => self.errors.push(e.to_string()),
                    None => eprintln!("node {id}: {line}"),
                }
                false
            }
            NodeEvent::Exit(id, status) => {
                self.exited += 1;
                match status.signal() {
                    Some(sig) => self.killed.push((id, sig)),
                    None if !status.success() => self.failed.push((id, status)),
                    None => return false,
                }
                true
            }
        }
    }

    /// The nodes that went away (killed) before the run ended: the ones a re-plan leaves out.
    /// A node that stopped on an error of its own (a refusal) stops the run instead.
    fn gone(&self) -> Vec<u8> {
        if self.failed.is_empty() {
            self.killed.iter().map(|k| k.0).collect()
        } else {
            Vec::new()
        }
    }

    /// After a re-plan: the nodes that stopped are accounted for (they stay counted as
    /// exited); the error lines of the ring that failed are no cause of the next one's.
    fn forget(&mut self) {
        self.errors.clear();
        self.killed.clear();
        self.failed.clear();
    }

    /// Why the run failed: a killed node, else the first node's error line.
    fn cause(&self) -> Option<anyhow::Error> {
        if let Some((id, sig)) = self.killed.first() {
            return Some(anyhow!("node {id} stopped (killed by signal {sig}) before the run ended"));
        }
        // A node that saw the coordinator close its link reports a consequence, not the cause.
        let consequence = |e: &&String| e.contains("the coordinator closed the link");
        if let Some(e) = self.errors.iter().find(|e| !consequence(e)).or(self.errors.first()) {
            return Some(anyhow!("{e}"));
        }
        self.failed.first().map(|(id, status)| anyhow!("node {id} stopped ({status}) before the run ended"))
    }
}

/// Connects to a node's port on loopback, trying again while it starts.
async fn connect(port: u16, deadline: Instant) -> Result<TcpStream> {
    loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) if Instant::now() > deadline => {
                bail!("nothing listens on port {port} after {} s ({e})", STARTUP.as_secs())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// What a node's busy figure counts.
#[derive(PartialEq)]
enum Busy {
    /// Microseconds: node processes in a ring (a hop a node, and one back).
    Micros,
    /// Microseconds: tensor-parallel node processes, each linked to this host (two hops a
    /// node); a node's positions are those it had a part of.
    Star,
    /// Retired instructions: QEMU boards, each linked to this host (two hops a board).
    Instructions,
}

/// Costs on stderr: per node, then the wire per token and per hop.
fn print_report(r: &RunReport, nodes: &[Node], file: &ClusterFile, busy: Busy) {
    let pos = r.positions.max(1) as f64;
    let mut text = String::new();
    for (s, n) in r.nodes.iter().zip(nodes) {
        let work = match busy {
            Busy::Micros | Busy::Star => format!(
                "{:.2} ms in its layers ({:.3} ms a position)",
                s.busy_us as f64 / 1e3,
                s.busy_us as f64 / 1e3 / pos
            ),
            Busy::Instructions => format!(
                "{} instructions in its layers ({:.0} a position), peak RAM {} bytes",
                s.busy_us,
                s.busy_us as f64 / pos,
                s.peak_ram
            ),
        };
        text += &format!(
            "node {} ({}, layers {}..={}): {work}, {} bytes sent ({:.1} a position), {} retransmits, {} bad frames\n",
            s.node,
            n.role.as_str(),
            n.layers.start,
            n.layers.end - 1,
            s.sent_bytes,
            s.sent_bytes as f64 / pos,
            s.retransmits,
            s.bad_frames
        );
    }
    let hops = if busy == Busy::Micros { nodes.len() + 1 } else { 2 * nodes.len() };
    text += &format!(
        "cluster {}: {} positions ({} generated) in {:.2} ms ({:.1} tok/s); wire {:.1} bytes per token over {hops} hops ({:.1} per hop), {} retransmits\n",
        file.cluster.name,
        r.positions,
        r.generated,
        r.elapsed.as_secs_f64() * 1e3,
        r.positions as f64 / r.elapsed.as_secs_f64().max(1e-9),
        r.wire_bytes() as f64 / pos,
        r.wire_bytes() as f64 / pos / hops as f64,
        r.retransmits()
    );
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// `cluster node`: one node of cluster.toml, listening on its port; `next` is the
/// coordinator's port, where the tail connects back.
pub fn node(config: &Path, id: u8, next: u16, rejoin: bool) -> Result<()> {
    let result = node_inner(config, id, next, rejoin);
    result.map_err(|e| anyhow!("node {id}: {e:#}"))
}

fn node_inner(config: &Path, id: u8, next: u16, rejoin: bool) -> Result<()> {
    let file = read_config(config)?;
    let entry =
        file.chips.nodes.iter().find(|n| n.id == id as i64).ok_or_else(|| anyhow!("not in cluster.toml"))?;
    let own = Node {
        id,
        role: ruvllm_esp32::federation::Role::Single,
        port: 0,
        layers: 0..0,
        model: entry.model.clone(),
    };
    let (img, checksum) = load(&model_args(&file, Some(&own)))?;
    let model = img.model()?;
    // Its checksum is checked against the coordinator's in the handshake, not here.
    let nodes = file.check(model.config.n_layers, model.config.dim, None)?;
    let i = nodes.iter().position(|n| n.id == id).expect("checked");
    let me = &nodes[i];
    let cfg = file.link.config();
    // A tensor node takes its shard from the coordinator's plan; this checks the split here.
    let tensor = match file.topology()? {
        Topology::Tensor => cluster::tensor_shards(&model, nodes.len()).map(|_| true)?,
        Topology::Pipeline => false,
    };
    let spec = NodeSpec {
        id,
        layers: me.layers.clone(),
        streams: 1,
        seq_len: model.config.seq_len,
        checksum,
        accept_ms: STARTUP.as_millis() as u64,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", me.port))
            .await
            .with_context(|| format!("port {} on loopback", me.port))?;
        let corrupt = file.link.corrupt;
        loop {
            let (up, _) = tokio::time::timeout(STARTUP, listener.accept()).await.map_err(|_| {
                anyhow!("nobody connected to port {} within {} s", me.port, STARTUP.as_secs())
            })??;
            up.set_nodelay(true)?;
            let seed = 0x100 * (id as u64 + 1);
            let up = host_link(up, cfg, Line { corrupt, baud: 0, seed });
            // The coordinator's plan names the node after this one (none: the coordinator).
            let down = async |port: Option<u16>| {
                let s = connect(port.unwrap_or(next), Instant::now() + STARTUP).await?;
                Ok(host_link(s, cfg, Line { corrupt, baud: 0, seed: seed + 1 }))
            };
            let result = match tensor {
                true => cluster::run_planned_tensor_node(&model, &spec, up).await,
                false => cluster::run_planned_node(&model, &spec, up, down).await,
            };
            match result {
                Err(e) if rejoin && cluster::is_link_lost(&e) => {
                    eprintln!("{e:#}; waiting to be re-planned");
                }
                r => return r,
            }
        }
    })
}
