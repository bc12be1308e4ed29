//! The saga log: one step per event a service handled, so a saga can be traced without
//! a coordinator.
//!
//! Every runtime appends a [`Step`] to one shared topic (default `choreograph.saga-log`, with
//! the configured topic prefix; [`ServiceOptions::saga_log_topic`](crate::runtime::ServiceOptions)
//! changes it), keyed by the correlation ID, so all steps of a saga are in one partition in
//! order. A step is acknowledged before the input offset is committed. Records are JSON:
//!
//! ```json
//! { "version": 1, "correlation_id": "…", "service": "coupon", "instance": "coupon-4242-a1b2c3",
//!   "input": { "id": "…", "event_type": "registration.activity.newcomer-enrolled.v1",
//!              "source": "/services/activity", "causation_id": "…", "time": "…",
//!              "topic": "registration.activity", "partition": 3, "offset": 17 },
//!   "outcome": "handled", "attempts": 1,
//!   "emitted": [ { "id": "…", "event_type": "registration.coupon.issued.v1", "topic": "registration.coupon" } ],
//!   "started_at": "…", "finished_at": "…", "error": null }
//! ```
//!
//! Under load, runtimes batch their steps: the steps finished meanwhile (exactly-once: written
//! into the transaction together) that go to one partition share one record, whose value is a
//! JSON array of steps (and which has no key); a lone step is a record of its own, keyed by its
//! correlation ID. Either way a step is in the partition of its correlation ID
//! (`murmur2(correlation ID) % partitions`, the producer's partitioner), so a saga's steps are
//! still read from one partition. Readers use [`decode_steps`], which takes both.
//!
//! `outcome` is `handled`, `retried` (one record per failed attempt that will be retried),
//! `dead-lettered` (with `error` and `dead_letter_reason`; also a record that is not a valid
//! CloudEvent, when its correlation ID can be read: its `input` holds what could be read, and
//! its `id` is `<topic>/<partition>/<offset>` when `ce_id` could not), `skipped` (an event of a
//! type no handler of the service takes) or `duplicate` (a redelivered event the service had
//! handled already: acknowledged without running the handler, see [`crate::idempotency`]).
//! One kind of record is skipped without a step: an event whose one `ce_type` header names a
//! type the catalogue gives to other services (it does not list this service among its
//! consumers); the consumer skips it without reading it. `error` is at most
//! [`MAX_ERROR_BYTES`](crate::dead_letter::MAX_ERROR_BYTES) bytes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::OutRecord;
use crate::envelope::CorrelationId;

/// The default saga-log topic (before the topic prefix).
pub const DEFAULT_TOPIC: &str = "choreograph.saga-log";

/// What happened to one input event in one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    Handled,
    Retried,
    DeadLettered,
    Skipped,
    /// Already handled (a redelivery): acknowledged without running the handler.
    Duplicate,
}

/// The input event of a step: what it was and where it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInput {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub causation_id: Option<String>,
    pub time: DateTime<Utc>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// An event a step emitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emitted {
    pub id: String,
    pub event_type: String,
    pub topic: String,
}

/// One saga-log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub version: u32,
    pub correlation_id: CorrelationId,
    pub service: String,
    pub instance: String,
    pub input: StepInput,
    pub outcome: StepOutcome,
    pub attempts: u32,
    pub emitted: Vec<Emitted>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub error: Option<String>,
    pub dead_letter_reason: Option<String>,
}

/// A [`Step`] that borrows its strings, serialized by the runtime for every record it handles
/// (the same JSON as [`Step`], without copying the input's attributes first).
#[derive(Serialize)]
pub(crate) struct StepRef<'a> {
    pub version: u32,
    pub correlation_id: CorrelationId,
    pub service: &'a str,
    pub instance: &'a str,
    pub input: StepInputRef<'a>,
    pub outcome: StepOutcome,
    pub attempts: u32,
    pub emitted: &'a [Emitted],
    #[serde(serialize_with = "crate::envelope::serialize_time")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::envelope::serialize_time")]
    pub finished_at: DateTime<Utc>,
    pub error: Option<&'a str>,
    pub dead_letter_reason: Option<&'a str>,
}

