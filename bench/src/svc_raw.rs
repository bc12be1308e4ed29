//! The "raw" implementation: the same services written directly on rdkafka, no framework.
//!
//! This is the client's limit, the baseline the framework's overhead is measured against. Each
//! service is a hand-written loop with the same guarantee and the same client settings as the
//! framework's runtime in the same delivery mode.
//!
//! **At-least-once** ([`run`]): a consume → produce → commit loop.
//! - consumer: `enable.auto.commit=true`, `enable.auto.offset.store=false` (librdkafka's
//!   at-least-once recipe), range assignment, `auto.offset.reset=earliest`,
//!   `queued.max.messages.kbytes=16384`;
//! - producer: `acks=all`, `enable.idempotence=true`, `linger.ms=2`,
//!   `partitioner=murmur2_random` (the Java clients' partitioner, as the framework sets it);
//! - an input offset is stored (for the next auto-commit) only after every record it caused
//!   was acknowledged, in consume order, so the committed offset never passes unfinished work.
//!   Processing is one task on a current-thread runtime; the acknowledgements are awaited by a
//!   second task, so produce calls never wait on the broker.
//!
//! **raw-logged** ([`run`] with `logged`): the at-least-once loop that also writes the
//! framework's saga-log steps and handled markers, by hand ([`DurableLog`]): the client's limit
//! for the durable work the framework does by default.
//!
//! **Exactly-once** ([`run_exactly_once`]): one plain thread, a `BaseConsumer`
//! (`isolation.level=read_committed`, `enable.auto.commit=false`) and a transactional
//! `BaseProducer` (`transactional.id` = `<group>.<instance>`, the framework's scheme), in
//! transactions per commit interval (100 ms, the framework's default): the first record after
//! a commit begins a transaction, every output goes into it, and at the interval's end the
//! consumed positions go in with `send_offsets_to_transaction` and the transaction commits
//! (see [`Eos`]).
//!
//! Records carry the same CloudEvents binary-mode headers and key as the framework writes, so
//! the bytes on the wire are comparable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use choreograph::Event;
use chrono::{SecondsFormat, Utc};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryFuture, FutureProducer, FutureRecord, Producer,
};
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::model::*;

/// Inputs whose outputs are not acknowledged yet, before the consumer waits (backpressure):
/// the framework's default per partition (1000) times the 6 partitions of an input topic.
const MAX_IN_FLIGHT: usize = 6_000;

/// What the acknowledgement task waits for, in consume order.
enum Pending {
    /// An input record whose output is on its way.
    Input {
        topic: usize,
        partition: i32,
        offset: i64,
        delivery: Option<DeliveryFuture>,
    },
    /// `raw-logged`: the saga-log and handled-marker records of every input before this entry
    /// (since the previous one); those inputs count as finished once these are acknowledged.
    Log(Vec<DeliveryFuture>),
}

/// One output record, before its envelope.
struct Output {
    topic: usize,
    event_type: &'static str,
    data: Vec<u8>,
}

/// The business logic of every role, on plain bytes.
struct Logic {
    role: Role,
    /// Output topics, prefixed, indexed by [`Output::topic`].
    outputs: Vec<String>,
    joins: HashMap<Vec<u8>, Join>,
    /// Exactly-once: each join entry's value before the open transaction first changed it
    /// (`None`: absent), to roll the joins back when the transaction aborts.
    journal: Option<HashMap<Vec<u8>, Option<Join>>>,
}

/// One saga's join so far: coupon code, points.
type Join = (Option<String>, Option<u32>);

fn parse<E: DeserializeOwned>(data: &[u8]) -> anyhow::Result<E> {
    serde_json::from_slice(data).context("event data does not match its type")
}

fn out<E: Event>(topic: usize, event: &E) -> anyhow::Result<Option<Output>> {
    Ok(Some(Output {
        topic,
        event_type: E::TYPE,
        data: serde_json::to_vec(event)?,
    }))
}

impl Logic {
    fn new(role: Role, prefix: &str) -> Self {
        let outputs: &[&str] = match role {
            Role::Activity => &[NewcomerEnrolled::TOPIC, WelcomePackageCompleted::TOPIC],
            Role::Coupon => &[CouponIssued::TOPIC],
            Role::Points => &[PointsGranted::TOPIC],
            Role::Svc1 => &[ChainContinued::TOPIC],
            Role::Svc2 => &[ChainFinished::TOPIC],
        };
        Self {
            role,
            outputs: outputs.iter().map(|t| format!("{prefix}{t}")).collect(),
            joins: HashMap::new(),
            journal: None,
        }
    }

    /// Exactly-once: the joins as they were when the transaction began (it aborted).
    fn roll_back(&mut self) {
        if let Some(journal) = &mut self.journal {
            for (saga, before) in journal.drain() {
                match before {
                    Some(j) => self.joins.insert(saga, j),
                    None => self.joins.remove(&saga),
                };
            }
        }
    }

