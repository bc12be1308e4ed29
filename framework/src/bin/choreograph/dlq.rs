//! `choreograph dlq list` and `choreograph dlq replay`: see the dead letters, and send selected
//! ones back to their original topic, never the same one twice by accident.

use std::time::Duration;

use choreograph::dlq::{self, DeadLetterRecord};
use choreograph::CorrelationId;
use clap::{Args, Subcommand};

use crate::{kafka_config, parse_correlation_id, Format, KafkaArgs};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters: reason, error, service, attempts, origin, saga
    List(ListArgs),
    /// Send selected dead letters back to their original topic (once each unless --force)
    Replay(ReplayArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// A dead-letter topic (`orders.dlq`) or its original topic (`orders`); default: every `*.dlq` topic
    #[arg(long, short = 't')]
    topic: Option<String>,
    /// Only the dead letters of this service
    #[arg(long)]
    service: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).args(["correlation_id", "offset", "all"])))]
pub struct ReplayArgs {
    /// The dead-letter topic (`orders.dlq`) or its original topic (`orders`)
    #[arg(long, short = 't')]
    topic: String,
    /// Replay the dead letters of this saga
    #[arg(long, short = 'c', value_parser = parse_correlation_id)]
    correlation_id: Option<CorrelationId>,
    /// Replay the dead letter at PARTITION:OFFSET of the dead-letter topic (repeatable)
    #[arg(long, value_parser = parse_position)]
    offset: Vec<(i32, i64)>,
    /// Replay every dead letter of the topic
    #[arg(long)]
    all: bool,
    /// Replay even those already replayed
    #[arg(long)]
    force: bool,
    /// Only show what would be replayed and what refused (exits 1 when any would be refused, as the replay would)
    #[arg(long)]
    dry_run: bool,
}

fn parse_position(s: &str) -> Result<(i32, i64), String> {
    let bad = || format!("`{s}` is not PARTITION:OFFSET (e.g. 3:1042)");
    let (p, o) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        p.trim().parse().map_err(|_| bad())?,
        o.trim().parse().map_err(|_| bad())?,
    ))
}

fn dlq_topic(topic: &str) -> String {
    if topic.ends_with(".dlq") {
        topic.to_owned()
    } else {
        format!("{topic}.dlq")
    }
}

const READ_TIMEOUT: Duration = Duration::from_secs(60);

async fn blocking<T: Send + 'static, E: Into<String> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
        .map_err(Into::into)
}

pub async fn run(kafka: &KafkaArgs, command: DlqCommand) -> Result<(), String> {
    let config = kafka_config(kafka)?;
    match command {
        DlqCommand::List(args) => {
            let c = config.clone();
            let topics = match &args.topic {
                Some(t) => vec![dlq_topic(t)],
                None => blocking(move || dlq::dead_letter_topics(&c)).await?,
            };
            let mut letters: Vec<DeadLetterRecord> = Vec::new();
            for t in topics {
                let c = config.clone();
                letters.extend(blocking(move || dlq::list(&c, &t, READ_TIMEOUT)).await?);
            }
            letters.retain(|l| {
                args.service
                    .as_deref()
                    .map(|s| s == l.service)
                    .unwrap_or(true)
            });
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&letters).map_err(|e| e.to_string())?
                ),
                Format::Text => {
                    for l in &letters {
                        println!(
                            "{}  {}  {}  service={} attempts={} from {}[{}]@{} saga={} type={}\n    {}",
                            l.id,
                            l.reason,
                            if l.replayed { "replayed" } else { "pending" },
                            l.service,
                            l.attempts,
                            l.original_topic,
                            l.original_partition,
                            l.original_offset,
                            l.correlation_id.as_deref().unwrap_or("-"),
                            l.event_type.as_deref().unwrap_or("-"),
                            l.error
                        );
                    }
                    eprintln!("{} dead letters", letters.len());
                }
            }
            Ok(())
        }
        DlqCommand::Replay(args) => {
            let topic = dlq_topic(&args.topic);
            let c = config.clone();
            let t = topic.clone();
            let letters = blocking(move || dlq::list(&c, &t, READ_TIMEOUT)).await?;
            let selected: Vec<&DeadLetterRecord> = letters
                .iter()
                .filter(|l| {
                    args.all
                        || args
                            .correlation_id
                            .map(|c| l.correlation_id.as_deref() == Some(c.to_string().as_str()))
                            .unwrap_or(false)
                        || args.offset.contains(&(l.dlq_partition, l.dlq_offset))
                })
                .collect();
            if selected.is_empty() {
                return Err(format!("no dead letter in `{topic}` matches the selection"));
            }
            let (again, todo): (Vec<_>, Vec<_>) = selected
                .into_iter()
                .partition(|l| l.replayed && !args.force);
            for l in &again {
                eprintln!(
                    "skipped {} (already replayed; --force replays it again)",
                    l.id
                );
            }
            if args.dry_run {
                let mut refused = 0;
                for l in &todo {
                    match dlq::refusal(l) {
                        None => println!("would replay {} to {}", l.id, l.original_topic),
                        Some(why) => {
                            refused += 1;
                            println!("would refuse {}: {why}", l.id);
                        }
                    }
                }
                eprintln!(
                    "{} would be replayed, {} skipped as already replayed, {refused} refused",
                    todo.len() - refused,
                    again.len()
                );
                if refused > 0 {
                    return Err(format!("{refused} dead letters would be refused"));
                }
                return Ok(());
            }
            if !todo.is_empty() {
                dlq::ensure_replay_log(&config).await?;
            }
            let producer: rdkafka::producer::FutureProducer =
                choreograph::publish::producer_config(&config)
                    .create()
                    .map_err(|e| e.to_string())?;
            let mut failed = 0;
            for l in &todo {
                match dlq::replay_one(&producer, &config, l).await {
                    Ok((p, o)) => println!("replayed {} to {}[{p}]@{o}", l.id, l.original_topic),
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {e}");
                    }
                }
            }
            eprintln!(
                "{} replayed, {} skipped as already replayed, {failed} failed",
                todo.len() - failed,
                again.len()
            );
            if failed > 0 {
                return Err(format!("{failed} dead letters could not be replayed"));
            }
            Ok(())
        }
    }
}
