//! The envelope: how an event maps onto a Kafka record.
//!
//! Choreograph speaks [CloudEvents 1.0] over the [Kafka protocol binding]. Events are written in
//! *binary mode*: the CloudEvents attributes travel as `ce_`-prefixed record headers, the data as
//! the record value, untouched, and the record key is the saga's correlation ID, so that every
//! event of one saga lands in the same partition number of every topic and stays in order.
//!
//! | header             | attribute                           | written                        |
//! |--------------------|-------------------------------------|--------------------------------|
//! | `ce_specversion`   | `specversion` (`1.0`)               | always                         |
//! | `ce_id`            | `id` (a UUIDv7)                     | always                         |
//! | `ce_type`          | `type`                              | always                         |
//! | `ce_source`        | `source` (`/services/<name>`)       | always                         |
//! | `ce_time`          | `time` (RFC 3339, UTC)              | always                         |
//! | `content-type`     | `datacontenttype`                   | always (`application/json`)    |
//! | `ce_correlationid` | `correlationid` (a UUID, the saga)  | always                         |
//! | `ce_causationid`   | `causationid` (the cause's `id`)    | when the event has a cause     |
//! | `ce_subject`       | `subject`                           | when set                       |
//! | `traceparent`      | W3C trace context                   | when a trace is active         |
//! | `tracestate`       | W3C trace state                     | with `traceparent`, when set   |
//!
//! Other `ce_` headers are kept as extension attributes. When reading, *structured mode*
//! (`content-type: application/cloudevents+json`, the whole event as a JSON object in the value)
//! is accepted too, as the binding requires.
//!
//! Decoding never panics: a record that is not a usable CloudEvent yields a [`DecodeError`] that
//! names the header or attribute at fault, so the runtime can dead-letter it with a reason.
//!
//! [CloudEvents 1.0]: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md
//! [Kafka protocol binding]: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// The CloudEvents version this crate reads and writes.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of event data written by Choreograph.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// The content type that marks a structured-mode record.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// Header names of the Kafka protocol binding (binary mode).
pub mod headers {
    pub const SPEC_VERSION: &str = "ce_specversion";
    pub const ID: &str = "ce_id";
    pub const TYPE: &str = "ce_type";
    pub const SOURCE: &str = "ce_source";
    pub const TIME: &str = "ce_time";
    pub const SUBJECT: &str = "ce_subject";
    pub const DATA_SCHEMA: &str = "ce_dataschema";
    pub const CORRELATION_ID: &str = "ce_correlationid";
    pub const CAUSATION_ID: &str = "ce_causationid";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    /// The prefix of every CloudEvents attribute header.
    pub const PREFIX: &str = "ce_";
}

/// The ID of a saga: every event of one business transaction carries it.
///
/// It is a UUID; Choreograph mints UUIDv7, whose first 48 bits are the creation time in
/// milliseconds, so a saga's start time can be read off its ID.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct CorrelationId(Uuid);

impl CorrelationId {
    /// A new correlation ID (UUIDv7) for a saga that starts now.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// When the saga started, for a UUIDv7 correlation ID.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        let ts = self.0.get_timestamp()?;
        let (secs, nanos) = ts.to_unix();
        DateTime::from_timestamp(secs as i64, nanos)
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for CorrelationId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// One CloudEvent as Choreograph carries it: the attributes, and the data as raw bytes.
///
/// The data stays bytes here; [`crate::Event`] types deserialize it when a handler needs them.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudEvent {
    /// `id`: unique per `source`. Choreograph writes UUIDv7s; any non-empty string is accepted.
    pub id: String,
    /// `source`: who emitted the event, e.g. `/services/coupon`.
    pub source: String,
    /// `type`: e.g. `registration.user.registered.v1`.
    pub event_type: String,
    /// `time`: when the event happened.
    pub time: DateTime<Utc>,
    /// `datacontenttype`: the media type of `data`.
    pub content_type: Option<String>,
    /// `subject`: optional, what the event is about within the source.
    pub subject: Option<String>,
    /// `dataschema`: optional URI of the data's schema.
    pub data_schema: Option<String>,
    /// `correlationid`: the saga this event belongs to.
    pub correlation_id: CorrelationId,
    /// `causationid`: the `id` of the event that caused this one; `None` for a saga's first event.
    pub causation_id: Option<String>,
    /// W3C `traceparent`, when the event was emitted inside a trace.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
    /// Other extension attributes (name without the `ce_` prefix).
    pub extensions: BTreeMap<String, String>,
    /// The data, as written (JSON for events written by Choreograph).
    pub data: Vec<u8>,
}

/// Which CloudEvents content mode a record used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentMode {
    Binary,
    Structured,
}

