//! The event catalogue: one JSON Schema per event type and version, the contract between
//! services.
//!
//! Each document in `schemas/` is a JSON Schema (draft 2020-12) of an event's data, plus an
//! `x-choreograph` block that places the event in the choreography:
//!
//! ```json
//! {
//!   "$schema": "https://json-schema.org/draft/2020-12/schema",
//!   "title": "UserRegistered",
//!   "type": "object",
//!   "properties": { "user_id": { "type": "string" } },
//!   "required": ["user_id"],
//!   "x-choreograph": {
//!     "type": "registration.user.registered.v1",
//!     "topic": "registration.user",
//!     "producer": "user",
//!     "consumers": ["activity"],
//!     "ends-saga": null
//!   }
//! }
//! ```
//!
//! `ends-saga` is `completed`, `failed` or `compensated` for the events that end a saga, `null`
//! otherwise. Services validate what they consume and emit against it, publishers (the CLI
//! too) what they publish, and the CLI reads event types and topics from it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How a saga ended, as its terminal event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SagaOutcome {
    Completed,
    Failed,
    Compensated,
}

/// Where an event sits in the choreography (the `x-choreograph` block).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(rename = "type")]
    pub event_type: String,
    pub topic: String,
    /// The service that emits it (`null` for an event published from outside, e.g. the CLI).
    #[serde(default)]
    pub producer: Option<String>,
    /// The services expected to handle it.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Set on the events that end a saga.
    #[serde(rename = "ends-saga", default)]
    pub ends_saga: Option<SagaOutcome>,
}

/// One catalogue entry: placement, schema document and its compiled validator.
#[derive(Clone)]
pub struct Entry {
    pub placement: Placement,
    /// The whole schema document.
    pub document: serde_json::Value,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("placement", &self.placement)
            .finish()
    }
}

/// The catalogue could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read the catalogue at {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("schema `{name}`: {reason}")]
    Invalid { name: String, reason: String },
    #[error("event type `{event_type}` is defined twice (in `{first}` and `{second}`)")]
    Duplicate {
        event_type: String,
        first: String,
        second: String,
    },
}

/// Data that breaks its event type's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data of `{event_type}` breaks its schema: {}", .errors.join("; "))]
pub struct SchemaViolation {
    pub event_type: String,
    /// One line per violation: `<JSON pointer>: <what is wrong>`.
    pub errors: Vec<String>,
}

/// Every event type of the choreography, by type.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    entries: BTreeMap<String, (String, Entry)>,
}