    /// Exactly-once: the transaction committed; its join changes stay.
    fn keep(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.clear();
        }
    }

    fn inputs(role: Role) -> &'static [&'static str] {
        match role {
            Role::Activity => &[
                UserRegistered::TOPIC,
                CouponIssued::TOPIC,
                PointsGranted::TOPIC,
            ],
            Role::Coupon | Role::Points => &[NewcomerEnrolled::TOPIC],
            Role::Svc1 => &[ChainStarted::TOPIC],
            Role::Svc2 => &[ChainContinued::TOPIC],
        }
    }

    /// The event this input causes, if any (`saga` is the correlation ID, as the key).
    fn handle(
        &mut self,
        event_type: &str,
        saga: &[u8],
        data: &[u8],
    ) -> anyhow::Result<Option<Output>> {
        match (self.role, event_type) {
            (Role::Activity, UserRegistered::TYPE) => {
                let e: UserRegistered = parse(data)?;
                out(
                    0,
                    &NewcomerEnrolled {
                        user_id: e.user_id,
                        email: e.email,
                    },
                )
            }
            (Role::Activity, CouponIssued::TYPE) => {
                let e: CouponIssued = parse(data)?;
                self.join(saga, e.user_id, |j| j.0 = Some(e.coupon_code))
            }
            (Role::Activity, PointsGranted::TYPE) => {
                let e: PointsGranted = parse(data)?;
                self.join(saga, e.user_id, |j| j.1 = Some(e.points))
            }
            (Role::Coupon, NewcomerEnrolled::TYPE) => {
                let e: NewcomerEnrolled = parse(data)?;
                out(
                    0,
                    &CouponIssued {
                        coupon_code: coupon_code(&e.user_id),
                        user_id: e.user_id,
                    },
                )
            }
            (Role::Points, NewcomerEnrolled::TYPE) => {
                let e: NewcomerEnrolled = parse(data)?;
                out(
                    0,
                    &PointsGranted {
                        user_id: e.user_id,
                        points: WELCOME_POINTS,
                    },
                )
            }
            (Role::Svc1, ChainStarted::TYPE) => {
                let e: ChainStarted = parse(data)?;
                out(
                    0,
                    &ChainContinued {
                        user_id: e.user_id,
                        step: e.step + 1,
                    },
                )
            }
            (Role::Svc2, ChainContinued::TYPE) => {
                let e: ChainContinued = parse(data)?;
                out(
                    0,
                    &ChainFinished {
                        user_id: e.user_id,
                        step: e.step + 1,
                    },
                )
            }
            _ => Ok(None),
        }
    }

    fn join(
        &mut self,
        saga: &[u8],
        user_id: String,
        update: impl FnOnce(&mut Join),
    ) -> anyhow::Result<Option<Output>> {
        if let Some(journal) = &mut self.journal {
            if !journal.contains_key(saga) {
                journal.insert(saga.to_vec(), self.joins.get(saga).cloned());
            }
        }
        let entry = self.joins.entry(saga.to_vec()).or_default();
        update(entry);
        if entry.0.is_none() || entry.1.is_none() {
            return Ok(None);
        }
        match self.joins.remove(saga) {
            Some((Some(coupon_code), Some(points))) => out(
                1,
                &WelcomePackageCompleted {
                    user_id,
                    coupon_code,
                    points,
                },
            ),
            _ => Ok(None),
        }
    }
}

/// The CloudEvents attributes of an input record that its output needs.
#[derive(Default)]
struct Attributes<'a> {
    event_type: Option<&'a str>,
    id: Option<&'a [u8]>,
    correlation_id: Option<&'a [u8]>,
    traceparent: Option<&'a str>,
    /// `raw-logged` only (its saga-log steps and markers say them).
    source: Option<&'a [u8]>,
    time: Option<&'a [u8]>,
    causation_id: Option<&'a [u8]>,
}

fn attributes<'a, M: Message>(m: &'a M) -> Attributes<'a> {
    let mut a = Attributes::default();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            match h.key {
                "ce_type" => a.event_type = h.value.and_then(|v| std::str::from_utf8(v).ok()),
                "ce_id" => a.id = h.value,
                "ce_correlationid" => a.correlation_id = h.value,
                "traceparent" => a.traceparent = h.value.and_then(|v| std::str::from_utf8(v).ok()),
                "ce_source" => a.source = h.value,
                "ce_time" => a.time = h.value,
                "ce_causationid" => a.causation_id = h.value,
                _ => {}
            }
        }
    }
    a
}

/// The `traceparent` of a child span: same trace, new span ID.
fn child_traceparent(parent: &str) -> Option<String> {
    // 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
    if parent.len() != 55 || !parent.is_ascii() {
        return None;
    }
    let span = loop {
        let s = uuid::Uuid::new_v4().as_u64_pair().1;
        if s != 0 {
            break s;
        }
    };
    Some(format!("{}{span:016x}{}", &parent[..36], &parent[52..]))
}