/// A record that is not a usable CloudEvent, and exactly why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("missing header `{0}`: not a CloudEvent in binary mode (and no structured-mode content-type)")]
    MissingHeader(&'static str),
    #[error("header `{header}` is not valid UTF-8")]
    HeaderNotUtf8 { header: String },
    #[error("header `{header}` has no value")]
    NullHeader { header: String },
    #[error("attribute `{attribute}` is empty")]
    EmptyAttribute { attribute: &'static str },
    #[error("unsupported CloudEvents specversion `{0}` (this reader understands 1.0)")]
    UnsupportedSpecVersion(String),
    #[error("attribute `{attribute}` is invalid: {reason} (value: `{value}`)")]
    InvalidAttribute {
        attribute: &'static str,
        value: String,
        reason: String,
    },
    #[error("structured-mode record: {0}")]
    Structured(String),
    #[error("structured-mode record: required attribute `{0}` is missing")]
    StructuredMissing(&'static str),
    /// A `ce_` header, or `content-type`, appears more than once (Kafka allows repeated headers;
    /// the binding maps each attribute to one header, so which one counts would be a guess).
    #[error("header `{header}` appears more than once")]
    RepeatedHeader { header: String },
    /// A `ce_` header whose name is not `ce_` + a CloudEvents attribute name (lower-case
    /// letters and digits).
    #[error("header `{header}` is not a CloudEvents attribute (after `ce_`, an attribute name is lower-case letters and digits)")]
    InvalidAttributeName { header: String },
    /// The data's content type is one a typed handler cannot decode (it reads JSON).
    #[error("content type `{content_type}` cannot be decoded: the handlers read JSON data (`application/json` or a `+json` type)")]
    UnsupportedContentType { content_type: String },
    /// The record key is not the correlation ID (see [`check_key`]).
    #[error("{}", key_mismatch_text(.key.as_deref(), .correlation_id))]
    KeyMismatch {
        /// The key (lossy UTF-8, clipped); `None` when the record has no key.
        key: Option<String>,
        correlation_id: CorrelationId,
    },
}

fn key_mismatch_text(key: Option<&str>, correlation_id: &CorrelationId) -> String {
    match key {
        None => format!("the record has no key; it must be the correlation ID `{correlation_id}` (every event of a saga is keyed by it)"),
        Some(k) => format!("the record key `{k}` is not the correlation ID `{correlation_id}` (every event of a saga is keyed by it, in this form)"),
    }
}

/// At most this many bytes of a header value or key are quoted in a [`DecodeError`].
const QUOTE_MAX: usize = 200;

/// `text`, cut to at most [`QUOTE_MAX`] bytes (on a character boundary) with a mark when cut.
fn clip(text: &str) -> String {
    if text.len() <= QUOTE_MAX {
        return text.to_owned();
    }
    let mut end = QUOTE_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// Checks the rule that ties a record to its saga: its key is the correlation ID, in the form
/// Choreograph writes it (a lower-case hyphenated UUID), so that every event of the saga shares
/// a partition number in every topic (per-saga state and tracing rely on it).
pub fn check_key(key: Option<&[u8]>, event: &CloudEvent) -> Result<(), DecodeError> {
    let mut expected = [0u8; uuid::fmt::Hyphenated::LENGTH];
    event
        .correlation_id
        .as_uuid()
        .hyphenated()
        .encode_lower(&mut expected);
    match key {
        Some(k) if k == &expected[..] => Ok(()),
        other => Err(DecodeError::KeyMismatch {
            key: other.map(|k| clip(&String::from_utf8_lossy(k))),
            correlation_id: event.correlation_id,
        }),
    }
}

/// Checks that a typed handler can decode the event's data: no `datacontenttype` (JSON is
/// assumed), `application/json`, or a `+json` type.
pub fn check_json_data(event: &CloudEvent) -> Result<(), DecodeError> {
    match event.content_type.as_deref() {
        None => Ok(()),
        Some(ct) if is_json_media(ct) => Ok(()),
        Some(ct) => Err(DecodeError::UnsupportedContentType {
            content_type: clip(ct),
        }),
    }
}

/// What can be read of a record that does not decode: enough to log its dead-lettering as a
/// step of its saga, when its correlation ID is readable.
#[derive(Clone, Debug, Default)]
pub(crate) struct Salvaged {
    pub correlation_id: Option<CorrelationId>,
    pub id: Option<String>,
    pub event_type: Option<String>,
    pub source: Option<String>,
    pub causation_id: Option<String>,
    pub time: Option<DateTime<Utc>>,
}

impl Salvaged {
    /// Reads what it can: binary-mode headers (the last of each, lossy UTF-8), else the
    /// attributes of a structured-mode JSON object. Never fails.
    pub(crate) fn of(record: RecordView<'_>) -> Self {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .rev()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| *v)
                .map(|v| clip(&String::from_utf8_lossy(v)))
                .filter(|v| !v.is_empty())
        };
        let mut out = Self {
            correlation_id: header(headers::CORRELATION_ID).and_then(|c| c.trim().parse().ok()),
            id: header(headers::ID),
            event_type: header(headers::TYPE),
            source: header(headers::SOURCE),
            causation_id: header(headers::CAUSATION_ID),
            time: header(headers::TIME).and_then(|t| parse_time(&t).ok()),
        };
        if out.correlation_id.is_none() {
            let json = record
                .value
                .filter(|v| v.first() == Some(&b'{'))
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok());
            if let Some(serde_json::Value::Object(map)) = json {
                let get = |name: &str| {
                    map.get(name)
                        .and_then(serde_json::Value::as_str)
                        .filter(|v| !v.is_empty())
                        .map(clip)
                };
                out = Self {
                    correlation_id: get("correlationid").and_then(|c| c.trim().parse().ok()),
                    id: get("id"),
                    event_type: get("type"),
                    source: get("source"),
                    causation_id: get("causationid"),
                    time: get("time").and_then(|t| parse_time(&t).ok()),
                };
            }
        }
        out
    }
}

/// A Kafka record as the envelope sees it: key, value and headers, borrowed.
///
/// This keeps the envelope independent of rdkafka's message types (and easy to fuzz).
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Header name and value (`None` for a null-valued header), in record order.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// The `id` of the `index`-th event that `source` emits in reaction to the event `cause_id`.
///
/// A UUIDv7 whose 48-bit time is `millis` (the cause's time) and whose other bits are a hash of
/// (cause, source, index): re-handling the same cause yields the same IDs, so a re-delivery
/// re-emits identical events (the same `ce_id`) that consumers can recognise as duplicates.
pub fn derived_event_id(cause_id: &str, source: &str, index: usize, millis: u64) -> String {
    use std::io::Write as _;
    // `cause\nsource\nindex`, on the stack for the usual lengths.
    let mut name = smallvec::SmallVec::<[u8; 192]>::new();
    let _ = write!(name, "{cause_id}\n{source}\n{index}");
    let hash = Uuid::new_v5(&Uuid::NAMESPACE_OID, &name);
    let mut rand = [0u8; 10];
    rand.copy_from_slice(&hash.as_bytes()[6..16]);
    uuid::Builder::from_unix_timestamp_millis(millis, &rand)
        .into_uuid()
        .to_string()
}

/// The attributes of an event that binary mode writes as headers, borrowed: the one definition of
/// which headers an event gets, in which order ([`CloudEvent::encode`], and the runtime's
/// follow-up events, which are written without building a [`CloudEvent`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeaderParts<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    pub time: DateTime<Utc>,
    pub correlation_id: CorrelationId,
    pub content_type: Option<&'a str>,
    pub causation_id: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub data_schema: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    pub extensions: Option<&'a BTreeMap<String, String>>,
}

