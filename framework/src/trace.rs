//! Tracing a saga by its correlation ID: what happened, in which order, where it stands.
//!
//! A trace reads two things, and only the part of them that can hold the saga:
//! - the saga log ([`crate::saga_log`]): the [`Step`]s every service wrote for the saga's
//!   events (who handled what, with what outcome, when, and what it emitted);
//! - the events themselves, from their topics (the catalogue's topics, else the topics the
//!   steps name).
//!
//! Every record of a saga is keyed by its correlation ID, so it sits in the one partition the
//! key hashes to ([`partition_for_key`], Kafka's murmur2 partitioner, as the producers use it);
//! the correlation ID is a UUIDv7, so the saga's start time is known and the trace seeks there
//! with `offsets_for_times` and reads up to the high watermark taken when it started. The cost
//! of a trace is the traffic of one partition since the saga began, not the size of the topics.
//!
//! From that it builds a [`SagaTrace`]: the causal tree (each event under its cause, with the
//! service that emitted it and the steps of the services that handled it), a timeline with
//! durations and gaps, and a [`SagaStatus`]:
//! - `completed` / `failed` / `compensated`: an event the catalogue marks `ends-saga` was seen;
//! - `failed` too when a step was dead-lettered and no terminal event followed;
//! - `stalled`: an event that a service is expected to handle (the catalogue's `consumers`,
//!   else every service that handled that event type in the saga-log history read) has no
//!   final step from that service after the stall threshold; [`SagaTrace::stalled`] names them;
//! - `in-progress`: anything else (also every saga traced without a catalogue that has not
//!   stalled: without `ends-saga` no event is known to end a saga).
//!
//! [`Tracer::sagas`] lists the sagas of a time window from the saga log alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

pub mod text;

use crate::catalogue::{Catalogue, SagaOutcome};
use crate::config::KafkaConfig;
use crate::envelope::CorrelationId;
use crate::record::{decode_message, retry_transient};
use crate::saga_log::{decode_steps, Step, StepOutcome};

/// The version of the JSON form of [`SagaTrace`] and [`SagaSummary`].
pub const FORMAT_VERSION: u32 = 1;

/// Kafka's murmur2 hash (Java client `Utils.murmur2`, librdkafka `murmur2` partitioners).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition a keyed record lands in with `partitioner=murmur2_random` (librdkafka) or the
/// Java client's default partitioner: `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Where a saga stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SagaStatus {
    Completed,
    Failed,
    Compensated,
    InProgress,
    Stalled,
}

impl SagaStatus {
    /// `completed`, `failed` or `compensated`: the saga will not move any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Compensated)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Compensated => "compensated",
            Self::InProgress => "in-progress",
            Self::Stalled => "stalled",
        }
    }
}

impl From<SagaOutcome> for SagaStatus {
    fn from(o: SagaOutcome) -> Self {
        match o {
            SagaOutcome::Completed => Self::Completed,
            SagaOutcome::Failed => Self::Failed,
            SagaOutcome::Compensated => Self::Compensated,
        }
    }
}

impl std::fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SagaStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "compensated" => Self::Compensated,
            "in-progress" => Self::InProgress,
            "stalled" => Self::Stalled,
            _ => {
                return Err(format!(
                "`{s}` is not a saga status (completed, failed, compensated, in-progress, stalled)"
            ))
            }
        })
    }
}

/// One handling of an event by a service (a saga-log step, summarized).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handling {
    pub service: String,
    pub instance: String,
    pub outcome: StepOutcome,
    pub attempts: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub error: Option<String>,
    /// Ids of the events this step emitted.
    pub emitted: Vec<String>,
}

/// One event of the saga.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub topic: String,
    /// Where the record was read; `None` when the event is known only from the saga log.
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// The event's `time` (or, known only from the saga log, when the emitting step finished).
    pub time: DateTime<Utc>,
    pub source: Option<String>,
    pub causation_id: Option<String>,
    /// The service that emitted it: from the step that emitted it, else from `source`
    /// (`/services/user` → `user`; other sources as they are, e.g. `/cli`).
    pub emitted_by: String,
    /// Every step of every service that handled it, in order.
    pub handled_by: Vec<Handling>,
    /// The services expected to handle it (catalogue `consumers`, else saga-log history).
    pub expected_consumers: Vec<String>,
    /// Set when the catalogue says this event ends the saga.
    pub ends_saga: Option<SagaOutcome>,
    /// Whether the event record itself was read from its topic.
    pub in_topic: bool,
}

/// An event of the causal tree, with the events it caused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub emitted_by: String,
    /// Services that handled it (each once, in the order of their first step).
    pub handled_by: Vec<String>,
    pub children: Vec<TreeNode>,
}

/// What a timeline entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimelineKind {
    /// An event was emitted (its `time`).
    Emitted,
    /// A service's step on an event (from `started_at` to `finished_at`).
    Step,
}

/// One entry of the timeline, in time order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub kind: TimelineKind,
    pub at: DateTime<Utc>,
    /// Milliseconds since the saga started (its correlation ID's time).
    pub offset_ms: i64,
    /// How long it took (0 for an emission).
    pub duration_ms: i64,
    /// Milliseconds since the previous entry ended (negative when they overlap).
    pub gap_ms: i64,
    pub service: String,
    pub event_id: String,
    pub event_type: String,
    /// For steps.
    pub outcome: Option<StepOutcome>,
    pub error: Option<String>,
}

/// A service that has not handled an event it is expected to handle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub service: String,
    pub event_id: String,
    pub event_type: String,
    /// Milliseconds since the event was emitted, at the time of the trace.
    pub waiting_ms: i64,
    /// Whether it has waited longer than the stall threshold.
    pub stalled: bool,
}

