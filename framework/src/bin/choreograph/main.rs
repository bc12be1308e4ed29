//! `choreograph`: the command line of the Choreograph framework.
//!
//! Run `choreograph --help` (or `choreograph <command> --help`) for the usage of each command;
//! docs/cli.md documents them all.

use std::process::ExitCode;

use choreograph::trace_context::TraceParent;
use choreograph::{Catalogue, CorrelationId, KafkaConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod dlq;
mod publish;
mod trace;

#[derive(Parser)]
#[command(name = "choreograph", version, about = "Event-driven choreography on Apache Kafka", long_about = None)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct KafkaArgs {
    /// Bootstrap servers, host:port[,host:port...]
    #[arg(long, short = 'b', env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    brokers: Option<String>,
    /// A librdkafka property, key=value (repeatable), e.g. -X security.protocol=SASL_SSL
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true, value_parser = parse_property)]
    property: Vec<(String, String)>,
    /// The event catalogue (a folder of JSON Schemas) [default: ./schemas when it exists]
    #[arg(long, env = "CHOREOGRAPH_SCHEMAS", global = true, value_name = "DIR")]
    schemas: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Publish one event: start a new saga, or add to one with --correlation-id
    Publish(publish::PublishArgs),
    /// Trace one saga: causal tree, timeline and status (completed, failed, compensated, in-progress, stalled)
    Trace(trace::TraceArgs),
    /// List recent sagas with their status (from the saga log)
    Sagas(trace::SagasArgs),
    /// Dead letters: list them, replay them
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn parse_correlation_id(s: &str) -> Result<CorrelationId, String> {
    s.parse()
        .map_err(|e| format!("`{s}` is not a correlation ID (a UUID, e.g. 01934f4e-8a2c-7d3e-9b1a-2f4c6e8a0b1c): {e}"))
}

fn parse_traceparent(s: &str) -> Result<TraceParent, String> {
    s.parse()
        .map_err(|e: choreograph::trace_context::InvalidTraceParent| e.to_string())
}

fn parse_replication(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if n == -1 || n >= 1 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a replication factor (-1 for the broker default, or 1 and more)"
        )),
    }
}

/// The catalogue: `--schemas DIR`, else `./schemas` when it exists, else none.
fn load_catalogue(args: &KafkaArgs) -> Result<Option<(std::path::PathBuf, Catalogue)>, String> {
    let dir = match &args.schemas {
        Some(d) => d.clone(),
        None if std::path::Path::new("schemas").is_dir() => "schemas".into(),
        None => return Ok(None),
    };
    Catalogue::load_dir(&dir)
        .map(|c| Some((dir, c)))
        .map_err(|e| e.to_string())
}

fn kafka_config(args: &KafkaArgs) -> Result<KafkaConfig, String> {
    let mut config =
        KafkaConfig::from_env_with(args.brokers.as_deref()).map_err(|e| e.to_string())?;
    for (k, v) in &args.property {
        config.set(k, v);
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    choreograph::runtime::init_logging("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Publish(args) => publish::run(&cli.kafka, args).await,
            Command::Trace(args) => trace::run_trace(&cli.kafka, args).await,
            Command::Sagas(args) => trace::run_sagas(&cli.kafka, args).await,
            Command::Dlq(command) => dlq::run(&cli.kafka, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