/// A header's name as [`HeaderParts::visit`] gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderName<'a> {
    Known(&'static str),
    /// An extension attribute's name, without the `ce_` prefix.
    Extension(&'a str),
}

impl<'a> HeaderParts<'a> {
    pub fn of(event: &'a CloudEvent) -> Self {
        Self {
            id: &event.id,
            event_type: &event.event_type,
            source: &event.source,
            time: event.time,
            correlation_id: event.correlation_id,
            content_type: event.content_type.as_deref(),
            causation_id: event.causation_id.as_deref(),
            subject: event.subject.as_deref(),
            data_schema: event.data_schema.as_deref(),
            traceparent: event.traceparent.as_deref(),
            tracestate: event.tracestate.as_deref(),
            extensions: Some(&event.extensions),
        }
    }

    /// Calls `f` with every header, in the order they are written. (The time and correlation
    /// ID are formatted on the stack: nothing here allocates for an event without extensions.)
    pub fn visit(&self, mut f: impl FnMut(HeaderName<'_>, &str)) {
        use HeaderName::Known;
        f(Known(headers::SPEC_VERSION), SPEC_VERSION);
        f(Known(headers::ID), self.id);
        f(Known(headers::TYPE), self.event_type);
        f(Known(headers::SOURCE), self.source);
        let mut time = [0u8; RFC3339_NANOS_LEN];
        match write_rfc3339(self.time, Some(6), &mut time) {
            Some(len) => f(
                Known(headers::TIME),
                std::str::from_utf8(&time[..len]).unwrap_or_default(),
            ),
            None => f(
                Known(headers::TIME),
                &self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
        }
        let mut correlation = [0u8; uuid::fmt::Hyphenated::LENGTH];
        f(
            Known(headers::CORRELATION_ID),
            self.correlation_id
                .as_uuid()
                .hyphenated()
                .encode_lower(&mut correlation),
        );
        let optional = [
            (headers::CONTENT_TYPE, self.content_type),
            (headers::CAUSATION_ID, self.causation_id),
            (headers::SUBJECT, self.subject),
            (headers::DATA_SCHEMA, self.data_schema),
            (headers::TRACEPARENT, self.traceparent),
            (headers::TRACESTATE, self.tracestate),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                f(Known(name), v);
            }
        }
        for (k, v) in self.extensions.into_iter().flatten() {
            f(HeaderName::Extension(k), v);
        }
    }
}

/// Length of `YYYY-MM-DDTHH:MM:SS.fffffffffZ`.
const RFC3339_NANOS_LEN: usize = 30;

/// Writes `time` as RFC 3339 in UTC (`Z`) with `digits` fraction digits (`None`: chrono's
/// `AutoSi`, the shortest of 0, 3, 6 or 9 that is exact); returns the length written. `None`
/// for years outside 0–9999 and leap seconds (callers fall back to chrono).
fn write_rfc3339(
    time: DateTime<Utc>,
    digits: Option<usize>,
    buf: &mut [u8; RFC3339_NANOS_LEN],
) -> Option<usize> {
    use chrono::{Datelike, Timelike};
    let nanos = time.nanosecond();
    if !(0..=9999).contains(&time.year()) || nanos >= 1_000_000_000 {
        return None;
    }
    let digits = digits.unwrap_or(match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    });
    let mut put = |at: usize, digits: usize, mut n: u32| {
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, time.year() as u32);
    put(5, 2, time.month());
    put(8, 2, time.day());
    put(11, 2, time.hour());
    put(14, 2, time.minute());
    put(17, 2, time.second());
    let mut end = 19;
    if digits > 0 {
        put(20, digits, nanos / 10u32.pow(9 - digits as u32));
        buf[19] = b'.';
        end = 20 + digits;
    }
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (end, b'Z'),
    ] {
        buf[at] = c;
    }
    Some(end + 1)
}

/// Serializes a time exactly as chrono's serde support does (RFC 3339, `Z`, `AutoSi`
/// fraction), without going through `Display` (for the saga-log steps written per record).
pub(crate) fn serialize_time<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; RFC3339_NANOS_LEN];
    match write_rfc3339(*time, None, &mut buf) {
        Some(len) => serializer.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default()),
        None => serde::Serialize::serialize(time, serializer),
    }
}

/// The parts of a Kafka record that carry one event.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedRecord {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    pub extension_headers: Vec<(String, String)>,
}

