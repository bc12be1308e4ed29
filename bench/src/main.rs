//! `choreograph-bench`: Choreograph against raw rdkafka and against Watermill, on the same
//! broker, in the same run. See `bench/README.md`.
//!
//! `choreograph-bench [OPTIONS]` runs the harness; `choreograph-bench service ...` (hidden) is
//! one service process of a Rust implementation (choreograph, choreograph-bare, raw,
//! raw-logged), in one delivery mode, started by the harness.

mod driver;
mod harness;
mod model;
mod procs;
mod report;
mod svc_choreograph;
mod svc_raw;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use model::{Implementation, Mode, Role, Workload};

#[derive(Parser)]
#[command(
    name = "choreograph-bench",
    about = "Benchmarks Choreograph against raw rdkafka and Watermill on a real Kafka broker",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// One service process (started by the harness).
    #[command(hide = true)]
    Service(ServiceArgs),
    /// Print the tables of a results file again (e.g. bench/results/latest.json).
    Report {
        /// The JSON file the harness wrote.
        file: PathBuf,
    },
}

/// Harness options.
#[derive(Args, Clone, Debug, Serialize)]
pub struct RunArgs {
    /// Use this cluster (host:port[,host:port]) instead of starting a broker.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Port of the broker the harness starts (scripts/kafka-local.sh, KAFKA_PORT).
    #[arg(long, default_value_t = 49092)]
    pub kafka_port: u16,
    /// The broker script (default: scripts/kafka-local.sh of this repository).
    #[arg(long)]
    pub kafka_script: Option<PathBuf>,
    /// The folder in which the broker the harness starts keeps its data (in a new subfolder,
    /// deleted at the end). Default: /dev/shm when it is a writable tmpfs, else $TMPDIR. On a
    /// disk, the first records written to a new topic's partitions page-fault the broker's
    /// memory-mapped index files, and the kernel zero-fills their read-ahead: a stall of up to
    /// half a second at the start of a batch, whatever the implementation (bench/README.md).
    #[arg(long, conflicts_with = "brokers")]
    pub broker_data: Option<PathBuf>,
    /// Implementations to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "choreograph,choreograph-bare,raw,raw-logged,watermill"
    )]
    pub impls: Vec<Implementation>,
    /// Workloads to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "registration,chain")]
    pub workloads: Vec<Workload>,
    /// Delivery modes to measure, comma-separated (Watermill and raw-logged have at-least-once
    /// only: their exactly-once rows are reported as not available).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "at-least-once,exactly-once"
    )]
    pub modes: Vec<Mode>,
    /// Sagas per saturation batch (throughput, CPU).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub sagas: usize,
    /// Offered rate (sagas/s) of the latency batch; keep it below every implementation's
    /// saturation.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Sagas in the fixed-rate latency batch.
    #[arg(long, default_value_t = 500)]
    pub latency_sagas: usize,
    /// Sagas of the warm-up batch before measuring each configuration.
    #[arg(long, default_value_t = 200)]
    pub warmup_sagas: usize,
    /// Unmeasured runs of each workload × mode before the measured repetitions (the first
    /// implementation of the list that has the mode), so the broker's JIT, caches, group and
    /// transaction coordinators are warm for every measured configuration alike; 0: none.
    #[arg(long, default_value_t = 1)]
    pub warmup_runs: usize,
    /// Repetitions of each configuration.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// A batch fails when no saga completes for this many seconds while some are missing.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout: u64,
    /// A librdkafka property (KEY=VALUE) for the Rust service processes (choreograph and raw
    /// alike; repeatable), e.g. -X queued.max.messages.kbytes=2048. Default: none, so each
    /// runs with the framework's defaults.
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// The choreograph services' `max_in_flight_per_partition` (default: the framework's).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Record a CPU profile of every service process during each saturation batch with
    /// `perf record` into this directory (<impl>-<mode>-<workload>-r<rep>-<role>.perf.data). Profiling
    /// perturbs the figures: do not quote a profiled run's numbers.
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// Record a heap profile of every Rust service process (choreograph and raw) with
    /// heaptrack into this directory (<impl>-<mode>-<workload>-r<rep>-<role>.heaptrack.zst; read
    /// it with `heaptrack_print -f FILE`). Every allocation is traced, which slows the services
    /// several times: do not quote such a run's figures.
    #[arg(long)]
    pub heap_profile_dir: Option<PathBuf>,
    /// Keep the service processes' logs (stderr) after a successful run; they are always kept
    /// after a failed one. Service processes inherit RUST_LOG (default `warn`).
    #[arg(long)]
    pub keep_logs: bool,
    /// Keep each configuration's topics (`bench.<run>.<impl>.<mode>.<workload>.r<rep>.*`)
    /// instead of deleting them after it: for reading a run's records afterwards (timestamps
    /// per hop). Only with `--brokers` (the broker the harness starts is deleted with its data).
    #[arg(long, requires = "brokers")]
    pub keep_topics: bool,
    /// Where the machine-readable results go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results/latest.json"))]
    pub out: PathBuf,
}

