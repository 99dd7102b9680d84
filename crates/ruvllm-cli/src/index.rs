//! `ruvllm-esp32 index bench`: loads a dataset, computes exact ground truth when none is given,
//! builds the chosen index and prints recall@1, recall@k, queries/s and bytes/vector for each
//! `--ef-search` value.

use crate::count;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use ruvllm_cli::ann::{self, Mode, Params};
use ruvllm_cli::datasets::{self, Metric, Vectors};
use ruvllm_cli::outln;
use ruvllm_esp32::vector::hnsw::EF_MAX;
use ruvllm_esp32::vector::pq::{MAX_CENTROIDS, MAX_SUBSPACES};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum IndexCmd {
    /// Build an index over a dataset; print recall@1, recall@k, queries/s and bytes/vector
    #[command(after_help = "Examples:
  ruvllm-esp32 index bench --base sift_base.fvecs --queries sift_query.fvecs --ground-truth sift_groundtruth.ivecs --mode i8
  ruvllm-esp32 index bench --base t10k-images-idx3-ubyte.gz --holdout 1000 --mode f32 --ef-search 16,32,64,128
  ruvllm-esp32 index bench --base t10k-images-idx3-ubyte.gz --mode pq --rerank 100
  ruvllm-esp32 index bench --chip esp32c3 --base t10k-images-idx3-ubyte.gz --project 64 --mode i8 --m 8")]
    Bench(BenchArgs),
}

/// The largest `--project`: the largest dimension an index instance has.
const MAX_PROJECT: usize = ann::DIMS[ann::DIMS.len() - 1];
/// Entries of the largest projection matrix (input dimensions x `--project`): 64 MiB.
const MAX_PROJECTION: usize = 1 << 24;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum MetricArg {
    Euclidean,
    Cosine,
    Dot,
}

#[derive(Clone, clap::Args)]
pub struct BenchArgs {
    /// Base vectors: .fvecs, .bvecs or MNIST IDX images, plain or gzipped
    #[arg(long)]
    pub base: PathBuf,
    /// Query vectors, same formats. Default: the last --holdout vectors of --base
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Without --queries: how many of the base file's last vectors are held out as queries
    #[arg(long, default_value_t = 1000, value_parser = count(1, u32::MAX as usize))]
    pub holdout: usize,
    /// Exact neighbours (.ivecs). Default: computed here by brute force
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// Neighbours per query (at most the base vectors)
    #[arg(short = 'k', long, default_value_t = 10, value_parser = count(1, EF_MAX))]
    pub k: usize,
    #[arg(long, value_enum, default_value = "f32")]
    pub mode: Mode,
    #[arg(long, value_enum, default_value = "euclidean")]
    pub metric: MetricArg,
    /// HNSW links per node on the upper levels (level 0 gets 2m): 4, 8, 12, 16, 24 or 32
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    /// HNSW candidate list while inserting (1 to 256)
    #[arg(long, default_value_t = 64, value_parser = count(1, EF_MAX))]
    pub ef_construction: usize,
    /// HNSW candidate list while searching (1 to 256); a comma-separated list measures each
    /// (a sweep). With --mode pq --rerank: the re-ranked candidates instead
    #[arg(long, value_delimiter = ',', default_value = "64", value_parser = count(1, EF_MAX))]
    pub ef_search: Vec<usize>,
    /// PQ subspaces (default: one per 8 dimensions)
    #[arg(long, default_value_t = 0, value_parser = count(0, MAX_SUBSPACES))]
    pub pq_subspaces: usize,
    /// PQ centroids per subspace (at most 256)
    #[arg(long, default_value_t = 256, value_parser = count(1, MAX_CENTROIDS))]
    pub pq_centroids: usize,
    /// PQ: re-rank this many ADC candidates by exact distance (0: ADC alone)
    #[arg(long, default_value_t = 0, value_parser = count(0, ann::CAP))]
    pub rerank: usize,
    /// Use only the first N base vectors (an index holds at most 65534)
    #[arg(long, value_parser = count(1, ann::CAP))]
    pub max_base: Option<usize>,
    /// Use only the first N queries
    #[arg(long, value_parser = count(1, u32::MAX as usize))]
    pub max_queries: Option<usize>,
    /// Reduce base and queries to this many dimensions first (a fixed random +-1 projection;
    /// 1 to 1024, at most the vectors' dimension)
    #[arg(long, value_parser = count(1, MAX_PROJECT))]
    pub project: Option<usize>,
    #[arg(short = 's', long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Measure on a chip instead: esp32c3 builds the QEMU board (ESP32-C3 resources) around
    /// the vectors and counts instructions per insert and per search exactly; recall is scored
    /// here. HNSW modes only; --max-base defaults to 256 and --max-queries to 100
    #[arg(long)]
    pub chip: Option<String>,
}

