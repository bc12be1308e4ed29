//! Glue between rdkafka messages and the envelope, and reading a topic to its end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use smallvec::SmallVec;

use crate::config::KafkaConfig;

use crate::envelope::{CloudEvent, ContentMode, DecodeError, RecordView};

/// Headers a record usually has at most (CloudEvents binary mode writes up to 11): up to this
/// many are kept without a heap allocation of their own.
const INLINE_HEADERS: usize = 12;

/// Header names and values (`None`: a null value), borrowed, kept inline up to [`INLINE_HEADERS`].
type HeaderList<'a, N> = SmallVec<[(&'a N, Option<&'a [u8]>); INLINE_HEADERS]>;

/// Decodes an rdkafka message (binary or structured mode) into a CloudEvent.
pub fn decode_message<M: Message>(message: &M) -> Result<(CloudEvent, ContentMode), DecodeError> {
    let headers: HeaderList<'_, str> = message
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    CloudEvent::decode(RecordView {
        key: message.key(),
        value: message.payload(),
        headers: &headers,
    })
}

/// A consumed record, copied out of librdkafka in one allocation: key, value and every header
/// share one buffer. (rdkafka's `detach` makes about a dozen: the key, the value, the topic, and
/// one per header in librdkafka's own header list.) The service runtime hands these to its
/// workers; a dead letter gets an rdkafka copy ([`InputRecord::to_owned_message`]).
pub(crate) struct InputRecord {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Timestamp,
    data: InputData,
}

/// The bytes of an [`InputRecord`], where its key, value and headers lie in them; also its
/// headers, as rdkafka's [`Headers`].
pub(crate) struct InputData {
    bytes: Vec<u8>,
    key: Option<Span>,
    payload: Option<Span>,
    /// `None` when the record has no headers (as rdkafka reports it).
    headers: Option<SmallVec<[HeaderSpan; INLINE_HEADERS]>>,
}

#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Clone, Copy)]
struct HeaderSpan {
    name: Span,
    value: Option<Span>,
}

impl InputData {
    fn slice(&self, span: Span) -> &[u8] {
        &self.bytes[span.start as usize..(span.start + span.len) as usize]
    }
}

impl InputRecord {
    /// Copies a consumed record; `topic` is its topic's name, shared.
    ///
    /// Header names that are not UTF-8 are kept with U+FFFD for the bad bytes (rdkafka's own
    /// header accessors panic on them; Kafka allows any bytes).
    pub(crate) fn copy_of(message: &BorrowedMessage<'_>, topic: Arc<str>) -> Self {
        Self::copy_with(message, topic, raw_headers(message))
    }

    /// [`copy_of`](Self::copy_of), with the record's headers as [`raw_headers`] read them
    /// (the runtime reads them first, to skip records of types it does not handle).
    pub(crate) fn copy_with<'m>(
        message: &'m BorrowedMessage<'_>,
        topic: Arc<str>,
        raw_headers: Option<RawHeaders<'m>>,
    ) -> Self {
        let key = message.key();
        let payload = message.payload();
        let size = key.map_or(0, <[u8]>::len)
            + payload.map_or(0, <[u8]>::len)
            + raw_headers
                .iter()
                .flatten()
                .map(|(n, v)| n.len() + v.map_or(0, <[u8]>::len))
                .sum::<usize>();
        let mut bytes = Vec::with_capacity(size);
        let mut put = |b: &[u8]| {
            let start = bytes.len() as u32;
            bytes.extend_from_slice(b);
            Span {
                start,
                len: b.len() as u32,
            }
        };
        let key = key.map(&mut put);
        let payload = payload.map(&mut put);
        let headers = raw_headers.as_ref().map(|raw| {
            raw.iter()
                .map(|(name, value)| HeaderSpan {
                    name: match String::from_utf8_lossy(name) {
                        std::borrow::Cow::Borrowed(_) => put(name),
                        std::borrow::Cow::Owned(fixed) => put(fixed.as_bytes()),
                    },
                    value: value.map(&mut put),
                })
                .collect()
        });
        Self {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp(),
            data: InputData {
                bytes,
                key,
                payload,
                headers,
            },
        }
    }

    /// The topic's name, shared.
    pub(crate) fn shared_topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// An rdkafka copy of the record (for a dead letter).
    pub(crate) fn to_owned_message(&self) -> OwnedMessage {
        let headers = self.headers().map(|hs| {
            hs.iter()
                .fold(OwnedHeaders::new_with_capacity(hs.count()), |out, h| {
                    out.insert(Header {
                        key: h.key,
                        value: h.value,
                    })
                })
        });
        OwnedMessage::new(
            self.payload().map(<[u8]>::to_vec),
            self.key().map(<[u8]>::to_vec),
            self.topic.to_string(),
            self.timestamp,
            self.partition,
            self.offset,
            headers,
        )
    }
}

