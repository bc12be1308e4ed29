//! Reading and replaying dead letters (the `choreograph dlq` commands).
//!
//! A replay sends a dead letter back to its original topic (`dlq_topic` header) as it was: same
//! key, value and headers, without the `dlq_*` headers, plus `dlq_replayed_from` =
//! `<dead-letter topic>/<partition>/<offset>`. Every replay is recorded in the compacted topic
//! `choreograph.dlq-replays` (with the topic prefix), keyed by that same origin, and a dead
//! letter already recorded there is not replayed again unless forced.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::KafkaConfig;
use crate::dead_letter::headers as dlq;
use crate::record::header_value;
use crate::topics::{TopicSpec, Topics};

/// The topic that records replays (before the topic prefix).
pub const REPLAYS_TOPIC: &str = "choreograph.dlq-replays";
/// The header a replayed record carries: where it was replayed from.
pub const REPLAYED_FROM: &str = "dlq_replayed_from";

/// Dead letters could not be listed or replayed: the message says what and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DlqError(pub String);

impl From<String> for DlqError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<DlqError> for String {
    fn from(e: DlqError) -> Self {
        e.0
    }
}

/// One dead letter, as read from a dead-letter topic.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeadLetterRecord {
    /// `<dead-letter topic>/<partition>/<offset>`: what identifies it.
    pub id: String,
    pub dlq_topic: String,
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub reason: String,
    pub error: String,
    pub service: String,
    pub attempts: String,
    pub original_topic: String,
    pub original_partition: String,
    pub original_offset: String,
    pub correlation_id: Option<String>,
    pub event_type: Option<String>,
    pub replayed: bool,
    #[serde(skip)]
    record: OwnedMessage,
}

/// The dead-letter topics of the cluster (names ending in `.dlq`, with the topic prefix).
pub fn dead_letter_topics(config: &KafkaConfig) -> Result<Vec<String>, DlqError> {
    let consumer: BaseConsumer = config.client_config().create().map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(None, config.connect_timeout)
        .map_err(|e| {
            format!(
                "cannot reach the cluster at {}: {e}",
                config.bootstrap_servers()
            )
        })?;
    let mut topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.ends_with(".dlq") && n.starts_with(&config.topic_prefix))
        .collect();
    topics.sort();
    Ok(topics)
}

/// The origins (`<dlq topic>/<partition>/<offset>`) already replayed.
pub fn replayed(config: &KafkaConfig, timeout: Duration) -> Result<HashSet<String>, DlqError> {
    let topic = config.topic(REPLAYS_TOPIC);
    match crate::record::read_to_end(config, &topic, timeout) {
        Ok(records) => Ok(records
            .iter()
            .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
            .collect()),
        Err(e) if e.contains("does not exist") => Ok(HashSet::new()),
        Err(e) => Err(e.into()),
    }
}

/// The dead letters of one dead-letter topic, marked `replayed` where they were.
pub fn list(
    config: &KafkaConfig,
    dlq_topic: &str,
    timeout: Duration,
) -> Result<Vec<DeadLetterRecord>, DlqError> {
    let done = replayed(config, timeout)?;
    let records = crate::record::read_to_end(config, dlq_topic, timeout)?;
    Ok(records
        .into_iter()
        .map(|m| {
            let id = format!("{dlq_topic}/{}/{}", m.partition(), m.offset());
            let get = |n: &str| header_value(&m, n).unwrap_or_default();
            DeadLetterRecord {
                replayed: done.contains(&id),
                id,
                dlq_topic: dlq_topic.to_owned(),
                dlq_partition: m.partition(),
                dlq_offset: m.offset(),
                reason: get(dlq::REASON),
                error: get(dlq::ERROR),
                service: get(dlq::SERVICE),
                attempts: get(dlq::ATTEMPTS),
                original_topic: get(dlq::TOPIC),
                original_partition: get(dlq::PARTITION),
                original_offset: get(dlq::OFFSET),
                correlation_id: header_value(&m, crate::envelope::headers::CORRELATION_ID),
                event_type: header_value(&m, crate::envelope::headers::TYPE),
                record: m,
            }
        })
        .collect())
}

/// Why [`replay_one`] refuses this dead letter, if it does: it is not a Choreograph dead letter
/// (no `dlq_topic` header), or it was shrunk to fit (its value or its headers were dropped), so
/// it is no longer the record that was dead-lettered. `dlq replay --dry-run` reports the same.
pub fn refusal(letter: &DeadLetterRecord) -> Option<String> {
    let origin = || {
        format!(
            "{}/{}/{}",
            letter.original_topic, letter.original_partition, letter.original_offset
        )
    };
    if letter.original_topic.is_empty() {
        Some(format!(
            "no `{}` header: not a Choreograph dead letter",
            dlq::TOPIC
        ))
    } else if header_value(&letter.record, dlq::VALUE_DROPPED).as_deref() == Some("true") {
        Some(format!(
            "dead-lettered without its value (too large); replay it from {} by hand",
            origin()
        ))
    } else if header_value(&letter.record, dlq::HEADERS_DROPPED).as_deref() == Some("true") {
        Some(format!(
            "dead-lettered without its value and headers (too large); replay it from {} by hand",
            origin()
        ))
    } else {
        None
    }
}

/// Sends one dead letter back to its original topic and records the replay.
pub async fn replay_one(
    producer: &FutureProducer,
    config: &KafkaConfig,
    letter: &DeadLetterRecord,
) -> Result<(i32, i64), DlqError> {
    if let Some(why) = refusal(letter) {
        return Err(format!("{}: {why}", letter.id).into());
    }
    let m = &letter.record;
    let mut headers = OwnedHeaders::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter().filter(|h| !h.key.starts_with("dlq_")) {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    headers = headers.insert(Header {
        key: REPLAYED_FROM,
        value: Some(letter.id.as_bytes()),
    });
    let mut record = FutureRecord::<[u8], [u8]>::to(&letter.original_topic).headers(headers);
    if let Some(k) = m.key() {
        record = record.key(k);
    }
    if let Some(v) = m.payload() {
        record = record.payload(v);
    }
    let delivery = producer
        .send(record, config.delivery_timeout)
        .await
        .map_err(|(e, _)| format!("{}: {e}", letter.id))?;
    let marker = serde_json::json!({
        "replayed_at": chrono::Utc::now().to_rfc3339(),
        "to_topic": letter.original_topic,
        "to_partition": delivery.partition,
        "to_offset": delivery.offset,
    })
    .to_string();
    let replays = config.topic(REPLAYS_TOPIC);
    producer
        .send(
            FutureRecord::to(&replays)
                .key(letter.id.as_str())
                .payload(marker.as_str()),
            config.delivery_timeout,
        )
        .await
        .map_err(|(e, _)| {
            format!(
                "{}: replayed, but recording the replay failed: {e}",
                letter.id
            )
        })?;
    Ok((delivery.partition, delivery.offset))
}

/// Makes sure the replay log exists (compacted).
pub async fn ensure_replay_log(config: &KafkaConfig) -> Result<(), DlqError> {
    let topics = Topics::new(config).map_err(|e| e.to_string())?;
    topics
        .ensure_spec(
            &config.topic(REPLAYS_TOPIC),
            &TopicSpec {
                partitions: Some(1),
                compacted: true,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| DlqError(e.to_string()))
}