pub fn run(cmd: IndexCmd) -> Result<()> {
    match cmd {
        IndexCmd::Bench(args) => bench(&args),
    }
}

/// Base, queries and ground truth, as `index bench` prepared them.
pub struct Dataset {
    pub base: Vectors<f32>,
    pub queries: Vectors<f32>,
    pub truth: Vectors<u32>,
    /// Where the queries came from, for the report.
    pub source: String,
}

fn metric(m: MetricArg) -> Metric {
    match m {
        MetricArg::Euclidean => Metric::Euclidean,
        MetricArg::Cosine => Metric::Cosine,
        MetricArg::Dot => Metric::Dot,
    }
}

fn check_finite(v: &Vectors<f32>, path: &Path) -> Result<()> {
    if let Some(i) = v.data.iter().position(|x| !x.is_finite()) {
        bail!("{}: vector {} holds NaN or infinity", path.display(), i / v.dim.max(1));
    }
    Ok(())
}

fn truncate(v: &mut Vectors<f32>, n: Option<usize>) {
    if let Some(n) = n {
        v.data.truncate(n.saturating_mul(v.dim));
    }
}

/// What clap's ranges cannot check, before any file is read.
fn check_args(args: &BenchArgs) -> Result<()> {
    // The board's index takes other m (2 to 64) and checks them itself.
    if args.chip.is_none() && args.mode != Mode::Pq && !ann::MS.contains(&args.m) {
        return Err(ann::BuildError::UnsupportedM { m: args.m }.into());
    }
    Ok(())
}

/// Loads and checks everything `args` names, computing ground truth when none is given.
pub fn load(args: &BenchArgs) -> Result<Dataset> {
    check_args(args)?;
    let mut base = datasets::read_vectors(&args.base)?;
    check_finite(&base, &args.base)?;
    let (mut queries, source) = match &args.queries {
        Some(q) => {
            let v = datasets::read_vectors(q)?;
            check_finite(&v, q)?;
            (v, q.display().to_string())
        }
        None => {
            let n = base.len();
            if args.holdout == 0 || args.holdout >= n {
                bail!(
                    "{}: --holdout {} must leave base vectors (the file has {n})",
                    args.base.display(),
                    args.holdout
                );
            }
            let q = Vectors { dim: base.dim, data: base.data.split_off((n - args.holdout) * base.dim) };
            (q, format!("the last {} vectors of {}", args.holdout, args.base.display()))
        }
    };
    if queries.dim != base.dim {
        bail!("queries have dimension {}, the base {}", queries.dim, base.dim);
    }
    truncate(&mut base, args.max_base);
    truncate(&mut queries, args.max_queries);
    if base.is_empty() || queries.is_empty() {
        bail!("no base vectors or no queries left");
    }
    // Everything the work below depends on is checked before it starts.
    if base.len() > ann::CAP {
        bail!(
            "{}: {} base vectors, an index holds at most {} (use --max-base)",
            args.base.display(),
            base.len(),
            ann::CAP
        );
    }
    if args.k > base.len() {
        bail!("-k {}: use 1 to {}, the number of base vectors", args.k, base.len());
    }
    if let Some(d) = args.project {
        if d > base.dim || base.dim.saturating_mul(d) > MAX_PROJECTION {
            bail!(
                "--project {d}: use 1 to {} for vectors of {} dimensions",
                base.dim.min(MAX_PROJECT).min(MAX_PROJECTION / base.dim),
                base.dim
            );
        }
        base = ann::project(&base, d, args.seed);
        queries = ann::project(&queries, d, args.seed);
    }
    let truth = match &args.ground_truth {
        Some(p) if args.project.is_none() => {
            let gt = datasets::read_ivecs(p)?;
            if gt.len() < queries.len() || gt.dim < args.k {
                bail!(
                    "{}: {} rows of {} neighbours, need {} rows of at least {}",
                    p.display(),
                    gt.len(),
                    gt.dim,
                    queries.len(),
                    args.k
                );
            }
            if let Some(bad) = gt.data.iter().find(|&&id| id < 0 || id as usize >= base.len()) {
                bail!("{}: neighbour id {bad} is not one of the {} base vectors", p.display(), base.len());
            }
            let data = gt.data[..queries.len() * gt.dim].iter().map(|&id| id as u32).collect();
            Vectors { dim: gt.dim, data }
        }
        Some(_) => bail!("--ground-truth is for the original vectors; with --project it is computed here"),
        None => datasets::ground_truth(&base.data, &queries.data, base.dim, args.k, metric(args.metric))?,
    };
    Ok(Dataset { base, queries, truth, source })
}

