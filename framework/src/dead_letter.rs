//! Dead letters: records a service cannot handle, set aside with the reason, so the partition
//! keeps moving and nothing is silently dropped.
//!
//! The record is copied unchanged (key, value, every header) to the dead-letter topic of its
//! input topic (`<topic>.dlq` by default), with these headers added:
//!
//! | header          | value                                                          |
//! |-----------------|----------------------------------------------------------------|
//! | `dlq_reason`    | `invalid-envelope`, `key-mismatch`, `unsupported-content-type`, `invalid-data`, `schema-invalid`, `handler-failed`, `retries-exhausted`, `handler-panicked`, `invalid-output` ([`DeadLetterReason`]) |
//! | `dlq_error`     | the error text, at most [`MAX_ERROR_BYTES`] bytes (longer ones are cut, with a mark) |
//! | `dlq_service`   | the service that gave up on it                                 |
//! | `dlq_instance`  | which instance of that service                                 |
//! | `dlq_attempts`  | how many times the handler ran (0 when it never could)          |
//! | `dlq_topic`, `dlq_partition`, `dlq_offset`, `dlq_timestamp` | where the record came from (timestamp in ms since the epoch) |
//! | `dlq_time`      | when it was dead-lettered (RFC 3339)                            |
//! | `dlq_value_dropped` | `true` when the record was too large to copy with these headers: the value is left out (the original is still at `dlq_topic`/`dlq_partition`/`dlq_offset`) |
//! | `dlq_headers_dropped` | `true` when even that did not fit: the key and the original headers are left out too, and the dead letter holds only the `dlq_*` headers |
//!
//! A dead letter is tried whole, then without its value, then with only its `dlq_*` headers (a
//! few hundred bytes); the runtime never commits past a record whose dead letter could not be
//! written at all, but retries it (see the runtime).

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
    /// The record key is not the event's correlation ID.
    KeyMismatch,
    /// The data's content type is not one the handler can decode (JSON).
    UnsupportedContentType,
}

/// The most bytes of error text a dead letter's `dlq_error` header, or a saga-log step's
/// `error`, carries.
pub const MAX_ERROR_BYTES: usize = 4096;

/// `text` cut to at most [`MAX_ERROR_BYTES`] bytes, on a character boundary, ending with a mark
/// that says how long it was.
pub fn bounded_error(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_ERROR_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mark = format!(" … [cut: {} bytes in all]", text.len());
    let mut end = MAX_ERROR_BYTES - mark.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{mark}", &text[..end]))
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
            Self::KeyMismatch => "key-mismatch",
            Self::UnsupportedContentType => "unsupported-content-type",
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
    pub const HEADERS_DROPPED: &str = "dlq_headers_dropped";
}

/// How much of the original record a dead letter carries: all of it, or less when the whole
/// would be too large to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shrink {
    /// Key, value and every header, as they were.
    Whole,
    /// Key and headers; the value is left out (`dlq_value_dropped: true`).
    WithoutValue,
    /// Only the `dlq_*` headers (`dlq_value_dropped` and `dlq_headers_dropped: true`).
    CoordinatesOnly,
}

/// A record on its way to the dead-letter topic.
pub struct DeadLetter<'a> {
    pub record: &'a OwnedMessage,
    pub reason: DeadLetterReason,
    pub error: String,
    pub service: &'a str,
    pub instance: &'a str,
    pub attempts: u32,
    /// How much of the record to carry ([`Shrink::Whole`] unless that was refused as too large).
    pub shrink: Shrink,
}

impl DeadLetter<'_> {
    /// The headers: the original ones, then the dead-letter ones.
    pub fn headers(&self) -> OwnedHeaders {
        let r = self.record;
        let mut out = OwnedHeaders::new();
        if let Some(hs) = r
            .headers()
            .filter(|_| self.shrink < Shrink::CoordinatesOnly)
        {
            for h in hs.iter() {
                out = out.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let added = [
            (headers::REASON, self.reason.as_str().to_owned()),
            (headers::ERROR, bounded_error(&self.error).into_owned()),
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
        if self.shrink >= Shrink::WithoutValue {
            out = out.insert(Header {
                key: headers::VALUE_DROPPED,
                value: Some(b"true"),
            });
        }
        if self.shrink >= Shrink::CoordinatesOnly {
            out = out.insert(Header {
                key: headers::HEADERS_DROPPED,
                value: Some(b"true"),
            });
        }
        out
    }

    /// The record to produce to `dlq_topic`: same key and value, original headers kept.
    pub fn record<'b>(&'b self, dlq_topic: &'b str) -> FutureRecord<'b, [u8], [u8]> {
        let mut rec = FutureRecord::to(dlq_topic).headers(self.headers());
        if let Some(k) = self
            .record
            .key()
            .filter(|_| self.shrink < Shrink::CoordinatesOnly)
        {
            rec = rec.key(k);
        }
        if let Some(v) = self
            .record
            .payload()
            .filter(|_| self.shrink == Shrink::Whole)
        {
            rec = rec.payload(v);
        }
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_with_a_mark_on_a_character_boundary() {
        assert_eq!(bounded_error("short"), "short");
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = bounded_error(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with(&format!("[cut: {} bytes in all]", long.len())));
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn a_dead_letter_shrinks_to_its_coordinates() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "ce_id",
            value: Some(&[b'x'; 10_000][..]),
        });
        let original = OwnedMessage::new(
            Some(vec![b'v'; 100_000]),
            Some(vec![b'k'; 50_000]),
            "t".into(),
            rdkafka::Timestamp::CreateTime(1),
            3,
            17,
            Some(headers),
        );
        let mut letter = DeadLetter {
            record: &original,
            reason: DeadLetterReason::SchemaInvalid,
            error: "e".repeat(1_000_000),
            service: "svc",
            instance: "svc-1",
            attempts: 0,
            shrink: Shrink::Whole,
        };
        let size = |l: &DeadLetter<'_>| {
            let r = l.record("t.dlq");
            let hs: usize = r
                .headers
                .as_ref()
                .map(|h| {
                    h.iter()
                        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                        .sum()
                })
                .unwrap_or(0);
            hs + r.key.map_or(0, <[u8]>::len) + r.payload.map_or(0, <[u8]>::len)
        };
        assert!(size(&letter) > 150_000);
        letter.shrink = Shrink::WithoutValue;
        assert!(size(&letter) > 50_000 && size(&letter) < 70_000);
        letter.shrink = Shrink::CoordinatesOnly;
        assert!(size(&letter) < MAX_ERROR_BYTES + 512, "{}", size(&letter));
        let r = letter.record("t.dlq");
        let names: Vec<&str> = r.headers.as_ref().unwrap().iter().map(|h| h.key).collect();
        assert!(names.iter().all(|n| n.starts_with("dlq_")), "{names:?}");
        assert!(names.contains(&headers::OFFSET) && names.contains(&headers::HEADERS_DROPPED));
    }
}
