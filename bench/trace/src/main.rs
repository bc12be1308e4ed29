//! How long a trace of one saga takes when the topics hold a million other events.
//!
//! ```sh
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --release -p trace-bench -- [--events N] [--runs R]
//! ```
//!
//! On topics of its own (a fresh topic prefix, 6 partitions each) it writes N other events
//! (default 1,000,000, spread over the four registration topics) and one saga-log step for each
//! (N steps), timestamped evenly over the last hour, as if an hour of traffic had passed. Among
//! them it writes three traced sagas (six events and six steps each, the shape of a welcomed
//! registration): one at the start of the hour, one in the middle, one just now; and one saga
//! from the start of the hour that is still running (its points service never answered), which
//! a trace has to read to the end of the topics. Then it times:
//! - `trace (CLI-like)`: a new [`Tracer`] (connect, metadata) and one trace, as
//!   `choreograph trace` does;
//! - `trace (reused tracer)`: a trace with a tracer kept open (a service's admin endpoint);
//! - `baseline`: reading every partition of the five topics from the beginning to the end and
//!   keeping the saga's records (what a trace without seeking would do).
//!
//! Each is run R times (default 11; the baseline 3 times), and the median is reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use choreograph::saga_log::{Emitted, Step, StepInput, StepOutcome};
use choreograph::trace::{SagaStatus, TraceOptions, Tracer};
use choreograph::{CloudEvent, CorrelationId, KafkaConfig, Topics};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPICS: [&str; 4] = [
    "registration.user",
    "registration.activity",
    "registration.coupon",
    "registration.points",
];

/// The events of a welcomed registration: (type, topic index, emitting service, cause index).
const SAGA: [(&str, usize, &str, Option<usize>); 6] = [
    ("registration.user.registered.v1", 0, "user", None),
    (
        "registration.activity.newcomer-enrolled.v1",
        1,
        "activity",
        Some(0),
    ),
    ("registration.coupon.issued.v1", 2, "coupon", Some(1)),
    ("registration.points.granted.v1", 3, "points", Some(1)),
    (
        "registration.activity.welcome-package-completed.v1",
        1,
        "activity",
        Some(3),
    ),
    ("registration.user.welcomed.v1", 0, "user", Some(4)),
];

/// Its steps: (service, input event index, emitted event indices).
const STEPS: [(&str, usize, &[usize]); 6] = [
    ("activity", 0, &[1]),
    ("coupon", 1, &[2]),
    ("points", 1, &[3]),
    ("activity", 2, &[]),
    ("activity", 3, &[4]),
    ("user", 4, &[5]),
];

/// Where each traced event landed (partition, offset), by event id, from delivery reports:
/// the steps of a traced saga name their input's real position, as the runtime's do.
#[derive(Default)]
struct Positions(Mutex<HashMap<String, (i32, i64)>>);

impl ClientContext for Positions {}

impl ProducerContext for Positions {
    type DeliveryOpaque = Box<String>;
    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<String>) {
        if let (Ok(m), false) = (result, id.is_empty()) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*id, (m.partition(), m.offset()));
        }
    }
}

struct Writer {
    producer: BaseProducer<Positions>,
    config: KafkaConfig,
}