/// Everything known about one saga.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaTrace {
    pub version: u32,
    pub correlation_id: CorrelationId,
    pub status: SagaStatus,
    /// Why the status is what it is, in words.
    pub reason: String,
    /// The saga's start (from the UUIDv7 correlation ID).
    pub started_at: Option<DateTime<Utc>>,
    /// When the terminal event happened, for an ended saga.
    pub ended_at: Option<DateTime<Utc>>,
    /// The latest activity seen (event or step).
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Services behind: stalled ones, and (when not yet stalled) ones still expected.
    pub pending: Vec<Pending>,
    /// The services of `pending` that are stalled (each once).
    pub stalled: Vec<String>,
    /// Events, in time order.
    pub events: Vec<TracedEvent>,
    /// The causal tree (roots: events without a known cause).
    pub tree: Vec<TreeNode>,
    pub timeline: Vec<TimelineEntry>,
    /// The saga-log records as read.
    pub steps: Vec<Step>,
    /// When the trace was taken.
    pub traced_at: DateTime<Utc>,
    /// The stall threshold used, in milliseconds.
    pub stall_after_ms: i64,
}

/// One saga of a [`Tracer::sagas`] listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaSummary {
    pub correlation_id: CorrelationId,
    pub status: SagaStatus,
    pub reason: String,
    pub started_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub steps: usize,
    pub events: usize,
    pub stalled: Vec<String>,
}

/// How a trace reads and judges.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// An expected handler this late is stalled.
    pub stall_after: Duration,
    /// Records timestamped this much before the saga's start are read too (producer clocks
    /// that run behind the one that minted the correlation ID).
    pub clock_skew: Duration,
    /// How long reading may take before the trace gives up.
    pub read_timeout: Duration,
    /// Once the saga log shows a saga ended, saga-log records this much younger than its last
    /// step end the read (late duplicates after that are not shown).
    pub settle: Duration,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            stall_after: Duration::from_secs(30),
            clock_skew: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            settle: Duration::from_secs(60),
        }
    }
}

/// A trace could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot reach the Kafka cluster at {servers} within {timeout_ms} ms: {reason} (check --brokers / KAFKA_BOOTSTRAP_SERVERS)")]
    Unreachable {
        servers: String,
        timeout_ms: u128,
        reason: String,
    },
    #[error("the saga-log topic `{0}` does not exist: no service has logged a step on this cluster (or CHOREOGRAPH_TOPIC_PREFIX / CHOREOGRAPH_SAGA_LOG_TOPIC differ from the services')")]
    NoSagaLog(String),
    #[error("no saga {id}: no step in the saga log `{topic}` and no event in {topics} since {since} (check the ID, the cluster and CHOREOGRAPH_TOPIC_PREFIX)")]
    UnknownSaga {
        id: CorrelationId,
        topic: String,
        topics: String,
        since: String,
    },
    #[error("reading from Kafka failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "reading took longer than {0:?}; the cluster is too slow or a partition is unavailable"
    )]
    ReadTimeout(Duration),
}

/// Reads traces. Holds one consumer (no consumer group) for its lifetime.
pub struct Tracer {
    config: KafkaConfig,
    catalogue: Option<Arc<Catalogue>>,
    consumer: BaseConsumer,
    partitions: std::sync::Mutex<HashMap<String, Option<i32>>>,
    /// One read at a time: reads assign the shared consumer.
    reading: std::sync::Mutex<()>,
    /// librdkafka's mock cluster (the embedded one): it finds no offset by time, so its
    /// partitions are read from their start.
    mock: bool,
}

/// A record read from one topic partition.
struct Read {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    message: rdkafka::message::OwnedMessage,
}

impl Tracer {
    /// A tracer for the cluster of `config`; checks that the cluster answers within
    /// `config.connect_timeout`.
    pub fn new(
        config: &KafkaConfig,
        catalogue: Option<Arc<Catalogue>>,
    ) -> Result<Self, TraceError> {
        let timeout_ms = config.connect_timeout.as_millis().max(1);
        let consumer: BaseConsumer = config
            .client_config()
            .set("group.id", "choreograph-trace")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10")
            // librdkafka's minimum is 1 s.
            .set(
                "socket.connection.setup.timeout.ms",
                timeout_ms.max(1000).to_string(),
            )
            .create()
            .map_err(|e| TraceError::Unreachable {
                servers: config.bootstrap_servers().to_owned(),
                timeout_ms,
                reason: e.to_string(),
            })?;
        let mut tracer = Self {
            config: config.clone(),
            catalogue,
            consumer,
            partitions: Default::default(),
            reading: Default::default(),
            mock: false,
        };
        tracer.partition_count(&tracer.saga_log_topic())?;
        tracer.mock =
            crate::embedded::is_mock_cluster(tracer.consumer.client(), config.connect_timeout);
        Ok(tracer)
    }

    /// The full name of the saga-log topic.
    pub fn saga_log_topic(&self) -> String {
        self.config.topic(&self.config.saga_log_topic)
    }

