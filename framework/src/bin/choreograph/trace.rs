//! `choreograph trace` (one saga by correlation ID) and `choreograph sagas` (recent sagas with
//! their status). Both read the saga log through the library's [`choreograph::trace`].

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreograph::trace::text::{outcome_word, paint, status_word};
use choreograph::trace::{SagaStatus, SagaTrace, TraceError, TraceOptions, Tracer};
use choreograph::CorrelationId;
use clap::{Args, ValueEnum};

use crate::{kafka_config, load_catalogue, parse_correlation_id, KafkaArgs};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// A terminal view: status, causal tree, timeline (colours only on a terminal)
    Text,
    /// The trace as JSON (documented in docs/trace.md)
    Json,
    /// A Mermaid sequence diagram across services
    Mermaid,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct TraceArgs {
    /// The saga's correlation ID (a UUIDv7, as `choreograph publish` prints it)
    #[arg(value_parser = parse_correlation_id)]
    correlation_id: CorrelationId,
    /// Output format
    #[arg(long, value_enum, default_value_t = TraceFormat::Text)]
    format: TraceFormat,
    /// An expected handler this late makes the saga `stalled` (e.g. 30s, 500ms, 2m)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    stall_after: Duration,
    /// Keep going and print steps as they happen until the saga ends (or --timeout)
    #[arg(long)]
    follow: bool,
    /// With --follow: give up after this long (exit 1); without: the longest a read may take
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
pub struct SagasArgs {
    /// Only sagas with this status
    #[arg(long, value_parser = parse_status)]
    status: Option<SagaStatus>,
    /// Sagas with a step in this window (e.g. 15m, 1h, 2d)
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    since: Duration,
    /// An expected handler this late makes the saga `stalled`
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    stall_after: Duration,
    /// Output format
    #[arg(long, value_enum, default_value_t = ListFormat::Text)]
    format: ListFormat,
}

fn parse_status(s: &str) -> Result<SagaStatus, String> {
    s.parse()
}

/// `250ms`, `30s`, `5m`, `2h`, `1d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 30s, 5m, 2h, 1d)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "`{s}` is not a duration (e.g. 500ms, 30s, 5m, 2h, 1d)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn tracer(kafka: &KafkaArgs) -> Result<Tracer, String> {
    let config = kafka_config(kafka)?;
    let catalogue = load_catalogue(kafka)?.map(|(_, c)| Arc::new(c));
    Tracer::new(&config, catalogue).map_err(|e| e.to_string())
}

pub async fn run_trace(kafka: &KafkaArgs, args: TraceArgs) -> Result<(), String> {
    let tracer = tracer(kafka)?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let options = TraceOptions {
        stall_after: args.stall_after,
        read_timeout: if args.follow {
            TraceOptions::default().read_timeout
        } else {
            args.timeout
        },
        ..TraceOptions::default()
    };
    if !args.follow {
        let trace = tracer
            .trace(&args.correlation_id, &options)
            .map_err(|e| e.to_string())?;
        print_trace(&trace, args.format, color)?;
        return Ok(());
    }
    follow(&tracer, &args, &options, color).await
}

/// How long `--follow` waits, after the saga ended, for steps still expected.
const FOLLOW_GRACE: Duration = Duration::from_secs(5);

async fn follow(
    tracer: &Tracer,
    args: &TraceArgs,
    options: &TraceOptions,
    color: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + args.timeout;
    let mut printed = 0usize;
    let mut announced = false;
    let mut final_since: Option<Instant> = None;
    loop {
        match tracer.trace(&args.correlation_id, options) {
            Ok(trace) => {
                if !announced {
                    if args.format == TraceFormat::Text {
                        println!(
                            "following saga {} (until it ends, at most {:?})",
                            trace.correlation_id, args.timeout
                        );
                    }
                    announced = true;
                }
                for step in trace.steps.iter().skip(printed) {
                    match args.format {
                        // A diagram is printed whole, once the saga ended.
                        TraceFormat::Mermaid => {}
                        TraceFormat::Json => println!(
                            "{}",
                            serde_json::to_string(step).map_err(|e| e.to_string())?
                        ),
                        _ => println!(
                            "{}  {} {} {} in {} ms{}",
                            step.started_at.format("%H:%M:%S%.3f"),
                            paint(color, "1", &step.service),
                            outcome_word(color, step.outcome),
                            step.input.event_type,
                            (step.finished_at - step.started_at).num_milliseconds(),
                            if step.emitted.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    " → {}",
                                    step.emitted
                                        .iter()
                                        .map(|e| e.event_type.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            }
                        ),
                    }
                }
                printed = trace.steps.len();
                // Services log a step after publishing what they emitted: after the end, wait
                // (a little) for the last steps too.
                let ended_for = match (trace.status.is_final(), final_since) {
                    (false, _) => None,
                    (true, None) => {
                        final_since = Some(Instant::now());
                        Some(Duration::ZERO)
                    }
                    (true, Some(t)) => Some(t.elapsed()),
                };
                if ended_for
                    .map(|d| trace.pending.is_empty() || d >= FOLLOW_GRACE)
                    .unwrap_or(false)
                {
                    match args.format {
                        TraceFormat::Text => println!(
                            "saga {}: {}",
                            status_word(color, trace.status),
                            trace.reason
                        ),
                        _ => print_trace(&trace, args.format, color)?,
                    }
                    return Ok(());
                }
            }
            Err(TraceError::UnknownSaga { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "saga {} did not end within {:?} (--timeout)",
                args.correlation_id, args.timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_trace(trace: &SagaTrace, format: TraceFormat, color: bool) -> Result<(), String> {
    match format {
        TraceFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(trace).map_err(|e| e.to_string())?
        ),
        TraceFormat::Mermaid => print!("{}", trace.to_mermaid()),
        TraceFormat::Text => print!("{}", trace.to_text(color)),
    }
    Ok(())
}

pub async fn run_sagas(kafka: &KafkaArgs, args: SagasArgs) -> Result<(), String> {
    let tracer = tracer(kafka)?;
    let options = TraceOptions {
        stall_after: args.stall_after,
        ..TraceOptions::default()
    };
    let mut sagas = tracer
        .sagas(args.since, &options)
        .map_err(|e| e.to_string())?;
    if let Some(s) = args.status {
        sagas.retain(|x| x.status == s);
    }
    match args.format {
        ListFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&sagas).map_err(|e| e.to_string())?
        ),
        ListFormat::Text => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            if sagas.is_empty() {
                eprintln!("no saga with a step in the last {:?}", args.since);
            }
            for s in &sagas {
                println!("{}", choreograph::trace::text::summary_line(s, color));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
