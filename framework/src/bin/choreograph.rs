//! `choreograph`: the command line of the Choreograph framework.
//!
//! Run `choreograph --help` (or `choreograph <command> --help`) for the usage of each command;
//! the README documents them all.

use std::io::Read;
use std::process::ExitCode;

use choreograph::trace_context::TraceParent;
use choreograph::{CloudEvent, CorrelationId, KafkaConfig, Publisher};
use clap::{Args, Parser, Subcommand, ValueEnum};

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
}

#[derive(Subcommand)]
enum Command {
    /// Publish one event: start a new saga, or add to one with --correlation-id
    Publish(PublishArgs),
}

#[derive(Args)]
struct PublishArgs {
    /// The topic to publish to
    #[arg(long, short = 't')]
    topic: String,
    /// The CloudEvents type, e.g. registration.user.registered.v1
    #[arg(long = "type", value_name = "TYPE")]
    event_type: String,
    /// The event data, a JSON document
    #[arg(
        long,
        short = 'd',
        conflicts_with = "data_file",
        required_unless_present = "data_file"
    )]
    data: Option<String>,
    /// Read the JSON data from a file (`-` for standard input)
    #[arg(long, value_name = "PATH")]
    data_file: Option<String>,
    /// Publish into this existing saga instead of starting a new one
    #[arg(long, short = 'c', value_parser = parse_correlation_id)]
    correlation_id: Option<CorrelationId>,
    /// The id of the event that caused this one (within the saga)
    #[arg(long, requires = "correlation_id")]
    causation_id: Option<String>,
    /// The CloudEvents source attribute
    #[arg(long, default_value = "/cli")]
    source: String,
    /// The CloudEvents subject attribute
    #[arg(long)]
    subject: Option<String>,
    /// Continue this W3C trace (default: a new trace for a new saga, none otherwise)
    #[arg(long, value_parser = parse_traceparent)]
    traceparent: Option<TraceParent>,
    /// Partitions of the topic, if it has to be created [default: CHOREOGRAPH_TOPIC_PARTITIONS or 6]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Replication factor of the topic, if it has to be created; -1 = broker default [default: CHOREOGRAPH_TOPIC_REPLICATION_FACTOR or -1]
    #[arg(long, allow_negative_numbers = true, value_parser = parse_replication)]
    replication_factor: Option<i32>,
    /// Fail instead of creating a missing topic
    #[arg(long)]
    no_create_topics: bool,
    /// Output: the correlation ID (text) or the full receipt (json)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
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

fn kafka_config(args: &KafkaArgs) -> Result<KafkaConfig, String> {
    let mut config =
        KafkaConfig::from_env_with(args.brokers.as_deref()).map_err(|e| e.to_string())?;
    for (k, v) in &args.property {
        config.set(k, v);
    }
    Ok(config)
}

async fn publish(kafka: &KafkaArgs, args: PublishArgs) -> Result<(), String> {
    let raw = match (&args.data, &args.data_file) {
        (Some(d), _) => d.clone(),
        (None, Some(path)) if path == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read the data from standard input: {e}"))?;
            s
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the data file `{path}`: {e}"))?,
        (None, None) => return Err("give the event data with --data or --data-file".into()),
    };
    let json: serde_json::Value =
        serde_json::from_str(&raw).map_err(|e| format!("the event data is not JSON: {e}"))?;
    if args.event_type.trim().is_empty() {
        return Err("--type must not be empty".into());
    }
    if args.topic.trim().is_empty() {
        return Err("--topic must not be empty".into());
    }

    let mut config = kafka_config(kafka)?;
    if let Some(p) = args.partitions {
        config.topics.partitions = p;
    }
    if let Some(r) = args.replication_factor {
        config.topics.replication_factor = r;
    }
    if args.no_create_topics {
        config.topics.create = false;
    }
    let publisher = Publisher::new(&config, &args.source).map_err(|e| e.to_string())?;
    let new_saga = args.correlation_id.is_none();
    let correlation_id = args.correlation_id.unwrap_or_default();
    let data = serde_json::to_vec(&json).map_err(|e| e.to_string())?;
    let mut event = CloudEvent::new(&args.source, &args.event_type, correlation_id, data);
    event.causation_id = args.causation_id;
    event.subject = args.subject;
    event.traceparent = match (args.traceparent, new_saga) {
        (Some(tp), _) => Some(tp.child().to_string()),
        (None, true) => Some(TraceParent::new_root().to_string()),
        (None, false) => None,
    };
    let published = publisher
        .publish_cloud_event(&args.topic, &event)
        .await
        .map_err(|e| e.to_string())?;
    match args.format {
        Format::Text => {
            eprintln!(
                "published {} {} to {}[{}]@{}{}",
                published.event_type,
                published.event_id,
                published.topic,
                published.partition,
                published.offset,
                if new_saga { " (new saga)" } else { "" }
            );
            println!("{}", published.correlation_id);
        }
        Format::Json => println!(
            "{}",
            serde_json::to_string(&published).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // librdkafka reports every failed connection attempt; the CLI reports the outcome instead.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,librdkafka=off,rdkafka::client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
            Command::Publish(args) => publish(&cli.kafka, args).await,
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
