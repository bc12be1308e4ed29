//! Glue between rdkafka messages and the envelope, and reading a topic to its end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;

use crate::envelope::{CloudEvent, ContentMode, DecodeError, RecordView};

/// Decodes an rdkafka message (binary or structured mode) into a CloudEvent.
pub fn decode_message<M: Message>(message: &M) -> Result<(CloudEvent, ContentMode), DecodeError> {
    let headers: Vec<(&str, Option<&[u8]>)> = message
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    CloudEvent::decode(RecordView {
        key: message.key(),
        value: message.payload(),
        headers: &headers,
    })
}

/// The last value of a header, as (lossy) UTF-8.
pub fn header_value<M: Message>(message: &M, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Reads every record of `topic` up to the end it has when called (blocking).
pub fn read_to_end(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>, String> {
    let consumer: BaseConsumer<ReaderContext> = config
        .client_config()
        .set("group.id", "choreograph-dlq-reader")
        .set("enable.auto.commit", "false")
        // The end of a partition written with transactions is a commit marker, which is never
        // delivered: the end-of-partition event says when the reader got there.
        .set("enable.partition.eof", "true")
        .create_with_context(ReaderContext)
        .map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(Some(topic), config.connect_timeout)
        .map_err(|e| {
            format!(
                "cannot reach the cluster at {}: {e}",
                config.bootstrap_servers()
            )
        })?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    drop(metadata);
    if partitions.is_empty() {
        return Err(format!("topic `{topic}` does not exist"));
    }
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = watermarks(&consumer, topic, p, config.connect_timeout)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(|e| e.to_string())?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("reading `{topic}` took longer than {timeout:?}"));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(end) = ends.get(&m.partition()) {
                    if m.offset() + 1 >= *end {
                        ends.remove(&m.partition());
                    }
                }
                out.push(m.detach());
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            _ => {}
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(out)
}

/// The context of the readers here: librdkafka reports the end of a partition (which they ask
/// for) as an error event, and rdkafka's default context logs every error event at ERROR level.
pub(crate) struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !matches!(
            error,
            rdkafka::error::KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::warn!(target: "librdkafka", error = %error, reason, "reader error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// Retries what fails while a new topic's leaders are being elected (services create the
/// topics they use, and a reader may come right after), until `deadline`.
pub(crate) fn retry_transient<T>(
    deadline: Instant,
    mut f: impl FnMut() -> Result<T, rdkafka::error::KafkaError>,
) -> Result<T, rdkafka::error::KafkaError> {
    use rdkafka::types::RDKafkaErrorCode as C;
    loop {
        match f() {
            Err(e)
                if Instant::now() + Duration::from_millis(100) < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            C::NotLeaderForPartition
                                | C::LeaderNotAvailable
                                | C::UnknownTopicOrPartition
                                | C::UnknownLeaderEpoch
                                | C::OffsetNotAvailable
                                | C::PreferredLeaderNotAvailable
                        )
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// A partition's low and high watermarks, asked again while its leadership settles.
fn watermarks<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), String> {
    let deadline = Instant::now() + timeout;
    retry_transient(deadline, || {
        let left = deadline.saturating_duration_since(Instant::now());
        consumer.fetch_watermarks(topic, partition, left.max(Duration::from_millis(100)))
    })
    .map_err(|e| e.to_string())
}

/// Where [`read_partition`] starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ReadFrom {
    /// The first record the partition still has.
    Beginning,
    /// The first record written at or after `time_ms`, but not more than `at_most` records
    /// before the end.
    Since { time_ms: i64, at_most: usize },
}

/// Reads one partition (committed records only) from `from` to the end it has when called,
/// handing each record to `visit` (blocking). Returns how many records were read.
pub(crate) fn read_partition(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    from: ReadFrom,
    timeout: Duration,
    mut visit: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<usize, String> {
    let consumer: BaseConsumer<ReaderContext> = config
        .client_config()
        .set("group.id", "choreograph-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create_with_context(ReaderContext)
        .map_err(|e| e.to_string())?;
    let (low, high) = watermarks(&consumer, topic, partition, timeout)
        .map_err(|e| format!("watermarks of {topic}[{partition}]: {e}"))?;
    let mut start = low;
    if let ReadFrom::Since { time_ms, at_most } = from {
        start = start.max(high - at_most as i64);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(time_ms))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        let found = retry_transient(deadline, || {
            let left = deadline.saturating_duration_since(Instant::now());
            consumer.offsets_for_times(tpl.clone(), left.max(Duration::from_millis(100)))
        })
        .map_err(|e| format!("offsets by time of {topic}[{partition}]: {e}"))?;
        match found.elements().first().map(|e| e.offset()) {
            Some(Offset::Offset(o)) => start = start.max(o),
            // Nothing written since then.
            Some(Offset::End) => start = high,
            _ => {}
        }
    }
    if start >= high {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut records = 0;
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "reading {topic}[{partition}] took longer than {timeout:?}"
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            // The end (for read_committed: the last stable offset).
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => tracing::debug!(topic, partition, error = %e, "reading a partition"),
            Some(Ok(m)) => {
                records += 1;
                visit(&m);
                if m.offset() + 1 >= high {
                    break;
                }
            }
        }
    }
    Ok(records)
}
