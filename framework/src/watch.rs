//! Watching sagas from the outside: read the choreography's topics and group the events by
//! saga, noting when each saga ends (by the catalogue's `ends-saga`).
//!
//! This only observes; it never directs. The demo shows progress with it and the end-to-end
//! tests check outcomes with it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

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

/// Reads topics from their beginning in the background; dropped, it stops.
pub struct SagaWatch {
    sagas: Sagas,
    task: tokio::task::JoinHandle<()>,
}

impl SagaWatch {
    /// Starts watching `topics` (full names) with a consumer group of its own.
    pub fn start(
        config: &KafkaConfig,
        topics: &[String],
        catalogue: Arc<Catalogue>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: StreamConsumer = config
            .client_config()
            .set(
                "group.id",
                format!("choreograph-watch-{}", uuid::Uuid::now_v7()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            // Topics that do not exist yet are picked up within a second once created.
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()?;
        consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        let sagas: Sagas = Arc::default();
        let sink = sagas.clone();
        let task = tokio::spawn(async move {
            // A rebalance of the watch's own group may read a partition again: count each
            // record once.
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
        Ok(Self { sagas, task })
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
        self.task.abort();
    }
}