impl CloudEvent {
    /// A new event with a fresh UUIDv7 `id` and the current time, with JSON data.
    pub fn new(
        source: impl Into<String>,
        event_type: impl Into<String>,
        correlation_id: CorrelationId,
        data: Vec<u8>,
    ) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            source: source.into(),
            event_type: event_type.into(),
            time: Utc::now(),
            content_type: Some(JSON_CONTENT_TYPE.to_owned()),
            subject: None,
            data_schema: None,
            correlation_id,
            causation_id: None,
            traceparent: None,
            tracestate: None,
            extensions: BTreeMap::new(),
            data,
        }
    }

    /// The record key: the correlation ID.
    pub fn key(&self) -> String {
        self.correlation_id.to_string()
    }

    /// Binary-mode encoding: key, value and headers.
    pub fn encode(&self) -> EncodedRecord {
        let mut headers = Vec::with_capacity(9);
        let mut extension_headers = Vec::new();
        HeaderParts::of(self).visit(|name, value| match name {
            HeaderName::Known(name) => headers.push((name, value.to_owned())),
            HeaderName::Extension(ext) => {
                extension_headers.push((format!("{}{ext}", headers::PREFIX), value.to_owned()))
            }
        });
        EncodedRecord {
            key: self.key(),
            value: self.data.clone(),
            headers,
            extension_headers,
        }
    }

    /// Decodes a record in binary or structured mode.
    pub fn decode(record: RecordView<'_>) -> Result<(Self, ContentMode), DecodeError> {
        if record
            .headers
            .iter()
            .filter(|(n, _)| *n == headers::CONTENT_TYPE)
            .nth(1)
            .is_some()
        {
            return Err(DecodeError::RepeatedHeader {
                header: headers::CONTENT_TYPE.to_owned(),
            });
        }
        let content_type = header_str(record.headers, headers::CONTENT_TYPE)?;
        if let Some(ct) = content_type {
            if is_structured(ct) {
                return decode_structured(record.value.unwrap_or_default())
                    .map(|e| (e, ContentMode::Structured));
            }
        }
        decode_binary(record).map(|e| (e, ContentMode::Binary))
    }
}

fn is_structured(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .map(|media| media.trim().eq_ignore_ascii_case(STRUCTURED_CONTENT_TYPE))
        .unwrap_or(false)
}

/// The value of a header, as UTF-8 (binary mode checks first, in [`check_headers`], that no
/// `ce_` header or `content-type` is repeated; for others, the last one wins).
fn header_str<'a>(
    headers: &'a [(&'a str, Option<&'a [u8]>)],
    name: &'static str,
) -> Result<Option<&'a str>, DecodeError> {
    match headers.iter().rev().find(|(n, _)| *n == name) {
        None => Ok(None),
        Some((_, None)) => Err(DecodeError::NullHeader {
            header: name.to_owned(),
        }),
        Some((_, Some(bytes))) => {
            std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| DecodeError::HeaderNotUtf8 {
                    header: name.to_owned(),
                })
        }
    }
}

fn required<'a>(
    headers: &'a [(&'a str, Option<&'a [u8]>)],
    name: &'static str,
    attribute: &'static str,
) -> Result<&'a str, DecodeError> {
    let value = header_str(headers, name)?.ok_or(DecodeError::MissingHeader(name))?;
    if value.is_empty() {
        return Err(DecodeError::EmptyAttribute { attribute });
    }
    Ok(value)
}

fn parse_time(value: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DecodeError::InvalidAttribute {
            attribute: "time",
            value: clip(value),
            reason: format!("not an RFC 3339 timestamp ({e})"),
        })
}

fn parse_correlation(value: &str) -> Result<CorrelationId, DecodeError> {
    value.parse().map_err(|e| DecodeError::InvalidAttribute {
        attribute: "correlationid",
        value: clip(value),
        reason: format!("not a UUID ({e})"),
    })
}

fn check_spec_version(value: &str) -> Result<(), DecodeError> {
    if value == SPEC_VERSION {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedSpecVersion(clip(value)))
    }
}

fn non_empty(value: Option<&str>, attribute: &'static str) -> Result<Option<String>, DecodeError> {
    match value {
        Some("") => Err(DecodeError::EmptyAttribute { attribute }),
        other => Ok(other.map(str::to_owned)),
    }
}

