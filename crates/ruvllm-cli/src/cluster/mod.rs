//! The host side of federation, on tokio: links over any tokio byte stream (TCP on loopback,
//! an in-memory duplex pipe), what a node process runs, what the coordinator runs, and
//! cluster.toml. The protocol itself lives in the engine (`ruvllm_esp32::federation`).

use anyhow::{anyhow, bail, Result};
use embedded_io_adapters::tokio_1::FromTokio;
use ruvllm_esp32::federation::link::{Clock, Link, LinkConfig, LinkError, LinkStats};
use ruvllm_esp32::federation::pipeline::{self, replayed, Sequence, Slot, Stage};
use ruvllm_esp32::federation::tensor::{TensorLead, TensorNode};
use ruvllm_esp32::federation::wire::{
    Body, FailReason, Forward, Hello, NodeStats, Residual, RingPlan, COORDINATOR, VERSION,
};
use ruvllm_esp32::infer::{IntState, Shard, TensorState};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::Sampling;
use ruvllm_esp32::tokenizer::DECODE_MAX;
use std::cell::Cell;
use std::future::Future;
use std::ops::Range;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

pub mod config;

/// Milliseconds and timeouts from tokio's clock.
#[derive(Clone, Copy)]
pub struct TokioClock(Instant);

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock(Instant::now())
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    async fn within<F: Future>(&self, ms: u64, f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(ms), f).await.ok()
    }
}

/// How a host link imitates a real line: a share of corrupted bytes (the test of a noisy
/// line) and a UART's speed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Line {
    /// Each byte written is, with this probability, XORed with a random non-zero value.
    pub corrupt: f64,
    /// Writes take as long as at this many bits per second, 10 bits a byte (8N1); 0: as fast
    /// as the stream goes.
    pub baud: u32,
    /// Seeds the choice of corrupted bytes.
    pub seed: u64,
}

/// A byte stream behaving like [`Line`] says.
pub struct Faulty<T> {
    inner: T,
    /// Out of 2^32.
    threshold: u64,
    rng: u64,
    /// Nanoseconds a byte occupies the line.
    byte_ns: u64,
    /// When the bytes written so far are through the line.
    free_at: tokio::time::Instant,
    /// Bytes corrupted so far.
    pub corrupted: u64,
    scratch: Vec<u8>,
}

impl<T> Faulty<T> {
    pub fn new(inner: T, line: Line) -> Self {
        let threshold = (line.corrupt.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
        let byte_ns = if line.baud == 0 { 0 } else { 10_000_000_000 / line.baud as u64 };
        let free_at = tokio::time::Instant::now();
        Faulty { inner, threshold, rng: line.seed | 1, byte_ns, free_at, corrupted: 0, scratch: Vec::new() }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: enough for choosing bytes to damage.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl<T: embedded_io_async::ErrorType> embedded_io_async::ErrorType for Faulty<T> {
    type Error = T::Error;
}

impl<T: embedded_io_async::Read> embedded_io_async::Read for Faulty<T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, T::Error> {
        self.inner.read(buf).await
    }
}

impl<T: embedded_io_async::Write> embedded_io_async::Write for Faulty<T> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, T::Error> {
        if self.byte_ns > 0 {
            // The bytes arrive once the line has carried the earlier ones and these.
            let start = self.free_at.max(tokio::time::Instant::now());
            self.free_at = start + Duration::from_nanos(self.byte_ns * buf.len() as u64);
            tokio::time::sleep_until(self.free_at).await;
        }
        if self.threshold == 0 {
            return self.inner.write(buf).await;
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.extend_from_slice(buf);
        for b in out.iter_mut() {
            let r = self.next();
            if r >> 32 < self.threshold {
                *b ^= ((r & 0xff) as u8).max(1);
                self.corrupted += 1;
            }
        }
        let n = self.inner.write(&out).await;
        self.scratch = out;
        n
    }

    async fn flush(&mut self) -> Result<(), T::Error> {
        self.inner.flush().await
    }
}

/// A link on the host over a tokio stream.
pub type HostLink<S> = Link<Faulty<FromTokio<S>>, TokioClock>;

/// A link over `stream`, behaving like `line`.
pub fn host_link<S: AsyncRead + AsyncWrite + Unpin>(stream: S, cfg: LinkConfig, line: Line) -> HostLink<S> {
    Link::new(Faulty::new(FromTokio::new(stream), line), TokioClock::default(), cfg)
}

/// A link that failed because its peer went away (closed, silent, unacknowledging): a node
/// that can be re-planned waits for the coordinator instead of stopping.
#[derive(Debug)]
pub struct LinkLost(String);

impl std::fmt::Display for LinkLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LinkLost {}

/// Whether `e` is a [`LinkLost`] (not a refusal or a bad message).
pub fn is_link_lost(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<LinkLost>())
}

/// One link failure as a sentence naming the peer.
fn link_error(peer: &str, e: LinkError<std::io::Error>, cfg: LinkConfig) -> anyhow::Error {
    let lost = matches!(e, LinkError::NoAck | LinkError::Closed | LinkError::Silent | LinkError::Io(_));
    let e = link_error_text(peer, e, cfg);
    if lost {
        anyhow::Error::new(LinkLost(e.to_string()))
    } else {
        e
    }
}

fn link_error_text(peer: &str, e: LinkError<std::io::Error>, cfg: LinkConfig) -> anyhow::Error {
    match e {
        LinkError::NoAck => anyhow!(
            "{peer} did not acknowledge within {} ms ({} sends): it stopped or the link is down",
            cfg.give_up_ms(),
            cfg.retries + 1
        ),
        LinkError::Closed => anyhow!("{peer} closed the link (it stopped)"),
        LinkError::Silent => anyhow!("nothing came from {peer} in time (it stopped or is stuck)"),
        LinkError::Io(e) => anyhow!("link to {peer}: {e}"),
        e @ (LinkError::Refused(_) | LinkError::Refusing(_)) => anyhow!("link to {peer} refused: {e}"),
        LinkError::Unexpected => anyhow!("{peer} sent a message out of turn"),
    }
}

/// A node id as messages name it.
pub fn node_name(id: u8) -> String {
    if id == COORDINATOR {
        "the coordinator".into()
    } else {
        format!("node {id}")
    }
}

/// What a node is.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: u8,
    pub layers: Range<usize>,
    /// Sequences it can hold at once.
    pub streams: usize,
    /// Context per sequence.
    pub seq_len: usize,
    /// CRC-32 of its model image.
    pub checksum: u32,
    /// How long it waits for its upstream neighbour's hello.
    pub accept_ms: u64,
}