#[derive(Args)]
pub(crate) struct ServiceArgs {
    #[arg(long = "impl")]
    pub implementation: Implementation,
    #[arg(long)]
    pub role: Role,
    #[arg(long)]
    pub brokers: String,
    #[arg(long)]
    pub prefix: String,
    /// The delivery mode.
    #[arg(long, default_value = "at-least-once")]
    pub mode: Mode,
    /// A stable instance ID (exactly-once: part of the transactional.id).
    #[arg(long)]
    pub instance_id: String,
    /// librdkafka properties, KEY=VALUE.
    #[arg(long = "property", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// choreograph only: `ServiceOptions::max_in_flight_per_partition`.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Service(s)) => serve(s),
        Some(Cmd::Report { file }) => report::reprint(&file),
        None => {
            if let Err(e) = ctrlc::set_handler(|| {
                eprintln!("\ninterrupted: stopping every process the harness started");
                procs::stop_everything();
                std::process::exit(130);
            }) {
                eprintln!("warning: cannot install the Ctrl-C handler: {e}");
            }
            validate(&cli.run).and_then(|()| harness::run(cli.run))
        }
    };
    if let Err(e) = result {
        procs::stop_everything();
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn validate(a: &RunArgs) -> anyhow::Result<()> {
    if a.sagas == 0 || a.latency_sagas == 0 || a.reps == 0 {
        anyhow::bail!("--sagas, --latency-sagas and --reps must be at least 1");
    }
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        anyhow::bail!("--rate must be a positive number");
    }
    if a.impls.is_empty() || a.workloads.is_empty() || a.modes.is_empty() {
        anyhow::bail!("--impls, --workloads and --modes need at least one value");
    }
    Ok(())
}

fn serve(s: ServiceArgs) -> anyhow::Result<()> {
    // The framework's allocator setting (what `service_main` does), for every Rust service
    // process alike: raw runs with the same malloc as the framework.
    choreograph::runtime::limit_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match s.implementation {
        Implementation::Choreograph | Implementation::ChoreographBare => svc_choreograph::run(&s),
        Implementation::Raw | Implementation::RawLogged => match s.mode {
            Mode::AtLeastOnce => svc_raw::run(
                s.role,
                &s.brokers,
                &s.prefix,
                &s.instance_id,
                &s.properties,
                s.implementation == Implementation::RawLogged,
            ),
            Mode::ExactlyOnce => svc_raw::run_exactly_once(
                s.role,
                &s.brokers,
                &s.prefix,
                &s.instance_id,
                &s.properties,
            ),
        },
        Implementation::Watermill => {
            anyhow::bail!("the Watermill services are the Go program in bench/watermill")
        }
    }
}
