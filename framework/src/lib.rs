//! Choreograph: event-driven choreography (sagas without a coordinator) on Apache Kafka.
//!
//! Every service embeds a small runtime that subscribes to the topics of the events it handles,
//! hands each event to a typed handler and publishes the follow-up events. A saga's correlation
//! ID, carried by every event (and used as the record key), ties a business transaction
//! together; a causation ID links each event to the one that caused it.
//!
//! Modules, one concern each:
//! - [`envelope`]: CloudEvents 1.0 on the Kafka protocol binding (binary mode), decoding with
//!   typed errors.
//! - [`event`]: typed events (a Rust type with a CloudEvents type and a topic).
//! - [`publish`]: the [`Publisher`] (`acks=all`, idempotent).
//! - [`handler`]: handlers as plain async functions, their [`handler::Context`] and what they emit.
//! - [`runtime`]: the [`runtime::Service`] that subscribes, dispatches, publishes and commits.
//! - [`delivery`]: per-partition contiguous offset watermarks (at-least-once bookkeeping).
//! - [`dead_letter`]: records that cannot be handled, set aside with the reason.
//! - [`dlq`]: listing and replaying dead letters (once each).
//! - [`catalogue`]: the event catalogue (JSON Schemas with type, topic and saga role).
//! - [`schema`]: the catalogue's documents generated from the Rust types (`#[derive(Event)]` +
//!   schemars), written to or checked against a directory.
//! - [`saga_log`]: one step per handled event (batched under load), the basis of tracing a saga.
//! - [`saga_state`]: per-saga state, durable in a compacted changelog, co-partitioned.
//! - [`idempotency`]: which events a service handled, by `(ce_source, ce_id)`, durable and
//!   bounded, so redelivered events do not run handlers twice.
//! - [`config`]: bootstrap servers, librdkafka pass-through properties, topic defaults.
//! - [`topics`]: topic lookup and creation through the admin API.
//! - [`trace_context`]: W3C `traceparent` propagation.
//! - [`embedded`]: librdkafka's in-process mock cluster, for the demo and quick tests.
//! - [`record`]: rdkafka message ↔ envelope glue, header values, reading a topic to its end.
//! - [`testkit`]: helpers for tests against a real broker.
//! - [`watch`]: observing sagas from the outside (grouping events by saga, noting ends).
//! - [`trace`]: tracing one saga by correlation ID (causal tree, timeline, status), listing sagas.

// `#[derive(Event)]` expands to `::choreograph::...` paths; this makes them resolve here too.
extern crate self as choreograph;

pub mod catalogue;
pub mod config;
pub mod dead_letter;
pub mod delivery;
pub mod dlq;
pub mod embedded;
pub mod envelope;
pub mod event;
pub mod handler;
pub mod idempotency;
pub mod publish;
pub mod record;
pub mod runtime;
pub mod saga_log;
pub mod saga_state;
pub mod schema;
pub mod testkit;
pub mod topics;
pub mod trace;
pub mod trace_context;
pub mod watch;

pub use catalogue::{Catalogue, SagaOutcome, SchemaViolation};
pub use config::{ConfigError, KafkaConfig, TopicSettings};
pub use envelope::{CloudEvent, ContentMode, CorrelationId, DecodeError};
// `Event` is both the trait and its derive macro (`event` re-exports `choreograph_derive::Event`).
pub use event::{DataError, Event};
pub use handler::{Context, Emit, HandlerError, State};
pub use idempotency::Idempotency;
pub use publish::{PublishError, Published, Publisher};
/// The Kafka client the framework is built on, for what a user must touch (a dead letter's
/// record, `rdkafka::Message` to read it, client properties): the same version, no dependency
/// of one's own to keep in step.
pub use rdkafka;
pub use runtime::{
    NotReady, NotReadyCause, ReadySignal, RetryPolicy, Service, ServiceError, ServiceOptions,
    ShutdownHandle,
};
pub use schema::{SchemaDrift, Schemas};
/// The schemars version the framework generates schemas with: `#[derive(JsonSchema)]` with
/// `#[schemars(crate = "choreograph::schemars")]` needs no schemars dependency of its own
/// (adding `schemars = "1"` to the crate is simpler).
pub use schemars;
pub use topics::{TopicError, Topics};
pub use trace_context::TraceParent;
