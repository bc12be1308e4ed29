//! Dead letters: records a service cannot handle, set aside with the reason, so the partition
//! keeps moving and nothing is silently dropped.
//!
//! The record is copied unchanged (key, value, every header) to the dead-letter topic of its
//! input topic (`<topic>.dlq` by default), with these headers added:
//!
//! | header          | value                                                          |
//! |-----------------|----------------------------------------------------------------|
//! | `dlq_reason`    | `invalid-envelope`, `invalid-data`, `handler-failed`, `retries-exhausted`, `handler-panicked`, `invalid-output`, `schema-invalid` |
//! | `dlq_error`     | the error text                                                 |
//! | `dlq_service`   | the service that gave up on it                                 |
//! | `dlq_instance`  | which instance of that service                                 |
//! | `dlq_attempts`  | how many times the handler ran (0 when it never could)          |
//! | `dlq_topic`, `dlq_partition`, `dlq_offset`, `dlq_timestamp` | where the record came from (timestamp in ms since the epoch) |
//! | `dlq_time`      | when it was dead-lettered (RFC 3339)                            |
//! | `dlq_value_dropped` | `true` when the record was too large to copy with these headers: the value is left out (the original is still at `dlq_topic`/`dlq_partition`/`dlq_offset`) |

use std::fmt;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;

/// Why a record was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Not a valid CloudEvent.
    InvalidEnvelope,
    /// The data does not deserialize into the handler's type.
    InvalidData,
    /// The handler returned a permanent error.
    HandlerFailed,
    /// The handler kept returning retryable errors.
    RetriesExhausted,
    /// The handler panicked.
    HandlerPanicked,
    /// The handler's follow-up events could not be serialized, or break their schemas.
    InvalidOutput,
    /// The data breaks its event type's schema in the catalogue.
    SchemaInvalid,
}

impl DeadLetterReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidEnvelope => "invalid-envelope",
            Self::InvalidData => "invalid-data",
            Self::HandlerFailed => "handler-failed",
            Self::RetriesExhausted => "retries-exhausted",
            Self::HandlerPanicked => "handler-panicked",
            Self::InvalidOutput => "invalid-output",
            Self::SchemaInvalid => "schema-invalid",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Dead-letter header names.
pub mod headers {
    pub const REASON: &str = "dlq_reason";
    pub const ERROR: &str = "dlq_error";
    pub const SERVICE: &str = "dlq_service";
    pub const INSTANCE: &str = "dlq_instance";
    pub const ATTEMPTS: &str = "dlq_attempts";
    pub const TOPIC: &str = "dlq_topic";
    pub const PARTITION: &str = "dlq_partition";
    pub const OFFSET: &str = "dlq_offset";
    pub const TIMESTAMP: &str = "dlq_timestamp";
    pub const TIME: &str = "dlq_time";
    pub const VALUE_DROPPED: &str = "dlq_value_dropped";
}

/// A record on its way to the dead-letter topic.
pub struct DeadLetter<'a> {
    pub record: &'a OwnedMessage,
    pub reason: DeadLetterReason,
    pub error: String,
    pub service: &'a str,
    pub instance: &'a str,
    pub attempts: u32,
    /// Set when the record was too large to copy with the added headers: the dead letter then
    /// carries the key and headers only, and `dlq_value_dropped: true`.
    pub without_value: bool,
}

impl DeadLetter<'_> {
    /// The headers: the original ones, then the dead-letter ones.
    pub fn headers(&self) -> OwnedHeaders {
        let r = self.record;
        let mut out = OwnedHeaders::new();
        if let Some(hs) = r.headers() {
            for h in hs.iter() {
                out = out.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let added = [
            (headers::REASON, self.reason.as_str().to_owned()),
            (headers::ERROR, self.error.clone()),
            (headers::SERVICE, self.service.to_owned()),
            (headers::INSTANCE, self.instance.to_owned()),
            (headers::ATTEMPTS, self.attempts.to_string()),
            (headers::TOPIC, r.topic().to_owned()),
            (headers::PARTITION, r.partition().to_string()),
            (headers::OFFSET, r.offset().to_string()),
            (
                headers::TIMESTAMP,
                r.timestamp().to_millis().unwrap_or(-1).to_string(),
            ),
            (headers::TIME, chrono::Utc::now().to_rfc3339()),
        ];
        for (k, v) in &added {
            out = out.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        if self.without_value {
            out = out.insert(Header {
                key: headers::VALUE_DROPPED,
                value: Some(b"true"),
            });
        }
        out
    }

    /// The record to produce to `dlq_topic`: same key and value, original headers kept.
    pub fn record<'b>(&'b self, dlq_topic: &'b str) -> FutureRecord<'b, [u8], [u8]> {
        let mut rec = FutureRecord::to(dlq_topic).headers(self.headers());
        if let Some(k) = self.record.key() {
            rec = rec.key(k);
        }
        if let Some(v) = self.record.payload().filter(|_| !self.without_value) {
            rec = rec.payload(v);
        }
        rec
    }
}