    /// The partitions of a topic (`None`: it does not exist); cached once it exists.
    fn partition_count(&self, topic: &str) -> Result<Option<i32>, TraceError> {
        if let Some(n) = self
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return Ok(*n);
        }
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), self.config.connect_timeout)
            .map_err(|e| TraceError::Unreachable {
                servers: self.config.bootstrap_servers().to_owned(),
                timeout_ms: self.config.connect_timeout.as_millis(),
                reason: e.to_string(),
            })?;
        let n = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .filter(|n| *n > 0);
        // Only existing topics are remembered: a missing one may be created any time.
        if n.is_some() {
            self.partitions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(topic.to_owned(), n);
        }
        Ok(n)
    }

    /// The event topics to read (full names): the catalogue's, else those the steps name.
    fn event_topics(&self, steps: &[Step]) -> BTreeSet<String> {
        match &self.catalogue {
            Some(c) if !c.is_empty() => c.topics().iter().map(|t| self.config.topic(t)).collect(),
            _ => steps
                .iter()
                .flat_map(|s| {
                    std::iter::once(s.input.topic.clone())
                        .chain(s.emitted.iter().map(|e| e.topic.clone()))
                })
                .collect(),
        }
    }

    /// The first offset at or after `ts_ms` of each partition (the high watermark when there
    /// is none; the low watermark on the mock cluster, which finds no offset by time).
    fn offsets_at(
        &self,
        partitions: &[(String, i32)],
        ts_ms: i64,
        timeout: Duration,
    ) -> Result<HashMap<(String, i32), i64>, TraceError> {
        let mut out = HashMap::new();
        if partitions.is_empty() {
            return Ok(out);
        }
        let deadline = Instant::now() + timeout;
        if self.mock {
            for (topic, p) in partitions {
                let (low, _high) = retry_transient(deadline, || {
                    self.consumer.fetch_watermarks(
                        topic,
                        *p,
                        deadline.saturating_duration_since(Instant::now()),
                    )
                })?;
                out.insert((topic.clone(), *p), low);
            }
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in partitions {
            tpl.add_partition_offset(topic, *p, Offset::Offset(ts_ms.max(0)))?;
        }
        let found = retry_transient(deadline, || {
            self.consumer.offsets_for_times(
                tpl.clone(),
                deadline.saturating_duration_since(Instant::now()),
            )
        })?;
        for e in found.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert((e.topic().to_owned(), e.partition()), o);
            }
        }
        Ok(out)
    }

    /// Reads each partition from its start offset (`None`: the first record at or after
    /// `since_ms`) up to the high watermark taken now, handing every record to `on_record`,
    /// which returns `true` when it needs no more of that partition.
    fn read(
        &self,
        partitions: &[((String, i32), Option<i64>)],
        since_ms: i64,
        timeout: Duration,
        mut on_record: impl FnMut(&Read) -> bool,
    ) -> Result<(), TraceError> {
        let _reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        // High watermarks first: what exists now is what the trace reads.
        let mut targets: HashMap<(String, i32), i64> = HashMap::new();
        for ((topic, p), _) in partitions {
            let (_low, high) = retry_transient(deadline, || {
                self.consumer.fetch_watermarks(topic, *p, remaining())
            })?;
            targets.insert((topic.clone(), *p), high);
        }
        let by_time: Vec<(String, i32)> = partitions
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let timed = self.offsets_at(&by_time, since_ms, remaining())?;
        let mut tpl = TopicPartitionList::new();
        let mut open: HashSet<(String, i32)> = HashSet::new();
        for (key, offset) in partitions {
            let to = targets.get(key).copied().unwrap_or(0);
            let from = offset.or_else(|| timed.get(key).copied()).unwrap_or(to);
            if from < to {
                tpl.add_partition_offset(&key.0, key.1, Offset::Offset(from))?;
                open.insert(key.clone());
            }
        }
        if open.is_empty() {
            return Ok(());
        }
        self.consumer.assign(&tpl)?;
        let result = (|| {
            while !open.is_empty() {
                if Instant::now() >= deadline {
                    return Err(TraceError::ReadTimeout(timeout));
                }
                match self.consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let key = (m.topic().to_owned(), m.partition());
                        if !open.contains(&key) {
                            continue;
                        }
                        let target = targets.get(&key).copied().unwrap_or(0);
                        if m.offset() + 1 >= target {
                            open.remove(&key);
                        }
                        if m.offset() < target {
                            let read = Read {
                                topic: key.0.clone(),
                                partition: key.1,
                                offset: m.offset(),
                                timestamp: m.timestamp().to_millis(),
                                key: m.key().map(<[u8]>::to_vec),
                                message: crate::record::copy_consumed(&m),
                            };
                            if on_record(&read) {
                                // Done with it; records still in flight are skipped above.
                                open.remove(&key);
                            }
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) | None => {
                        // End of a partition (control records or an open transaction may stop
                        // it short of the watermark): settle by positions.
                        let positions = self.consumer.position()?;
                        for e in positions.elements() {
                            let key = (e.topic().to_owned(), e.partition());
                            if let Offset::Offset(pos) = e.offset() {
                                if pos >= targets.get(&key).copied().unwrap_or(0) {
                                    open.remove(&key);
                                }
                            }
                        }
                        drop(positions);
                    }
                    Some(Err(e)) => return Err(e.into()),
                }
            }
            Ok(())
        })();
        self.consumer.unassign()?;
        result
    }

    /// Traces one saga.
    ///
    /// The saga log's partition is read from the saga's start; once the saga has ended (with
    /// a catalogue: a terminal event emitted and every expected handler's step logged), reading
    /// stops at the first record more than [`TraceOptions::settle`] younger than its last
    /// step. The events of an ended saga are then read where the steps say they are (their
    /// offsets, or from the emitting step's time for events nobody consumes); the events of a
    /// saga still running are read from its start to the high watermark.
    pub fn trace(
        &self,
        id: &CorrelationId,
        options: &TraceOptions,
    ) -> Result<SagaTrace, TraceError> {
        let deadline = Instant::now() + options.read_timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let key = id.to_string();
        let skew = options.clock_skew.as_millis() as i64;
        let since = id
            .started_at()
            .map(|t| t.timestamp_millis() - skew)
            .unwrap_or(0);
        let log = self.saga_log_topic();
        let log_partitions = self
            .partition_count(&log)?
            .ok_or_else(|| TraceError::NoSagaLog(log.clone()))?;
        let log_partition = partition_for_key(key.as_bytes(), log_partitions);
        let mut steps: Vec<Step> = Vec::new();
        let mut history: Vec<Step> = Vec::new();
        let settle = options.settle.as_millis() as i64;
        let mut quiet_after: Option<i64> = None;
        self.read(
            &[((log.clone(), log_partition), None)],
            since,
            remaining(),
            |r| {
                if let Some(q) = quiet_after {
                    if r.timestamp.map(|t| t > q).unwrap_or(false) {
                        return true;
                    }
                }
                let Some(payload) = r.message.payload() else {
                    return false;
                };
                // One step (keyed by its saga) or a batch of steps of several sagas.
                for step in decode_steps(payload) {
                    if step.correlation_id == *id {
                        steps.push(step);
                        quiet_after = self
                            .ended_by_steps(&steps)
                            .map(|last| last.timestamp_millis() + settle);
                    } else {
                        history.push(step);
                    }
                }
                false
            },
        )?;
        let mut records: Vec<RecordEvent> = Vec::new();
        let read_event = |r: &Read, records: &mut Vec<RecordEvent>| -> Option<String> {
            if r.key.as_deref() != Some(key.as_bytes()) {
                return None;
            }
            let (event, _) = decode_message(&r.message).ok()?;
            if event.correlation_id != *id {
                return None;
            }
            let event_id = event.id.clone();
            records.push(RecordEvent {
                id: event.id,
                event_type: event.event_type,
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
                time: event.time,
                source: event.source,
                causation_id: event.causation_id,
            });
            Some(event_id)
        };
        let mut read_topics: Vec<String> = Vec::new();
        if quiet_after.is_some() {
            // Ended: read exactly the events the steps name.
            let mut wanted: HashMap<(String, i32), (HashSet<String>, Option<i64>)> = HashMap::new();
            let mut emitted_at: HashMap<(String, i32), i64> = HashMap::new();
            let inputs: HashSet<&str> = steps.iter().map(|s| s.input.id.as_str()).collect();
            for s in &steps {
                let w = wanted
                    .entry((s.input.topic.clone(), s.input.partition))
                    .or_default();
                w.0.insert(s.input.id.clone());
                w.1 = Some(w.1.map_or(s.input.offset, |o| o.min(s.input.offset)));
                for e in s.emitted.iter().filter(|e| !inputs.contains(e.id.as_str())) {
                    let Some(n) = self.partition_count(&e.topic)? else {
                        continue;
                    };
                    let k = (e.topic.clone(), partition_for_key(key.as_bytes(), n));
                    wanted.entry(k.clone()).or_default().0.insert(e.id.clone());
                    let at = s.started_at.timestamp_millis() - skew;
                    let t = emitted_at.entry(k).or_insert(at);
                    *t = (*t).min(at);
                }
            }
            // Events nobody consumed: from the time of the step that emitted them.
            for (k, at) in &emitted_at {
                let found = self.offsets_at(std::slice::from_ref(k), *at, remaining())?;
                let w = wanted.get_mut(k).expect("wanted");
                if let Some(o) = found.get(k) {
                    w.1 = Some(w.1.map_or(*o, |x| x.min(*o)));
                } else if w.1.is_none() {
                    w.1 = Some(i64::MAX);
                }
            }
            let parts: Vec<((String, i32), Option<i64>)> =
                wanted.iter().map(|(k, (_, o))| (k.clone(), *o)).collect();
            read_topics = wanted.keys().map(|(t, _)| t.clone()).collect();
            self.read(&parts, since, remaining(), |r| {
                if let Some(event_id) = read_event(r, &mut records) {
                    if let Some(w) = wanted.get_mut(&(r.topic.clone(), r.partition)) {
                        w.0.remove(&event_id);
                        return w.0.is_empty();
                    }
                }
                false
            })?;
        } else {
            // Running (or unknown): the one partition of each event topic, start to end.
            let mut parts = Vec::new();
            for topic in self.event_topics(&steps) {
                if let Some(n) = self.partition_count(&topic)? {
                    parts.push(((topic.clone(), partition_for_key(key.as_bytes(), n)), None));
                    read_topics.push(topic);
                }
            }
            self.read(&parts, since, remaining(), |r| {
                read_event(r, &mut records);
                false
            })?;
        }
        if steps.is_empty() && records.is_empty() {
            read_topics.sort();
            read_topics.dedup();
            return Err(TraceError::UnknownSaga {
                id: *id,
                topic: log,
                topics: if read_topics.is_empty() {
                    "no event topic (none known: pass the catalogue with --schemas)".into()
                } else {
                    read_topics.join(", ")
                },
                since: id
                    .started_at()
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "the beginning".into()),
            });
        }
        history.extend(steps.iter().cloned());
        let expectations = Expectations::new(self.catalogue.as_deref(), &history);
        Ok(build_trace(
            *id,
            steps,
            records,
            &expectations,
            Utc::now(),
            options.stall_after,
        ))
    }

    /// With a catalogue: when the steps show the saga ended (a terminal event emitted, and
    /// every event the steps know handled by each of its catalogue consumers), the time of the
    /// last step.
    fn ended_by_steps(&self, steps: &[Step]) -> Option<DateTime<Utc>> {
        let catalogue = self.catalogue.as_deref()?;
        let mut terminal = false;
        let mut events: HashMap<&str, &str> = HashMap::new();
        for s in steps {
            events.insert(&s.input.id, &s.input.event_type);
            for e in &s.emitted {
                events.insert(&e.id, &e.event_type);
                terminal |= catalogue
                    .get(&e.event_type)
                    .and_then(|c| c.placement.ends_saga)
                    .is_some();
            }
        }
        if !terminal {
            return None;
        }
        for (event_id, event_type) in events {
            let consumers = catalogue
                .get(event_type)
                .map(|c| c.placement.consumers.as_slice())
                .unwrap_or(&[]);
            for c in consumers {
                let done = steps.iter().any(|s| {
                    s.input.id == event_id && &s.service == c && s.outcome != StepOutcome::Retried
                });
                if !done {
                    return None;
                }
            }
        }
        steps.iter().map(|s| s.finished_at).max()
    }

    /// The sagas with a step in the saga log since `since` ago, with their status, from the
    /// saga log alone (every partition, sought by time). Newest first.
    pub fn sagas(
        &self,
        since: Duration,
        options: &TraceOptions,
    ) -> Result<Vec<SagaSummary>, TraceError> {
        let log = self.saga_log_topic();
        let n = self
            .partition_count(&log)?
            .ok_or_else(|| TraceError::NoSagaLog(log.clone()))?;
        let from = Utc::now().timestamp_millis() - since.as_millis() as i64;
        let partitions: Vec<((String, i32), Option<i64>)> =
            (0..n).map(|p| ((log.clone(), p), None)).collect();
        let mut by_saga: BTreeMap<CorrelationId, Vec<Step>> = BTreeMap::new();
        let mut history = Vec::new();
        self.read(&partitions, from, options.read_timeout, |r| {
            for step in r.message.payload().map(decode_steps).unwrap_or_default() {
                history.push(step.clone());
                by_saga.entry(step.correlation_id).or_default().push(step);
            }
            false
        })?;
        let expectations = Expectations::new(self.catalogue.as_deref(), &history);
        let now = Utc::now();
        let mut out: Vec<SagaSummary> = by_saga
            .into_iter()
            .map(|(id, steps)| {
                let t = build_trace(
                    id,
                    steps,
                    Vec::new(),
                    &expectations,
                    now,
                    options.stall_after,
                );
                SagaSummary {
                    correlation_id: id,
                    status: t.status,
                    reason: t.reason,
                    started_at: t.started_at,
                    last_activity_at: t.last_activity_at,
                    steps: t.steps.len(),
                    events: t.events.len(),
                    stalled: t.stalled,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then(b.correlation_id.cmp(&a.correlation_id))
        });
        Ok(out)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.consumer.unassign();
    }
}