/// A node: accepts its upstream link (refusing another protocol version or model), then opens
/// the downstream one (`down`: connects when awaited), then runs every position coming down
/// through its layers until the coordinator finishes the run. Receiving, computing and
/// sending run concurrently, so several sequences keep every node busy.
pub async fn run_node<U, D>(
    model: &Model<'_>,
    spec: &NodeSpec,
    mut up: HostLink<U>,
    down: impl Future<Output = Result<HostLink<D>>>,
) -> Result<()>
where
    U: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
{
    let me = Hello { version: VERSION, model: spec.checksum, node: spec.id };
    let cfg = up.config();
    let upstream =
        up.accept(me, spec.accept_ms).await.map_err(|e| link_error("its upstream neighbour", e, cfg))?;
    let upstream = node_name(upstream.node);
    let mut down = down.await?;
    let downstream = down.hello(me).await.map_err(|e| link_error("its downstream neighbour", e, cfg))?;
    let downstream = node_name(downstream.node);
    serve(model, spec, up, down, &upstream, &downstream).await
}

/// A node of a ring the coordinator plans ([`RingPlan`]): accepts its upstream link, takes the
/// plan (its first message), opens the downstream link to the node after it in the plan
/// (`connect(port)`; `None`: it is the tail, and connects back to the coordinator), passes the
/// plan on and runs the layers the plan gives it, as [`run_node`]. A node whose model image
/// does not hold those layers (a cut) passes the plan on with its refusal after it, so the
/// coordinator says so and nobody waits. A [`LinkLost`] error: a neighbour went away; the
/// caller may wait to be re-planned.
pub async fn run_planned_node<U, D, F, C>(
    model: &Model<'_>,
    spec: &NodeSpec,
    mut up: HostLink<U>,
    connect: C,
) -> Result<()>
where
    U: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Result<HostLink<D>>>,
    C: FnOnce(Option<u16>) -> F,
{
    let me = Hello { version: VERSION, model: spec.checksum, node: spec.id };
    let cfg = up.config();
    let upstream =
        up.accept(me, spec.accept_ms).await.map_err(|e| link_error("its upstream neighbour", e, cfg))?;
    let upstream = node_name(upstream.node);
    let mut plan = RingPlan::default();
    loop {
        let body = up.recv(Some(spec.accept_ms)).await.map_err(|e| link_error(&upstream, e, cfg))?;
        match plan.take(&body) {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => bail!("{upstream} sent no whole plan first"),
        }
    }
    let total = pipeline::total_layers(model);
    let (layers, next) = plan.place(spec.id, total).map_err(|_| {
        anyhow!(
            "the plan does not cover the model's {total} layers once, or names this node not exactly once"
        )
    })?;
    let mut down = connect(next).await?;
    let downstream = down.hello(me).await.map_err(|e| link_error("its downstream neighbour", e, cfg))?;
    let downstream = node_name(downstream.node);
    for part in plan.parts() {
        down.send(part).await.map_err(|e| link_error(&downstream, e, cfg))?;
    }
    if !pipeline::holds(model, &layers) {
        let refuse = Body::Fail { node: spec.id, reason: FailReason::Layers };
        down.send(refuse).await.map_err(|e| link_error(&downstream, e, cfg))?;
        down.linger(linger_ms(cfg)).await;
        bail!("cannot take layers {}..={}: {}", layers.start, layers.end - 1, holding(model));
    }
    let spec = NodeSpec { layers, ..spec.clone() };
    serve(model, &spec, up, down, &upstream, &downstream).await
}

