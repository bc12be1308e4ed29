//! `choreograph publish`: one event onto Kafka, validated against the catalogue.

use std::io::Read;

use choreograph::trace_context::TraceParent;
use choreograph::{CloudEvent, CorrelationId, Publisher};
use clap::Args;

use crate::{
    kafka_config, load_catalogue, parse_correlation_id, parse_replication, parse_traceparent,
    Format, KafkaArgs,
};

#[derive(Args)]
pub struct PublishArgs {
    /// The topic to publish to [default: the type's topic in the catalogue]
    #[arg(long, short = 't')]
    topic: Option<String>,
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

pub async fn run(kafka: &KafkaArgs, args: PublishArgs) -> Result<(), String> {
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
    let mut config = kafka_config(kafka)?;
    let catalogue = load_catalogue(kafka)?;
    let topic = match (&args.topic, &catalogue) {
        (Some(t), _) if t.trim().is_empty() => return Err("--topic must not be empty".into()),
        (Some(t), _) => t.clone(),
        (None, Some((dir, c))) => match c.get(&args.event_type) {
            Some(entry) => config.topic(&entry.placement.topic),
            None => {
                return Err(format!(
                "event type `{}` is not in the catalogue at {}: give --topic, or add its schema",
                args.event_type,
                dir.display()
            ))
            }
        },
        (None, None) => {
            return Err(
                "no --topic, and no catalogue to look the type up in (--schemas DIR)".into(),
            )
        }
    };
    if let Some(p) = args.partitions {
        config.topics.partitions = p;
    }
    if let Some(r) = args.replication_factor {
        config.topics.replication_factor = r;
    }
    if args.no_create_topics {
        config.topics.create = false;
    }
    let mut publisher = Publisher::new(&config, &args.source).map_err(|e| e.to_string())?;
    if let Some((_, c)) = catalogue {
        publisher = publisher.with_catalogue(std::sync::Arc::new(c));
    }
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
        .publish_cloud_event(&topic, &event)
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