/// An event as read from its topic.
#[derive(Clone, Debug)]
pub struct RecordEvent {
    pub id: String,
    pub event_type: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub time: DateTime<Utc>,
    pub source: String,
    pub causation_id: Option<String>,
}

/// Who is expected to handle each event type, and which types end a saga.
pub struct Expectations {
    consumers: HashMap<String, Vec<String>>,
    ends: HashMap<String, SagaOutcome>,
    from_catalogue: bool,
}

impl Expectations {
    /// From the catalogue when there is one (types it does not know fall back to history);
    /// history: every service that logged a final step on an event of the type.
    pub fn new(catalogue: Option<&Catalogue>, history: &[Step]) -> Self {
        let mut consumers: HashMap<String, BTreeSet<String>> = HashMap::new();
        for s in history {
            if s.outcome != StepOutcome::Skipped {
                consumers
                    .entry(s.input.event_type.clone())
                    .or_default()
                    .insert(s.service.clone());
            }
        }
        let mut consumers: HashMap<String, Vec<String>> = consumers
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        let mut ends = HashMap::new();
        let from_catalogue = catalogue.map(|c| !c.is_empty()).unwrap_or(false);
        if let Some(c) = catalogue {
            for e in c.entries() {
                consumers.insert(
                    e.placement.event_type.clone(),
                    e.placement.consumers.clone(),
                );
                if let Some(o) = e.placement.ends_saga {
                    ends.insert(e.placement.event_type.clone(), o);
                }
            }
        }
        Self {
            consumers,
            ends,
            from_catalogue,
        }
    }

