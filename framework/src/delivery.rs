//! Delivery bookkeeping: which input records are finished, and how far offsets may advance.
//!
//! Records of one partition are handled concurrently (different sagas) and finish in any order.
//! The offset that may be committed is the partition's *contiguous watermark*: one past the last
//! record before which every record is finished. It never passes an unfinished record, so a
//! crash re-delivers exactly the unfinished work and whatever finished after it (at-least-once).
//!
//! Each assignment of a partition gets a new *epoch*; completions of an older epoch (work that
//! was in flight when the partition was revoked) are ignored, so they are never committed.

use std::collections::{HashMap, VecDeque};

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

/// Trackers of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetBook {
    partitions: HashMap<PartitionKey, PartitionTracker>,
    next_epoch: u64,
}

impl OffsetBook {
    /// A partition was assigned: a fresh tracker with a new epoch, returned.
    pub fn assign(&mut self, topic: &str, partition: i32) -> u64 {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.partitions.insert(
            (topic.to_owned(), partition),
            PartitionTracker {
                epoch,
                ..Default::default()
            },
        );
        epoch
    }

    /// A partition was revoked: its tracker is dropped, later completions of it are ignored.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<PartitionTracker> {
        self.partitions.remove(&(topic.to_owned(), partition))
    }

    /// The current epoch of an assigned partition.
    pub fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .map(|t| t.epoch)
    }

    /// Records a taken record; returns its epoch (None if the partition is not assigned).
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) -> Option<u64> {
        let t = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        t.start(offset);
        Some(t.epoch)
    }

    /// Records a finished record; ignored when the epoch is stale.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) {
        if let Some(t) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            if t.epoch == epoch {
                t.finish(offset);
            }
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<&PartitionTracker> {
        self.partitions.get(&(topic.to_owned(), partition))
    }

    pub fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionTracker> {
        self.partitions.get_mut(&(topic.to_owned(), partition))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&PartitionKey, &mut PartitionTracker)> {
        self.partitions.iter_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PartitionKey, &PartitionTracker)> {
        self.partitions.iter()
    }

    /// Records in flight over all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.partitions.values().map(|t| t.in_flight()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
