//! Per-saga state: what a service remembers about one saga (a join's progress, an issued
//! coupon), keyed by correlation ID, durable in Kafka, and moving with the partitions.
//!
//! - Handlers read and write it through their [`Context`](crate::handler::Context)
//!   (`saga_state`, `set_saga_state`, `clear_saga_state`). A saga's events are handled one at
//!   a time within a service instance, so a handler never races another over the same state.
//! - Each write is a record in the service's compacted changelog topic
//!   (`<prefix><service>.saga-state`): key = correlation ID, value = the state as JSON, a null
//!   value (tombstone) when cleared. The write goes to the *same partition number* as the input
//!   record, and it is acknowledged before the input offset is committed.
//! - Because every event of a saga is keyed by its correlation ID, a saga lives in the same
//!   partition number of every topic. The runtime makes the service's input topics and its
//!   changelog co-partitioned (equal partition counts, checked at start; the `range`
//!   assignor, which gives one instance the same partition numbers of every topic). When a
//!   partition is assigned, its changelog partition is read to the end into memory before any
//!   of its records is handled; when it is revoked, its state is dropped from memory.
//! - Order of writes per handled event: follow-up events first, then the state, then the
//!   offset. A crash in between re-runs the handler on the old state; follow-up event IDs are
//!   derived from the input's ID, so the re-run emits the same events with the same `ce_id`s
//!   (duplicates that `(ce_source, ce_id)` identifies), never different ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;

use crate::config::KafkaConfig;
use crate::record::{read_partition, ReadFrom};

/// The sagas of one partition: correlation ID (record key) → state.
type PartitionSagas = HashMap<Vec<u8>, serde_json::Value>;

/// The state of every saga in the partitions this instance owns, by partition number.
///
/// Each load of a partition gets a new *generation*; a write names the generation it was
/// dispatched under and is ignored when the partition was dropped or reloaded since (work of a
/// revoked partition, or of a transaction that was aborted, never leaks into memory).
#[derive(Clone, Default)]
pub(crate) struct SagaStore {
    inner: Arc<Mutex<HashMap<i32, (u64, PartitionSagas)>>>,
    next_generation: Arc<AtomicU64>,
}

impl SagaStore {
    pub(crate) fn get(&self, partition: i32, key: &[u8]) -> Option<serde_json::Value> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&partition).and_then(|(_, p)| p.get(key)).cloned()
    }

    /// The generation of a loaded partition.
    pub(crate) fn generation(&self, partition: i32) -> Option<u64> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&partition).map(|(g, _)| *g)
    }

    /// Updates a saga of a loaded partition, if it is still the given generation.
    pub(crate) fn put(
        &self,
        partition: i32,
        generation: Option<u64>,
        key: &[u8],
        value: Option<serde_json::Value>,
    ) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some((g, p)) = map.get_mut(&partition) else {
            return;
        };
        if Some(*g) != generation {
            return;
        }
        match value {
            Some(v) => {
                p.insert(key.to_vec(), v);
            }
            None => {
                p.remove(key);
            }
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

    fn load(&self, partition: i32, sagas: PartitionSagas) {
        let generation = self.next_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(partition, (generation, sagas));
    }

    /// Number of sagas held for a partition.
    #[cfg(test)]
    pub(crate) fn len(&self, partition: i32) -> usize {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&partition).map(|(_, p)| p.len()).unwrap_or(0)
    }

    /// Reads changelog partition `partition` to its end into memory (blocking), retrying a
    /// few times before giving up.
    pub(crate) fn restore(
        &self,
        config: &KafkaConfig,
        changelog: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<usize, String> {
        let mut last = String::new();
        for attempt in 1..=5u64 {
            match self.restore_once(config, changelog, partition, timeout) {
                Ok(n) => return Ok(n),
                Err(e) => {
                    tracing::warn!(changelog, partition, attempt, error = %e, "saga state restore failed; retrying");
                    last = e;
                    std::thread::sleep(Duration::from_millis(500 * attempt));
                }
            }
        }
        Err(last)
    }

    fn restore_once(
        &self,
        config: &KafkaConfig,
        changelog: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<usize, String> {
        let mut sagas: HashMap<Vec<u8>, serde_json::Value> = HashMap::new();
        let records = read_partition(
            config,
            changelog,
            partition,
            ReadFrom::Beginning,
            timeout,
            |m| {
                let Some(key) = m.key() else { return };
                match m.payload().map(serde_json::from_slice::<serde_json::Value>) {
                    Some(Ok(v)) => {
                        sagas.insert(key.to_vec(), v);
                    }
                    None => {
                        sagas.remove(key);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(changelog, partition, offset = m.offset(), error = %e, "unreadable saga state record skipped");
                    }
                }
            },
        )?;
        let n = sagas.len();
        self.load(partition, sagas);
        tracing::debug!(
            changelog,
            partition,
            records,
            sagas = n,
            "saga state restored"
        );
        Ok(n)
    }
}

/// One saga's state as a handler sees it: the value at the start, and what the handler set.
#[derive(Debug)]
pub(crate) struct SagaSlot {
    pub(crate) current: Option<serde_json::Value>,
    /// `Some(None)` = cleared; `Some(Some(v))` = set; `None` = untouched.
    pub(crate) pending: Mutex<Option<Option<serde_json::Value>>>,
}

impl SagaSlot {
    pub(crate) fn new(current: Option<serde_json::Value>) -> Self {
        Self {
            current,
            pending: Mutex::new(None),
        }
    }

    pub(crate) fn read(&self) -> Option<serde_json::Value> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match &*pending {
            Some(v) => v.clone(),
            None => self.current.clone(),
        }
    }

    pub(crate) fn write(&self, value: Option<serde_json::Value>) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    pub(crate) fn take_change(&self) -> Option<Option<serde_json::Value>> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|v| *v != self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_tracks_changes_only() {
        let slot = SagaSlot::new(Some(serde_json::json!({"a": 1})));
        assert_eq!(slot.read(), Some(serde_json::json!({"a": 1})));
        slot.write(Some(serde_json::json!({"a": 1})));
        assert_eq!(slot.take_change(), None, "unchanged: nothing to write");
        slot.write(Some(serde_json::json!({"a": 2})));
        assert_eq!(slot.read(), Some(serde_json::json!({"a": 2})));
        assert_eq!(slot.take_change(), Some(Some(serde_json::json!({"a": 2}))));
        let slot = SagaSlot::new(Some(serde_json::json!(1)));
        slot.write(None);
        assert_eq!(slot.read(), None);
        assert_eq!(slot.take_change(), Some(None), "cleared: a tombstone");
    }

    #[test]
    fn store_by_partition() {
        let s = SagaStore::default();
        s.put(1, Some(1), b"k", Some(serde_json::json!(5)));
        assert!(!s.is_loaded(1), "not owned: not written");
        s.load(1, HashMap::new());
        let g = s.generation(1);
        s.put(1, g, b"k", Some(serde_json::json!(5)));
        assert!(s.is_loaded(1));
        assert_eq!(s.get(1, b"k"), Some(serde_json::json!(5)));
        assert_eq!(s.get(2, b"k"), None);
        s.put(1, g, b"k", None);
        assert_eq!(s.len(1), 0);
        s.load(1, HashMap::new());
        s.put(1, g, b"k", Some(serde_json::json!(6)));
        assert_eq!(s.len(1), 0, "a write of an older generation is ignored");
        s.drop_partition(1);
        assert!(!s.is_loaded(1));
    }
}
