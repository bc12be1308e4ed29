//! The saga log: one step record per event a service handled, so a saga can be traced without
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
//! `outcome` is `handled`, `retried` (one record per failed attempt that will be retried),
//! `dead-lettered` (with `error` and `dead_letter_reason`), `skipped` (a structured-mode
//! event of a type the service does not handle) or `duplicate` (a redelivered event the
//! service had handled already: acknowledged without running the handler, see
//! [`crate::idempotency`]). Records the consumer skips by their
//! `ce_type` header without reading them are not logged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