/// Binary mode: every `ce_` header (and `content-type`) appears once, has a value that is
/// UTF-8, and a `ce_` header's name is `ce_` + an attribute name (lower-case letters, digits).
fn check_headers(h: &[(&str, Option<&[u8]>)]) -> Result<(), DecodeError> {
    for (i, (name, value)) in h.iter().enumerate() {
        let attribute = name.strip_prefix(headers::PREFIX);
        if attribute.is_none() && *name != headers::CONTENT_TYPE {
            continue;
        }
        if h[..i].iter().any(|(n, _)| n == name) {
            return Err(DecodeError::RepeatedHeader { header: clip(name) });
        }
        if let Some(attribute) = attribute {
            let valid = !attribute.is_empty()
                && attribute
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !valid {
                return Err(DecodeError::InvalidAttributeName { header: clip(name) });
            }
        }
        match value {
            None => return Err(DecodeError::NullHeader { header: clip(name) }),
            Some(bytes) if std::str::from_utf8(bytes).is_err() => {
                return Err(DecodeError::HeaderNotUtf8 { header: clip(name) })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn decode_binary(record: RecordView<'_>) -> Result<CloudEvent, DecodeError> {
    let h = record.headers;
    check_headers(h)?;
    check_spec_version(required(h, headers::SPEC_VERSION, "specversion")?)?;
    let id = required(h, headers::ID, "id")?.to_owned();
    let event_type = required(h, headers::TYPE, "type")?.to_owned();
    let source = required(h, headers::SOURCE, "source")?.to_owned();
    let time = parse_time(required(h, headers::TIME, "time")?)?;
    let correlation_id = parse_correlation(required(h, headers::CORRELATION_ID, "correlationid")?)?;
    let causation_id = non_empty(header_str(h, headers::CAUSATION_ID)?, "causationid")?;
    let subject = non_empty(header_str(h, headers::SUBJECT)?, "subject")?;
    let data_schema = non_empty(header_str(h, headers::DATA_SCHEMA)?, "dataschema")?;
    let content_type = non_empty(header_str(h, headers::CONTENT_TYPE)?, "datacontenttype")?;
    let traceparent = header_str(h, headers::TRACEPARENT)?.map(str::to_owned);
    let tracestate = header_str(h, headers::TRACESTATE)?.map(str::to_owned);

    const KNOWN: [&str; 9] = [
        headers::SPEC_VERSION,
        headers::ID,
        headers::TYPE,
        headers::SOURCE,
        headers::TIME,
        headers::CORRELATION_ID,
        headers::CAUSATION_ID,
        headers::SUBJECT,
        headers::DATA_SCHEMA,
    ];
    let mut extensions = BTreeMap::new();
    for (name, value) in h {
        if let Some(ext) = name.strip_prefix(headers::PREFIX) {
            if KNOWN.contains(name) {
                continue;
            }
            // (check_headers made sure it has a UTF-8 value.)
            if let Some(Ok(v)) = value.map(std::str::from_utf8) {
                extensions.insert(ext.to_owned(), v.to_owned());
            }
        }
    }
    Ok(CloudEvent {
        id,
        source,
        event_type,
        time,
        content_type,
        subject,
        data_schema,
        correlation_id,
        causation_id,
        traceparent,
        tracestate,
        extensions,
        data: record.value.unwrap_or_default().to_vec(),
    })
}

fn decode_structured(value: &[u8]) -> Result<CloudEvent, DecodeError> {
    let json: serde_json::Value = serde_json::from_slice(value)
        .map_err(|e| DecodeError::Structured(format!("value is not JSON ({e})")))?;
    let serde_json::Value::Object(mut map) = json else {
        return Err(DecodeError::Structured("value is not a JSON object".into()));
    };
    fn take_str(
        map: &mut serde_json::Map<String, serde_json::Value>,
        name: &'static str,
    ) -> Result<Option<String>, DecodeError> {
        match map.remove(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(DecodeError::InvalidAttribute {
                attribute: name,
                value: clip(&other.to_string()),
                reason: "not a string".into(),
            }),
        }
    }
    fn take_required(
        map: &mut serde_json::Map<String, serde_json::Value>,
        name: &'static str,
    ) -> Result<String, DecodeError> {
        let v = take_str(map, name)?.ok_or(DecodeError::StructuredMissing(name))?;
        if v.is_empty() {
            return Err(DecodeError::EmptyAttribute { attribute: name });
        }
        Ok(v)
    }
    check_spec_version(&take_required(&mut map, "specversion")?)?;
    let id = take_required(&mut map, "id")?;
    let event_type = take_required(&mut map, "type")?;
    let source = take_required(&mut map, "source")?;
    let time = parse_time(&take_required(&mut map, "time")?)?;
    let correlation_id = parse_correlation(&take_required(&mut map, "correlationid")?)?;
    let causation_id = non_empty(take_str(&mut map, "causationid")?.as_deref(), "causationid")?;
    let subject = non_empty(take_str(&mut map, "subject")?.as_deref(), "subject")?;
    let data_schema = non_empty(take_str(&mut map, "dataschema")?.as_deref(), "dataschema")?;
    let content_type = non_empty(
        take_str(&mut map, "datacontenttype")?.as_deref(),
        "datacontenttype",
    )?;
    let traceparent = take_str(&mut map, "traceparent")?;
    let tracestate = take_str(&mut map, "tracestate")?;
    let data = match (map.remove("data"), map.remove("data_base64")) {
        (Some(_), Some(_)) => {
            return Err(DecodeError::Structured(
                "both `data` and `data_base64` are present".into(),
            ))
        }
        (None, Some(serde_json::Value::String(b64))) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| DecodeError::InvalidAttribute {
                attribute: "data_base64",
                value: b64.chars().take(64).collect(),
                reason: format!("not base64 ({e})"),
            })?,
        (None, Some(other)) => {
            return Err(DecodeError::InvalidAttribute {
                attribute: "data_base64",
                value: clip(&other.to_string()),
                reason: "not a string".into(),
            })
        }
        // A JSON string is the data itself when the content type is not JSON.
        (Some(serde_json::Value::String(s)), None)
            if !content_type.as_deref().map(is_json_media).unwrap_or(true) =>
        {
            s.into_bytes()
        }
        (Some(v), None) => serde_json::to_vec(&v).unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    let mut extensions = BTreeMap::new();
    for (name, value) in map {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        extensions.insert(name, text);
    }
    Ok(CloudEvent {
        id,
        source,
        event_type,
        time,
        // The data of a structured record read back is JSON unless it says otherwise.
        content_type: content_type.or_else(|| Some(JSON_CONTENT_TYPE.to_owned())),
        subject,
        data_schema,
        correlation_id,
        causation_id,
        traceparent,
        tracestate,
        extensions,
        data,
    })
}

fn is_json_media(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
}

/// Structured-mode encoding (`application/cloudevents+json`), for interoperability and tests.
///
/// Choreograph writes binary mode; this exists so producers that need structured mode, and the
/// tests that prove both decode alike, share one definition. JSON data is embedded as JSON,
/// anything else as `data_base64`.
pub fn encode_structured(event: &CloudEvent) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        map.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    };
    put("specversion", SPEC_VERSION);
    put("id", &event.id);
    put("type", &event.event_type);
    put("source", &event.source);
    put(
        "time",
        &event.time.to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    put("correlationid", &event.correlation_id.to_string());
    let optional = [
        ("causationid", &event.causation_id),
        ("subject", &event.subject),
        ("dataschema", &event.data_schema),
        ("datacontenttype", &event.content_type),
        ("traceparent", &event.traceparent),
        ("tracestate", &event.tracestate),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            put(k, v);
        }
    }
    for (k, v) in &event.extensions {
        put(k, v);
    }
    let json_data = event
        .content_type
        .as_deref()
        .map(is_json_media)
        .unwrap_or(true);
    match serde_json::from_slice::<serde_json::Value>(&event.data) {
        Ok(v) if json_data => {
            map.insert("data".into(), v);
        }
        _ if event.data.is_empty() => {}
        _ => {
            map.insert(
                "data_base64".into(),
                serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(&event.data),
                ),
            );
        }
    }
    serde_json::to_vec(&serde_json::Value::Object(map)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> CloudEvent {
        let mut e = CloudEvent::new(
            "/services/user",
            "registration.user.registered.v1",
            CorrelationId::new(),
            br#"{"user_id":"u-1","email":"a@example.com"}"#.to_vec(),
        );
        e.causation_id = Some(Uuid::now_v7().to_string());
        e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        e.extensions.insert("tenant".into(), "acme".into());
        e
    }

    fn view_of(rec: &EncodedRecord) -> Vec<(String, Vec<u8>)> {
        rec.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .chain(
                rec.extension_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_bytes().to_vec())),
            )
            .collect()
    }

    fn decode_owned(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Vec<u8>>)],
    ) -> Result<(CloudEvent, ContentMode), DecodeError> {
        let hs: Vec<(&str, Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        CloudEvent::decode(RecordView {
            key,
            value,
            headers: &hs,
        })
    }

    #[test]
    fn binary_round_trip() {
        let e = sample();
        let rec = e.encode();
        assert_eq!(rec.key, e.correlation_id.to_string());
        let hs: Vec<_> = view_of(&rec)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        let (back, mode) = decode_owned(Some(rec.key.as_bytes()), Some(&rec.value), &hs).unwrap();
        assert_eq!(mode, ContentMode::Binary);
        // Time is written with microsecond precision.
        let mut expected = e.clone();
        expected.time = parse_time(&e.time.to_rfc3339_opts(SecondsFormat::Micros, true)).unwrap();
        assert_eq!(back, expected);
    }

    #[test]
    fn structured_decodes_like_binary() {
        let e = sample();
        let rec = e.encode();
        let hs: Vec<_> = view_of(&rec)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        let (binary, _) = decode_owned(None, Some(&rec.value), &hs).unwrap();
        let structured_value = encode_structured(&e);
        let sh = vec![(
            "content-type".to_string(),
            Some(b"application/cloudevents+json; charset=utf-8".to_vec()),
        )];
        let (mut structured, mode) = decode_owned(None, Some(&structured_value), &sh).unwrap();
        assert_eq!(mode, ContentMode::Structured);
        // Embedded JSON data is re-serialized: equal as JSON, not necessarily byte for byte.
        let as_json = |d: &[u8]| serde_json::from_slice::<serde_json::Value>(d).unwrap();
        assert_eq!(as_json(&structured.data), as_json(&binary.data));
        structured.data = binary.data.clone();
        assert_eq!(structured, binary);
    }

    #[test]
    fn structured_base64_data() {
        let mut e = sample();
        e.content_type = Some("application/octet-stream".into());
        e.data = vec![0, 159, 146, 150];
        let v = encode_structured(&e);
        let sh = vec![(
            "content-type".to_string(),
            Some(STRUCTURED_CONTENT_TYPE.as_bytes().to_vec()),
        )];
        let (back, _) = decode_owned(None, Some(&v), &sh).unwrap();
        assert_eq!(back.data, e.data);
    }

    fn without(rec: &EncodedRecord, header: &str) -> Vec<(String, Option<Vec<u8>>)> {
        view_of(rec)
            .into_iter()
            .filter(|(k, _)| k != header)
            .map(|(k, v)| (k, Some(v)))
            .collect()
    }

    #[test]
    fn each_missing_required_header_is_named() {
        let rec = sample().encode();
        for h in [
            headers::SPEC_VERSION,
            headers::ID,
            headers::TYPE,
            headers::SOURCE,
            headers::TIME,
            headers::CORRELATION_ID,
        ] {
            let err = decode_owned(None, Some(&rec.value), &without(&rec, h)).unwrap_err();
            assert_eq!(err, DecodeError::MissingHeader(h));
            assert!(err.to_string().contains(h), "{err}");
        }
    }

    #[test]
    fn bad_attributes_are_named() {
        let rec = sample().encode();
        let mut hs = without(&rec, headers::TIME);
        hs.push((headers::TIME.into(), Some(b"yesterday".to_vec())));
        let err = decode_owned(None, None, &hs).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::InvalidAttribute {
                    attribute: "time",
                    ..
                }
            ),
            "{err}"
        );

        let mut hs = without(&rec, headers::SPEC_VERSION);
        hs.push((headers::SPEC_VERSION.into(), Some(b"0.3".to_vec())));
        let err = decode_owned(None, None, &hs).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedSpecVersion("0.3".into()));

        let mut hs = without(&rec, headers::CORRELATION_ID);
        hs.push((headers::CORRELATION_ID.into(), Some(b"saga-1".to_vec())));
        let err = decode_owned(None, None, &hs).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::InvalidAttribute {
                attribute: "correlationid",
                ..
            }
        ));

        let mut hs = without(&rec, headers::ID);
        hs.push((headers::ID.into(), Some(vec![0xff, 0xfe])));
        let err = decode_owned(None, None, &hs).unwrap_err();
        assert_eq!(
            err,
            DecodeError::HeaderNotUtf8 {
                header: "ce_id".into()
            }
        );

        let mut hs = without(&rec, headers::ID);
        hs.push((headers::ID.into(), None));
        assert_eq!(
            decode_owned(None, None, &hs).unwrap_err(),
            DecodeError::NullHeader {
                header: "ce_id".into()
            }
        );

        let mut hs = without(&rec, headers::ID);
        hs.push((headers::ID.into(), Some(Vec::new())));
        assert_eq!(
            decode_owned(None, None, &hs).unwrap_err(),
            DecodeError::EmptyAttribute { attribute: "id" }
        );
    }

    #[test]
    fn strict_header_rules_are_named() {
        let e = sample();
        let rec = e.encode();
        let base: Vec<(String, Option<Vec<u8>>)> = view_of(&rec)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        let decode = |hs: &[(String, Option<Vec<u8>>)]| decode_owned(None, Some(&rec.value), hs);

        // Two `ce_id` headers: which one counts would be a guess.
        let mut hs = base.clone();
        hs.push((headers::ID.into(), Some(b"another-id".to_vec())));
        assert_eq!(
            decode(&hs).unwrap_err(),
            DecodeError::RepeatedHeader {
                header: "ce_id".into()
            }
        );
        // Two `content-type` headers, in either mode.
        let mut hs = base.clone();
        hs.push(("content-type".into(), Some(b"application/json".to_vec())));
        hs.push(("content-type".into(), Some(b"application/json".to_vec())));
        assert_eq!(
            decode(&hs).unwrap_err(),
            DecodeError::RepeatedHeader {
                header: "content-type".into()
            }
        );
        // A non-UTF-8 extension value, and a null one.
        let mut hs = base.clone();
        hs.push(("ce_tenant2".into(), Some(vec![0xc3, 0x28])));
        assert_eq!(
            decode(&hs).unwrap_err(),
            DecodeError::HeaderNotUtf8 {
                header: "ce_tenant2".into()
            }
        );
        let mut hs = base.clone();
        hs.push(("ce_tenant2".into(), None));
        assert_eq!(
            decode(&hs).unwrap_err(),
            DecodeError::NullHeader {
                header: "ce_tenant2".into()
            }
        );
        // A `ce_` name that is no attribute name.
        for bad in ["ce_", "ce_Tenant", "ce_ten-ant", "ce_ténant"] {
            let mut hs = base.clone();
            hs.push((bad.into(), Some(b"x".to_vec())));
            assert_eq!(
                decode(&hs).unwrap_err(),
                DecodeError::InvalidAttributeName { header: bad.into() },
                "{bad}"
            );
        }
        // Headers outside the binding are the producer's business: repeated or binary is fine.
        let mut hs = base.clone();
        hs.push(("x-trace".into(), Some(vec![0xff])));
        hs.push(("x-trace".into(), None));
        decode(&hs).unwrap();
        // Empty optional attributes.
        for (header, attribute) in [
            (headers::SUBJECT, "subject"),
            (headers::DATA_SCHEMA, "dataschema"),
            (headers::CAUSATION_ID, "causationid"),
            ("content-type", "datacontenttype"),
        ] {
            let mut hs = without(&rec, header);
            hs.push((header.into(), Some(Vec::new())));
            assert_eq!(
                decode(&hs).unwrap_err(),
                DecodeError::EmptyAttribute { attribute },
                "{header}"
            );
        }
        // The same in structured mode.
        let sh = vec![(
            "content-type".to_string(),
            Some(STRUCTURED_CONTENT_TYPE.as_bytes().to_vec()),
        )];
        let mut json: serde_json::Value = serde_json::from_slice(&encode_structured(&e)).unwrap();
        json["subject"] = "".into();
        let err = decode_owned(None, Some(&serde_json::to_vec(&json).unwrap()), &sh).unwrap_err();
        assert_eq!(
            err,
            DecodeError::EmptyAttribute {
                attribute: "subject"
            }
        );
    }

    #[test]
    fn key_and_content_type_rules() {
        let mut e = sample();
        let key = e.correlation_id.to_string();
        check_key(Some(key.as_bytes()), &e).unwrap();
        assert_eq!(
            check_key(None, &e).unwrap_err(),
            DecodeError::KeyMismatch {
                key: None,
                correlation_id: e.correlation_id
            }
        );
        let upper = key.to_uppercase();
        let err = check_key(Some(upper.as_bytes()), &e).unwrap_err();
        assert!(err.to_string().contains(&upper), "{err}");
        let long = vec![b'k'; 10_000];
        let err = check_key(Some(&long), &e).unwrap_err();
        assert!(err.to_string().len() < 600, "{err}");
        assert!(err.to_string().contains("10000 bytes in all"), "{err}");

        check_json_data(&e).unwrap();
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.acme+json",
        ] {
            e.content_type = Some(ok.into());
            check_json_data(&e).unwrap();
        }
        e.content_type = Some("text/plain".into());
        assert_eq!(
            check_json_data(&e).unwrap_err(),
            DecodeError::UnsupportedContentType {
                content_type: "text/plain".into()
            }
        );
    }

    #[test]
    fn quoted_values_are_clipped() {
        let rec = sample().encode();
        let mut hs = without(&rec, headers::TIME);
        hs.push((headers::TIME.into(), Some(vec![b'9'; 1_000_000])));
        let err = decode_owned(None, None, &hs).unwrap_err();
        assert!(
            err.to_string().len() < 1_000,
            "{} bytes",
            err.to_string().len()
        );
    }

    #[test]
    fn salvage_reads_what_it_can() {
        let e = sample();
        let rec = e.encode();
        let mut hs = without(&rec, headers::TYPE);
        hs.push((headers::TYPE.into(), Some(Vec::new())));
        let hv: Vec<(&str, Option<&[u8]>)> =
            hs.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let s = Salvaged::of(RecordView {
            key: None,
            value: Some(&rec.value),
            headers: &hv,
        });
        assert_eq!(s.correlation_id, Some(e.correlation_id));
        assert_eq!(s.id.as_deref(), Some(e.id.as_str()));
        assert_eq!(s.event_type, None);
        let structured = encode_structured(&e);
        let s = Salvaged::of(RecordView {
            key: None,
            value: Some(&structured),
            headers: &[],
        });
        assert_eq!(s.correlation_id, Some(e.correlation_id));
        assert_eq!(s.event_type.as_deref(), Some(e.event_type.as_str()));
        let s = Salvaged::of(RecordView {
            key: None,
            value: Some(b"\xff garbage"),
            headers: &[],
        });
        assert_eq!(s.correlation_id, None);
    }

    #[test]
    fn structured_errors_are_named() {
        let sh = vec![(
            "content-type".to_string(),
            Some(STRUCTURED_CONTENT_TYPE.as_bytes().to_vec()),
        )];
        let err = decode_owned(None, Some(b"not json"), &sh).unwrap_err();
        assert!(matches!(err, DecodeError::Structured(_)));
        let err = decode_owned(None, Some(br#"{"specversion":"1.0","id":"x"}"#), &sh).unwrap_err();
        assert_eq!(err, DecodeError::StructuredMissing("type"));
        let err = decode_owned(None, Some(br#"{"specversion":1}"#), &sh).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::InvalidAttribute {
                attribute: "specversion",
                ..
            }
        ));
    }

    #[test]
    fn derived_ids_are_stable_v7_and_distinct() {
        let a = derived_event_id("cause", "/services/x", 0, 1_700_000_000_000);
        assert_eq!(
            a,
            derived_event_id("cause", "/services/x", 0, 1_700_000_000_000)
        );
        assert_ne!(
            a,
            derived_event_id("cause", "/services/x", 1, 1_700_000_000_000)
        );
        assert_ne!(
            a,
            derived_event_id("cause", "/services/y", 0, 1_700_000_000_000)
        );
        let u = Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.get_timestamp().unwrap().to_unix().0, 1_700_000_000);
    }

    #[test]
    fn correlation_id_knows_its_start_time() {
        let before = Utc::now() - chrono::Duration::milliseconds(2);
        let id = CorrelationId::new();
        let started = id.started_at().unwrap();
        assert!(started >= before && started <= Utc::now());
    }

    fn arb_headers() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
        let name = prop_oneof![
            Just("ce_specversion".to_string()),
            Just("ce_id".to_string()),
            Just("ce_type".to_string()),
            Just("ce_source".to_string()),
            Just("ce_time".to_string()),
            Just("ce_correlationid".to_string()),
            Just("ce_causationid".to_string()),
            Just("content-type".to_string()),
            Just("traceparent".to_string()),
            "ce_[a-z]{0,6}",
            ".{0,12}",
        ];
        let value = prop_oneof![
            Just(Some(b"1.0".to_vec())),
            Just(Some(b"application/cloudevents+json".to_vec())),
            Just(Some(b"2026-11-24T12:00:00Z".to_vec())),
            Just(Some(b"0190f5a0-1d1c-7cc3-8a51-58b1c1e2c3d4".to_vec())),
            Just(None),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
        ];
        proptest::collection::vec((name, value), 0..14)
    }

    fn arb_value() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            Just(None),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(Some),
            // JSON-ish structured payloads with random fields.
            (
                prop_oneof![Just("1.0"), Just("0.3"), Just("")],
                ".{0,8}",
                prop_oneof![Just("2026-11-24T12:00:00Z"), Just("nope")],
                prop_oneof![Just(r#""data":{"a":1}"#), Just(r#""data_base64":"%%""#), Just(r#""data":"x""#), Just("")],
            )
                .prop_map(|(sv, id, t, data)| {
                    let sep = if data.is_empty() { "" } else { "," };
                    Some(format!(
                        r#"{{"specversion":"{sv}","id":{id:?},"type":"t","source":"/s","time":"{t}","correlationid":"0190f5a0-1d1c-7cc3-8a51-58b1c1e2c3d4"{sep}{data}}}"#
                    ).into_bytes())
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The stack-serialized time is chrono's serde text.
        #[test]
        fn time_serialization_matches_chrono(
            secs in -62_167_219_200i64..253_402_300_800i64 * 2,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000), (0u32..1_000_000).prop_map(|u| u * 1000), 0u32..2_000_000_000],
        ) {
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                let mut ours = serde_json::Serializer::new(Vec::new());
                serialize_time(&t, &mut ours).unwrap();
                prop_assert_eq!(ours.into_inner(), serde_json::to_vec(&t).unwrap());
            }
        }

        /// The stack-formatted time is chrono's RFC 3339 text, or declines.
        #[test]
        fn time_formatting_matches_chrono(
            secs in -62_167_219_200i64..253_402_300_800i64 * 2,
            nanos in 0u32..2_000_000_000,
        ) {
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                let mut buf = [0u8; RFC3339_NANOS_LEN];
                let chrono = t.to_rfc3339_opts(SecondsFormat::Micros, true);
                match write_rfc3339(t, Some(6), &mut buf) {
                    Some(len) => prop_assert_eq!(&buf[..len], chrono.as_bytes()),
                    None => prop_assert!(!(0..=9999).contains(&chrono::Datelike::year(&t)) || nanos >= 1_000_000_000),
                }
            }
        }

        /// The decoder never panics, whatever the bytes and headers.
        #[test]
        fn decoder_total_on_arbitrary_records(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            value in arb_value(),
            headers in arb_headers(),
        ) {
            let _ = decode_owned(key.as_deref(), value.as_deref(), &headers);
        }

        /// Every event that encodes decodes back to itself (time at microsecond precision).
        #[test]
        fn encode_decode_round_trip(
            id in "[a-zA-Z0-9-]{1,40}",
            source in "/[a-z/]{1,20}",
            event_type in "[a-z.]{1,30}",
            causation in proptest::option::of("[a-z0-9-]{1,36}"),
            subject in proptest::option::of(".{1,20}"),
            data in proptest::collection::vec(any::<u8>(), 0..100),
            secs in 0i64..4_000_000_000,
            micros in 0u32..1_000_000,
        ) {
            let mut e = CloudEvent::new(source, event_type, CorrelationId::new(), data);
            e.id = id;
            e.causation_id = causation;
            e.subject = subject;
            e.time = DateTime::from_timestamp(secs, micros * 1000).unwrap();
            let rec = e.encode();
            let hs: Vec<_> = view_of(&rec).into_iter().map(|(k, v)| (k, Some(v))).collect();
            let (back, _) = decode_owned(Some(rec.key.as_bytes()), Some(&rec.value), &hs).unwrap();
            prop_assert_eq!(back, e);
        }
    }
}
