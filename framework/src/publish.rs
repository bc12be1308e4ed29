//! Publishing: putting an event on Kafka, to start a saga or to continue one.
//!
//! [`Publisher::start_saga`] mints a new correlation ID (a UUIDv7) and a new trace;
//! [`Publisher::publish`] adds an event to an existing saga. Either call returns once the
//! broker has acknowledged the event: the producer runs with `acks=all` and idempotence on, so
//! an acknowledged event is on every in-sync replica and retries never duplicate it. A cluster
//! that does not answer fails the call within the connect timeout (metadata) or the delivery
//! timeout (the write itself), with an error that says so.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::KafkaConfig;
use crate::envelope::{
    headers as envelope_headers, CloudEvent, CorrelationId, HeaderName, HeaderParts,
};
use crate::event::{to_cloud_event, DataError, Event};
use crate::topics::{TopicError, Topics};
use crate::trace_context::TraceParent;

/// Where an event was written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    pub correlation_id: CorrelationId,
    pub event_id: String,
    pub event_type: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("the broker did not acknowledge the event within {timeout:?} (delivery timeout): is the cluster reachable and the topic writable? ({detail})")]
    Timeout { timeout: Duration, detail: String },
    #[error("the broker refused the event: {0}")]
    Refused(String),
    #[error("cannot create a Kafka producer: {0}")]
    Client(String),
    #[error("refused: {0}")]
    Schema(#[from] crate::catalogue::SchemaViolation),
}

/// Publishes events with `acks=all` and the idempotent producer.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topics: Topics,
    source: String,
    delivery_timeout: Duration,
    topic_prefix: String,
    catalogue: Option<std::sync::Arc<crate::catalogue::Catalogue>>,
}

/// The producer settings Choreograph relies on, on top of the pass-through properties (every
/// producer of the framework and of the `choreograph` CLI is made from these).
pub fn producer_config(config: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut cc = config.client_config();
    if !config.properties().contains_key("linger.ms") {
        cc.set("linger.ms", "2");
    }
    // Java clients' default partitioner: a saga's key maps to the same partition number
    // whichever client (Rust or JVM) writes it.
    if !config.properties().contains_key("partitioner") {
        cc.set("partitioner", "murmur2_random");
    }
    // One request in flight per broker connection. With more, librdkafka (2.12) can lose an
    // acknowledged record: when a batch fails with a retriable error (NOT_LEADER on a partition
    // created a moment ago, a leader moving) while a later batch of the same partition is in
    // flight, and the partition has no state yet for this producer, the broker accepts the
    // later batch and librdkafka "implicitly acks" the failed one (log IMPLICITACK, delivery
    // offset -1001) without ever writing it (confluent-kafka-go #921). Measured here: 1 lost
    // follow-up event in about 30 runs of the runtime tests.
    cc.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "1")
        .set("allow.auto.create.topics", "false")
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        );
    cc
}

impl Publisher {
    /// A publisher that writes events with the given `source` (e.g. `/services/user`).
    pub fn new(config: &KafkaConfig, source: impl Into<String>) -> Result<Self, PublishError> {
        crate::config::check_librdkafka();
        let producer: FutureProducer = producer_config(config)
            .create()
            .map_err(|e| PublishError::Client(e.to_string()))?;
        Ok(Self {
            producer,
            topics: Topics::new(config)?,
            source: source.into(),
            delivery_timeout: config.delivery_timeout,
            topic_prefix: config.topic_prefix.clone(),
            catalogue: None,
        })
    }

    /// Validates every event against the catalogue before publishing it (types the catalogue
    /// does not know pass); an invalid event is refused with [`PublishError::Schema`].
    pub fn with_catalogue(
        mut self,
        catalogue: std::sync::Arc<crate::catalogue::Catalogue>,
    ) -> Self {
        self.catalogue = Some(catalogue);
        self
    }