/// Which layers a model image holds, for a refusal.
fn holding(model: &Model<'_>) -> String {
    let n = model.config.n_layers;
    let first = model.cut.map_or(0, |c| c.first);
    format!("its model image holds only layers {first}..={}", first + n - 1)
}

/// A node's part of a running ring: positions down through its layers until the run's Finish.
async fn serve<U, D>(
    model: &Model<'_>,
    spec: &NodeSpec,
    mut up: HostLink<U>,
    mut down: HostLink<D>,
    upstream: &str,
    downstream: &str,
) -> Result<()>
where
    U: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = up.config();
    let mut arenas: Vec<Vec<i32>> =
        (0..spec.streams).map(|_| vec![0; IntState::arena_len(model, spec.seq_len)]).collect();
    let mut slots = Vec::with_capacity(spec.streams);
    for a in arenas.iter_mut() {
        slots.push(Slot { state: IntState::new(model, a, spec.seq_len)?, sampling: Sampling::GREEDY });
    }
    let mut stage = Stage::new(spec.id, model, spec.layers.clone(), &mut slots)?;

    let up_stats = Cell::new(LinkStats::default());
    let (to_worker, mut work) = tokio::sync::mpsc::channel::<Body>(8);
    let (to_writer, mut outbox) = tokio::sync::mpsc::channel::<Body>(8);
    let reader = async {
        loop {
            let got = up.recv(None).await;
            up_stats.set(up.stats);
            let body = got.map_err(|e| link_error(upstream, e, cfg))?;
            let finish = body == Body::Finish;
            to_worker.send(body).await.map_err(|_| anyhow!("stopped"))?;
            if finish {
                break;
            }
        }
        // Acknowledge a resent Finish until the upstream end closes or goes quiet.
        up.linger(linger_ms(cfg)).await;
        Ok::<(), anyhow::Error>(())
    };
    let worker = async {
        let mut own = NodeStats { node: spec.id, ..NodeStats::default() };
        while let Some(body) = work.recv().await {
            let finish = body == Body::Finish;
            if finish {
                to_writer.send(Body::Stats(own)).await.map_err(|_| anyhow!("stopped"))?;
            }
            let position = matches!(body, Body::Forward(_));
            let t = Instant::now();
            let out = stage.handle(body);
            if position {
                own.busy_us += t.elapsed().as_micros() as u64;
                own.positions += 1;
            }
            to_writer.send(out).await.map_err(|_| anyhow!("stopped"))?;
            if finish {
                break;
            }
        }
        Ok(())
    };
    let writer = async {
        while let Some(mut body) = outbox.recv().await {
            if let Body::Stats(s) = &mut body {
                if s.node == spec.id {
                    let (u, d) = (up_stats.get(), down.stats);
                    s.sent_bytes = u.sent_bytes + d.sent_bytes;
                    s.retransmits = u.retransmits + d.retransmits;
                    s.bad_frames = u.bad_frames + d.bad_frames;
                }
            }
            let finish = body == Body::Finish;
            down.send(body).await.map_err(|e| link_error(downstream, e, cfg))?;
            if finish {
                break;
            }
        }
        Ok(())
    };
    tokio::try_join!(reader, worker, writer)?;
    Ok(())
}

/// How long the end of a link keeps acknowledging a resent Finish after the last one: a few
/// resend periods (an acknowledgement lost on a noisy line brings the Finish again).
fn linger_ms(cfg: LinkConfig) -> u64 {
    (5 * cfg.ack_ms).min(cfg.give_up_ms())
}

/// What a coordinated run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Each node's costs, in pipeline order.
    pub nodes: Vec<NodeStats>,
    /// The coordinator's two links.
    pub head: LinkStats,
    pub tail: LinkStats,
    /// Positions run (all sequences).
    pub positions: usize,
    /// Tokens sampled (all sequences).
    pub generated: usize,
    pub elapsed: Duration,
}

impl RunReport {
    /// Bytes written on every link, acknowledgements and resends included.
    pub fn wire_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| n.sent_bytes).sum::<u64>() + self.head.sent_bytes + self.tail.sent_bytes
    }

    pub fn retransmits(&self) -> u64 {
        self.nodes.iter().map(|n| n.retransmits as u64).sum::<u64>()
            + (self.head.retransmits + self.tail.retransmits) as u64
    }
}

/// One sequence the coordinator runs: the prompt's tokens, positions, and sampling.
pub struct Job<'p> {
    pub prompt: &'p [u32],
    pub steps: usize,
    pub temp_milli: u32,
    pub seed: u64,
}