    fn consumers(&self, event_type: &str) -> &[String] {
        self.consumers
            .get(event_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn service_of_source(source: &str) -> String {
    source
        .strip_prefix("/services/")
        .map(|s| s.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| source.to_owned())
}

/// Builds a trace from the steps and events read (pure: no Kafka).
pub fn build_trace(
    id: CorrelationId,
    mut steps: Vec<Step>,
    records: Vec<RecordEvent>,
    expectations: &Expectations,
    now: DateTime<Utc>,
    stall_after: Duration,
) -> SagaTrace {
    steps.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then(a.finished_at.cmp(&b.finished_at))
    });
    // Dedupe identical step records (a re-sent saga-log record).
    let mut seen_steps = HashSet::new();
    steps.retain(|s| {
        seen_steps.insert((
            s.instance.clone(),
            s.input.id.clone(),
            s.attempts,
            format!("{:?}", s.outcome),
            s.started_at,
        ))
    });
    let mut events: BTreeMap<String, TracedEvent> = BTreeMap::new();
    let new_event =
        |id: String, event_type: String, topic: String, time: DateTime<Utc>| TracedEvent {
            id,
            ends_saga: expectations.ends.get(&event_type).copied(),
            expected_consumers: expectations.consumers(&event_type).to_vec(),
            event_type,
            topic,
            partition: None,
            offset: None,
            time,
            source: None,
            causation_id: None,
            emitted_by: String::new(),
            handled_by: Vec::new(),
            in_topic: false,
        };
    for r in records {
        let e = events.entry(r.id.clone()).or_insert_with(|| {
            new_event(r.id.clone(), r.event_type.clone(), r.topic.clone(), r.time)
        });
        if !e.in_topic {
            e.partition = Some(r.partition);
            e.offset = Some(r.offset);
            e.time = r.time;
            e.emitted_by = service_of_source(&r.source);
            e.source = Some(r.source);
            e.causation_id = r.causation_id;
            e.in_topic = true;
        }
    }
    for s in &steps {
        let e = events.entry(s.input.id.clone()).or_insert_with(|| {
            new_event(
                s.input.id.clone(),
                s.input.event_type.clone(),
                s.input.topic.clone(),
                s.input.time,
            )
        });
        if e.source.is_none() {
            e.source = Some(s.input.source.clone());
            e.causation_id = s.input.causation_id.clone();
            e.emitted_by = service_of_source(&s.input.source);
            e.partition = Some(s.input.partition);
            e.offset = Some(s.input.offset);
        }
        e.handled_by.push(Handling {
            service: s.service.clone(),
            instance: s.instance.clone(),
            outcome: s.outcome,
            attempts: s.attempts,
            started_at: s.started_at,
            finished_at: s.finished_at,
            duration_ms: (s.finished_at - s.started_at).num_milliseconds(),
            error: s.error.clone(),
            emitted: s.emitted.iter().map(|e| e.id.clone()).collect(),
        });
    }
    for s in &steps {
        for em in &s.emitted {
            let e = events.entry(em.id.clone()).or_insert_with(|| {
                new_event(
                    em.id.clone(),
                    em.event_type.clone(),
                    em.topic.clone(),
                    s.finished_at,
                )
            });
            e.emitted_by = s.service.clone();
            if e.causation_id.is_none() {
                e.causation_id = Some(s.input.id.clone());
            }
            if e.source.is_none() {
                e.source = Some(format!("/services/{}", s.service));
            }
        }
    }
    let mut events: Vec<TracedEvent> = events.into_values().collect();
    events.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));

    // Status.
    let started_at = id.started_at();
    let terminal = events
        .iter()
        .filter_map(|e| e.ends_saga.map(|o| (o, e.time, e)))
        .min_by_key(|(_, t, _)| *t);
    let mut pending = Vec::new();
    for e in &events {
        for service in &e.expected_consumers {
            // (A skip is no handling: an expected consumer that skipped the event, having no
            // handler for its type, still owes it.)
            let done = e.handled_by.iter().any(|h| {
                &h.service == service
                    && !matches!(h.outcome, StepOutcome::Retried | StepOutcome::Skipped)
            });
            if !done {
                let waiting_ms = (now - e.time).num_milliseconds();
                pending.push(Pending {
                    service: service.clone(),
                    event_id: e.id.clone(),
                    event_type: e.event_type.clone(),
                    waiting_ms,
                    stalled: waiting_ms > stall_after.as_millis() as i64,
                });
            }
        }
    }
    let mut stalled: Vec<String> = Vec::new();
    for p in pending.iter().filter(|p| p.stalled) {
        if !stalled.contains(&p.service) {
            stalled.push(p.service.clone());
        }
    }
    let dead = steps
        .iter()
        .find(|s| s.outcome == StepOutcome::DeadLettered);
    // An event older than `stall_after` that services skipped (no handler for its type) and
    // none handled: the saga cannot go on from it.
    let skipped = events.iter().find_map(|e| {
        if (now - e.time).num_milliseconds() <= stall_after.as_millis() as i64 {
            return None;
        }
        let skip = e
            .handled_by
            .iter()
            .find(|h| h.outcome == StepOutcome::Skipped)?;
        let handled = e
            .handled_by
            .iter()
            .any(|h| !matches!(h.outcome, StepOutcome::Skipped | StepOutcome::Retried));
        (!handled).then_some((skip, e))
    });
    let (status, reason, ended_at) = if let Some((outcome, time, e)) = terminal {
        (
            SagaStatus::from(outcome),
            format!(
                "{} ends the saga ({})",
                e.event_type,
                SagaStatus::from(outcome)
            ),
            Some(time),
        )
    } else if let Some(d) = dead {
        (
            SagaStatus::Failed,
            format!(
                "{} dead-lettered {} ({}) and no event ended the saga",
                d.service,
                d.input.event_type,
                d.error.as_deref().unwrap_or("no error text")
            ),
            None,
        )
    } else if let Some((skip, e)) = skipped {
        (
            SagaStatus::Stalled,
            format!(
                "{} skipped {} (no handler takes its type there), nobody handled it, and no event ended the saga",
                skip.service, e.event_type
            ),
            None,
        )
    } else if !stalled.is_empty() {
        let p = pending.iter().find(|p| p.stalled).expect("a stalled entry");
        (
            SagaStatus::Stalled,
            format!(
                "{} has not handled {} for {:.1} s (threshold {:.1} s)",
                p.service,
                p.event_type,
                p.waiting_ms as f64 / 1000.0,
                stall_after.as_secs_f64()
            ),
            None,
        )
    } else if let Some(p) = pending.first() {
        (
            SagaStatus::InProgress,
            format!("waiting for {} to handle {}", p.service, p.event_type),
            None,
        )
    } else if expectations.from_catalogue {
        (
            SagaStatus::InProgress,
            "no terminal event yet and nothing pending".into(),
            None,
        )
    } else {
        (
            SagaStatus::InProgress,
            "no catalogue (--schemas): no event is known to end a saga; nothing pending".into(),
            None,
        )
    };

    // Timeline.
    let origin = started_at.or_else(|| events.first().map(|e| e.time));
    let mut entries: Vec<TimelineEntry> = Vec::new();
    for e in &events {
        entries.push(TimelineEntry {
            kind: TimelineKind::Emitted,
            at: e.time,
            offset_ms: 0,
            duration_ms: 0,
            gap_ms: 0,
            service: e.emitted_by.clone(),
            event_id: e.id.clone(),
            event_type: e.event_type.clone(),
            outcome: None,
            error: None,
        });
    }
    for s in &steps {
        entries.push(TimelineEntry {
            kind: TimelineKind::Step,
            at: s.started_at,
            offset_ms: 0,
            duration_ms: (s.finished_at - s.started_at).num_milliseconds(),
            gap_ms: 0,
            service: s.service.clone(),
            event_id: s.input.id.clone(),
            event_type: s.input.event_type.clone(),
            outcome: Some(s.outcome),
            error: s.error.clone(),
        });
    }
    entries.sort_by(|a, b| {
        a.at.cmp(&b.at)
            .then((a.kind == TimelineKind::Step).cmp(&(b.kind == TimelineKind::Step)))
    });
    let mut previous_end: Option<DateTime<Utc>> = None;
    for t in &mut entries {
        t.offset_ms = origin.map(|o| (t.at - o).num_milliseconds()).unwrap_or(0);
        t.gap_ms = previous_end
            .map(|p| (t.at - p).num_milliseconds())
            .unwrap_or(t.offset_ms);
        let end = t.at + chrono::Duration::milliseconds(t.duration_ms);
        previous_end = Some(previous_end.map_or(end, |p| p.max(end)));
    }
    let last_activity_at = previous_end;

    // Causal tree.
    let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&TracedEvent>> = HashMap::new();
    let mut roots = Vec::new();
    for e in &events {
        match e.causation_id.as_deref() {
            Some(c) if ids.contains(c) && c != e.id => children.entry(c).or_default().push(e),
            _ => roots.push(e),
        }
    }
    fn node(
        e: &TracedEvent,
        children: &HashMap<&str, Vec<&TracedEvent>>,
        depth: usize,
    ) -> TreeNode {
        let mut handled_by: Vec<String> = Vec::new();
        for h in &e.handled_by {
            if !handled_by.contains(&h.service) {
                handled_by.push(h.service.clone());
            }
        }
        TreeNode {
            event_id: e.id.clone(),
            event_type: e.event_type.clone(),
            emitted_by: e.emitted_by.clone(),
            handled_by,
            children: if depth > 256 {
                Vec::new()
            } else {
                children
                    .get(e.id.as_str())
                    .map(|cs| cs.iter().map(|c| node(c, children, depth + 1)).collect())
                    .unwrap_or_default()
            },
        }
    }
    let tree = roots.iter().map(|e| node(e, &children, 0)).collect();

    SagaTrace {
        version: FORMAT_VERSION,
        correlation_id: id,
        status,
        reason,
        started_at,
        ended_at,
        last_activity_at,
        pending,
        stalled,
        events,
        tree,
        timeline: entries,
        steps,
        traced_at: now,
        stall_after_ms: stall_after.as_millis() as i64,
    }
}