/// The binary-mode headers the framework writes, in the same order.
fn envelope(
    source: &str,
    event_type: &str,
    correlation_id: &[u8],
    causation_id: Option<&[u8]>,
    traceparent: Option<&str>,
) -> (OwnedHeaders, String) {
    let id = uuid::Uuid::now_v7().hyphenated().to_string();
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut h = OwnedHeaders::new_with_capacity(9)
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(&id),
        })
        .insert(Header {
            key: "ce_type",
            value: Some(event_type),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(source),
        })
        .insert(Header {
            key: "ce_time",
            value: Some(&time),
        })
        .insert(Header {
            key: "ce_correlationid",
            value: Some(correlation_id),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
    if let Some(c) = causation_id {
        h = h.insert(Header {
            key: "ce_causationid",
            value: Some(c),
        });
    }
    if let Some(child) = traceparent.and_then(child_traceparent) {
        h = h.insert(Header {
            key: "traceparent",
            value: Some(&child),
        });
    }
    (h, id)
}

/// Runs one service until SIGINT/SIGTERM; with `logged` (`raw-logged`), it also writes the
/// framework's saga-log steps and handled markers ([`DurableLog`]).
pub fn run(
    role: Role,
    brokers: &str,
    prefix: &str,
    instance: &str,
    properties: &[(String, String)],
    logged: bool,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(role, brokers, prefix, instance, properties, logged))
}

/// A client configuration: the pass-through properties, then `defaults` unless overridden,
/// then `forced` (what the guarantee needs), as the framework does.
fn client_config(
    brokers: &str,
    properties: &[(String, String)],
    defaults: &[(&str, &str)],
    forced: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        c.set(k, v);
    }
    for (k, v) in defaults {
        if !properties.iter().any(|(pk, _)| pk == k) {
            c.set(*k, *v);
        }
    }
    for (k, v) in forced {
        c.set(*k, *v);
    }
    c
}