/// Where a ring's sequences stand, kept across re-plans: each sequence's progress and the
/// token at each of its positions so far, so a re-formed ring can replay them.
pub struct Progress<'p> {
    jobs: Vec<(u32, u64, usize)>,
    seqs: Vec<Sequence<'p>>,
    /// Each job's sampler where the coordinator samples (tensor parallel).
    samplings: Vec<Sampling>,
    tokens: Vec<Vec<u32>>,
    /// Positions answered (replays not counted).
    pub positions: usize,
    /// Positions replayed to rebuild the KV caches of re-formed rings.
    pub replayed: usize,
    /// When the first ring started, and when the last replay ended.
    start: Option<Instant>,
    pub replay_done: Option<Instant>,
}

impl<'p> Progress<'p> {
    pub fn new(jobs: &[Job<'p>]) -> Result<Self> {
        if jobs.len() > u8::MAX as usize {
            bail!("at most 255 sequences at once");
        }
        let mut seqs = Vec::with_capacity(jobs.len());
        let mut tokens = Vec::with_capacity(jobs.len());
        for j in jobs {
            let s = Sequence::new(j.prompt, j.steps)?;
            tokens.push(s.next_step().map(|(_, t, _)| t).into_iter().collect());
            seqs.push(s);
        }
        let samplings = jobs.iter().map(|j| Sampling::new(j.temp_milli, j.seed)).collect();
        let jobs = jobs.iter().map(|j| (j.temp_milli, j.seed, j.prompt.len())).collect();
        Ok(Progress {
            jobs,
            seqs,
            samplings,
            tokens,
            positions: 0,
            replayed: 0,
            start: None,
            replay_done: None,
        })
    }
}

/// The coordinator: opens the ring (`head`: its link to the head node, which it opens;
/// `tail`: the tail's link back, which the tail opens), runs every job at once, one position
/// per job in flight, calling `emit(job, piece)` with each printable piece in order, then
/// ends the run and collects each node's costs. `answer_ms` bounds the wait for any answer.
pub async fn coordinate<H, T>(
    model: &Model<'_>,
    checksum: u32,
    head: HostLink<H>,
    tail: impl Future<Output = Result<HostLink<T>>>,
    jobs: &[Job<'_>],
    answer_ms: u64,
    emit: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<RunReport>
where
    H: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut progress = Progress::new(jobs)?;
    coordinate_ring(model, checksum, head, tail, None, &mut progress, answer_ms, emit).await
}

/// [`coordinate`] over a ring of [`run_planned_node`]s given `plan` first (with `None`, of
/// [`run_node`]s), from where `progress` stands: a ring re-formed after a node failed first
/// replays every position its sequences have passed (so the nodes' KV caches of the layers
/// they now hold are rebuilt, and the tail's sampler draws again what it drew), checking that
/// each sampled position gives the token it gave before, then goes on.
#[allow(clippy::too_many_arguments)]
pub async fn coordinate_ring<H, T>(
    model: &Model<'_>,
    checksum: u32,
    mut head: HostLink<H>,
    tail: impl Future<Output = Result<HostLink<T>>>,
    plan: Option<&RingPlan>,
    progress: &mut Progress<'_>,
    answer_ms: u64,
    mut emit: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<RunReport>
where
    H: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let me = Hello { version: VERSION, model: checksum, node: COORDINATOR };
    let cfg = head.config();
    let first = head.hello(me).await.map_err(|e| link_error("the head node", e, cfg))?;
    let first = node_name(first.node);
    if let Some(p) = plan {
        for part in p.parts() {
            head.send(part).await.map_err(|e| link_error(&first, e, cfg))?;
        }
    }
    let mut tail = tail.await?;
    let last = tail.accept(me, answer_ms).await.map_err(|e| link_error("the tail node", e, cfg))?;
    let last = node_name(last.node);
    let send =
        async |head: &mut HostLink<H>, body| head.send(body).await.map_err(|e| link_error(&first, e, cfg));
    let recv = async |tail: &mut HostLink<T>| match tail.recv(Some(answer_ms)).await {
        Ok(Body::Fail { node, reason }) => Err(anyhow!("node {node} failed: {}", fail_reason(reason))),
        Ok(b) => Ok(b),
        Err(LinkError::Silent) => Err(anyhow!("no answer from the pipeline within {answer_ms} ms")),
        Err(e) => Err(link_error(&last, e, cfg)),
    };
    if let Some(p) = plan {
        let mut back = RingPlan::default();
        while !back.take(&recv(&mut tail).await?).unwrap_or(true) {}
        if back != *p {
            bail!("the pipeline answered out of turn while taking its plan");
        }
        // A node that cannot hold its layers passed its refusal on right after the plan.
    }
    let start = *progress.start.get_or_insert_with(Instant::now);
    let open: Vec<usize> =
        (0..progress.seqs.len()).filter(|&i| progress.seqs[i].next_step().is_some()).collect();
    for &i in &open {
        let (temp_milli, seed, _) = progress.jobs[i];
        send(&mut head, Body::Start { stream: i as u8, temp_milli, seed }).await?;
    }
    for _ in &open {
        let b = recv(&mut tail).await?;
        if !matches!(b, Body::Start { .. }) {
            bail!("the pipeline answered out of turn while starting");
        }
    }
    // A re-formed ring: every position passed so far again, one at a time.
    let mut replays = 0;
    for &i in &open {
        let prompt = progress.jobs[i].2;
        for p in 0..progress.seqs[i].pos() {
            let token = progress.tokens[i][p];
            let sample = p + 1 >= prompt;
            let residual = Residual::new();
            let f = Forward { stream: i as u8, pos: p as u32, token, sample, residual };
            send(&mut head, Body::Forward(f)).await?;
            match recv(&mut tail).await? {
                Body::Next { stream, pos, token } if (stream as usize, pos as usize) == (i, p) => {
                    if token != replayed(&progress.tokens[i], prompt, p) {
                        bail!("the re-formed pipeline gave another token at position {p} than before");
                    }
                }
                _ => bail!("the pipeline answered out of turn while replaying"),
            }
            replays += 1;
            progress.replayed += 1;
        }
    }
    if replays > 0 {
        progress.replay_done = Some(Instant::now());
    }
    let forward = |i: usize, s: &Sequence<'_>| {
        s.next_step().map(|(pos, token, sample)| {
            Body::Forward(Forward { stream: i as u8, pos, token, sample, residual: Residual::new() })
        })
    };
    let mut open = 0;
    for (i, s) in progress.seqs.iter().enumerate() {
        if let Some(b) = forward(i, s) {
            send(&mut head, b).await?;
            open += 1;
        }
    }
    let mut scratch = [0u8; DECODE_MAX];
    while open > 0 {
        let Body::Next { stream, pos, token } = recv(&mut tail).await? else {
            bail!("the pipeline answered out of turn");
        };
        let i = stream as usize;
        let s = progress
            .seqs
            .get_mut(i)
            .ok_or_else(|| anyhow!("the pipeline answered for an unknown sequence"))?;
        if s.next_step().map(|n| n.0) != Some(pos) {
            bail!("the pipeline answered position {pos} of sequence {i} out of turn");
        }
        progress.positions += 1;
        let piece = s.advance(&model.vocab, token, &mut scratch)?;
        // Recorded before any await: a run dropped at one keeps a consistent account.
        if let Some((_, t, _)) = s.next_step() {
            progress.tokens[i].push(t);
        }
        if let Some(piece) = piece {
            emit(i, piece)?;
        }
        match forward(i, &progress.seqs[i]) {
            Some(b) => send(&mut head, b).await?,
            None => open -= 1,
        }
    }
    let elapsed = start.elapsed();
    send(&mut head, Body::Finish).await?;
    let mut nodes = Vec::new();
    loop {
        match recv(&mut tail).await? {
            Body::Stats(s) => nodes.push(s),
            Body::Finish => break,
            _ => bail!("the pipeline answered out of turn while finishing"),
        }
    }
    let report = RunReport {
        nodes,
        head: head.stats,
        tail: tail.stats,
        positions: progress.positions,
        generated: progress.seqs.iter().map(|s| s.generated).sum(),
        elapsed,
    };
    // Closing the head link lets the nodes end in turn; until the tail closes its end too,
    // acknowledge a resent Finish.
    drop(head);
    tail.linger(linger_ms(cfg)).await;
    Ok(report)
}

/// The coordinator for boards that each have one link, to this host (QEMU boards on their one
/// UART): a position goes to the first board, its answer to the next, and so on; the last
/// board's answer is the token. The messages are the ring's; the host relays between boards.
/// The report's `head` sums the host's links. `checksums[i]`: the CRC-32 of the image board
/// `i` must hold (each board may hold only its layers' cut of the model).
pub async fn coordinate_boards<S: AsyncRead + AsyncWrite + Unpin>(
    model: &Model<'_>,
    checksums: &[u32],
    boards: &mut [HostLink<S>],
    job: &Job<'_>,
    answer_ms: u64,
    mut emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<RunReport> {
    let names = greet_all(boards, checksums, "a board").await?;
    // One message through every board in turn: what the last one answers.
    let through = async |boards: &mut [HostLink<S>], mut body: Body| {
        for (b, name) in boards.iter_mut().zip(&names) {
            let cfg = b.config();
            b.send(body).await.map_err(|e| link_error(name, e, cfg))?;
            body = match b.recv(Some(answer_ms)).await {
                Ok(Body::Fail { node, reason }) => bail!("node {node} failed: {}", fail_reason(reason)),
                Ok(b) => b,
                Err(LinkError::Silent) => bail!("no answer from {name} within {answer_ms} ms"),
                Err(e) => return Err(link_error(name, e, cfg)),
            };
        }
        Ok(body)
    };
    let start = Instant::now();
    through(boards, Body::Start { stream: 0, temp_milli: job.temp_milli, seed: job.seed }).await?;
    let mut seq = Sequence::new(job.prompt, job.steps)?;
    let (mut positions, mut scratch) = (0, [0u8; DECODE_MAX]);
    while let Some((pos, token, sample)) = seq.next_step() {
        let f = Forward { stream: 0, pos, token, sample, residual: Residual::new() };
        let Body::Next { pos: p, token, .. } = through(boards, Body::Forward(f)).await? else {
            bail!("the boards answered out of turn");
        };
        if p != pos {
            bail!("the boards answered position {p} out of turn");
        }
        positions += 1;
        if let Some(piece) = seq.advance(&model.vocab, token, &mut scratch)? {
            emit(piece)?;
        }
    }
    let elapsed = start.elapsed();
    let nodes = finish_all(boards, &names, answer_ms).await?;
    let head = link_totals(boards);
    linger_all(boards).await;
    Ok(RunReport { nodes, head, tail: LinkStats::default(), positions, generated: seq.generated, elapsed })
}

/// Opens every link (`who` names the peers in errors; `checksums[i]`: the CRC-32 of the image
/// link `i`'s node must hold); the names of the nodes that answered.
async fn greet_all<S: AsyncRead + AsyncWrite + Unpin>(
    links: &mut [HostLink<S>],
    checksums: &[u32],
    who: &str,
) -> Result<Vec<String>> {
    if checksums.len() != links.len() {
        bail!("one image checksum per link");
    }
    let mut names = Vec::with_capacity(links.len());
    for (l, &checksum) in links.iter_mut().zip(checksums) {
        let me = Hello { version: VERSION, model: checksum, node: COORDINATOR };
        let cfg = l.config();
        let peer = l.hello(me).await.map_err(|e| link_error(who, e, cfg))?;
        names.push(node_name(peer.node));
    }
    Ok(names)
}

/// The next message from node `name`, within `answer_ms`; its failure report as an error.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    l: &mut HostLink<S>,
    name: &str,
    answer_ms: u64,
) -> Result<Body> {
    match l.recv(Some(answer_ms)).await {
        Ok(Body::Fail { node, reason }) => Err(anyhow!("node {node} failed: {}", fail_reason(reason))),
        Ok(b) => Ok(b),
        Err(LinkError::Silent) => Err(anyhow!("no answer from {name} within {answer_ms} ms")),
        Err(e) => Err(link_error(name, e, l.config())),
    }
}

/// Sends each node its Finish and takes what it answers: its statistics, then its Finish.
async fn finish_all<S: AsyncRead + AsyncWrite + Unpin>(
    links: &mut [HostLink<S>],
    names: &[String],
    answer_ms: u64,
) -> Result<Vec<NodeStats>> {
    let mut nodes = Vec::with_capacity(links.len());
    for (l, name) in links.iter_mut().zip(names) {
        let cfg = l.config();
        l.send(Body::Finish).await.map_err(|e| link_error(name, e, cfg))?;
        match (answer(l, name, answer_ms).await?, answer(l, name, answer_ms).await?) {
            (Body::Stats(s), Body::Finish) => nodes.push(s),
            _ => bail!("{name} answered out of turn while finishing"),
        }
    }
    Ok(nodes)
}

/// [`Link::linger`] on every link at once: a node's last Finish is acknowledged again if
/// our first acknowledgement was lost, and the run ends one linger period later, not N.
async fn linger_all<S: AsyncRead + AsyncWrite + Unpin>(links: &mut [HostLink<S>]) {
    let mut waits: Vec<_> = links
        .iter_mut()
        .map(|l| {
            let ms = linger_ms(l.config());
            Box::pin(l.linger(ms))
        })
        .collect();
    std::future::poll_fn(|cx| {
        waits.retain_mut(|w| w.as_mut().poll(cx).is_pending());
        if waits.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// What this end of `links` counted, summed.
fn link_totals<S>(links: &[HostLink<S>]) -> LinkStats {
    let mut t = LinkStats::default();
    for l in links {
        t.sent_bytes += l.stats.sent_bytes;
        t.retransmits += l.stats.retransmits;
        t.bad_frames += l.stats.bad_frames;
    }
    t
}

fn fail_reason(r: FailReason) -> &'static str {
    match r {
        FailReason::BadStep => "a position outside its context",
        FailReason::BadResidual => "an activation of the wrong width (a model of another shape?)",
        FailReason::BadStream => "a sequence number beyond its sequences",
        FailReason::Unexpected => "a message out of turn",
        FailReason::BadPlan => "a plan that does not cover the model's layers once",
        FailReason::Layers => {
            "its model image does not hold the layers the plan gives it (a board linked with only its own layers' cut cannot take more)"
        }
    }
}

/// Every node's shard of a tensor-parallel split of `model` over `nodes` nodes, or why the
/// model's shape does not split that far (with its figures).
pub fn tensor_shards(model: &Model<'_>, nodes: usize) -> Result<Vec<Shard>> {
    let p = ruvllm_esp32::infer::parts(model)?;
    let max = ruvllm_esp32::federation::wire::MAX_PARTIAL;
    if model.config.dim > max {
        bail!(
            "tensor parallelism runs models up to width {max} (this one is {}): use topology \"pipeline\"",
            model.config.dim
        );
    }
    if nodes == 0 || nodes > p.max_nodes() {
        let c = &model.config;
        bail!(
            "{nodes} tensor-parallel nodes: this model splits into at most {} (its {} KV heads of {} values make {} attention part(s) of whole quantization groups of {}, its {} FFN rows {} part(s) of {}); use 1 to {} nodes, or topology \"pipeline\"",
            p.max_nodes(),
            c.n_kv_heads,
            c.dim / c.n_heads,
            p.attention,
            p.group,
            c.hidden_dim,
            p.ffn,
            p.group,
            p.max_nodes()
        );
    }
    (0..nodes).map(|i| Ok(ruvllm_esp32::infer::shard(model, nodes, i)?)).collect()
}

/// A tensor-parallel node: accepts the coordinator's link (refusing another protocol version
/// or model), then answers every round with its shard's partial sums until the run ends.
pub async fn run_tensor_node<U: AsyncRead + AsyncWrite + Unpin>(
    model: &Model<'_>,
    spec: &NodeSpec,
    shard: Shard,
    mut up: HostLink<U>,
) -> Result<()> {
    let me = Hello { version: VERSION, model: spec.checksum, node: spec.id };
    let cfg = up.config();
    up.accept(me, spec.accept_ms).await.map_err(|e| link_error("the coordinator", e, cfg))?;
    serve_tensor(model, spec, shard, up).await
}

/// A tensor-parallel node the coordinator plans ([`RingPlan::tensor`]): accepts the
/// coordinator's link, takes the plan (its first message), computes its shard from its place
/// in it (shard `i` of a split into as many parts as the plan has nodes) and answers rounds
/// as [`run_tensor_node`]. A [`LinkLost`] error: the coordinator went away; the caller may
/// wait to be re-planned.
pub async fn run_planned_tensor_node<U: AsyncRead + AsyncWrite + Unpin>(
    model: &Model<'_>,
    spec: &NodeSpec,
    mut up: HostLink<U>,
) -> Result<()> {
    let me = Hello { version: VERSION, model: spec.checksum, node: spec.id };
    let cfg = up.config();
    up.accept(me, spec.accept_ms).await.map_err(|e| link_error("the coordinator", e, cfg))?;
    let mut plan = RingPlan::default();
    loop {
        let body = up.recv(Some(spec.accept_ms)).await.map_err(|e| link_error("the coordinator", e, cfg))?;
        match plan.take(&body) {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => bail!("the coordinator sent no whole plan first"),
        }
    }
    let layers = model.config.n_layers;
    let (i, n) = plan.shard_place(spec.id, layers).map_err(|_| {
        anyhow!("the plan does not give every node all {layers} layers, or names this node not exactly once")
    })?;
    let shard = tensor_shards(model, n)?.swap_remove(i);
    serve_tensor(model, spec, shard, up).await
}

/// A tensor-parallel node's rounds until the run's Finish.
async fn serve_tensor<U: AsyncRead + AsyncWrite + Unpin>(
    model: &Model<'_>,
    spec: &NodeSpec,
    shard: Shard,
    mut up: HostLink<U>,
) -> Result<()> {
    let cfg = up.config();
    let mut arena = vec![0; TensorState::arena_len(model, &shard, spec.seq_len)];
    let mut slots = vec![TensorState::new(model, shard, &mut arena, spec.seq_len)?];
    let mut acc = vec![0i64; model.config.dim];
    let mut node = TensorNode::new(spec.id, model, &mut slots, &mut acc)?;
    let mut own = NodeStats { node: spec.id, ..NodeStats::default() };
    let mut last = None;
    loop {
        let body = up.recv(None).await.map_err(|e| link_error("the coordinator", e, cfg))?;
        if body == Body::Finish {
            let s = up.stats;
            own.sent_bytes = s.sent_bytes;
            own.retransmits = s.retransmits;
            own.bad_frames = s.bad_frames;
            up.send(Body::Stats(own)).await.map_err(|e| link_error("the coordinator", e, cfg))?;
            // Then the Finish itself, as a board and the pipeline's nodes pass it on.
            up.send(Body::Finish).await.map_err(|e| link_error("the coordinator", e, cfg))?;
            break;
        }
        let t = Instant::now();
        if let Body::Round(r) = &body {
            if last != Some((r.stream, r.pos)) {
                last = Some((r.stream, r.pos));
                own.positions += 1;
            }
        }
        let out = node.handle(body);
        own.busy_us += t.elapsed().as_micros() as u64;
        up.send(out).await.map_err(|e| link_error("the coordinator", e, cfg))?;
    }
    up.linger(linger_ms(cfg)).await;
    Ok(())
}

/// The coordinator of a tensor-parallel split, one link to each node (`links[i]` to the node
/// holding `shards[i]`): each half-layer of each position goes to the nodes holding a part of
/// it, their partial sums come back and are reduced here; the embeddings, the classifier and
/// sampling run here too. The report's `head` sums this end of the links. `checksums[i]`: the
/// CRC-32 of the image node `i` must hold (the whole model's, or a board's shard cut).
pub async fn coordinate_tensor<S: AsyncRead + AsyncWrite + Unpin>(
    model: &Model<'_>,
    checksums: &[u32],
    links: &mut [HostLink<S>],
    shards: &[Shard],
    job: &Job<'_>,
    answer_ms: u64,
    emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<RunReport> {
    let mut progress = Progress::new(std::slice::from_ref(job))?;
    coordinate_tensor_from(model, checksums, links, shards, None, &mut progress, answer_ms, emit).await
}

/// [`coordinate_tensor`] over [`run_planned_tensor_node`]s given `plan` first (with `None`,
/// over [`run_tensor_node`]s), for the first job of `progress`, from where it stands: a split
/// formed again after a node failed first replays every position passed so far (every round,
/// so each node rebuilds the KV cache of its new shard; the sampler, here, has already drawn
/// for them), then goes on.
#[allow(clippy::too_many_arguments)]
pub async fn coordinate_tensor_from<S: AsyncRead + AsyncWrite + Unpin>(
    model: &Model<'_>,
    checksums: &[u32],
    links: &mut [HostLink<S>],
    shards: &[Shard],
    plan: Option<&RingPlan>,
    progress: &mut Progress<'_>,
    answer_ms: u64,
    mut emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<RunReport> {
    let names = greet_all(links, checksums, "a node").await?;
    let mut arena = vec![0; TensorLead::arena_len(model)];
    let mut total = vec![0i64; model.config.dim];
    let mut lead = TensorLead::new(model, &mut arena, shards, &mut total)?;
    let rounds: Vec<(u16, bool)> = lead.rounds().collect();
    let takers: [Vec<usize>; 2] = [lead.takers(false).collect(), lead.takers(true).collect()];
    let send = async |l: &mut HostLink<S>, name: &str, body: Body| {
        let cfg = l.config();
        l.send(body).await.map_err(|e| link_error(name, e, cfg))
    };
    let recv = async |l: &mut HostLink<S>, name: &str| answer(l, name, answer_ms).await;
    if let Some(p) = plan {
        for (l, name) in links.iter_mut().zip(&names) {
            for part in p.parts() {
                send(l, name, part).await?;
            }
        }
    }
    let start = *progress.start.get_or_insert_with(Instant::now);
    let (temp_milli, seed, _) = progress.jobs[0];
    let begin = Body::Start { stream: 0, temp_milli, seed };
    for (l, name) in links.iter_mut().zip(&names) {
        send(l, name, begin.clone()).await?;
        if recv(l, name).await? != begin {
            bail!("{name} answered out of turn while starting");
        }
    }
    let mut scratch = [0u8; DECODE_MAX];
    // Positions passed so far (a split formed again), then the rest.
    let replay = progress.seqs[0].pos();
    let mut p = 0;
    loop {
        let (pos, token, sample) = if p < replay {
            (p as u32, progress.tokens[0][p], false)
        } else {
            match progress.seqs[0].next_step() {
                Some(step) => step,
                None => break,
            }
        };
        lead.embed(token)?;
        for &(layer, ffn) in &rounds {
            let msg = lead.round(0, pos, layer, ffn);
            let takers = &takers[usize::from(ffn)];
            // Every taker gets the round before any answer is awaited: they work at once.
            for &t in takers {
                send(&mut links[t], &names[t], msg.clone()).await?;
            }
            for &t in takers {
                let answer = recv(&mut links[t], &names[t]).await?;
                lead.absorb(&msg, &answer).map_err(|_| anyhow!("{} answered out of turn", names[t]))?;
            }
            lead.reduce();
        }
        if p < replay {
            p += 1;
            progress.replayed += 1;
            if p == replay {
                progress.replay_done = Some(Instant::now());
            }
            continue;
        }
        // Sampled and recorded before any await: a run dropped at one keeps a consistent account.
        let next = if sample { Some(lead.sample(&mut progress.samplings[0])?) } else { None };
        progress.positions += 1;
        let s = &mut progress.seqs[0];
        let piece = s.advance(&model.vocab, next, &mut scratch)?;
        if let Some((_, t, _)) = s.next_step() {
            progress.tokens[0].push(t);
        }
        if let Some(piece) = piece {
            emit(piece)?;
        }
    }
    let (positions, generated) = (progress.positions, progress.seqs[0].generated);
    let elapsed = start.elapsed();
    let nodes = finish_all(links, &names, answer_ms).await?;
    let head = link_totals(links);
    linger_all(links).await;
    Ok(RunReport { nodes, head, tail: LinkStats::default(), positions, generated, elapsed })
}