impl StepRef<'_> {
    /// Room enough for the step's JSON (when no string needs escaping) with little to spare: the
    /// runtime serializes into one allocation of this size, which may wait for its transaction.
    pub(crate) fn json_capacity(&self) -> usize {
        // Names, punctuation, the correlation ID, three times of up to 30 characters, the
        // longest outcome, numbers of up to 20 digits and two `null`s.
        const FIXED: usize = 480;
        // `{"id":"","event_type":"","topic":""}` and a comma.
        const PER_EMITTED: usize = 37;
        let i = &self.input;
        let strings = [
            self.service,
            self.instance,
            i.id,
            i.event_type,
            i.source,
            i.causation_id.unwrap_or_default(),
            i.topic,
            self.error.unwrap_or_default(),
            self.dead_letter_reason.unwrap_or_default(),
        ];
        FIXED
            + strings.iter().map(|s| s.len()).sum::<usize>()
            + self
                .emitted
                .iter()
                .map(|e| PER_EMITTED + e.id.len() + e.event_type.len() + e.topic.len())
                .sum::<usize>()
    }
}

/// The input of a [`StepRef`].
#[derive(Serialize)]
pub(crate) struct StepInputRef<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    pub causation_id: Option<&'a str>,
    #[serde(serialize_with = "crate::envelope::serialize_time")]
    pub time: DateTime<Utc>,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The steps of one saga-log record: one step, or a batch (a JSON array of steps). Empty when
/// the record is neither.
pub fn decode_steps(payload: &[u8]) -> Vec<Step> {
    let batch = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    if batch {
        serde_json::from_slice(payload).unwrap_or_default()
    } else {
        serde_json::from_slice(payload)
            .map(|s| vec![s])
            .unwrap_or_default()
    }
}

/// The saga-log records of a batch of steps (each an [`OutRecord`] keyed by its correlation
/// ID, in the order written): the steps bound for one partition of the `partitions` share a
/// record (a JSON array, no key, at most about `max_bytes` of steps), a lone step stays a keyed
/// record of its own. Within a partition the steps keep their order, so a saga's steps stay in
/// order. With `partitions` 0 (unknown) the steps stay as they are.
pub(crate) fn batch_records(
    topic: &str,
    partitions: usize,
    max_bytes: usize,
    steps: impl IntoIterator<Item = OutRecord>,
) -> Vec<OutRecord> {
    if partitions == 0 {
        return steps.into_iter().collect();
    }
    let mut by_partition: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
    for step in steps {
        let key = step.key.as_deref().unwrap_or_default();
        let p = crate::trace::partition_for_key(key, partitions as i32);
        by_partition.entry(p).or_default().push(step);
    }
    let mut records = Vec::new();
    for (partition, mut steps) in by_partition {
        if steps.len() == 1 {
            let mut step = steps.remove(0);
            step.partition = Some(partition);
            records.push(step);
            continue;
        }
        let mut chunk: Vec<&[u8]> = Vec::new();
        let mut bytes = 0;
        let mut flush = |chunk: &mut Vec<&[u8]>| {
            let mut out = OutRecord::new(topic);
            out.partition = Some(partition);
            out.payload = Some(batch_payload(chunk));
            chunk.clear();
            records.push(out);
        };
        for step in &steps {
            let payload = step.payload.as_deref().unwrap_or_default();
            // The record would be `bytes + payload.len() + 2` long (brackets, commas).
            if !chunk.is_empty() && bytes + payload.len() + 2 > max_bytes {
                flush(&mut chunk);
                bytes = 0;
            }
            bytes += payload.len() + 1;
            chunk.push(payload);
        }
        flush(&mut chunk);
    }
    records
}