async fn serve(
    role: Role,
    brokers: &str,
    prefix: &str,
    instance: &str,
    properties: &[(String, String)],
    logged: bool,
) -> anyhow::Result<()> {
    let inputs: Vec<String> = Logic::inputs(role)
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let group = format!("{prefix}{}", role.name());
    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(
            brokers,
            properties,
            &[
                ("partition.assignment.strategy", "range"),
                ("auto.commit.interval.ms", "1000"),
                ("queued.max.messages.kbytes", "16384"),
                ("auto.offset.reset", "earliest"),
            ],
            &[
                ("group.id", &group),
                ("enable.auto.commit", "true"),
                ("enable.auto.offset.store", "false"),
                ("allow.auto.create.topics", "false"),
            ],
        )
        .create()
        .context("creating the consumer")?,
    );
    let topic_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    let producer: FutureProducer = client_config(
        brokers,
        properties,
        &[("linger.ms", "2"), ("partitioner", "murmur2_random")],
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            // As the framework: more in flight can lose an acknowledged record (see
            // choreograph's producer_config).
            ("max.in.flight.requests.per.connection", "1"),
            ("allow.auto.create.topics", "false"),
            ("message.timeout.ms", "30000"),
        ],
    )
    .create()
    .context("creating the producer")?;
    let source = format!("/services/{}", role.name());
    let mut logic = Logic::new(role, prefix);
    let mut log = if logged {
        // (A blocking metadata request, at start, before any other task runs.)
        Some(DurableLog::new(&producer, role, prefix, instance)?)
    } else {
        None
    };

    // Acknowledgements, awaited in consume order; then the input offset is stored (raw-logged:
    // once the log records written after the input are acknowledged too).
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    // raw-logged: one batch of log records in flight at a time, as the framework's tail writer
    // (the inputs taken meanwhile go into the next batch); told when it is acknowledged.
    let log_acked = Arc::new(tokio::sync::Notify::new());
    let log_idle = Arc::new(AtomicBool::new(true));
    let acker = {
        let consumer = consumer.clone();
        let inputs = inputs.clone();
        let (log_acked, log_idle) = (log_acked.clone(), log_idle.clone());
        tokio::spawn(async move {
            let acknowledged = |d: DeliveryFuture| async move {
                match d.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(anyhow!("a record was not acknowledged: {e}")),
                    Err(_) => Err(anyhow!("the producer went away")),
                }
            };
            // raw-logged: inputs whose outputs are acknowledged, waiting for their log records.
            let mut logging: Vec<(usize, i32, i64)> = Vec::new();
            while let Some(p) = pending_rx.recv().await {
                match p {
                    Pending::Input {
                        topic,
                        partition,
                        offset,
                        delivery,
                    } => {
                        if let Some(d) = delivery {
                            acknowledged(d).await?;
                        }
                        if logged {
                            logging.push((topic, partition, offset));
                        } else {
                            // Fails with __STATE only when the partition was revoked
                            // meanwhile: benign.
                            let _ = consumer.store_offset(&inputs[topic], partition, offset);
                        }
                    }
                    Pending::Log(deliveries) => {
                        for d in deliveries {
                            acknowledged(d).await?;
                        }
                        for (topic, partition, offset) in logging.drain(..) {
                            let _ = consumer.store_offset(&inputs[topic], partition, offset);
                        }
                        log_idle.store(true, Ordering::SeqCst);
                        log_acked.notify_one();
                    }
                }
            }
            anyhow::Ok(())
        })
    };

    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        // raw-logged: the log records of the inputs taken so far go out once the previous
        // batch is acknowledged and no record is ready at once (or the batch is full).
        let logged_inputs = log.as_ref().map_or(0, |l| l.inputs);
        let idle = log_idle.load(Ordering::SeqCst);
        let message = if let Some(l) = log.as_mut().filter(|l| l.inputs > 0 && idle) {
            let ready = if l.inputs >= LOG_BATCH_INPUTS {
                None
            } else {
                futures::FutureExt::now_or_never(consumer.recv())
            };
            match ready {
                Some(m) => m,
                None => {
                    log_idle.store(false, Ordering::SeqCst);
                    let deliveries = l.flush(&producer).await?;
                    if pending_tx.send(Pending::Log(deliveries)).await.is_err() {
                        break;
                    }
                    continue;
                }
            }
        } else if logged_inputs > 0 {
            tokio::select! {
                m = consumer.recv() => m,
                _ = log_acked.notified() => continue,
                _ = &mut stop => break,
            }
        } else {
            tokio::select! {
                m = consumer.recv() => m,
                _ = &mut stop => break,
            }
        };
        let m = match message {
            Ok(m) => m,
            Err(e) => {
                eprintln!("raw {}: consumer error: {e}", role.name());
                continue;
            }
        };
        let Some(topic) = inputs.iter().position(|t| t == m.topic()) else {
            continue;
        };
        let attrs = attributes(&m);
        let delivery = match (attrs.event_type, attrs.correlation_id) {
            (Some(event_type), Some(correlation_id)) => {
                let key = m.key().unwrap_or(correlation_id);
                let started_at = Utc::now();
                match logic.handle(event_type, key, m.payload().unwrap_or_default()) {
                    Ok(Some(o)) => {
                        let (headers, id) = envelope(
                            &source,
                            o.event_type,
                            correlation_id,
                            attrs.id,
                            attrs.traceparent,
                        );
                        let delivery = send(
                            &producer,
                            FutureRecord::to(&logic.outputs[o.topic])
                                .key(key)
                                .payload(&o.data)
                                .headers(headers),
                        )
                        .await?;
                        if let Some(log) = &mut log {
                            let emitted = Emitted {
                                id: &id,
                                event_type: o.event_type,
                                topic: &logic.outputs[o.topic],
                            };
                            log.record(&m, &attrs, started_at, Some(emitted))?;
                        }
                        Some(delivery)
                    }
                    Ok(None) => {
                        if let Some(log) = &mut log {
                            log.record(&m, &attrs, started_at, None)?;
                        }
                        None
                    }
                    Err(e) => {
                        eprintln!("raw {}: skipping {}: {e:#}", role.name(), m.offset());
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(log) = log.as_mut().filter(|_| delivery.is_none()) {
            // Committed after the next log batch like the inputs before it (an input without
            // a step still needs one to pass).
            log.inputs = log.inputs.max(1);
        }
        let p = Pending::Input {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            delivery,
        };
        drop(m);
        if pending_tx.send(p).await.is_err() {
            break;
        }
    }
    // Finish in-flight work, commit it, leave.
    if let Some(log) = log.as_mut().filter(|l| l.inputs > 0) {
        let deliveries = log.flush(&producer).await?;
        let _ = pending_tx.send(Pending::Log(deliveries)).await;
    }
    drop(pending_tx);
    acker
        .await
        .map_err(|e| anyhow!("acknowledgement task: {e}"))??;
    tokio::task::spawn_blocking(move || {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => eprintln!("raw: final commit failed: {e}"),
        }
        consumer.unsubscribe();
    })
    .await?;
    Ok(())
}

/// `raw-logged`: inputs per batch of log records at most (the framework's tail-writer batch).
const LOG_BATCH_INPUTS: usize = 1000;

/// `raw-logged`: bytes of steps, or of markers, per batched record at most (the framework's
/// bound under the default `message.max.bytes`).
const LOG_BATCH_BYTES: usize = 256 * 1024;

/// `raw-logged`: the framework's saga-log steps and handled markers, written by hand in the same
/// formats and batching, so that the raw loop does the same durable work as the framework: one
/// step per input in `<prefix>choreograph.saga-log` (a JSON array of steps per saga-log
/// partition, the partition chosen from the correlation ID as the Java clients do), and one
/// `[source, id]` pair per input in `<prefix><service>.handled` (a JSON array per input
/// partition number). Records are written after the inputs' outputs, and an input is committed
/// only when they are acknowledged, as in the framework.
struct DurableLog {
    saga_log: String,
    handled: String,
    service: &'static str,
    instance: String,
    /// Per saga-log partition: its open JSON array of steps (empty: none yet).
    steps: Vec<Vec<u8>>,
    /// Per input partition number: its open JSON array of `[source, id]` pairs.
    markers: std::collections::BTreeMap<i32, Vec<u8>>,
    /// Records closed because they were full, not yet written.
    full: Vec<(String, i32, Vec<u8>)>,
    /// Inputs recorded since the last flush.
    inputs: usize,
}

/// An event a step emitted (the framework's `Emitted`, borrowed).
#[derive(serde::Serialize)]
struct Emitted<'a> {
    id: &'a str,
    event_type: &'a str,
    topic: &'a str,
}

