//! Delivery bookkeeping: which input records are finished, and how far offsets may advance.
//!
//! Records of one partition are handled concurrently (different sagas) and finish in any order.
//! The offset that may be committed is the partition's *contiguous watermark*: one past the last
//! record before which every record is finished. It never passes an unfinished record, so a
//! crash re-delivers exactly the unfinished work and whatever finished after it (at-least-once).
//!
//! Each assignment of a partition gets a new *epoch*; completions of an older epoch (work that
//! was in flight when the partition was revoked) are ignored, so they are never committed.
//!
//! Exactly-once mode keeps a second book, [`TxnBook`]: what handling an input produced
//! ([`OutRecord`]s) is held until the open transaction takes it, to commit it with the input
//! offsets. A transaction takes, per partition *number*, the finished prefix of the inputs in the order
//! they were dispatched, over all input topics. A saga's events share a partition number and
//! are dispatched in order, so a transaction never holds a saga's later step without its earlier
//! ones (the later one may have read saga state the earlier one wrote).

use std::collections::{HashMap, VecDeque};

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureRecord};

/// A record the runtime writes for one input: a follow-up event, a saga-state change, a handled
/// marker, a saga-log step, or a dead letter.
#[derive(Clone, Debug)]
pub struct OutRecord {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
}

impl OutRecord {
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            payload: None,
            headers: None,
        }
    }

    /// A copy of an rdkafka record.
    pub fn from_future(r: &FutureRecord<'_, [u8], [u8]>) -> Self {
        Self {
            topic: r.topic.to_owned(),
            partition: r.partition,
            key: r.key.map(<[u8]>::to_vec),
            payload: r.payload.map(<[u8]>::to_vec),
            headers: r.headers.clone(),
        }
    }

    /// Bytes of key, value and headers (what the producer's `message.max.bytes` limits).
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .as_ref()
            .map(|hs| {
                hs.iter()
                    .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 8)
                    .sum()
            })
            .unwrap_or(0);
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len) + headers
    }

    pub fn as_future(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut r = FutureRecord::to(&self.topic);
        r.partition = self.partition;
        r.key = self.key.as_deref();
        r.payload = self.payload.as_deref();
        r.headers = self.headers.clone();
        r
    }

    pub fn as_base(&self) -> BaseRecord<'_, [u8], [u8]> {
        let mut r = BaseRecord::to(&self.topic);
        r.partition = self.partition;
        r.key = self.key.as_deref();
        r.payload = self.payload.as_deref();
        r.headers = self.headers.clone();
        r
    }

    /// Adds a header.
    pub fn header(mut self, key: &str, value: &[u8]) -> Self {
        let hs = self.headers.take().unwrap_or_default();
        self.headers = Some(hs.insert(Header {
            key,
            value: Some(value),
        }));
        self
    }
}

/// Topic and partition.
pub type PartitionKey = (String, i32);

/// The in-flight records of one partition, in offset order.
#[derive(Debug, Default)]
pub struct PartitionTracker {
    epoch: u64,
    /// (offset, finished), ascending offsets.
    records: VecDeque<(i64, bool)>,
    /// The next offset to commit (one past the contiguous finished prefix), once known.
    committable: Option<i64>,
    /// The last offset handed to the broker as committed/stored.
    stored: Option<i64>,
}

impl PartitionTracker {
    /// Records that `offset` was taken for handling.
    pub fn start(&mut self, offset: i64) {
        match self.records.back() {
            Some(&(last, _)) if offset <= last => {
                // Out of order (a re-delivery after a seek): track it in its place, so the
                // watermark cannot pass it; an offset already tracked stays as it is.
                if let Err(i) = self.records.binary_search_by_key(&offset, |&(o, _)| o) {
                    self.records.insert(i, (offset, false));
                }
            }
            _ => self.records.push_back((offset, false)),
        }
    }

    /// Marks `offset` finished and advances the watermark over the finished prefix.
    pub fn finish(&mut self, offset: i64) {
        if let Ok(i) = self.records.binary_search_by_key(&offset, |&(o, _)| o) {
            self.records[i].1 = true;
        }
        while let Some(&(o, true)) = self.records.front() {
            self.committable = Some(o + 1);
            self.records.pop_front();
        }
    }

    /// Records not yet finished (or finished behind an unfinished one).
    pub fn in_flight(&self) -> usize {
        self.records.len()
    }

    /// The offset to commit, if it moved since the last call to [`Self::mark_stored`].
    pub fn pending_commit(&self) -> Option<i64> {
        match (self.committable, self.stored) {
            (Some(c), Some(s)) if c <= s => None,
            (c, _) => c,
        }
    }

    pub fn mark_stored(&mut self, offset: i64) {
        self.stored = Some(offset);
    }
}

