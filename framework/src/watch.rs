//! Watching sagas from the outside: read the choreography's topics and group the events by
//! saga, noting when each saga ends (by the catalogue's `ends-saga`).
//!
//! This only observes; it never directs. The demo shows progress with it and the end-to-end
//! tests check outcomes with it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::catalogue::{Catalogue, SagaOutcome};
use crate::config::KafkaConfig;
use crate::envelope::{CloudEvent, CorrelationId};
use crate::record::decode_message;

/// What was seen of one saga.
#[derive(Clone, Debug, Default)]
pub struct WatchedSaga {
    /// Distinct events (by `ce_id`), in arrival order.
    pub events: Vec<CloudEvent>,
    /// Distinct records (topic, partition, offset) read: more than `events.len()` when the
    /// same `ce_id` was written more than once (a re-emitted duplicate).
    pub records: usize,
    /// How and when the saga ended (its first terminal event).
    pub ended: Option<(SagaOutcome, DateTime<Utc>)>,
    /// `ce_id`s of every distinct terminal event (more than one would be a defect).
    pub terminal_ids: BTreeSet<String>,
}

impl WatchedSaga {
    /// Events of a type.
    pub fn of_type<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a CloudEvent> + 'a {
        self.events
            .iter()
            .filter(move |e| e.event_type == event_type)
    }
}

type Sagas = Arc<Mutex<HashMap<CorrelationId, WatchedSaga>>>;

/// How often the watch looks for topics and partitions it does not read yet.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Reads topics from their beginning in the background; dropped, it stops.
///
/// The watch assigns itself every partition of the watched topics (no consumer group, so no
/// rebalance to wait for) and looks for new ones every second: a topic created after the watch
/// started (a service creates its output topics on first use) is read from its beginning within
/// about a second of appearing in the cluster's metadata.
pub struct SagaWatch {
    sagas: Sagas,
    task: tokio::task::JoinHandle<()>,
    discovery: tokio::task::JoinHandle<()>,
}

impl SagaWatch {
    /// Starts watching `topics` (full names).
    pub fn start(
        config: &KafkaConfig,
        topics: &[String],
        catalogue: Arc<Catalogue>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: Arc<StreamConsumer> = Arc::new(
            config
                .client_config()
                // Never joined (the watch assigns partitions itself) nor committed to; librdkafka
                // wants one for a consumer.
                .set(
                    "group.id",
                    format!("choreograph-watch-{}", uuid::Uuid::now_v7()),
                )
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                // Partitions start at their beginning; should that be deleted meanwhile
                // (retention), the earliest record left.
                .set("auto.offset.reset", "earliest")
                .create()?,
        );
        let discovery = tokio::spawn(discover(consumer.clone(), topics.to_vec()));
        let sagas: Sagas = Arc::default();
        let sink = sagas.clone();
        let task = tokio::spawn(async move {
            // Count each record once, should a partition ever be read again.
            let mut read: HashSet<(String, i32, i64)> = HashSet::new();
            loop {
                let Ok(m) = consumer.recv().await else {
                    continue;
                };
                if !read.insert((m.topic().to_owned(), m.partition(), m.offset())) {
                    continue;
                }
                let Ok((event, _)) = decode_message(&crate::record::copy_consumed(&m)) else {
                    continue;
                };
                let mut sagas = sink.lock().unwrap_or_else(|e| e.into_inner());
                let saga = sagas.entry(event.correlation_id).or_default();
                saga.records += 1;
                if saga.events.iter().any(|e| e.id == event.id) {
                    continue;
                }
                if let Some(outcome) = catalogue
                    .get(&event.event_type)
                    .and_then(|e| e.placement.ends_saga)
                {
                    saga.ended.get_or_insert((outcome, event.time));
                    saga.terminal_ids.insert(event.id.clone());
                }
                saga.events.push(event);
            }
        });
        Ok(Self {
            sagas,
            task,
            discovery,
        })
    }

    /// How many of `ids` have ended.
    pub fn ended<'a>(&self, ids: impl IntoIterator<Item = &'a CorrelationId>) -> usize {
        let sagas = self.sagas.lock().unwrap_or_else(|e| e.into_inner());
        ids.into_iter()
            .filter(|c| sagas.get(c).map(|s| s.ended.is_some()).unwrap_or(false))
            .count()
    }

    /// A copy of what was seen of one saga.
    pub fn saga(&self, id: &CorrelationId) -> Option<WatchedSaga> {
        self.sagas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Distinct events seen so far, over all sagas.
    pub fn event_count(&self) -> usize {
        let sagas = self.sagas.lock().unwrap_or_else(|e| e.into_inner());
        sagas.values().map(|s| s.events.len()).sum()
    }

    /// Waits until no new event arrived for `quiet` (at most `max`): the topics are read
    /// independently, so a saga's end can be seen before the rest of its events.
    pub async fn settle(&self, quiet: std::time::Duration, max: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + max;
        let mut last = self.event_count();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(quiet).await;
            let now = self.event_count();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// A copy of everything seen so far.
    pub fn all(&self) -> HashMap<CorrelationId, WatchedSaga> {
        self.sagas.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for SagaWatch {
    fn drop(&mut self) {
        self.discovery.abort();
        self.task.abort();
    }
}

/// Adds the partitions of `topics` that exist and are not read yet to the consumer's
/// assignment, from their beginning; again every [`DISCOVERY_INTERVAL`], until aborted.
async fn discover(consumer: Arc<StreamConsumer>, topics: Vec<String>) {
    let mut assigned: HashSet<(String, i32)> = HashSet::new();
    let mut last_error: Option<String> = None;
    loop {
        let c = consumer.clone();
        let wanted = topics.clone();
        let known = std::mem::take(&mut assigned);
        // Metadata requests block: off the async workers.
        let round = tokio::task::spawn_blocking(move || {
            let mut known = known;
            let result = assign_new(&c, &wanted, &mut known);
            (known, result)
        })
        .await;
        let Ok((known, result)) = round else {
            return;
        };
        assigned = known;
        match result {
            Ok(()) => last_error = None,
            // Logged once per kind of failure, not every second (the cluster may be away).
            Err(e) if last_error.as_deref() != Some(e.as_str()) => {
                tracing::warn!(error = %e, "saga watch: looking for partitions failed; retrying");
                last_error = Some(e);
            }
            Err(_) => {}
        }
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}

/// One discovery round: assigns every partition of `topics` in the cluster's metadata that is
/// not in `assigned` (topics that do not exist yet are skipped until they do).
fn assign_new(
    consumer: &StreamConsumer,
    topics: &[String],
    assigned: &mut HashSet<(String, i32)>,
) -> Result<(), String> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut new = TopicPartitionList::new();
    let mut added = Vec::new();
    for topic in metadata.topics() {
        if topic.error().is_some() || !topics.iter().any(|t| t == topic.name()) {
            continue;
        }
        for partition in topic.partitions() {
            let key = (topic.name().to_owned(), partition.id());
            if !assigned.contains(&key) {
                new.add_partition_offset(topic.name(), partition.id(), Offset::Beginning)
                    .map_err(|e| e.to_string())?;
                added.push(key);
            }
        }
    }
    if added.is_empty() {
        return Ok(());
    }
    consumer
        .incremental_assign(&new)
        .map_err(|e| e.to_string())?;
    tracing::debug!(
        partitions = added.len(),
        "saga watch: reading new partitions"
    );
    assigned.extend(added);
    Ok(())
}