/// The input of a step (the framework's `StepInput`, borrowed).
#[derive(serde::Serialize)]
struct StepInput<'a> {
    id: &'a str,
    event_type: &'a str,
    source: &'a str,
    causation_id: Option<&'a str>,
    time: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
}

/// A saga-log step: the same JSON as the framework's `saga_log::Step`.
#[derive(serde::Serialize)]
struct Step<'a> {
    version: u32,
    correlation_id: &'a str,
    service: &'a str,
    instance: &'a str,
    input: StepInput<'a>,
    outcome: &'a str,
    attempts: u32,
    emitted: &'a [Emitted<'a>],
    started_at: chrono::DateTime<Utc>,
    finished_at: chrono::DateTime<Utc>,
    error: Option<&'a str>,
    dead_letter_reason: Option<&'a str>,
}

fn text(v: Option<&[u8]>) -> &str {
    v.and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or_default()
}

impl DurableLog {
    fn new(
        producer: &FutureProducer,
        role: Role,
        prefix: &str,
        instance: &str,
    ) -> anyhow::Result<Self> {
        let saga_log = format!("{prefix}{}", choreograph::saga_log::DEFAULT_TOPIC);
        let metadata = producer
            .client()
            .fetch_metadata(Some(&saga_log), Duration::from_secs(10))
            .with_context(|| format!("reading the partitions of `{saga_log}`"))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0)
            .with_context(|| format!("`{saga_log}` has no partitions"))?;
        Ok(Self::with_partitions(role, prefix, instance, partitions))
    }

    fn with_partitions(role: Role, prefix: &str, instance: &str, partitions: usize) -> Self {
        Self {
            saga_log: format!("{prefix}{}", choreograph::saga_log::DEFAULT_TOPIC),
            handled: format!("{prefix}{}.handled", role.name()),
            service: role.name(),
            instance: instance.to_owned(),
            steps: vec![Vec::new(); partitions],
            markers: Default::default(),
            full: Vec::new(),
            inputs: 0,
        }
    }

    /// Closes every open array; returns all records (topic, partition, JSON array).
    fn take_records(&mut self) -> Vec<(String, i32, Vec<u8>)> {
        let mut records = std::mem::take(&mut self.full);
        for (p, array) in self.steps.iter_mut().enumerate() {
            if !array.is_empty() {
                array.push(b']');
                records.push((self.saga_log.clone(), p as i32, std::mem::take(array)));
            }
        }
        for (p, array) in &mut self.markers {
            if !array.is_empty() {
                array.push(b']');
                records.push((self.handled.clone(), *p, std::mem::take(array)));
            }
        }
        self.inputs = 0;
        records
    }

    /// Appends `item` to `array` (opening it), first closing it as a full record of
    /// `topic`/`partition` when `item` would take it over [`LOG_BATCH_BYTES`].
    fn append(
        full: &mut Vec<(String, i32, Vec<u8>)>,
        topic: &str,
        partition: i32,
        array: &mut Vec<u8>,
        item: &[u8],
    ) {
        if !array.is_empty() && array.len() + item.len() + 2 > LOG_BATCH_BYTES {
            array.push(b']');
            full.push((topic.to_owned(), partition, std::mem::take(array)));
        }
        array.push(if array.is_empty() { b'[' } else { b',' });
        array.extend_from_slice(item);
    }

    /// Records an input handled: its step and its marker.
    fn record<M: Message>(
        &mut self,
        m: &M,
        attrs: &Attributes<'_>,
        started_at: chrono::DateTime<Utc>,
        emitted: Option<Emitted<'_>>,
    ) -> anyhow::Result<()> {
        let correlation_id = text(attrs.correlation_id);
        let (id, source) = (text(attrs.id), text(attrs.source));
        let step = Step {
            version: 1,
            correlation_id,
            service: self.service,
            instance: &self.instance,
            input: StepInput {
                id,
                event_type: attrs.event_type.unwrap_or_default(),
                source,
                causation_id: attrs.causation_id.and_then(|v| std::str::from_utf8(v).ok()),
                time: text(attrs.time),
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
            },
            outcome: "handled",
            attempts: 1,
            emitted: emitted.as_slice(),
            started_at,
            finished_at: Utc::now(),
            error: None,
            dead_letter_reason: None,
        };
        let json = serde_json::to_vec(&step)?;
        let p = choreograph::trace::partition_for_key(
            correlation_id.as_bytes(),
            self.steps.len() as i32,
        );
        Self::append(
            &mut self.full,
            &self.saga_log,
            p,
            &mut self.steps[p as usize],
            &json,
        );
        let pair = serde_json::to_vec(&(source, id))?;
        let array = self.markers.entry(m.partition()).or_default();
        Self::append(&mut self.full, &self.handled, m.partition(), array, &pair);
        self.inputs += 1;
        Ok(())
    }

    /// Writes every open and full record; returns their acknowledgements.
    async fn flush(&mut self, producer: &FutureProducer) -> anyhow::Result<Vec<DeliveryFuture>> {
        let records = self.take_records();
        let mut deliveries = Vec::with_capacity(records.len());
        for (topic, partition, payload) in &records {
            deliveries.push(
                send(
                    producer,
                    FutureRecord::<[u8], Vec<u8>>::to(topic)
                        .partition(*partition)
                        .payload(payload),
                )
                .await?,
            );
        }
        Ok(deliveries)
    }
}