/// Trackers of every assigned partition, by topic then partition (looked up by `&str`, so the
/// per-record calls allocate nothing).
#[derive(Debug, Default)]
pub struct OffsetBook {
    partitions: HashMap<String, HashMap<i32, PartitionTracker>>,
    next_epoch: u64,
}

impl OffsetBook {
    /// A partition was assigned: a fresh tracker with a new epoch, returned.
    pub fn assign(&mut self, topic: &str, partition: i32) -> u64 {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        let tracker = PartitionTracker {
            epoch,
            ..Default::default()
        };
        match self.partitions.get_mut(topic) {
            Some(by_partition) => {
                by_partition.insert(partition, tracker);
            }
            None => {
                self.partitions
                    .insert(topic.to_owned(), HashMap::from([(partition, tracker)]));
            }
        }
        epoch
    }

    /// A partition was revoked: its tracker is dropped, later completions of it are ignored.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<PartitionTracker> {
        let by_partition = self.partitions.get_mut(topic)?;
        let tracker = by_partition.remove(&partition);
        if by_partition.is_empty() {
            self.partitions.remove(topic);
        }
        tracker
    }

    /// The current epoch of an assigned partition.
    pub fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        self.get(topic, partition).map(|t| t.epoch)
    }

    /// Records a taken record; returns its epoch (None if the partition is not assigned).
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) -> Option<u64> {
        let t = self.get_mut(topic, partition)?;
        t.start(offset);
        Some(t.epoch)
    }

    /// Records a finished record; ignored when the epoch is stale.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) {
        if let Some(t) = self.get_mut(topic, partition) {
            if t.epoch == epoch {
                t.finish(offset);
            }
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<&PartitionTracker> {
        self.partitions.get(topic)?.get(&partition)
    }

    pub fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionTracker> {
        self.partitions.get_mut(topic)?.get_mut(&partition)
    }

    /// Every assigned partition: topic, partition, tracker.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, &PartitionTracker)> {
        self.partitions
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(p, tr)| (t.as_str(), *p, tr)))
    }

    /// Records in flight over all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.iter().map(|(_, _, t)| t.in_flight()).sum()
    }
}

/// One dispatched input, in exactly-once mode: where it came from and, once finished, what it
/// produced.
#[derive(Debug)]
struct TxnEntry<W> {
    seq: u64,
    topic: String,
    partition: i32,
    offset: i64,
    epoch: u64,
    work: Option<W>,
}

/// Committable work taken from the book: what each input produced, in dispatch order per
/// partition number, and the next input offsets (written into the open transaction, which
/// commits the offsets).
#[derive(Debug)]
pub struct TxnBatch<W> {
    pub work: Vec<W>,
    pub offsets: HashMap<PartitionKey, i64>,
}

/// Exactly-once bookkeeping: dispatched inputs per partition number, in dispatch order, with
/// what their handling produced (`W`: the records to write, ...), until a transaction takes
/// them.
#[derive(Debug)]
pub struct TxnBook<W> {
    groups: HashMap<i32, VecDeque<TxnEntry<W>>>,
}

impl<W> Default for TxnBook<W> {
    fn default() -> Self {
        Self {
            groups: HashMap::new(),
        }
    }
}

impl<W> TxnBook<W> {
    /// An input was dispatched (`seq` grows with every dispatch).
    pub fn start(&mut self, seq: u64, topic: &str, partition: i32, offset: i64, epoch: u64) {
        self.groups
            .entry(partition)
            .or_default()
            .push_back(TxnEntry {
                seq,
                topic: topic.to_owned(),
                partition,
                offset,
                epoch,
                work: None,
            });
    }

    /// An input finished; ignored when its epoch is stale (the entry is gone or newer).
    pub fn finish(&mut self, seq: u64, partition: i32, epoch: u64, work: W) {
        let Some(group) = self.groups.get_mut(&partition) else {
            return;
        };
        if let Ok(i) = group.binary_search_by_key(&seq, |e| e.seq) {
            if group[i].epoch == epoch {
                group[i].work = Some(work);
            }
        }
    }

    /// Takes the finished prefix of every partition number.
    pub fn take_committable(&mut self) -> TxnBatch<W> {
        let mut batch = TxnBatch {
            work: Vec::new(),
            offsets: HashMap::new(),
        };
        for group in self.groups.values_mut() {
            while group.front().is_some_and(|e| e.work.is_some()) {
                let e = group.pop_front().expect("front exists");
                batch.work.extend(e.work);
                batch.offsets.insert((e.topic, e.partition), e.offset + 1);
            }
        }
        batch
    }

