//! Idempotent handling: a service remembers which events it handled, by `(ce_source, ce_id)`,
//! so a redelivered event is acknowledged without running its handler again.
//!
//! - On by default ([`Idempotency`] in [`ServiceOptions`](crate::runtime::ServiceOptions);
//!   `None` turns it off).
//! - Durable in Kafka, next to the per-saga state: after an event's follow-up events and its saga
//!   state are acknowledged, it is recorded in the service's topic `<prefix><service>.handled`,
//!   in the *same partition number* as the input record, before the input offset is committed.
//!   A marker record's value is a JSON array of `[ce_source, ce_id]` pairs: the events handled
//!   meanwhile in that partition share one record (one write per batch, not per event). In
//!   exactly-once mode the markers are part of the transaction, batched the same way with the
//!   inputs written into it together. When a partition is assigned, its markers are read back
//!   (before any of its records is handled), so the next owner of a partition knows what the
//!   last one finished.
//! - Bounded: per partition, the handled events of the last [`Idempotency::window`] (default
//!   1 hour) and at most [`Idempotency::max_per_partition`] of them (default 20,000), oldest
//!   forgotten first; held in memory as 64-bit fingerprints (about 30 bytes each). The topic
//!   keeps markers for the window (`retention.ms`); a restore reads the window's marker records,
//!   at most `max_per_partition` of them, forgetting the oldest events as it goes.
//! - Only handled events are remembered: a dead-lettered event is not, so `choreograph dlq
//!   replay` runs it again.
//! - What it cannot absorb: a crash after a handler's follow-up events were written but before
//!   its marker was — the handler runs again (emitting the same `ce_id`s, see
//!   [`derived_event_id`](crate::envelope::derived_event_id)). Exactly-once mode closes that gap.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;

use crate::config::KafkaConfig;
use crate::delivery::OutRecord;
use crate::record::{read_partition, ReadFrom};

/// How long and how many handled events a service remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// How long a handled event is remembered (default 1 hour).
    pub window: Duration,
    /// At most this many handled events are remembered per partition (default 20,000).
    pub max_per_partition: usize,
}

impl Default for Idempotency {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            max_per_partition: 20_000,
        }
    }
}

/// The handled events of one partition: fingerprints, and their order for forgetting.
#[derive(Default)]
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<(u64, i64)>,
}

impl Seen {
    fn insert(&mut self, fingerprint: u64, at_ms: i64) {
        if self.set.insert(fingerprint) {
            self.order.push_back((fingerprint, at_ms));
        }
    }

    fn forget_old(&mut self, settings: &Idempotency, now_ms: i64) {
        let oldest = now_ms - settings.window.as_millis() as i64;
        while let Some(&(f, at)) = self.order.front() {
            if self.order.len() <= settings.max_per_partition && at >= oldest {
                break;
            }
            self.order.pop_front();
            self.set.remove(&f);
        }
    }
}

fn fingerprint(source: &str, id: &str) -> u64 {
    // SipHash with fixed keys: the same fingerprint in every process.
    let mut h = DefaultHasher::new();
    source.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The handled events of every partition this instance owns, by partition number.
/// Loads of a partition have generations, as in [`SagaStore`](crate::saga_state): a write of
/// an older generation is ignored.
#[derive(Clone)]
pub(crate) struct HandledLog {
    inner: Arc<Mutex<HashMap<i32, (u64, Seen)>>>,
    next_generation: Arc<AtomicU64>,
    settings: Idempotency,
}

impl HandledLog {
    pub(crate) fn new(settings: Idempotency) -> Self {
        Self {
            inner: Arc::default(),
            next_generation: Arc::default(),
            settings,
        }
    }

    /// Whether the event was handled already (in this partition's window).
    pub(crate) fn contains(&self, partition: i32, source: &str, id: &str) -> bool {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&partition)
            .is_some_and(|(_, s)| s.set.contains(&fingerprint(source, id)))
    }

    /// The generation of a loaded partition.
    pub(crate) fn generation(&self, partition: i32) -> Option<u64> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&partition).map(|(g, _)| *g)
    }

    /// Remembers a handled event (in a partition this instance owns, still the generation).
    pub(crate) fn insert(&self, partition: i32, generation: Option<u64>, source: &str, id: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, seen)) = map
            .get_mut(&partition)
            .filter(|(g, _)| Some(*g) == generation)
        {
            let now = now_ms();
            seen.insert(fingerprint(source, id), now);
            seen.forget_old(&self.settings, now);
        }
    }

    pub(crate) fn is_loaded(&self, partition: i32) -> bool {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.contains_key(&partition)
    }

    pub(crate) fn drop_partition(&self, partition: i32) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&partition);
    }

    /// Reads the markers of partition `partition` of `topic` (the window's, at most
    /// `max_per_partition` of them) into memory (blocking).
    pub(crate) fn restore(
        &self,
        config: &KafkaConfig,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<usize, String> {
        let now = now_ms();
        let since = now - self.settings.window.as_millis() as i64;
        let mut seen = Seen::default();
        let settings = self.settings.clone();
        read_partition(
            config,
            topic,
            partition,
            ReadFrom::Since {
                time_ms: since,
                at_most: self.settings.max_per_partition,
            },
            timeout,
            |m| {
                let at = m.timestamp().to_millis().unwrap_or(now);
                let pairs = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Vec<(&str, &str)>>(p).ok())
                    .unwrap_or_default();
                for (source, id) in pairs {
                    seen.insert(fingerprint(source, id), at);
                }
                seen.forget_old(&settings, now);
            },
        )?;
        let n = seen.set.len();
        self.load(partition, seen);
        Ok(n)
    }

    fn load(&self, partition: i32, seen: Seen) {
        let generation = self.next_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(partition, (generation, seen));
    }
}