/// Enqueues one record, waiting while librdkafka's queue is full.
async fn send(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], Vec<u8>>,
) -> anyhow::Result<DeliveryFuture> {
    loop {
        match producer.send_result(record) {
            Ok(d) => return Ok(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err((e, _)) => bail!("produce failed: {e}"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

// --- exactly-once -------------------------------------------------------------------------

/// How often a transaction commits: the framework's default `commit_interval`.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Timeout of the blocking transaction calls.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The exactly-once consumer's context: notes revocations, so that a transaction holding
/// records of revoked partitions is aborted, never committed (the new owner handles them).
#[derive(Default)]
struct EosContext {
    revoked: AtomicBool,
}

impl ClientContext for EosContext {}

impl ConsumerContext for EosContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            self.revoked.store(true, Ordering::SeqCst);
        }
    }
}

/// One exactly-once service: consumer, transactional producer, and the open transaction.
///
/// Loop: poll records until the commit interval (ticking from the last commit, as the
/// framework's) is over; the first record begins a transaction; every output is produced into
/// it; every input's next position is noted. At the tick: wait for the outputs'
/// acknowledgements (so `commit_transaction`'s flush has nothing left to wait for), then
/// `send_offsets_to_transaction(positions, group metadata)` and `commit_transaction`. An
/// abortable error aborts, rolls the joins back and seeks every assigned partition back to
/// its committed offset; a fatal one (fenced) stops the service with an error.
struct Eos {
    consumer: BaseConsumer<EosContext>,
    producer: BaseProducer,
    /// Input topics, prefixed.
    inputs: Vec<String>,
    /// Next position of every input partition read in the open transaction, by
    /// (index in `inputs`, partition).
    positions: HashMap<(usize, i32), i64>,
    open: bool,
}

/// What became of a transaction.
enum TxnEnd {
    Committed,
    Aborted(String),
}

impl Eos {
    /// Ends the open transaction: commit, or abort when Kafka says it must be aborted.
    fn commit(&mut self, logic: &mut Logic) -> anyhow::Result<TxnEnd> {
        if !self.open {
            return Ok(TxnEnd::Committed);
        }
        let result = self.try_commit();
        self.open = false;
        self.positions.clear();
        match result {
            Ok(()) => {
                logic.keep();
                Ok(TxnEnd::Committed)
            }
            Err(KafkaError::Transaction(e)) if e.is_fatal() => {
                bail!("the transactional producer failed for good: {e}")
            }
            Err(e) => {
                let reason = e.to_string();
                self.abort(logic)
                    .with_context(|| format!("aborting after: {reason}"))?;
                Ok(TxnEnd::Aborted(reason))
            }
        }
    }

    fn try_commit(&self) -> Result<(), KafkaError> {
        // rdkafka's commit_transaction first flushes, and its flush polls in steps of up to
        // 100 ms that always run to their end (BaseProducer::poll serves events until its
        // timeout): wait for the acknowledgements here, in 1 ms steps, instead.
        let deadline = Instant::now() + TXN_TIMEOUT;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(1));
        }
        let mut tpl = TopicPartitionList::with_capacity(self.positions.len());
        for (&(topic, partition), &next) in &self.positions {
            tpl.add_partition_offset(&self.inputs[topic], partition, Offset::Offset(next))?;
        }
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| KafkaError::Subscription("no consumer group metadata yet".into()))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
        let mut tries = 0;
        loop {
            match self.producer.commit_transaction(TXN_TIMEOUT) {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 3 => tries += 1,
                other => return other,
            }
        }
    }

    /// Aborts the open transaction's work: the producer's transaction (if any), the joins, and
    /// the consumer's positions (back to the committed offsets).
    fn abort(&mut self, logic: &mut Logic) -> anyhow::Result<()> {
        self.producer
            .abort_transaction(TXN_TIMEOUT)
            .context("abort_transaction")?;
        self.open = false;
        self.positions.clear();
        logic.roll_back();
        let committed = self
            .consumer
            .committed(TXN_TIMEOUT)
            .context("reading the committed offsets")?;
        let back: Vec<(String, i32, Offset)> = committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                (e.topic().to_owned(), e.partition(), offset)
            })
            .collect();
        // A list from committed() alive at the consumer's drop hangs it (librdkafka #3796).
        drop(committed);
        for (topic, partition, offset) in back {
            self.consumer
                .seek(&topic, partition, offset, TXN_TIMEOUT)
                .with_context(|| format!("seeking {topic}[{partition}] back"))?;
        }
        Ok(())
    }
}