    /// The `source` attribute of events this publisher writes.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Starts a saga with a domain event: a new correlation ID and a new trace.
    pub async fn start_saga<E: Event>(&self, event: &E) -> Result<Published, PublishError> {
        let mut ce = to_cloud_event(event, &self.source, CorrelationId::new())?;
        ce.traceparent = Some(TraceParent::new_root().to_string());
        self.publish_cloud_event(&self.topic_of::<E>(), &ce).await
    }

    /// The topic events of type `E` go to (with the configured topic prefix).
    pub fn topic_of<E: Event>(&self) -> String {
        format!("{}{}", self.topic_prefix, E::TOPIC)
    }

    /// Publishes an event into an existing saga.
    pub async fn publish<E: Event>(
        &self,
        correlation_id: CorrelationId,
        event: &E,
    ) -> Result<Published, PublishError> {
        let ce = to_cloud_event(event, &self.source, correlation_id)?;
        self.publish_cloud_event(&self.topic_of::<E>(), &ce).await
    }

    /// Publishes a fully formed CloudEvent to a topic (binary mode, keyed by correlation ID).
    /// The topic is taken as given (no prefix).
    pub async fn publish_cloud_event(
        &self,
        topic: &str,
        event: &CloudEvent,
    ) -> Result<Published, PublishError> {
        if let Some(c) = &self.catalogue {
            c.validate(&event.event_type, &event.data)?;
        }
        self.topics.ensure(&[topic]).await?;
        let (partition, offset) = send(&self.producer, topic, event, self.delivery_timeout).await?;
        Ok(Published {
            correlation_id: event.correlation_id,
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            topic: topic.to_owned(),
            partition,
            offset,
        })
    }

    /// Waits until every queued event is delivered (or the timeout passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|e| PublishError::Timeout {
                timeout,
                detail: e.to_string(),
            })
    }
}

/// The key, value and headers of a binary-mode record.
pub(crate) fn record_headers(event: &CloudEvent) -> (String, Vec<u8>, OwnedHeaders) {
    (
        event.key(),
        event.data.clone(),
        owned_headers(&HeaderParts::of(event)),
    )
}

/// The binary-mode headers of an event, straight into librdkafka's header list.
pub(crate) fn owned_headers(parts: &HeaderParts<'_>) -> OwnedHeaders {
    let mut headers = Some(OwnedHeaders::new_with_capacity(12));
    parts.visit(|name, value| {
        let add = |hs: OwnedHeaders, key: &str| {
            hs.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        };
        let hs = headers.take().unwrap_or_default();
        headers = Some(match name {
            HeaderName::Known(key) => add(hs, key),
            HeaderName::Extension(ext) => add(hs, &format!("{}{ext}", envelope_headers::PREFIX)),
        });
    });
    headers.unwrap_or_default()
}

/// Sends one event and waits for its acknowledgement.
pub(crate) async fn send(
    producer: &FutureProducer,
    topic: &str,
    event: &CloudEvent,
    delivery_timeout: Duration,
) -> Result<(i32, i64), PublishError> {
    let (key, value, headers) = record_headers(event);
    let record = FutureRecord::to(topic)
        .key(&key)
        .payload(&value)
        .headers(headers);
    match producer
        .send(record, Timeout::After(delivery_timeout))
        .await
    {
        Ok(delivery) => Ok((delivery.partition, delivery.offset)),
        Err((e, _)) => Err(classify(e, delivery_timeout)),
    }
}

fn classify(e: KafkaError, timeout: Duration) -> PublishError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::QueueFull) => {
            PublishError::Timeout {
                timeout,
                detail: e.to_string(),
            }
        }
        _ => PublishError::Refused(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_guarantees_cannot_be_weakened_by_pass_through_properties() {
        let config = KafkaConfig::new("localhost:9092")
            .unwrap()
            .with("acks", "1")
            .with("enable.idempotence", "false")
            .with("max.in.flight.requests.per.connection", "5")
            .with("linger.ms", "20");
        let cc = producer_config(&config);
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(
            cc.get("linger.ms"),
            Some("20"),
            "a default, not a guarantee"
        );
    }
}