impl SagaTrace {
    /// The event with this id.
    pub fn event(&self, id: &str) -> Option<&TracedEvent> {
        self.events.iter().find(|e| e.id == id)
    }

    /// The terminal view `choreograph trace` prints ([`text::render`]); `color` adds ANSI
    /// colours.
    pub fn to_text(&self, color: bool) -> String {
        text::render(self, color)
    }

    /// A Mermaid `sequenceDiagram` of the saga across services.
    pub fn to_mermaid(&self) -> String {
        let mut participants: Vec<String> = Vec::new();
        let add = |s: &str, participants: &mut Vec<String>| {
            if !participants.iter().any(|p| p == s) {
                participants.push(s.to_owned());
            }
        };
        for t in &self.timeline {
            if t.kind == TimelineKind::Emitted {
                add(&t.service, &mut participants);
            } else {
                if let Some(e) = self.event(&t.event_id) {
                    add(&e.emitted_by, &mut participants);
                }
                add(&t.service, &mut participants);
            }
        }
        for p in &self.pending {
            add(&p.service, &mut participants);
        }
        let alias = |s: &str| {
            let i = participants.iter().position(|p| p == s).unwrap_or(0);
            format!("p{i}")
        };
        let mut out = String::from("sequenceDiagram\n");
        out.push_str(&format!(
            "    %% saga {} ({})\n",
            self.correlation_id, self.status
        ));
        for (i, p) in participants.iter().enumerate() {
            out.push_str(&format!("    participant p{i} as {}\n", mermaid_text(p)));
        }
        for t in &self.timeline {
            let Some(e) = self.event(&t.event_id) else {
                continue;
            };
            match t.kind {
                TimelineKind::Emitted => {
                    if e.handled_by.is_empty() && e.expected_consumers.is_empty() {
                        let note = match e.ends_saga {
                            Some(o) => format!("{} (saga {})", e.event_type, SagaStatus::from(o)),
                            None => e.event_type.clone(),
                        };
                        out.push_str(&format!(
                            "    Note over {}: {}\n",
                            alias(&e.emitted_by),
                            mermaid_text(&note)
                        ));
                    }
                }
                TimelineKind::Step => {
                    let arrow = match t.outcome {
                        Some(StepOutcome::Handled) => "->>",
                        Some(StepOutcome::Retried) => "--)",
                        Some(StepOutcome::DeadLettered) => "-x",
                        _ => "-->>",
                    };
                    let mut label = format!("{} [{} ms", e.event_type, t.duration_ms);
                    match t.outcome {
                        Some(StepOutcome::Handled) | None => {}
                        Some(o) => label.push_str(&format!(
                            ", {}",
                            serde_json::to_value(o)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default()
                        )),
                    }
                    label.push(']');
                    out.push_str(&format!(
                        "    {}{arrow}{}: {}\n",
                        alias(&e.emitted_by),
                        alias(&t.service),
                        mermaid_text(&label)
                    ));
                }
            }
        }
        for p in &self.pending {
            out.push_str(&format!(
                "    Note over {}: {}\n",
                alias(&p.service),
                mermaid_text(&format!(
                    "{} {} for {:.1} s",
                    if p.stalled {
                        "STALLED: not handled"
                    } else {
                        "pending:"
                    },
                    p.event_type,
                    p.waiting_ms as f64 / 1000.0
                ))
            ));
        }
        out
    }
}