/// The marker records of handled events, given as `(partition, ce_source, ce_id)`: one record
/// per partition of the handled-marker `topic` (more when its value would exceed about
/// `max_bytes`), whose value is the JSON array of the partition's `[ce_source, ce_id]` pairs.
pub(crate) fn marker_records<'a>(
    topic: &str,
    max_bytes: usize,
    handled: impl IntoIterator<Item = (i32, &'a str, &'a str)>,
) -> Vec<OutRecord> {
    let mut by_partition: BTreeMap<i32, Vec<u8>> = BTreeMap::new();
    let mut records = Vec::new();
    let close = |partition: i32, mut payload: Vec<u8>| {
        payload.push(b']');
        let mut out = OutRecord::new(topic);
        out.partition = Some(partition);
        out.payload = Some(payload);
        out
    };
    for (partition, source, id) in handled {
        let payload = by_partition.entry(partition).or_insert_with(|| vec![b'[']);
        // With this pair, a comma and the closing bracket (no escapes): `["source","id"]` is
        // 7 bytes more than its strings.
        if payload.len() > 1 && payload.len() + source.len() + id.len() + 9 > max_bytes {
            let full = std::mem::replace(payload, vec![b'[']);
            records.push(close(partition, full));
        }
        if payload.len() > 1 {
            payload.push(b',');
        }
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *payload, &(source, id));
    }
    records.extend(by_partition.into_iter().map(|(p, v)| close(p, v)));
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_partition_and_forgets_beyond_the_bound() {
        let log = HandledLog::new(Idempotency {
            window: Duration::from_secs(3600),
            max_per_partition: 3,
        });
        log.insert(0, Some(1), "/s", "a");
        assert!(
            !log.contains(0, "/s", "a"),
            "a partition not owned is not written"
        );
        log.load(0, Seen::default());
        let g = log.generation(0);
        for id in ["a", "b", "c"] {
            log.insert(0, g, "/s", id);
        }
        assert!(log.contains(0, "/s", "a"));
        assert!(
            !log.contains(0, "/other", "a"),
            "the source is part of the key"
        );
        assert!(!log.contains(1, "/s", "a"));
        log.insert(0, g, "/s", "d");
        assert!(!log.contains(0, "/s", "a"), "the oldest is forgotten first");
        assert!(log.contains(0, "/s", "d") && log.contains(0, "/s", "b"));
        log.insert(0, g, "/s", "d");
        assert!(
            log.contains(0, "/s", "b"),
            "a repeat does not push others out"
        );
        log.load(0, Seen::default());
        log.insert(0, g, "/s", "e");
        assert!(
            !log.contains(0, "/s", "e"),
            "a write of an older generation is ignored"
        );
        log.drop_partition(0);
        assert!(!log.contains(0, "/s", "d"));
    }

    #[test]
    fn marker_records_carry_pairs_per_partition_within_the_bound() {
        let pairs = |r: &OutRecord| -> Vec<(String, String)> {
            serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap()
        };
        let handled = [
            (2, "/services/a", "1"),
            (0, "/services/b", "x\ny"),
            (2, "/services/a", "2"),
        ];
        let records = marker_records("t.handled", 1 << 20, handled);
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[0].partition, pairs(&records[0])),
            (Some(0), vec![("/services/b".into(), "x\ny".into())])
        );
        assert_eq!(
            (records[1].partition, pairs(&records[1])),
            (
                Some(2),
                vec![
                    ("/services/a".into(), "1".into()),
                    ("/services/a".into(), "2".into())
                ]
            )
        );
        assert!(records.iter().all(|r| r.topic == "t.handled"));

        // `["/s","id-0"]` is 13 bytes: a bound of 40 fits two per record, and so does 29 exactly
        // (`[` + two pairs + `,` + `]`); 28 and 20 fit one. None is lost, the order is kept, no
        // record is over the bound.
        let many: Vec<String> = (0..5).map(|i| format!("id-{i}")).collect();
        for (bound, expected) in [(40, 3), (29, 3), (28, 5), (20, 5)] {
            let records = marker_records("t", bound, many.iter().map(|id| (1, "/s", id.as_str())));
            assert_eq!(records.len(), expected, "bound {bound}");
            let ids: Vec<String> = records.iter().flat_map(pairs).map(|(_, id)| id).collect();
            assert_eq!(ids, many);
            assert!(records
                .iter()
                .all(|r| r.payload.as_ref().unwrap().len() <= bound));
        }
    }

    #[test]
    fn forgets_beyond_the_window() {
        let settings = Idempotency {
            window: Duration::from_secs(10),
            max_per_partition: 100,
        };
        let mut seen = Seen::default();
        seen.insert(1, 1_000);
        seen.insert(2, 15_000);
        seen.forget_old(&settings, 20_000);
        assert!(!seen.set.contains(&1) && seen.set.contains(&2));
    }
}
