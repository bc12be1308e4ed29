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

/// An input record whose output is on its way.
struct Pending {
    topic: usize,
    partition: i32,
    offset: i64,
    delivery: Option<DeliveryFuture>,
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
) -> OwnedHeaders {
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
    h
}

/// Runs one service until SIGINT/SIGTERM.
pub fn run(
    role: Role,
    brokers: &str,
    prefix: &str,
    properties: &[(String, String)],
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(role, brokers, prefix, properties))
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
    properties: &[(String, String)],
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

    // Acknowledgements, awaited in consume order; then the input offset is stored.
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let acker = {
        let consumer = consumer.clone();
        let inputs = inputs.clone();
        tokio::spawn(async move {
            while let Some(p) = pending_rx.recv().await {
                if let Some(d) = p.delivery {
                    match d.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => bail!("an output was not acknowledged: {e}"),
                        Err(_) => bail!("the producer went away"),
                    }
                }
                // Fails with __STATE only when the partition was revoked meanwhile: benign.
                let _ = consumer.store_offset(&inputs[p.topic], p.partition, p.offset);
            }
            anyhow::Ok(())
        })
    };

    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = &mut stop => break,
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
                match logic.handle(event_type, key, m.payload().unwrap_or_default()) {
                    Ok(Some(o)) => {
                        let headers = envelope(
                            &source,
                            o.event_type,
                            correlation_id,
                            attrs.id,
                            attrs.traceparent,
                        );
                        Some(
                            send(
                                &producer,
                                FutureRecord::to(&logic.outputs[o.topic])
                                    .key(key)
                                    .payload(&o.data)
                                    .headers(headers),
                            )
                            .await?,
                        )
                    }
                    Ok(None) => None,
                    Err(e) => {
                        eprintln!("raw {}: skipping {}: {e:#}", role.name(), m.offset());
                        None
                    }
                }
            }
            _ => None,
        };
        let p = Pending {
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
                    let headers = envelope(
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