impl Writer {
    fn send(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
        headers: Option<OwnedHeaders>,
        ts: i64,
        track: Option<&str>,
    ) {
        let mut record =
            BaseRecord::with_opaque_to(topic, Box::new(track.unwrap_or("").to_owned()))
                .key(key)
                .payload(value)
                .timestamp(ts);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        panic!("produce failed: {e}");
                    }
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
            }
        }
    }

    fn event(&self, event: &CloudEvent, topic: &str, track: bool) {
        let encoded = event.encode();
        let mut headers = OwnedHeaders::new();
        for (k, v) in encoded.headers.iter() {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        self.send(
            &self.config.topic(topic),
            &encoded.key,
            &encoded.value,
            Some(headers),
            event.time.timestamp_millis(),
            track.then_some(event.id.as_str()),
        );
    }

    fn step(&self, step: &Step) {
        let value = serde_json::to_vec(step).expect("a step serializes");
        self.send(
            &self.config.topic(&self.config.saga_log_topic),
            &step.correlation_id.to_string(),
            &value,
            None,
            step.finished_at.timestamp_millis(),
            None,
        );
    }

    /// One welcomed registration as the services would leave it (six events, six steps: the
    /// catalogue's shape), starting at `at`; or, not `ended`, one whose points service never
    /// answered (three events, two steps: still running).
    fn saga(&self, at: DateTime<Utc>, ended: bool) -> CorrelationId {
        let (n_events, n_steps) = if ended {
            (SAGA.len(), STEPS.len())
        } else {
            (3, 2)
        };
        let uuid_at = |t: DateTime<Utc>| {
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                t.timestamp() as u64,
                t.timestamp_subsec_nanos(),
            ))
        };
        let id = CorrelationId::from_uuid(uuid_at(at));
        let time = |i: usize| at + chrono::Duration::milliseconds(i as i64 * 5);
        let ids: Vec<String> = (0..SAGA.len())
            .map(|i| uuid_at(time(i)).to_string())
            .collect();
        for (i, (event_type, topic, source, cause)) in SAGA.iter().enumerate().take(n_events) {
            let mut e = CloudEvent::new(
                format!("/services/{source}"),
                *event_type,
                id,
                br#"{"user_id":"user-00042","coupon_code":"WELCOME-42","points":100}"#.to_vec(),
            );
            e.id = ids[i].clone();
            e.time = time(i);
            e.causation_id = cause.map(|c| ids[c].clone());
            self.event(&e, TOPICS[*topic], true);
        }
        // The steps name where their input landed.
        self.producer.flush(Duration::from_secs(60)).expect("flush");
        for (service, input, emitted) in STEPS.into_iter().take(n_steps) {
            let (event_type, topic, source, cause) = SAGA[input];
            let (partition, offset) = self
                .producer
                .context()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&ids[input])
                .copied()
                .expect("the event was delivered");
            let started = time(input) + chrono::Duration::milliseconds(1);
            self.step(&Step {
                version: 1,
                correlation_id: id,
                service: service.into(),
                instance: format!("{service}-1-bench"),
                input: StepInput {
                    id: ids[input].clone(),
                    event_type: event_type.into(),
                    source: format!("/services/{source}"),
                    causation_id: cause.map(|c| ids[c].clone()),
                    time: time(input),
                    topic: self.config.topic(TOPICS[topic]),
                    partition,
                    offset,
                },
                outcome: StepOutcome::Handled,
                attempts: 1,
                emitted: emitted
                    .iter()
                    .map(|&o| Emitted {
                        id: ids[o].clone(),
                        event_type: SAGA[o].0.into(),
                        topic: self.config.topic(TOPICS[SAGA[o].1]),
                    })
                    .collect(),
                started_at: started,
                finished_at: started + chrono::Duration::milliseconds(2),
                error: None,
                dead_letter_reason: None,
            });
        }
        id
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Reads every partition of `topics` from the beginning to the high watermark, keeping the
/// records keyed by `key`: a trace without seeking.
fn read_everything(config: &KafkaConfig, topics: &[String], key: &str) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", "trace-bench-baseline")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut targets = BTreeMap::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
        for p in md.topics()[0].partitions() {
            let (low, high) = consumer.fetch_watermarks(t, p.id(), Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(t, p.id(), Offset::Beginning)?;
                targets.insert((t.clone(), p.id()), high);
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut found = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !targets.is_empty() {
        if Instant::now() > deadline {
            bail!("baseline read took over 10 minutes");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            if m.key() == Some(key.as_bytes()) {
                found += 1;
            }
            let k = (m.topic().to_owned(), m.partition());
            if targets
                .get(&k)
                .map(|h| m.offset() + 1 >= *h)
                .unwrap_or(false)
            {
                targets.remove(&k);
            }
        }
    }
    Ok(found)
}

fn arg(args: &[String], name: &str, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let events = arg(&args, "--events", 1_000_000)?;
    let runs = arg(&args, "--runs", 11)?.max(1);
    let baseline_runs = arg(&args, "--baseline-runs", 3)?;
    let mut config = KafkaConfig::from_env().context("set KAFKA_BOOTSTRAP_SERVERS")?;
    config.topic_prefix = format!("bench{}.", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    config.topics.partitions = 6;
    let mut all_topics: Vec<String> = TOPICS.iter().map(|t| config.topic(t)).collect();
    all_topics.push(config.topic(&config.saga_log_topic));
    let names: Vec<&str> = all_topics.iter().map(String::as_str).collect();
    Topics::new(&config)?.ensure(&names).await?;
    eprintln!(
        "trace-bench: topics {}* (6 partitions each); writing {events} events and {events} steps",
        config.topic_prefix
    );

    let producer: BaseProducer<Positions> = config
        .client_config()
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("compression.type", "none")
        .create_with_context(Positions::default())?;
    let writer = Writer {
        producer,
        config: config.clone(),
    };
    let now = Utc::now();
    let hour_ago = now - chrono::Duration::hours(1);
    let started = Instant::now();
    let mut traced = Vec::new();
    traced.push(("oldest (an hour ago)", writer.saga(hour_ago, true)));
    traced.push(("running (an hour ago)", writer.saga(hour_ago, false)));
    let step_ms = 3_600_000f64 / events.max(1) as f64;
    for i in 0..events {
        let at = hour_ago + chrono::Duration::milliseconds((i as f64 * step_ms) as i64);
        if i == events / 2 {
            traced.push(("middle (30 min ago)", writer.saga(at, true)));
        }
        // One other saga per 6 events, each event with its step.
        let saga_at =
            hour_ago + chrono::Duration::milliseconds(((i / 6 * 6) as f64 * step_ms) as i64);
        let id = CorrelationId::from_uuid(uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            saga_at.timestamp() as u64,
            (i / 6) as u32 % 1_000_000,
        )));
        let (event_type, topic, source, _) = SAGA[i % SAGA.len()];
        let handler = STEPS
            .iter()
            .find(|s| s.1 == i % SAGA.len())
            .map(|s| s.0)
            .unwrap_or("");
        let mut e = CloudEvent::new(
            format!("/services/{source}"),
            event_type,
            id,
            format!(r#"{{"user_id":"user-{i:07}","coupon_code":"C{i}","points":100}}"#)
                .into_bytes(),
        );
        e.time = at;
        writer.event(&e, TOPICS[topic], false);
        writer.step(&Step {
            version: 1,
            correlation_id: id,
            service: if handler.is_empty() {
                "user".into()
            } else {
                handler.into()
            },
            instance: "bench-1".into(),
            input: StepInput {
                id: e.id.clone(),
                event_type: event_type.into(),
                source: e.source.clone(),
                causation_id: None,
                time: at,
                topic: config.topic(TOPICS[topic]),
                partition: 0,
                offset: 0,
            },
            outcome: StepOutcome::Handled,
            attempts: 1,
            emitted: vec![],
            started_at: at,
            finished_at: at + chrono::Duration::milliseconds(2),
            error: None,
            dead_letter_reason: None,
        });
        if i % 100_000 == 0 {
            writer.producer.poll(Duration::ZERO);
        }
    }
    traced.push(("newest (just now)", writer.saga(Utc::now(), true)));
    writer.producer.flush(Duration::from_secs(300))?;
    eprintln!(
        "trace-bench: wrote {} records in {:.1} s",
        2 * events + 3 * (SAGA.len() + STEPS.len()) + 5,
        started.elapsed().as_secs_f64()
    );

    let catalogue = std::sync::Arc::new(choreograph::Catalogue::load_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas"
    ))?);
    let options = TraceOptions {
        stall_after: Duration::from_secs(3600 * 24),
        ..TraceOptions::default()
    };
    println!(
        "trace-bench: {events} other events + {events} other steps in 5 topics x 6 partitions; median of {runs} runs"
    );
    let reused = Tracer::new(&config, Some(catalogue.clone()))?;
    for (label, id) in &traced {
        let mut cli_like = Vec::new();
        let mut warm = Vec::new();
        let mut last = None;
        for _ in 0..runs {
            let t = Instant::now();
            let tracer = Tracer::new(&config, Some(catalogue.clone()))?;
            let trace = tracer.trace(id, &options)?;
            cli_like.push(t.elapsed());
            drop(tracer);
            let t = Instant::now();
            let trace2 = reused.trace(id, &options)?;
            warm.push(t.elapsed());
            assert_eq!(trace.tree, trace2.tree);
            last = Some(trace);
        }
        let trace = last.expect("at least one run");
        let running = label.starts_with("running");
        let (want_status, want_events) = if running {
            (SagaStatus::InProgress, 3)
        } else {
            (SagaStatus::Completed, SAGA.len())
        };
        if trace.status != want_status || trace.events.len() != want_events {
            bail!(
                "saga {id} traced wrongly: {} with {} events ({})",
                trace.status,
                trace.events.len(),
                trace.reason
            );
        }
        println!(
            "  saga {label:<22} trace (CLI-like): {:>8.1} ms   trace (reused tracer): {:>8.1} ms   [{} events, {} steps, {}]",
            median(cli_like).as_secs_f64() * 1000.0,
            median(warm).as_secs_f64() * 1000.0,
            trace.events.len(),
            trace.steps.len(),
            trace.status
        );
    }
    if baseline_runs > 0 {
        let (_, id) = traced.last().expect("three sagas");
        let mut times = Vec::new();
        for _ in 0..baseline_runs {
            let t = Instant::now();
            let found = read_everything(&config, &all_topics, &id.to_string())?;
            times.push(t.elapsed());
            if found != SAGA.len() + STEPS.len() {
                bail!("baseline found {found} records of saga {id}");
            }
        }
        println!(
            "  baseline (read all 5 topics to the end, filter by key): {:.1} ms (median of {baseline_runs})",
            median(times).as_secs_f64() * 1000.0
        );
    }
    println!(
        "  topics left on the broker: {}* (delete them or the broker's data dir)",
        config.topic_prefix
    );
    Ok(())
}