/// A batch record's value: the steps' serialized records as a JSON array.
pub(crate) fn batch_payload(steps: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(steps.iter().map(|s| s.len() + 1).sum::<usize>() + 1);
    out.push(b'[');
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(step);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: u32) -> Step {
        let t = Utc::now();
        Step {
            version: 1,
            correlation_id: CorrelationId::new(),
            service: "s".into(),
            instance: "s-1".into(),
            input: StepInput {
                id: format!("e{n}"),
                event_type: "t.v1".into(),
                source: "/services/x".into(),
                causation_id: None,
                time: t,
                topic: "t".into(),
                partition: 0,
                offset: i64::from(n),
            },
            outcome: StepOutcome::Handled,
            attempts: n,
            emitted: Vec::new(),
            started_at: t,
            finished_at: t,
            error: None,
            dead_letter_reason: None,
        }
    }

    #[test]
    fn a_record_holds_one_step_or_a_batch() {
        let (a, b) = (step(1), step(2));
        let one = serde_json::to_vec(&a).unwrap();
        assert_eq!(decode_steps(&one), vec![a.clone()]);
        let two = serde_json::to_vec(&b).unwrap();
        let batch = batch_payload(&[one.as_slice(), two.as_slice()]);
        assert_eq!(decode_steps(&batch), vec![a, b]);
        assert!(decode_steps(b"not json").is_empty());
        assert!(decode_steps(b"[1, 2]").is_empty());
    }

    #[test]
    fn a_borrowed_step_writes_the_json_of_a_step() {
        let mut a = step(3);
        a.input.causation_id = Some("cause".into());
        a.emitted = vec![Emitted {
            id: "e".into(),
            event_type: "u.v1".into(),
            topic: "u".into(),
        }];
        a.outcome = StepOutcome::DeadLettered;
        a.error = Some("boom".into());
        a.dead_letter_reason = Some("handler-failed".into());
        let borrowed = StepRef {
            version: a.version,
            correlation_id: a.correlation_id,
            service: &a.service,
            instance: &a.instance,
            input: StepInputRef {
                id: &a.input.id,
                event_type: &a.input.event_type,
                source: &a.input.source,
                causation_id: a.input.causation_id.as_deref(),
                time: a.input.time,
                topic: &a.input.topic,
                partition: a.input.partition,
                offset: a.input.offset,
            },
            outcome: a.outcome,
            attempts: a.attempts,
            emitted: &a.emitted,
            started_at: a.started_at,
            finished_at: a.finished_at,
            error: a.error.as_deref(),
            dead_letter_reason: a.dead_letter_reason.as_deref(),
        };
        let json = serde_json::to_vec(&borrowed).unwrap();
        assert_eq!(json, serde_json::to_vec(&a).unwrap());
        let room = borrowed.json_capacity();
        assert!(
            json.len() <= room && room <= json.len() + 128,
            "{} bytes of JSON, {room} reserved",
            json.len()
        );
        assert_eq!(decode_steps(&json), vec![a]);
    }

    #[test]
    fn steps_are_batched_per_partition_of_their_correlation_id_in_order() {
        let steps: Vec<Step> = (0..40).map(step).collect();
        let record = |s: &Step| {
            let mut out = OutRecord::new("log");
            out.key = Some(s.correlation_id.to_string().into_bytes());
            out.payload = Some(serde_json::to_vec(s).unwrap());
            out
        };
        let partition =
            |s: &Step| crate::trace::partition_for_key(s.correlation_id.to_string().as_bytes(), 3);
        let size = serde_json::to_vec(&steps[39]).unwrap().len();
        // Three steps' worth per record at most.
        let records = batch_records("log", 3, 3 * size + 3, steps.iter().map(record));
        for p in 0..3 {
            let mine: Vec<&Step> = steps.iter().filter(|s| partition(s) == p).collect();
            let read: Vec<Step> = records
                .iter()
                .filter(|r| r.partition == Some(p))
                .flat_map(|r| decode_steps(r.payload.as_deref().unwrap()))
                .collect();
            assert_eq!(read.iter().collect::<Vec<_>>(), mine, "partition {p}");
        }
        assert!(records.iter().all(|r| r.topic == "log"
            && r.payload.as_ref().unwrap().len() <= 3 * size + 3
            && r.key.is_none()));
        assert!(records.len() >= 40 / 3, "{} records", records.len());

        // A lone step for its partition stays a keyed record of its own; with no partition
        // count the steps stay as they are.
        let lone = batch_records("log", 3, 1 << 20, [record(&steps[0])]);
        assert_eq!(lone.len(), 1);
        assert_eq!(lone[0].partition, Some(partition(&steps[0])));
        assert_eq!(lone[0].key, record(&steps[0]).key);
        assert_eq!(
            batch_records("log", 0, 1 << 20, steps.iter().map(record)).len(),
            40
        );
    }

    #[test]
    fn outcome_names_are_stable() {
        assert_eq!(
            serde_json::to_string(&StepOutcome::DeadLettered).unwrap(),
            "\"dead-lettered\""
        );
        assert_eq!(
            serde_json::from_str::<StepOutcome>("\"retried\"").unwrap(),
            StepOutcome::Retried
        );
    }
}