impl Catalogue {
    /// Reads every `*.json` file of a directory.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, CatalogueError> {
        let dir = dir.as_ref();
        let read_err = |e: std::io::Error| CatalogueError::Read {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().map(|e| e == "json").unwrap_or(false))
            .collect();
        files.sort();
        let mut docs = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| CatalogueError::Read {
                path: f.display().to_string(),
                reason: e.to_string(),
            })?;
            docs.push((
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                text,
            ));
        }
        Self::from_documents(docs.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    }

    /// Builds a catalogue from `(name, JSON text)` documents (e.g. embedded with `include_str!`).
    pub fn from_documents<'a>(
        documents: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CatalogueError> {
        let mut entries: BTreeMap<String, (String, Entry)> = BTreeMap::new();
        for (name, text) in documents {
            let invalid = |reason: String| CatalogueError::Invalid {
                name: name.to_owned(),
                reason,
            };
            let document: serde_json::Value =
                serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
            let placement = document
                .get("x-choreograph")
                .ok_or_else(|| invalid("no `x-choreograph` block (type, topic, ...)".into()))?;
            let placement: Placement = serde_json::from_value(placement.clone())
                .map_err(|e| invalid(format!("bad `x-choreograph` block: {e}")))?;
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&document)
                .map_err(|e| invalid(format!("not a valid JSON Schema: {e}")))?;
            let event_type = placement.event_type.clone();
            if let Some((first, _)) = entries.get(&event_type) {
                return Err(CatalogueError::Duplicate {
                    event_type,
                    first: first.clone(),
                    second: name.to_owned(),
                });
            }
            entries.insert(
                event_type,
                (
                    name.to_owned(),
                    Entry {
                        placement,
                        document,
                        validator: Arc::new(validator),
                    },
                ),
            );
        }
        Ok(Self { entries })
    }

    pub fn get(&self, event_type: &str) -> Option<&Entry> {
        self.entries.get(event_type).map(|(_, e)| e)
    }

    /// Every entry, by event type.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|(_, e)| e)
    }

    /// Every topic of the choreography.
    pub fn topics(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.entries().map(|e| e.placement.topic.as_str()).collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Validates event data (JSON bytes) against its type's schema. Types the catalogue does
    /// not know pass (the catalogue constrains what it describes).
    pub fn validate(&self, event_type: &str, data: &[u8]) -> Result<(), SchemaViolation> {
        let Some(entry) = self.get(event_type) else {
            return Ok(());
        };
        let value: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| SchemaViolation {
                event_type: event_type.to_owned(),
                errors: vec![format!("not JSON: {e}")],
            })?;
        let errors: Vec<String> = entry
            .validator
            .iter_errors(&value)
            .map(|e| {
                let at = e.instance_path().to_string();
                // An error quotes the offending value, which can be the whole data: keep both
                // ends (what it was, what it should be) of a long one.
                let full = e.to_string();
                let text = clip_middle(&full, 400);
                format!("{}: {text}", if at.is_empty() { "/" } else { &at })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SchemaViolation {
                event_type: event_type.to_owned(),
                errors,
            })
        }
    }
}

/// `text`, when longer than `max` bytes, as its first and last `max / 2` bytes (on character
/// boundaries) around a mark saying how long it was.
fn clip_middle(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut head = max / 2;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - max / 2;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} … [{} bytes cut] … {}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Ping",
        "type": "object",
        "properties": { "n": { "type": "integer", "minimum": 0 }, "email": { "type": "string", "format": "email" } },
        "required": ["n"],
        "additionalProperties": false,
        "x-choreograph": { "type": "test.ping.v1", "topic": "test.ping", "producer": "a", "consumers": ["b"], "ends-saga": "completed" }
    }"#;

    #[test]
    fn validates_data_and_names_the_violation() {
        let c = Catalogue::from_documents([("ping.json", DOC)]).unwrap();
        let e = c.get("test.ping.v1").unwrap();
        assert_eq!(e.placement.topic, "test.ping");
        assert_eq!(e.placement.ends_saga, Some(SagaOutcome::Completed));
        assert!(c.validate("test.ping.v1", br#"{"n":1}"#).is_ok());
        assert!(c.validate("unknown.v1", b"whatever").is_ok());
        let err = c
            .validate("test.ping.v1", br#"{"n":-1,"x":2}"#)
            .unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err}");
        assert!(err.to_string().contains("/n"), "{err}");
        let err = c
            .validate("test.ping.v1", br#"{"n":1,"email":"not an address"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("/email"), "{err}");
        // A long offending value is quoted by its ends: what it was and what it should be.
        let long = format!(r#"{{"n":"{}"}}"#, "x".repeat(100_000));
        let err = c.validate("test.ping.v1", long.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 1_000, "{} bytes", text.len());
        assert!(
            text.contains("is not of type") && text.contains("bytes cut"),
            "{text}"
        );
    }

    #[test]
    fn refuses_bad_documents_clearly() {
        let err = Catalogue::from_documents([("x.json", "{")]).unwrap_err();
        assert!(err.to_string().contains("x.json"));
        let err = Catalogue::from_documents([("x.json", r#"{"type":"object"}"#)]).unwrap_err();
        assert!(err.to_string().contains("x-choreograph"));
        let err = Catalogue::from_documents([("a.json", DOC), ("b.json", DOC)]).unwrap_err();
        assert!(matches!(err, CatalogueError::Duplicate { .. }));
    }
}