/// Runs one exactly-once service until SIGINT/SIGTERM, on this thread.
pub fn run_exactly_once(
    role: Role,
    brokers: &str,
    prefix: &str,
    instance_id: &str,
    properties: &[(String, String)],
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the signal handler")?;
    }
    let inputs: Vec<String> = Logic::inputs(role)
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let group = format!("{prefix}{}", role.name());
    let consumer: BaseConsumer<EosContext> = client_config(
        brokers,
        properties,
        &[
            ("partition.assignment.strategy", "range"),
            ("queued.max.messages.kbytes", "16384"),
            ("auto.offset.reset", "earliest"),
        ],
        &[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            ("allow.auto.create.topics", "false"),
        ],
    )
    .create_with_context(EosContext::default())
    .context("creating the consumer")?;
    let topic_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    let transactional_id = format!("{group}.{instance_id}");
    let producer: BaseProducer = client_config(
        brokers,
        properties,
        &[("linger.ms", "2"), ("partitioner", "murmur2_random")],
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            // As the framework: more in flight can lose an acknowledged record (see
            // choreograph's producer_config).
            ("max.in.flight.requests.per.connection", "1"),
            ("allow.auto.create.topics", "false"),
            ("transactional.id", &transactional_id),
            // As the framework: a transaction left open by a crash blocks read_committed
            // readers until this runs out; message.timeout.ms must not exceed it.
            ("transaction.timeout.ms", "10000"),
            ("message.timeout.ms", "10000"),
        ],
    )
    .create()
    .context("creating the transactional producer")?;
    producer
        .init_transactions(TXN_TIMEOUT)
        .with_context(|| format!("initialising transactions ({transactional_id})"))?;

    let source = format!("/services/{}", role.name());
    let mut logic = Logic::new(role, prefix);
    logic.journal = Some(HashMap::new());
    let mut eos = Eos {
        consumer,
        producer,
        inputs,
        positions: HashMap::new(),
        open: false,
    };
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let due = last_commit + COMMIT_INTERVAL;
        let now = Instant::now();
        if now >= due {
            last_commit = now;
            if let TxnEnd::Aborted(reason) = eos.commit(&mut logic)? {
                eprintln!(
                    "raw {}: transaction aborted, its inputs are read again: {reason}",
                    role.name()
                );
            }
            continue;
        }
        let polled = eos.consumer.poll(due - now);
        // Serve delivery reports (they hold memory until polled).
        eos.producer.poll(Duration::ZERO);
        if eos.consumer.context().revoked.swap(false, Ordering::SeqCst) && eos.open {
            // Some of the transaction's inputs may belong to another instance now; the
            // partitions assigned again start from their committed offsets.
            drop(polled);
            eos.abort(&mut logic)?;
            eprintln!(
                "raw {}: partitions revoked: the open transaction was aborted",
                role.name()
            );
            continue;
        }
        let m = match polled {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                eprintln!("raw {}: consumer error: {e}", role.name());
                continue;
            }
        };
        let Some(topic) = eos.inputs.iter().position(|t| t == m.topic()) else {
            continue;
        };
        if !eos.open {
            eos.producer.begin_transaction()?;
            eos.open = true;
        }
        let attrs = attributes(&m);
        if let (Some(event_type), Some(correlation_id)) = (attrs.event_type, attrs.correlation_id) {
            let key = m.key().unwrap_or(correlation_id);
            match logic.handle(event_type, key, m.payload().unwrap_or_default()) {
                Ok(Some(o)) => {
                    let (headers, _) = envelope(
                        &source,
                        o.event_type,
                        correlation_id,
                        attrs.id,
                        attrs.traceparent,
                    );
                    let mut record = BaseRecord::to(&logic.outputs[o.topic])
                        .key(key)
                        .payload(&o.data)
                        .headers(headers);
                    loop {
                        match eos.producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) => {
                                record = r;
                                eos.producer.poll(Duration::from_millis(1));
                            }
                            Err((e, _)) => bail!("produce failed: {e}"),
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => eprintln!("raw {}: skipping {}: {e:#}", role.name(), m.offset()),
            }
        }
        eos.positions.insert((topic, m.partition()), m.offset() + 1);
    }
    // Commit what was handled, leave the group.
    if let TxnEnd::Aborted(reason) = eos.commit(&mut logic)? {
        eprintln!(
            "raw {}: the last transaction aborted: {reason}",
            role.name()
        );
    }
    eos.consumer.unsubscribe();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    /// `raw-logged` writes what the framework's trace reads: its steps decode as saga-log steps
    /// and its markers as `[source, id]` pairs, batched per partition under the size bound.
    #[test]
    fn raw_logged_steps_and_markers_are_the_frameworks_formats() {
        let saga = "0190f5b4-6c1a-7cc3-9e51-3f1b7c2d4e5f";
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("in-1"),
            })
            .insert(Header {
                key: "ce_type",
                value: Some(ChainStarted::TYPE),
            })
            .insert(Header {
                key: "ce_source",
                value: Some("/driver"),
            })
            .insert(Header {
                key: "ce_time",
                value: Some("2026-11-25T10:00:00.000001Z"),
            })
            .insert(Header {
                key: "ce_correlationid",
                value: Some(saga),
            });
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(saga.as_bytes().to_vec()),
            "p.chain.started".into(),
            Timestamp::NotAvailable,
            4,
            17,
            Some(headers),
        );
        let attrs = attributes(&message);
        let mut log = DurableLog::with_partitions(Role::Svc1, "p.", "svc1-1", 6);
        let emitted = Emitted {
            id: "out-1",
            event_type: ChainContinued::TYPE,
            topic: "p.chain.continued",
        };
        log.record(&message, &attrs, Utc::now(), Some(emitted))
            .unwrap();
        log.record(&message, &attrs, Utc::now(), None).unwrap();
        assert_eq!(log.inputs, 2);
        let records = log.take_records();
        assert_eq!(log.inputs, 0);
        assert_eq!(records.len(), 2, "one step record, one marker record");

        let (topic, partition, payload) = &records[0];
        assert_eq!(topic, "p.choreograph.saga-log");
        assert_eq!(
            *partition,
            choreograph::trace::partition_for_key(saga.as_bytes(), 6)
        );
        let steps = choreograph::saga_log::decode_steps(payload);
        assert_eq!(steps.len(), 2);
        let step = &steps[0];
        assert_eq!(step.correlation_id.to_string(), saga);
        assert_eq!(
            (step.service.as_str(), step.instance.as_str()),
            ("svc1", "svc1-1")
        );
        assert_eq!(step.input.id, "in-1");
        assert_eq!(step.input.event_type, ChainStarted::TYPE);
        assert_eq!(step.input.source, "/driver");
        assert_eq!((step.input.partition, step.input.offset), (4, 17));
        assert_eq!(step.outcome, choreograph::saga_log::StepOutcome::Handled);
        assert_eq!(step.emitted.len(), 1);
        assert_eq!(step.emitted[0].id, "out-1");
        assert_eq!(step.emitted[0].topic, "p.chain.continued");
        assert!(steps[1].emitted.is_empty());

        let (topic, partition, payload) = &records[1];
        assert_eq!((topic.as_str(), *partition), ("p.svc1.handled", 4));
        let pairs: Vec<(String, String)> = serde_json::from_slice(payload).unwrap();
        assert_eq!(pairs, vec![("/driver".into(), "in-1".into()); 2]);
    }

    #[test]
    fn raw_logged_records_stay_under_the_batch_bound() {
        let mut full = Vec::new();
        let mut array = Vec::new();
        let item = vec![b'x'; 1000];
        for _ in 0..600 {
            DurableLog::append(&mut full, "t", 0, &mut array, &item);
        }
        assert!(!full.is_empty());
        for (_, _, record) in &full {
            assert!(record.len() <= LOG_BATCH_BYTES);
            assert_eq!((record[0], *record.last().unwrap()), (b'[', b']'));
        }
        let items: usize = full.iter().map(|(_, _, r)| (r.len() - 1) / 1001).sum();
        assert_eq!(items + (array.len() / 1001), 600);
    }
}