/// `--chip`: the same dataset preparation, measured on the board.
fn bench_chip(chip: &str, args: &BenchArgs) -> Result<()> {
    crate::board::check_chip(chip)?;
    if args.mode == Mode::Pq {
        bail!("--mode pq: the board runs HNSW only (use f32, i8 or binary with --chip)");
    }
    if args.ground_truth.is_some() && args.max_base.is_none() {
        // The board takes 256 base vectors unless told: ground truth over a whole file does
        // not score them.
        bail!("--ground-truth with --chip needs --max-base covering the whole base file (or leave --ground-truth out)");
    }
    let mut args = args.clone();
    args.max_base = Some(args.max_base.unwrap_or(256));
    args.max_queries = Some(args.max_queries.unwrap_or(100));
    let data = load(&args)?;
    let b = crate::board::VectorBench {
        data: &data,
        mode: args.mode,
        metric: metric(args.metric),
        k: args.k,
        m: args.m,
        ef_construction: args.ef_construction,
        ef_search: &args.ef_search,
        seed: args.seed,
    };
    crate::board::vector_bench(chip, &b)
}

fn bench(args: &BenchArgs) -> Result<()> {
    if let Some(chip) = &args.chip {
        return bench_chip(chip, args);
    }
    let data = load(args)?;
    let params = Params {
        metric: metric(args.metric),
        m: args.m,
        ef_construction: args.ef_construction,
        ef_search: args.ef_search[0],
        seed: args.seed,
        pq_subspaces: args.pq_subspaces,
        pq_centroids: args.pq_centroids,
        rerank: args.rerank,
    };
    outln!(
        "dataset: {} base vectors of {} dims; {} queries ({})",
        data.base.len(),
        data.base.dim,
        data.queries.len(),
        data.source
    );
    let bar = ProgressBar::new(data.base.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("building {bar:30} {pos}/{len} vectors, {elapsed}")
            .expect("valid template"),
    );
    // Only drawn if the build takes longer than a moment.
    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    let start = Instant::now();
    let mut shown = false;
    let mut index = ann::build(args.mode, &params, &data.base, &mut |done| {
        if !shown && start.elapsed() > Duration::from_secs(1) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            shown = true;
        }
        if done % 64 == 0 {
            bar.set_position(done as u64);
        }
    })
    .with_context(|| format!("{}", args.base.display()))?;
    bar.finish_and_clear();
    let what = match args.mode {
        Mode::Pq => format!(
            "PQ {} subspaces x {} centroids, ADC scan{}",
            if args.pq_subspaces > 0 { args.pq_subspaces } else { (data.base.dim / 8).max(1) },
            args.pq_centroids,
            if args.rerank > 0 { ", exact re-ranking" } else { "" }
        ),
        m => format!(
            "HNSW {} m {} (level 0: {}), ef_construction {}",
            format!("{m:?}").to_lowercase(),
            args.m,
            2 * args.m,
            args.ef_construction
        ),
    };
    outln!("index: {what}; built in {:.2} s", start.elapsed().as_secs_f64());
    for &ef in &args.ef_search {
        if args.ef_search.len() > 1 || args.mode != Mode::Pq || args.rerank > 0 {
            let name = if args.mode == Mode::Pq { "rerank" } else { "ef_search" };
            outln!("{name}: {ef}");
        }
        index.set_ef(ef);
        outln!("{}", ann::measure(index.as_mut(), &data.queries, &data.truth, args.k));
    }
    Ok(())
}