/// An owned copy of a consumed record, safe to read: rdkafka's `detach` keeps header names
/// that are not UTF-8, on which rdkafka's header accessors panic; here their bad bytes become
/// U+FFFD. (For the readers of the CLI and tools; the runtime keeps [`InputRecord`]s.)
pub(crate) fn copy_consumed(message: &BorrowedMessage<'_>) -> OwnedMessage {
    InputRecord::copy_of(message, Arc::from(message.topic())).to_owned_message()
}

/// The value of a header that a consumed record has exactly once, with a value (`None`: absent,
/// repeated, or null), read in place.
pub(crate) fn only_header_in<'m>(headers: Option<&RawHeaders<'m>>, name: &str) -> Option<&'m [u8]> {
    let mut found = headers?.iter().filter(|(n, _)| *n == name.as_bytes());
    match (found.next(), found.next()) {
        (Some((_, value)), None) => *value,
        _ => None,
    }
}

/// A consumed record's headers, names as bytes, borrowed from the record.
pub(crate) type RawHeaders<'m> = HeaderList<'m, [u8]>;

/// A consumed record's headers (`None`: it has none), read without rdkafka's accessors (which
/// panic on a header name that is not UTF-8).
pub(crate) fn raw_headers<'m>(message: &'m BorrowedMessage<'_>) -> Option<RawHeaders<'m>> {
    use rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    let mut list = std::ptr::null_mut();
    // Parses the headers into a list the message owns (and frees).
    let err = unsafe { rdkafka_sys::rd_kafka_message_headers(message.ptr(), &mut list) };
    if err != RD_KAFKA_RESP_ERR_NO_ERROR || list.is_null() {
        return None;
    }
    let mut out = SmallVec::new();
    let count = unsafe { rdkafka_sys::rd_kafka_header_cnt(list) };
    for idx in 0..count {
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0;
        let err = unsafe {
            rdkafka_sys::rd_kafka_header_get_all(list, idx, &mut name, &mut value, &mut size)
        };
        if err != RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // Both live as long as the message's header list, so as long as `message`.
        let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value = (!value.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(value as *const u8, size) });
        out.push((name, value));
    }
    Some(out)
}

impl Headers for InputData {
    fn count(&self) -> usize {
        self.headers.as_ref().map_or(0, |hs| hs.len())
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let h = self.headers.as_ref()?.get(idx)?;
        let name = self.slice(h.name);
        // SAFETY: a name's bytes are UTF-8: `InputRecord::copy_with`, the only writer of
        // `bytes`, puts a name as it is only when it is valid UTF-8, else its lossy repair.
        // (Checking again on every read took 2 % of a service's runtime workers: a profile of
        // the registration benchmark.)
        debug_assert!(std::str::from_utf8(name).is_ok());
        Some(Header {
            key: unsafe { std::str::from_utf8_unchecked(name) },
            value: h.value.map(|v| self.slice(v)),
        })
    }
}

impl Message for InputRecord {
    type Headers = InputData;

    fn key(&self) -> Option<&[u8]> {
        self.data.key.map(|s| self.data.slice(s))
    }

    fn payload(&self) -> Option<&[u8]> {
        self.data.payload.map(|s| self.data.slice(s))
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let s = self.data.payload?;
        Some(&mut self.data.bytes[s.start as usize..(s.start + s.len) as usize])
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> i32 {
        self.partition
    }

    fn offset(&self) -> i64 {
        self.offset
    }

    fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    fn headers(&self) -> Option<&InputData> {
        self.data.headers.as_ref().map(|_| &self.data)
    }
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
                out.push(copy_consumed(&m));
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
    if let ReadFrom::Since { at_most, .. } = from {
        start = start.max(high - at_most as i64);
    }
    // The mock cluster (embedded) finds no offset by time: read its last `at_most` records.
    let by_time = match from {
        ReadFrom::Since { time_ms, .. }
            if !crate::embedded::is_mock_cluster(consumer.client(), timeout) =>
        {
            Some(time_ms)
        }
        _ => None,
    };
    if let Some(time_ms) = by_time {
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