    /// Drops what a partition has in the book (revoked, or rewound after an abort).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        if let Some(group) = self.groups.get_mut(&partition) {
            group.retain(|e| e.topic != topic);
        }
    }

    /// Inputs held (unfinished, or finished and waiting for a transaction).
    pub fn len(&self) -> usize {
        self.groups.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(name: &str) -> OutRecord {
        OutRecord::new(name)
    }

    #[test]
    fn a_transaction_takes_the_dispatch_prefix_of_a_partition_number() {
        let mut b = TxnBook::<Vec<OutRecord>>::default();
        b.start(1, "a", 3, 10, 7);
        b.start(2, "b", 3, 5, 8); // same saga, later step, other topic
        b.start(3, "a", 4, 0, 9);
        b.finish(2, 3, 8, vec![rec("b-out")]);
        b.finish(3, 4, 9, vec![rec("c-out")]);
        let t = b.take_committable();
        assert_eq!(
            t.work
                .iter()
                .flatten()
                .map(|r: &OutRecord| r.topic.as_str())
                .collect::<Vec<_>>(),
            ["c-out"],
            "b@5 waits for a@10, dispatched before it with the same partition number"
        );
        assert_eq!(t.offsets.get(&("a".into(), 4)), Some(&1));
        assert!(!t.offsets.contains_key(&("b".into(), 3)));
        b.finish(1, 3, 7, vec![rec("a-out")]);
        let t = b.take_committable();
        assert_eq!(
            t.work
                .iter()
                .flatten()
                .map(|r: &OutRecord| r.topic.as_str())
                .collect::<Vec<_>>(),
            ["a-out", "b-out"]
        );
        assert_eq!(t.offsets.get(&("a".into(), 3)), Some(&11));
        assert_eq!(t.offsets.get(&("b".into(), 3)), Some(&6));
        assert!(b.is_empty());
    }

    #[test]
    fn stale_and_forgotten_inputs_are_not_committed() {
        let mut b = TxnBook::<Vec<OutRecord>>::default();
        b.start(1, "a", 0, 10, 1);
        b.finish(1, 0, 99, vec![rec("stale")]);
        assert!(
            b.take_committable().offsets.is_empty(),
            "stale epoch ignored"
        );
        b.forget("a", 0);
        b.finish(1, 0, 1, vec![rec("late")]);
        assert!(b.take_committable().work.is_empty());
        assert!(b.is_empty());
    }

    #[test]
    fn record_size_counts_key_value_and_headers() {
        let mut r = OutRecord::new("t").header("h", b"12");
        r.key = Some(b"key".to_vec());
        r.payload = Some(vec![0; 100]);
        assert_eq!(r.size(), 3 + 100 + 1 + 2 + 8);
    }

    #[test]
    fn watermark_never_passes_an_unfinished_record() {
        let mut t = PartitionTracker::default();
        for o in 10..15 {
            t.start(o);
        }
        t.finish(12);
        t.finish(11);
        assert_eq!(t.pending_commit(), None, "10 is unfinished");
        t.finish(10);
        assert_eq!(t.pending_commit(), Some(13));
        t.mark_stored(13);
        assert_eq!(t.pending_commit(), None);
        t.finish(14);
        assert_eq!(t.pending_commit(), None, "13 is unfinished");
        t.finish(13);
        assert_eq!(t.pending_commit(), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn an_out_of_order_record_holds_the_watermark() {
        let mut t = PartitionTracker::default();
        t.start(20);
        t.start(21);
        t.start(15); // delivered late
        t.finish(20);
        t.finish(21);
        assert_eq!(t.pending_commit(), None, "15 is unfinished");
        t.finish(15);
        assert_eq!(t.pending_commit(), Some(22));
    }

    #[test]
    fn stale_epochs_are_ignored() {
        let mut b = OffsetBook::default();
        let e1 = b.assign("t", 0);
        b.start("t", 0, 5);
        b.revoke("t", 0);
        let e2 = b.assign("t", 0);
        assert_ne!(e1, e2);
        b.start("t", 0, 5);
        b.finish("t", 0, 5, e1);
        assert_eq!(b.get("t", 0).unwrap().pending_commit(), None);
        b.finish("t", 0, 5, e2);
        assert_eq!(b.get("t", 0).unwrap().pending_commit(), Some(6));
    }

    proptest! {
        /// Whatever order records finish in, the watermark is exactly one past the longest
        /// finished prefix.
        #[test]
        fn watermark_is_the_finished_prefix(order in Just((0..50i64).collect::<Vec<_>>()).prop_shuffle(), stop in 0usize..50) {
            let mut t = PartitionTracker::default();
            for o in 0..50 { t.start(o); }
            let finished: std::collections::HashSet<i64> = order[..stop].iter().copied().collect();
            for o in &order[..stop] { t.finish(*o); }
            let prefix = (0..50).take_while(|o| finished.contains(o)).count() as i64;
            let expected = if prefix == 0 { None } else { Some(prefix) };
            prop_assert_eq!(t.pending_commit(), expected);
        }
    }
}