/// Text safe in a Mermaid message or note: no characters that end or restructure a statement.
fn mermaid_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ';' | '#' | '\n' | '\r' | '%' | '{' | '}' | '<' | '>' => ' ',
            ':' => '.',
            c => c,
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga_log::{Emitted, StepInput};

    /// The Java client's own test vectors (`UtilsTest.testMurmur2`).
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(murmur2(data), expected, "{}", String::from_utf8_lossy(data));
        }
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        for n in 1..20 {
            assert!((0..n).contains(&partition_for_key(b"foobar", n)));
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn step(
        id: CorrelationId,
        service: &str,
        input: (&str, &str, &str),
        emitted: &[(&str, &str)],
        at: i64,
    ) -> Step {
        Step {
            version: 1,
            correlation_id: id,
            service: service.into(),
            instance: format!("{service}-1"),
            input: StepInput {
                id: input.0.into(),
                event_type: input.1.into(),
                source: input.2.into(),
                causation_id: None,
                time: t(at - 1),
                topic: "t".into(),
                partition: 0,
                offset: 0,
            },
            outcome: StepOutcome::Handled,
            attempts: 1,
            emitted: emitted
                .iter()
                .map(|(i, ty)| Emitted {
                    id: (*i).into(),
                    event_type: (*ty).into(),
                    topic: "t".into(),
                })
                .collect(),
            started_at: t(at),
            finished_at: t(at + 2),
            error: None,
            dead_letter_reason: None,
        }
    }

    #[test]
    fn history_names_the_service_behind_without_a_catalogue() {
        let id = CorrelationId::new();
        let other = CorrelationId::new();
        // Another saga shows that `b.done` is handled by `c`.
        let history = vec![step(other, "c", ("x", "b.done", "/services/b"), &[], 0)];
        let steps = vec![step(
            id,
            "b",
            ("e1", "a.start", "/cli"),
            &[("e2", "b.done")],
            10,
        )];
        let mut all = history.clone();
        all.extend(steps.clone());
        let ex = Expectations::new(None, &all);
        let trace = build_trace(
            id,
            steps.clone(),
            vec![],
            &ex,
            t(100),
            Duration::from_secs(30),
        );
        assert_eq!(trace.status, SagaStatus::InProgress);
        let trace = build_trace(id, steps, vec![], &ex, t(60_000), Duration::from_secs(30));
        assert_eq!(trace.status, SagaStatus::Stalled);
        assert_eq!(trace.stalled, vec!["c".to_owned()]);
        assert_eq!(trace.tree.len(), 1);
        assert_eq!(trace.tree[0].event_type, "a.start");
        assert_eq!(trace.tree[0].emitted_by, "/cli");
        assert_eq!(trace.tree[0].handled_by, vec!["b".to_owned()]);
        assert_eq!(trace.tree[0].children[0].event_type, "b.done");
        assert_eq!(trace.tree[0].children[0].emitted_by, "b");
        assert!(trace.to_mermaid().starts_with("sequenceDiagram\n"));
    }

    #[test]
    fn an_event_only_skipped_stalls_the_saga_and_says_why() {
        let id = CorrelationId::new();
        let mut skip = step(id, "b", ("e1", "a.unknown", "/cli"), &[], 10);
        skip.outcome = StepOutcome::Skipped;
        skip.attempts = 0;
        let ex = Expectations::new(None, std::slice::from_ref(&skip));
        let trace = build_trace(
            id,
            vec![skip.clone()],
            vec![],
            &ex,
            t(100),
            Duration::from_secs(30),
        );
        assert_eq!(trace.status, SagaStatus::InProgress, "{}", trace.reason);
        let trace = build_trace(
            id,
            vec![skip.clone()],
            vec![],
            &ex,
            t(60_000),
            Duration::from_secs(30),
        );
        assert_eq!(trace.status, SagaStatus::Stalled);
        assert!(
            trace.reason.contains("b skipped a.unknown"),
            "{}",
            trace.reason
        );
        // Skipped by one service, handled by another: nothing is wrong.
        let handled = step(id, "c", ("e1", "a.unknown", "/cli"), &[], 12);
        let steps = vec![skip, handled];
        let ex = Expectations::new(None, &steps);
        let trace = build_trace(id, steps, vec![], &ex, t(60_000), Duration::from_secs(30));
        assert_eq!(trace.status, SagaStatus::InProgress, "{}", trace.reason);
    }

    #[test]
    fn statuses_have_stable_names() {
        for s in [
            SagaStatus::Completed,
            SagaStatus::Failed,
            SagaStatus::Compensated,
            SagaStatus::InProgress,
            SagaStatus::Stalled,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.as_str().parse::<SagaStatus>().unwrap(), s);
        }
    }
}
