//! The service runtime: subscribe, dispatch to handlers, publish what they emit, commit.
//!
//! ```no_run
//! # use choreograph::{handler::{Context, HandlerError}, runtime::Service, Event, KafkaConfig};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] struct UserRegistered { email: String }
//! # impl Event for UserRegistered { const TYPE: &'static str = "a.v1"; const TOPIC: &'static str = "a"; }
//! async fn on_registered(ctx: Context, e: UserRegistered) -> Result<(), HandlerError> { Ok(()) }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! Service::builder("activity")
//!     .handle(on_registered)
//!     .build(&KafkaConfig::from_env()?)?
//!     .run() // until SIGINT or SIGTERM
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! How it works:
//! - One consumer per service instance, in the consumer group named after the service,
//!   subscribed to the topics of the handled event types. It runs on a dedicated OS thread, so
//!   the calls that block (rebalance callbacks, synchronous commits, closing the consumer)
//!   never hold up the async workers that run handlers.
//! - Records are dispatched by `ce_type`. Records of one saga (same key, the correlation ID)
//!   are handled strictly one after another, in arrival order; different sagas run
//!   concurrently. Types the service does not handle are skipped and their offsets advance.
//! - At-least-once: an input offset is stored for commit only when its handler finished and
//!   every event it emitted was acknowledged by the broker (`acks=all`, idempotent producer),
//!   and only as part of the partition's contiguous finished prefix
//!   ([`crate::delivery`]). An instance with too many records in flight takes no records at
//!   all until work drains, and a partition over its own (lower) bound is paused until work
//!   drains (backpressure), so memory stays bounded.
//! - Redelivered events the service handled before are acknowledged without running the handler
//!   ([`crate::idempotency`]).
//! - Exactly-once ([`Delivery::ExactlyOnce`]): what handling an input produces is collected
//!   until the input is committable (its partition's earlier inputs finished), then written into
//!   the open transaction by the consumer thread; the transaction commits the inputs' offsets
//!   every commit interval ([`crate::delivery::TxnBook`]).
//! - On revoke, finished work is committed (after waiting briefly for in-flight work of the
//!   revoked partitions); work that finishes later is not committed.
//! - Records that cannot be handled go to the dead-letter topic ([`crate::dead_letter`]);
//!   retryable handler errors are retried with exponential backoff and jitter first; panics
//!   are caught and dead-lettered.
//! - Shutdown (SIGINT/SIGTERM, or [`ShutdownHandle::shutdown`]): stop taking records, finish
//!   in-flight work within the shutdown timeout, commit, close the consumer, flush the producer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::catalogue::Catalogue;
use crate::config::KafkaConfig;
use crate::dead_letter::{bounded_error, DeadLetter, DeadLetterReason, Shrink};
use crate::delivery::{OffsetBook, PartitionKey};
use crate::delivery::{OutRecord, TxnBook};
use crate::envelope::{derived_event_id, headers, CloudEvent, CorrelationId, HeaderParts};
use crate::envelope::{RecordView, Salvaged};
use crate::event::Event;
use crate::handler::{CallError, Context, ErasedHandler, Handler, Outgoing, Typed};
use crate::idempotency::{HandledLog, Idempotency};
use crate::publish::producer_config;
use crate::record::{decode_message, InputRecord};
use crate::saga_log::{Emitted, StepInputRef, StepOutcome, StepRef};
use crate::saga_state::{SagaSlot, SagaStore};
use crate::topics::{TopicError, Topics};
use crate::trace_context::TraceParent;

/// How retryable handler errors are retried: the service default
/// ([`ServiceBuilder::retry`]) or one handler's ([`ServiceBuilder::handle_with_retry`]).
///
/// While a record waits for its next attempt, its saga's later records wait behind it (order
/// within a saga holds) and other sagas of the same partition go on; the partition's offset
/// watermark stays at the waiting record until it is handled or dead-lettered.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each time, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Which retryable errors are retried: every one (`None`, the default), or only those
    /// whose [`HandlerError::kind`](crate::handler::HandlerError::kind) is listed (the others
    /// are dead-lettered at once, reason `handler-failed`).
    pub retry_kinds: Option<Vec<String>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            retry_kinds: None,
        }
    }
}

impl RetryPolicy {
    /// Whether this policy retries `error` at all (attempts left aside).
    pub fn retries(&self, error: &crate::handler::HandlerError) -> bool {
        error.is_retryable()
            && match &self.retry_kinds {
                None => true,
                Some(kinds) => error.kind().is_some_and(|k| kinds.iter().any(|x| x == k)),
            }
    }

    /// The backoff before attempt `attempt + 1`: exponential, capped, with "equal jitter"
    /// (between half and all of the exponential value).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max_backoff);
        let half = capped / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// The delivery guarantee of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Inputs are committed after their outputs are acknowledged; a crash or rebalance may
    /// re-run a handler (absorbed by [`Idempotency`] where it can be).
    #[default]
    AtLeastOnce,
    /// Outputs, saga state, handled markers, saga-log steps, dead letters and input offsets
    /// are written in one Kafka transaction per commit interval; consumers read
    /// `read_committed`. A crash or rebalance produces no duplicate records.
    ExactlyOnce,
}

impl std::str::FromStr for Delivery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "at-least-once" => Ok(Self::AtLeastOnce),
            "exactly-once" => Ok(Self::ExactlyOnce),
            other => Err(format!(
                "unknown delivery `{other}`: use `at-least-once` or `exactly-once`"
            )),
        }
    }
}

/// Runtime settings of a service; every field has a sane default.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// The consumer group (default: the service name, with the configured topic prefix).
    pub group_id: Option<String>,
    /// This instance's name in logs and dead letters (default: `<service>-<pid>-<random>`).
    pub instance_id: Option<String>,
    pub retry: RetryPolicy,
    /// Records in flight per partition before the partition is paused (default 1000). Only a
    /// bound below [`Self::max_in_flight`] is applied: the instance's bound already stops it
    /// taking records, and a pause throws away what librdkafka prefetched for the partition.
    pub max_in_flight_per_partition: usize,
    /// Records in flight in the whole instance before it stops taking records until work drains
    /// (default 1,000): bounds memory whatever the number of partitions. Exactly-once, records
    /// finished but not yet in a transaction count too, against twice this bound. Also the
    /// consumer's `queued.min.messages` (librdkafka's prefetch per partition) unless set: this
    /// bound shared over the input partitions, at least 100 records per partition.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight work (default 30 s).
    pub shutdown_timeout: Duration,
    /// How long a revoke waits for in-flight work of the revoked partitions (default 5 s).
    pub revoke_grace: Duration,
    /// Dead-letter topic = input topic + this suffix (default `.dlq`).
    pub dead_letter_suffix: String,
    /// Keep per-saga state (see [`crate::saga_state`]); set by
    /// [`ServiceBuilder::keep_saga_state`].
    pub saga_state: bool,
    /// At-least-once (default) or exactly-once.
    pub delivery: Delivery,
    /// Remember handled events so redeliveries do not run handlers again (default on: 1 hour,
    /// 20,000 per partition); `None` turns it off. See [`crate::idempotency`].
    pub idempotency: Option<Idempotency>,
    /// Exactly-once mode: how often a transaction commits finished work (default 100 ms).
    pub commit_interval: Duration,
    /// Write a saga-log step per event (default on). Off saves one record per event, but
    /// `choreograph trace` then sees no step of this service (its sagas look stalled there).
    pub saga_log: bool,
    /// At-least-once mode: write saga-log steps and handled markers with a producer of their
    /// own (default on; off: the follow-up events' producer writes them too). A producer has
    /// one request in flight per broker connection, so on a shared one a follow-up event waits
    /// behind any request of steps and markers, and every hop of a saga may: the benchmark's
    /// registration p99 at 100 sagas/s was 1.84× raw's shared, 1.43× separate (medians of 4
    /// alternated rounds, bench/README.md). The cost is a second connection per broker and its
    /// threads.
    /// Exactly-once mode writes everything in one transaction, with one producer.
    pub separate_tail_producer: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            group_id: None,
            instance_id: None,
            retry: RetryPolicy::default(),
            max_in_flight_per_partition: 1000,
            max_in_flight: 1_000,
            shutdown_timeout: Duration::from_secs(30),
            revoke_grace: Duration::from_secs(5),
            dead_letter_suffix: ".dlq".to_owned(),
            saga_state: false,
            delivery: Delivery::AtLeastOnce,
            idempotency: Some(Idempotency::default()),
            commit_interval: Duration::from_millis(100),
            saga_log: true,
            separate_tail_producer: true,
        }
    }
}

impl ServiceOptions {
    /// Applies the deployment settings found in the environment (each optional):
    /// `CHOREOGRAPH_DELIVERY` (`at-least-once`/`exactly-once`), `CHOREOGRAPH_INSTANCE_ID`,
    /// `CHOREOGRAPH_IDEMPOTENCY_WINDOW_SECS` (`0` turns idempotency off),
    /// `CHOREOGRAPH_IDEMPOTENCY_MAX_PER_PARTITION`, `CHOREOGRAPH_COMMIT_INTERVAL_MS`,
    /// `CHOREOGRAPH_SAGA_LOG` (`on`/`off`), `CHOREOGRAPH_MAX_IN_FLIGHT`,
    /// `CHOREOGRAPH_TAIL_PRODUCER` (`shared`/`separate`).
    pub fn apply_env(&mut self) -> Result<(), String> {
        self.apply_vars(|name| std::env::var(name).ok())
    }

    fn apply_vars(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        fn number(name: &str, v: &str, min: u64) -> Result<u64, String> {
            match v.trim().parse::<u64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(format!("{name}={v}: expected a whole number from {min}")),
            }
        }
        if let Some(v) = var("CHOREOGRAPH_DELIVERY") {
            self.delivery = v
                .parse()
                .map_err(|e| format!("CHOREOGRAPH_DELIVERY: {e}"))?;
        }
        if let Some(v) = var("CHOREOGRAPH_INSTANCE_ID") {
            let v = v.trim();
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "CHOREOGRAPH_INSTANCE_ID={v}: use letters, digits, `-`, `_` or `.`"
                ));
            }
            self.instance_id = Some(v.to_owned());
        }
        if let Some(v) = var("CHOREOGRAPH_IDEMPOTENCY_WINDOW_SECS") {
            let secs = number("CHOREOGRAPH_IDEMPOTENCY_WINDOW_SECS", &v, 0)?;
            self.idempotency = (secs > 0).then(|| Idempotency {
                window: Duration::from_secs(secs),
                ..self.idempotency.clone().unwrap_or_default()
            });
        }
        if let Some(v) = var("CHOREOGRAPH_IDEMPOTENCY_MAX_PER_PARTITION") {
            let n = number("CHOREOGRAPH_IDEMPOTENCY_MAX_PER_PARTITION", &v, 1)?;
            if let Some(i) = &mut self.idempotency {
                i.max_per_partition = n as usize;
            }
        }
        if let Some(v) = var("CHOREOGRAPH_SAGA_LOG") {
            self.saga_log = match v.trim() {
                "on" | "true" => true,
                "off" | "false" => false,
                other => return Err(format!("CHOREOGRAPH_SAGA_LOG={other}: use `on` or `off`")),
            };
        }
        if let Some(v) = var("CHOREOGRAPH_TAIL_PRODUCER") {
            self.separate_tail_producer = match v.trim() {
                "shared" => false,
                "separate" => true,
                other => {
                    return Err(format!(
                        "CHOREOGRAPH_TAIL_PRODUCER={other}: use `shared` or `separate`"
                    ))
                }
            };
        }
        if let Some(v) = var("CHOREOGRAPH_MAX_IN_FLIGHT") {
            self.max_in_flight = number("CHOREOGRAPH_MAX_IN_FLIGHT", &v, 1)? as usize;
        }
        if let Some(v) = var("CHOREOGRAPH_COMMIT_INTERVAL_MS") {
            self.commit_interval =
                Duration::from_millis(number("CHOREOGRAPH_COMMIT_INTERVAL_MS", &v, 1)?);
        }
        Ok(())
    }
}

/// A service could not be built or stopped working.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service `{service}` registers two handlers for event type `{event_type}`")]
    DuplicateHandler { service: String, event_type: String },
    #[error("service `{0}` has no handlers: register at least one with .handle(...)")]
    NoHandlers(String),
    #[error("invalid service name `{0}`: use letters, digits, `-`, `_` or `.`")]
    InvalidName(String),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("Kafka client: {0}")]
    Kafka(String),
    #[error("service `{service}` keeps saga state, so its topics must have equal partition counts (a saga's events share a partition number only then), but they have: {counts}. Give them the same number of partitions.")]
    NotCoPartitioned { service: String, counts: String },
    #[error("the consumer thread of service `{0}` stopped unexpectedly")]
    ConsumerThread(String),
    #[error("exactly-once delivery of service `{service}` failed for good: {reason}")]
    Transactions { service: String, reason: String },
}

struct Registered<S> {
    topic: &'static str,
    handler: Arc<dyn ErasedHandler<S>>,
    /// This handler's own retry policy (else the service's).
    retry: Option<RetryPolicy>,
}

/// Builds a [`Service`]: its name, state, handlers and options.
pub struct ServiceBuilder<S> {
    name: String,
    state: S,
    handlers: HashMap<&'static str, Registered<S>>,
    duplicate: Option<&'static str>,
    options: ServiceOptions,
    catalogue: Option<Arc<Catalogue>>,
}

/// A service: handlers plus the runtime that feeds them.
pub struct Service<S> {
    name: Arc<str>,
    instance: Arc<str>,
    state: S,
    handlers: Arc<HashMap<&'static str, Registered<S>>>,
    options: ServiceOptions,
    config: KafkaConfig,
    topics: Topics,
    producer: FutureProducer,
    shutdown: ShutdownHandle,
    ready: ReadySignal,
    catalogue: Option<Arc<Catalogue>>,
}

impl Service<()> {
    /// A service without application state.
    pub fn builder(name: impl Into<String>) -> ServiceBuilder<()> {
        Service::with_state(name, ())
    }
}

impl<S: Clone + Send + Sync + 'static> Service<S> {
    /// A service whose handlers receive `State<S>`.
    pub fn with_state(name: impl Into<String>, state: S) -> ServiceBuilder<S> {
        ServiceBuilder {
            name: name.into(),
            state,
            handlers: HashMap::new(),
            duplicate: None,
            options: ServiceOptions::default(),
            catalogue: None,
        }
    }
}

impl<S: Clone + Send + Sync + 'static> ServiceBuilder<S> {
    /// Registers the handler of one event type (inferred from the handler's signature).
    pub fn handle<E, M, H>(self, handler: H) -> Self
    where
        E: Event,
        M: 'static,
        H: Handler<S, E, M>,
    {
        self.register(handler, None)
    }

    /// Registers a handler with a retry policy of its own (instead of the service's).
    pub fn handle_with_retry<E, M, H>(self, handler: H, retry: RetryPolicy) -> Self
    where
        E: Event,
        M: 'static,
        H: Handler<S, E, M>,
    {
        self.register(handler, Some(retry))
    }

    fn register<E, M, H>(mut self, handler: H, retry: Option<RetryPolicy>) -> Self
    where
        E: Event,
        M: 'static,
        H: Handler<S, E, M>,
    {
        let erased: Arc<dyn ErasedHandler<S>> = Arc::new(Typed::<H, E, M> {
            handler,
            _marker: PhantomData,
        });
        if self
            .handlers
            .insert(
                E::TYPE,
                Registered {
                    topic: E::TOPIC,
                    handler: erased,
                    retry,
                },
            )
            .is_some()
        {
            self.duplicate.get_or_insert(E::TYPE);
        }
        self
    }

    /// Replaces the runtime options.
    pub fn options(mut self, options: ServiceOptions) -> Self {
        self.options = options;
        self
    }

    /// Keeps per-saga state for the handlers ([`Context::saga_state`]), durable in the
    /// service's compacted changelog topic `<service>.saga-state`.
    pub fn keep_saga_state(mut self) -> Self {
        self.options.saga_state = true;
        self
    }

    /// Validates consumed events (invalid: dead-lettered, `schema-invalid`) and emitted events
    /// (invalid: the input is dead-lettered, `invalid-output`) against the catalogue.
    pub fn catalogue(mut self, catalogue: Arc<Catalogue>) -> Self {
        self.catalogue = Some(catalogue);
        self
    }

    /// Exactly-once delivery (see [`Delivery::ExactlyOnce`]); needs a real Kafka cluster
    /// (librdkafka's mock cluster accepts transactions but does not enforce them).
    pub fn exactly_once(mut self) -> Self {
        self.options.delivery = Delivery::ExactlyOnce;
        self
    }

    /// Sets (or, with `None`, turns off) the memory of handled events.
    pub fn idempotency(mut self, idempotency: Option<Idempotency>) -> Self {
        self.options.idempotency = idempotency;
        self
    }

    /// Sets the service's default retry policy of retryable handler errors.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.options.retry = retry;
        self
    }

    /// Creates the Kafka clients. Topics are checked (and created) when the service runs.
    pub fn build(self, config: &KafkaConfig) -> Result<Service<S>, ServiceError> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(ServiceError::InvalidName(self.name));
        }
        if let Some(t) = self.duplicate {
            return Err(ServiceError::DuplicateHandler {
                service: self.name,
                event_type: t.to_owned(),
            });
        }
        if self.handlers.is_empty() {
            return Err(ServiceError::NoHandlers(self.name));
        }
        let producer: FutureProducer = producer_config(config)
            .create()
            .map_err(|e| ServiceError::Kafka(e.to_string()))?;
        let instance = self.options.instance_id.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-{}",
                self.name,
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            )
        });
        Ok(Service {
            name: self.name.into(),
            instance: instance.into(),
            state: self.state,
            handlers: Arc::new(self.handlers),
            options: self.options,
            config: config.clone(),
            topics: Topics::new(config)?,
            producer,
            shutdown: ShutdownHandle::default(),
            ready: ReadySignal::default(),
            catalogue: self.catalogue,
        })
    }
}

/// Errors of a produce call that retrying cannot fix.
fn is_permanent(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::MessageBatchTooLarge
                | C::InvalidRecord
        )
    )
}

/// How often a service still joining its group says so.
const WAITING_NOTE_EVERY: Duration = Duration::from_secs(5);

/// A one-way signal: raised once, awaited by anyone.
#[derive(Clone, Default)]
struct Flag {
    raised: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Flag {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// Asks a running service to shut down gracefully.
#[derive(Clone, Default)]
pub struct ShutdownHandle(Flag);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.raise();
    }

    async fn wait(&self) {
        self.0.wait().await
    }
}

/// Tells when a running service first got its partitions (and restored their saga state), or
/// that it never will: it could not start, or stopped first.
#[derive(Clone, Default)]
pub struct ReadySignal {
    flag: Flag,
    /// Why the service will not be (or stopped being) ready; set before the flag is raised.
    failure: Arc<std::sync::OnceLock<NotReady>>,
}

/// A service that will not become ready: why ([`ReadySignal::wait`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("service `{service}` {}: {reason}", match .cause {
    NotReadyCause::CannotStart => "cannot start",
    NotReadyCause::Failed => "failed",
    NotReadyCause::Stopped => "stopped",
})]
pub struct NotReady {
    pub service: String,
    pub cause: NotReadyCause,
    /// The error [`Service::run`] returned (or why it stopped).
    pub reason: String,
}

/// When a service ended ([`NotReady`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReadyCause {
    /// Before it got its first partitions: topics, configuration, the cluster, restoring.
    CannotStart,
    /// After it had been ready.
    Failed,
    /// It was asked to stop (before it got ready, or after).
    Stopped,
}

impl ReadySignal {
    /// Resolves once the service has joined its group and been assigned partitions, or with
    /// the reason it will not: it failed to start (the error [`Service::run`] returns), failed
    /// later, or stopped.
    pub async fn wait(&self) -> Result<(), NotReady> {
        self.flag.wait().await;
        match self.failure.get() {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    /// Whether the service got its partitions and has not failed or stopped since.
    pub fn is_ready(&self) -> bool {
        self.flag.is_raised() && self.failure.get().is_none()
    }

    fn raise(&self) {
        self.flag.raise();
    }

    /// The service ended: waiters resolve with why. The first reason stays.
    fn end(&self, service: &str, cause: NotReadyCause, reason: String) {
        let _ = self.failure.set(NotReady {
            service: service.to_owned(),
            cause,
            reason,
        });
        self.flag.raise();
    }
}

/// Logs to stderr (coloured only on a terminal, and not with `NO_COLOR`) with the filter from
/// `RUST_LOG`, else `default_level` for everything but librdkafka's own messages: it reports
/// every failed connection attempt, and Choreograph reports outages itself, rate-limited
/// (`RUST_LOG=librdkafka=warn` shows them all).
pub fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                format!("{default_level},librdkafka=off,rdkafka::client=off").into()
            }),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal (and never with NO_COLOR): log files and collectors get
        // plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
}

/// How many malloc arenas [`limit_malloc_arenas`] leaves glibc, unless `MALLOC_ARENA_MAX` is set.
pub const DEFAULT_MALLOC_ARENAS: i32 = 1;

/// Caps glibc's malloc arenas at [`DEFAULT_MALLOC_ARENAS`], unless the environment says how many
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`: glibc reads those
/// itself). Does nothing on other targets.
///
/// glibc gives threads arenas of their own (up to eight per core), and an arena keeps the memory
/// freed in it for its own threads: a service whose threads (the consumer thread, the async
/// workers, librdkafka's) allocate in bursts ends up holding every arena's high-water mark at
/// once — two to three times its live heap under a backlog. One arena holds the heap's own
/// high-water mark (the benchmark's figures: `bench/README.md`). Call it first thing in `main`,
/// before any thread starts; [`service_main`] does.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"))
    {
        // Only a tuning: nothing to do if glibc refuses it.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, DEFAULT_MALLOC_ARENAS);
        }
    }
}

/// The `main` of a service binary.
///
/// Caps malloc's arenas ([`limit_malloc_arenas`]), logs to stderr (filter from `RUST_LOG`,
/// default `info`), reads the Kafka configuration from
/// the environment ([`KafkaConfig::from_env`]), builds the service with `build`, applies the
/// deployment settings of the environment ([`ServiceOptions::apply_env`]), and runs it
/// until SIGINT/SIGTERM. Exit status: 0 after a clean shutdown, 1 when the service failed while
/// running, 2 when it could not start (bad configuration, unreachable cluster at start-up).
pub fn service_main<S, F>(build: F) -> std::process::ExitCode
where
    S: Clone + Send + Sync + 'static,
    F: FnOnce(&KafkaConfig) -> Result<Service<S>, Box<dyn std::error::Error>>,
{
    use std::process::ExitCode;
    limit_malloc_arenas();
    init_logging("info");
    let config = match KafkaConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot start: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let mut service = match build(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = service.apply_env_options() {
        tracing::error!("configuration: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let ready = service.ready_signal();
    // `run` logs its error (`cannot start` / `service failed`) itself.
    match runtime.block_on(service.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => match ready.failure.get().map(|f| f.cause) {
            Some(NotReadyCause::CannotStart) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        },
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// At most this many records are taken per turn of the consumer loop (and handed to the
/// workers in one message).
const TAKE_BATCH: usize = 256;

/// A record handed from the consumer thread to the async workers.
struct Job {
    message: InputRecord,
    epoch: u64,
    /// Dispatch order (exactly-once bookkeeping).
    seq: u64,
    /// Generations of the partition's saga state and handled log when dispatched: writes of
    /// a job dispatched before a reload are ignored.
    state_generation: Option<u64>,
    handled_generation: Option<u64>,
}

/// A finished record, reported back to the consumer thread.
struct Completion {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    epoch: u64,
    seq: u64,
    /// Exactly-once mode: what goes into the transaction.
    work: Vec<TxnItem>,
}

/// Finished records on their way from the async workers to the consumer thread.
///
/// A locked `Vec` the consumer thread swaps for an empty one, not a channel: `std::sync::mpsc`
/// allocates a block of 31 slots (2.5 KB) every 31 messages, and before each request of that
/// size glibc's malloc merges all the arena's fast-bin chunks (small freed chunks) back into its
/// bins (a profile of the chain benchmark: a tenth of the workers' time in `send_completion`,
/// mostly `malloc_consolidate`).
#[derive(Default)]
struct Completions {
    queue: Mutex<CompletionQueue>,
    /// Signalled when the queue stops being empty while the consumer thread waits.
    ready: Condvar,
}

#[derive(Default)]
struct CompletionQueue {
    finished: Vec<Completion>,
    /// The consumer thread waits for the first completion (a notification costs a system call
    /// whether anyone waits or not, so it is only sent then).
    waiting: bool,
}

impl Completions {
    fn send(&self, completion: Completion) {
        self.send_all(std::iter::once(completion));
    }

    fn send_all(&self, completions: impl IntoIterator<Item = Completion>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.finished.extend(completions);
        if queue.waiting && !queue.finished.is_empty() {
            queue.waiting = false;
            self.ready.notify_one();
        }
    }

    /// Moves what is queued into `into` (emptied first), waiting up to `wait` when nothing is.
    fn take(&self, into: &mut Vec<Completion>, wait: Option<Duration>) {
        into.clear();
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wait) = wait.filter(|_| queue.finished.is_empty()) {
            queue.waiting = true;
            queue = self
                .ready
                .wait_timeout(queue, wait)
                .map(|(q, _)| q)
                .unwrap_or_else(|e| e.into_inner().0);
            queue.waiting = false;
        }
        std::mem::swap(&mut queue.finished, into);
    }
}

/// Exactly-once: what handling an input adds to the transaction that commits its offset.
enum TxnItem {
    /// A follow-up event, saga-state change or dead letter, written as it is.
    Record(OutRecord),
    /// Its saga-log step and its handled marker, batched per partition with the others written
    /// into the transaction at the same time.
    Step(OutRecord),
    Marker(Marker),
}

/// Where the records of one input go: straight to the broker (acknowledged one by one), or
/// into the input's share of the next transaction.
enum Sink {
    Direct,
    Transaction(Mutex<Vec<TxnItem>>),
}

impl Sink {
    /// What was collected for the transaction (nothing when written directly).
    fn into_items(self) -> Vec<TxnItem> {
        match self {
            Sink::Direct => Vec::new(),
            Sink::Transaction(items) => items.into_inner().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Service<S> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies [`ServiceOptions::apply_env`] to a built service.
    pub fn apply_env_options(&mut self) -> Result<(), String> {
        self.options.apply_env()?;
        if let Some(id) = &self.options.instance_id {
            self.instance = id.as_str().into();
        }
        Ok(())
    }

    /// The runtime options in effect.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// This instance's ID (in logs and dead letters).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// A handle that shuts the service down gracefully when asked.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// A signal raised when the running service first gets partitions assigned.
    pub fn ready_signal(&self) -> ReadySignal {
        self.ready.clone()
    }

    /// The input topics (of the handled event types, with the configured topic prefix).
    pub fn input_topics(&self) -> Vec<String> {
        let mut t: Vec<_> = self
            .handlers
            .values()
            .map(|r| self.config.topic(r.topic))
            .collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    /// The changelog topic of the per-saga state.
    pub fn saga_state_topic(&self) -> String {
        self.config.topic(&format!("{}.saga-state", self.name))
    }

    /// Checks co-partitioning and creates the changelog; returns its name when state is kept.
    async fn prepare_saga_state(&self, inputs: &[String]) -> Result<Option<String>, ServiceError> {
        if !self.options.saga_state {
            return Ok(None);
        }
        let changelog = self.saga_state_topic();
        let mut counts = Vec::new();
        for t in inputs {
            counts.push((
                t.clone(),
                self.topics.settled_partition_count(t).await?.unwrap_or(0),
            ));
        }
        let n = counts[0].1;
        self.topics
            .ensure_spec(
                &changelog,
                &crate::topics::TopicSpec {
                    partitions: Some(n as i32),
                    compacted: true,
                    ..Default::default()
                },
            )
            .await?;
        counts.push((
            changelog.clone(),
            self.topics
                .settled_partition_count(&changelog)
                .await?
                .unwrap_or(0),
        ));
        if counts.iter().any(|(_, c)| *c != n) {
            return Err(ServiceError::NotCoPartitioned {
                service: self.name.to_string(),
                counts: counts
                    .iter()
                    .map(|(t, c)| format!("{t}={c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(Some(changelog))
    }

    /// The topic of handled markers ([`crate::idempotency`]).
    pub fn handled_topic(&self) -> String {
        self.config.topic(&format!("{}.handled", self.name))
    }

    /// Creates the handled-marker topic (as many partitions as the largest input topic, kept
    /// for the window); returns its name and the in-memory log when idempotency is on.
    async fn prepare_handled(
        &self,
        inputs: &[String],
    ) -> Result<Option<(String, HandledLog)>, ServiceError> {
        let Some(settings) = self.options.idempotency.clone() else {
            return Ok(None);
        };
        let mut most = 1;
        for t in inputs {
            most = most.max(self.topics.settled_partition_count(t).await?.unwrap_or(0));
        }
        let topic = self.handled_topic();
        self.topics
            .ensure_spec(
                &topic,
                &crate::topics::TopicSpec {
                    partitions: Some(most as i32),
                    compacted: false,
                    retention_ms: Some(settings.window.as_millis().max(60_000) as i64),
                },
            )
            .await?;
        let have = self
            .topics
            .settled_partition_count(&topic)
            .await?
            .unwrap_or(0);
        if have < most {
            return Err(ServiceError::Topic(TopicError::Metadata {
                topic,
                reason: format!("has {have} partitions, fewer than the largest input topic ({most}): add partitions to it, or delete it"),
            }));
        }
        Ok(Some((topic, HandledLog::new(settings))))
    }

    /// The dead-letter topic of an input topic.
    pub fn dead_letter_topic(&self, topic: &str) -> String {
        format!("{topic}{}", self.options.dead_letter_suffix)
    }

    /// The event types this service skips silently: those the catalogue knows and gives to
    /// other services (it does not list this one among their consumers, and no handler here
    /// takes them). Any other record of a type no handler takes is skipped with a saga-log step
    /// (outcome `skipped`), so a trace shows where its saga stopped; without a catalogue, that
    /// is every one.
    fn silent_skips(&self) -> HashSet<String> {
        let Some(catalogue) = &self.catalogue else {
            return HashSet::new();
        };
        catalogue
            .entries()
            .map(|e| &e.placement)
            .filter(|p| {
                !self.handlers.contains_key(p.event_type.as_str())
                    && !p.consumers.iter().any(|c| **c == *self.name)
                    && !p.event_type.is_empty()
            })
            .map(|p| p.event_type.clone())
            .collect()
    }

    /// Runs until SIGINT/SIGTERM or [`ShutdownHandle::shutdown`], then shuts down gracefully.
    pub async fn run(self) -> Result<(), ServiceError> {
        self.run_until(termination_signal()).await
    }

    /// Runs until `stop` resolves (or [`ShutdownHandle::shutdown`]), then shuts down gracefully.
    ///
    /// Dropping the returned future instead abandons in-flight work without committing it, as
    /// a crash would (the next owner of the partitions handles it again).
    ///
    /// A service that cannot start (a topic missing or not creatable, the cluster unreachable,
    /// state that cannot be restored) logs the error at once, resolves its [`ReadySignal`] with
    /// it and returns it.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<(), ServiceError> {
        let ready = self.ready.clone();
        let name = self.name.clone();
        let instance = self.instance.clone();
        let result = self.run_service(stop).await;
        match &result {
            Err(e) if !ready.flag.is_raised() => {
                tracing::error!(service = %name, instance = %instance, error = %e, "cannot start");
                ready.end(&name, NotReadyCause::CannotStart, e.to_string());
            }
            Err(e) => {
                tracing::error!(service = %name, instance = %instance, error = %e, "service failed");
                ready.end(&name, NotReadyCause::Failed, e.to_string());
            }
            Ok(()) => ready.end(&name, NotReadyCause::Stopped, "shut down".into()),
        }
        result
    }

    async fn run_service(self, stop: impl Future<Output = ()>) -> Result<(), ServiceError> {
        crate::config::check_librdkafka();
        let inputs = self.input_topics();
        // Said before anything that waits on the cluster (each wait is bounded by the connect
        // timeout, and its failure is logged as `cannot start`).
        tracing::info!(service = %self.name, instance = %self.instance, servers = %self.config.bootstrap_servers(), connect_timeout = ?self.config.connect_timeout, "starting: checking topics, restoring state, joining the group");
        let dlqs: Vec<String> = inputs.iter().map(|t| self.dead_letter_topic(t)).collect();
        let saga_log = self.config.topic(&self.config.saga_log_topic);
        let mut all: Vec<&str> = inputs.iter().map(String::as_str).collect();
        all.extend(dlqs.iter().map(String::as_str));
        all.push(&saga_log);
        self.topics.ensure(&all).await?;
        let exactly_once = self.options.delivery == Delivery::ExactlyOnce;
        // Steps are batched per saga-log partition (see write_tails and Transactions).
        let saga_log_partitions = if self.options.saga_log {
            self.topics
                .settled_partition_count(&saga_log)
                .await?
                .unwrap_or(0)
        } else {
            0
        };
        let mut input_partitions = 0;
        for t in &inputs {
            input_partitions += self.topics.settled_partition_count(t).await?.unwrap_or(0);
        }
        let changelog = self.prepare_saga_state(&inputs).await?;
        let store = changelog.as_ref().map(|_| SagaStore::default());
        let handled_log = self.prepare_handled(&inputs).await?;
        // At-least-once, steps and markers may go through a producer of their own.
        let tail_producer = if !exactly_once
            && self.options.separate_tail_producer
            && (self.options.saga_log || handled_log.is_some())
        {
            let mut cc = producer_config(&self.config);
            cc.set("client.id", format!("{}-tail", self.instance));
            Some(
                cc.create::<FutureProducer>()
                    .map_err(|e| ServiceError::Kafka(e.to_string()))?,
            )
        } else {
            None
        };
        let batching = TailBatching {
            saga_log_topic: saga_log.clone(),
            saga_log_partitions,
            handled_topic: handled_log.as_ref().map(|(t, _)| t.clone()),
            batch_bytes: batch_bytes(self.config.max_message_bytes()),
        };

        let jobs = Arc::new(JobQueue::default());
        let completions = Arc::new(Completions::default());
        let done = completions.clone();
        let job_queue = jobs.clone();
        let (exit_tx, mut exit_rx) = oneshot::channel::<Result<(), ServiceError>>();
        let control = Arc::new(Control::default());
        let _abandon_on_drop = AbandonOnDrop(control.clone());

        let silent_skips = Arc::new(self.silent_skips());
        let book = Arc::new(Mutex::new(Book {
            offsets: OffsetBook::default(),
            paused: HashSet::new(),
        }));
        let thread = ConsumerThread {
            book: book.clone(),
            service: self.name.clone(),
            group: self
                .options
                .group_id
                .clone()
                .unwrap_or_else(|| self.config.topic(&self.name)),
            config: self.config.clone(),
            topics: inputs.clone(),
            input_partitions,
            batching: batching.clone(),
            saga_state: changelog.clone().zip(store.clone()),
            handled_log: handled_log.clone(),
            silent_skips: silent_skips.clone(),
            options: self.options.clone(),
            control: control.clone(),
            ready: self.ready.clone(),
            instance: self.instance.clone(),
        };
        std::thread::Builder::new()
            .name(format!("{}-consumer", self.name))
            .spawn(move || {
                let result = thread.run(job_queue, done);
                let _ = exit_tx.send(result);
            })
            .map_err(|e| ServiceError::Kafka(format!("cannot start the consumer thread: {e}")))?;

        let worker = Arc::new(Worker {
            service: self.name.clone(),
            instance: self.instance.clone(),
            source: format!("/services/{}", self.name).into(),
            state: self.state.clone(),
            handlers: self.handlers.clone(),
            producer: self.producer.clone(),
            tail_producer: tail_producer
                .clone()
                .unwrap_or_else(|| self.producer.clone()),
            topics: self.topics.clone(),
            retry: self.options.retry.clone(),
            dead_letter_suffix: self.options.dead_letter_suffix.clone(),
            delivery_timeout: self.config.delivery_timeout,
            topic_prefix: self.config.topic_prefix.clone(),
            batching,
            saga_state: changelog.zip(store),
            tails: HandOff::default(),
            handled_log,
            saga_log: self.options.saga_log,
            exactly_once,
            max_message_bytes: self.config.max_message_bytes(),
            catalogue: self.catalogue.clone(),
            silent_skips,
            book,
            done: completions,
        });
        tracing::info!(service = %self.name, instance = %self.instance, topics = ?inputs, delivery = ?self.options.delivery, idempotency = ?self.options.idempotency, "service started");
        // Dispatching runs in a task of its own, on the runtime's workers: `run` is usually
        // awaited by `block_on` (`#[tokio::main]`), whose thread would otherwise carry it.
        let dispatcher = tokio::spawn(dispatch_loop(jobs, worker));
        let _abort_dispatcher = AbortOnDrop(dispatcher.abort_handle());

        tokio::pin!(stop);
        let shutdown = self.shutdown.clone();
        let mut stopping = false;
        let result = loop {
            tokio::select! {
                _ = &mut stop, if !stopping => {
                    stopping = true;
                    control.stop.store(true, Ordering::SeqCst);
                }
                _ = shutdown.wait(), if !stopping => {
                    stopping = true;
                    control.stop.store(true, Ordering::SeqCst);
                }
                exit = &mut exit_rx => {
                    break exit.unwrap_or_else(|_| Err(ServiceError::ConsumerThread(self.name.to_string())));
                }
            }
        };
        // The consumer thread is gone: work still running is abandoned (never committed).
        dispatcher.abort();
        let producers = std::iter::once(self.producer.clone()).chain(tail_producer);
        for producer in producers {
            let flush =
                tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
            if let Ok(Err(e)) = flush {
                tracing::warn!(service = %self.name, error = %e, "producer flush at shutdown failed");
            }
        }
        tracing::info!(service = %self.name, instance = %self.instance, "service stopped");
        result
    }
}

/// Sagas with work queued or running: the jobs waiting behind the running one (boxed: a lane
/// task's future holds its job, and small task allocations are cheap ones).
/// The busy lanes, by a 64-bit hash of their saga's key: two sagas whose keys collide share a
/// lane (in order, one after the other), which costs concurrency, never ordering.
type Lanes = Arc<Mutex<HashMap<u64, VecDeque<Box<Job>>>>>;

/// Aborts a task when dropped (the runtime future dropped: its work is abandoned).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A hand-off to one async reader: a locked `Vec` the writers append to and the reader swaps
/// for its own, not a channel, for the reason [`Completions`] gives (a channel allocates a block
/// every 31 or 32 items, and lists of batches were new `Vec`s over the size for which glibc's
/// malloc consolidates first). Both sides keep their `Vec`s' capacity.
struct HandOff<T> {
    inner: Mutex<HandOffInner<T>>,
    /// Notified when the queue stops being empty.
    ready: Notify,
}

struct HandOffInner<T> {
    items: Vec<T>,
    /// The reader is gone: what is handed over now is dropped.
    closed: bool,
}

impl<T> Default for HandOff<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(HandOffInner {
                items: Vec::new(),
                closed: false,
            }),
            ready: Notify::new(),
        }
    }
}

impl<T> HandOff<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandOffInner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one item; false (and the item dropped) once the reader is gone.
    fn push(&self, item: T) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        inner.items.push(item);
        if inner.items.len() == 1 {
            self.ready.notify_one();
        }
        true
    }

    /// Moves `items` to the queue (leaving it empty, with its capacity); false (and the items
    /// dropped) once the reader is gone.
    fn append(&self, items: &mut Vec<T>) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            items.clear();
            return false;
        }
        if items.is_empty() {
            return true;
        }
        let was_empty = inner.items.is_empty();
        inner.items.append(items);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// The reader: swaps `batch` (empty) with what is queued, waiting until something is.
    async fn take(&self, batch: &mut Vec<T>) {
        loop {
            std::mem::swap(batch, &mut self.lock().items);
            if !batch.is_empty() {
                return;
            }
            // (An item queued since the swap has left a permit: this returns at once.)
            self.ready.notified().await;
        }
    }

    /// The reader is gone: drops what is queued and refuses what comes.
    fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.items.clear();
    }
}

/// Records on their way from the consumer thread to the dispatcher, boxed as the lanes keep
/// them (handing a job on moves a pointer, not 400 bytes).
type JobQueue = HandOff<Box<Job>>;

/// Closes the job queue when the dispatcher's future is dropped.
struct CloseOnDrop(Arc<JobQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Takes the consumer thread's records and dispatches them to lanes, until the runtime future
/// ends (which aborts this task; lanes are not cut short while the consumer thread finishes).
/// The lane tasks and the tail writer live in this task's set: they end with it.
async fn dispatch_loop<S: Clone + Send + Sync + 'static>(
    queue: Arc<JobQueue>,
    worker: Arc<Worker<S>>,
) {
    let _close = CloseOnDrop(queue.clone());
    let lanes: Lanes = Arc::new(Mutex::new(HashMap::new()));
    let mut workers = JoinSet::new();
    workers.spawn(worker.clone().write_tails());
    // Swapped with the queue's each turn, so both keep their capacity.
    #[allow(clippy::vec_box)]
    let mut batch: Vec<Box<Job>> = Vec::new();
    loop {
        // Only new records wake this task. Finished lanes' tasks are joined (freed) here, after
        // each batch: waiting on `join_next` too woke it once per finished lane, a second task
        // poll per record (a profile of the registration benchmark: 14 % of the workers'
        // samples in this loop).
        queue.take(&mut batch).await;
        for job in batch.drain(..) {
            dispatch(job, &lanes, &worker, &mut workers);
        }
        while workers.try_join_next().is_some() {}
    }
}

/// Sends a job to its saga's lane: a new lane (and worker task) if the saga is idle, else the
/// back of its queue.
fn dispatch<S: Clone + Send + Sync + 'static>(
    job: Box<Job>,
    lanes: &Lanes,
    worker: &Arc<Worker<S>>,
    workers: &mut JoinSet<()>,
) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    match job.message.key() {
        Some(k) if !k.is_empty() => k.hash(&mut hasher),
        // No key: no saga to order by; a lane of its own.
        _ => (
            "\0",
            job.message.topic(),
            job.message.partition(),
            job.message.offset(),
        )
            .hash(&mut hasher),
    }
    let key = hasher.finish();
    {
        let mut map = lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = map.get_mut(&key) {
            queue.push_back(job);
            return;
        }
        map.insert(key, VecDeque::new());
    }
    let lanes = lanes.clone();
    let worker = worker.clone();
    let lane = async move {
        let mut job = job;
        loop {
            worker.process(job).await;
            let mut map = lanes.lock().unwrap_or_else(|e| e.into_inner());
            match map.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => job = next,
                None => {
                    map.remove(&key);
                    return;
                }
            }
        }
    };
    workers.spawn(lane);
}

/// Sleeps, boxed: the timer is only allocated when a wait happens, so the futures of the
/// per-record path (which all could wait) stay small.
async fn pause(duration: Duration) {
    Box::pin(tokio::time::sleep(duration)).await
}

#[derive(Default)]
struct Control {
    /// Graceful stop requested.
    stop: AtomicBool,
    /// The runtime future was dropped: exit without draining.
    abandon: AtomicBool,
}

struct AbandonOnDrop(Arc<Control>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon.store(true, Ordering::SeqCst);
    }
}

/// What the async side needs to handle one record.
struct Worker<S> {
    service: Arc<str>,
    instance: Arc<str>,
    source: Arc<str>,
    state: S,
    handlers: Arc<HashMap<&'static str, Registered<S>>>,
    producer: FutureProducer,
    /// What writes saga-log steps and handled markers in at-least-once mode: `producer`, or
    /// one of their own ([`ServiceOptions::separate_tail_producer`]).
    tail_producer: FutureProducer,
    topics: Topics,
    retry: RetryPolicy,
    dead_letter_suffix: String,
    delivery_timeout: Duration,
    topic_prefix: String,
    /// Where steps and markers go, and how they are batched.
    batching: TailBatching,
    /// The changelog topic and the in-memory store, when the service keeps saga state.
    saga_state: Option<(String, SagaStore)>,
    /// The handled-marker topic and the in-memory log, when idempotency is on.
    handled_log: Option<(String, HandledLog)>,
    /// Write saga-log steps.
    saga_log: bool,
    /// Finished inputs' tails on their way to the tail writer (at-least-once mode).
    tails: HandOff<Tail>,
    exactly_once: bool,
    /// The producer's `message.max.bytes` (exactly-once mode checks records against it before
    /// they go into a transaction).
    max_message_bytes: usize,
    catalogue: Option<Arc<Catalogue>>,
    /// The types skipped without a saga-log step ([`Service::silent_skips`]).
    silent_skips: Arc<HashSet<String>>,
    /// The consumer thread's offsets, read (rarely: a held dead letter) to tell whether a job's
    /// partition is still assigned in the job's epoch.
    book: Arc<Mutex<Book>>,
    done: Arc<Completions>,
}

/// What a step record says, before it is written.
struct StepRecord {
    outcome: StepOutcome,
    attempts: u32,
    emitted: Vec<Emitted>,
    error: Option<String>,
    reason: Option<DeadLetterReason>,
}

/// What finishes a processed input, once its follow-up events are written.
struct Finish {
    /// Its saga-log step (none when the partition was lost meanwhile).
    step: Option<StepRecord>,
    /// Remember it as handled (idempotency).
    mark: bool,
}

impl Finish {
    fn step(outcome: StepOutcome, attempts: u32, emitted: Vec<Emitted>) -> Self {
        Self {
            step: Some(StepRecord {
                outcome,
                attempts,
                emitted,
                error: None,
                reason: None,
            }),
            mark: false,
        }
    }
}

/// At most this many inputs' tails per batch of the tail writer.
const TAIL_BATCH: usize = 1000;

/// At most about this many bytes of steps, or of handled markers, per batched record (well
/// under the brokers' default `message.max.bytes`, 1 MB).
const BATCH_BYTES: usize = 256 * 1024;

/// The size bound of batched records: [`BATCH_BYTES`], or less when the producer's
/// `message.max.bytes` is lower (with headroom for the record's framing).
fn batch_bytes(max_message_bytes: usize) -> usize {
    BATCH_BYTES.min(max_message_bytes.saturating_sub(4096).max(1024))
}

/// How the saga-log steps and handled markers of finished inputs become records, in both
/// modes: batched per partition, each record under [`batch_bytes`].
#[derive(Clone)]
struct TailBatching {
    saga_log_topic: String,
    /// The saga log's partition count (0 when unknown or off: steps are then not batched).
    saga_log_partitions: usize,
    /// The handled-marker topic, when idempotency is on.
    handled_topic: Option<String>,
    batch_bytes: usize,
}

impl TailBatching {
    /// The marker records and the step records of a batch of finished inputs.
    fn records<'a>(
        &self,
        steps: impl IntoIterator<Item = OutRecord>,
        markers: impl IntoIterator<Item = &'a Marker>,
    ) -> (Vec<OutRecord>, Vec<OutRecord>) {
        let markers = match &self.handled_topic {
            Some(topic) => crate::idempotency::marker_records(
                topic,
                self.batch_bytes,
                markers.into_iter().map(Marker::handled),
            ),
            None => Vec::new(),
        };
        let steps = crate::saga_log::batch_records(
            &self.saga_log_topic,
            self.saga_log_partitions,
            self.batch_bytes,
            steps,
        );
        (markers, steps)
    }
}

/// The end of an input, at-least-once: written by the tail writer ([`Worker::write_tails`]),
/// then the input is reported finished.
struct Tail {
    step: Option<OutRecord>,
    marker: Option<Marker>,
    completion: Completion,
}

/// A handled event to remember durably: its marker goes to the partition's marker record.
struct Marker {
    partition: i32,
    event: Arc<CloudEvent>,
}

impl Marker {
    /// `(partition, ce_source, ce_id)`, as [`crate::idempotency::marker_records`] takes them.
    fn handled(&self) -> (i32, &str, &str) {
        (self.partition, &self.event.source, &self.event.id)
    }
}

enum Outcome {
    Handled {
        outgoing: Vec<Outgoing>,
        attempts: u32,
    },
    /// No handler takes the event's type; `logged`: its step is written (the type is not one the
    /// catalogue gives to other services).
    Skipped { logged: bool },
    DeadLetter {
        reason: DeadLetterReason,
        error: String,
        attempts: u32,
    },
}

impl<S: Clone + Send + Sync + 'static> Worker<S> {
    /// Whether the partition of `job` is still loaded as it was when the job was dispatched: a
    /// job of a revoked (or, exactly-once, rewound) partition must neither run its handler on
    /// state that is gone nor write state over what the next owner reads.
    fn still_owned(&self, job: &Job) -> bool {
        let p = job.message.partition();
        self.saga_state
            .as_ref()
            .map_or(true, |(_, s)| s.generation(p) == job.state_generation)
            && self
                .handled_log
                .as_ref()
                .map_or(true, |(_, l)| l.generation(p) == job.handled_generation)
    }

    /// Whether the job's partition is still assigned, in the epoch the job was taken in (a
    /// lock on the consumer thread's book: not for the per-record path).
    fn still_assigned(&self, job: &Job) -> bool {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.offsets
            .epoch(job.message.topic(), job.message.partition())
            == Some(job.epoch)
    }

    async fn process(&self, job: Box<Job>) {
        if !self.still_owned(&job) {
            // Left to the partition's next owner (its completion, of an old epoch, is ignored).
            tracing::debug!(
                topic = job.message.topic(),
                partition = job.message.partition(),
                offset = job.message.offset(),
                "partition no longer owned: record left to its new owner"
            );
            self.report(&job, Vec::new());
            return;
        }
        let sink = if self.exactly_once {
            Sink::Transaction(Mutex::new(Vec::new()))
        } else {
            Sink::Direct
        };
        let message = &job.message;
        let started_at = chrono::Utc::now();
        let event = match decode_message(message) {
            Ok((event, _)) => Arc::new(event),
            // Not a CloudEvent: dead-lettered, and logged as a step of its saga when its
            // correlation ID can be read.
            Err(e) => {
                let error = e.to_string();
                let written = Box::pin(self.dead_letter(
                    &sink,
                    &job,
                    DeadLetterReason::InvalidEnvelope,
                    &error,
                    0,
                ))
                .await;
                let step = written
                    .then(|| self.invalid_envelope_step(message, error, started_at))
                    .flatten();
                match sink {
                    Sink::Direct => self.hand_to_tail_writer(&job, step, None),
                    Sink::Transaction(_) => {
                        let mut work = sink.into_items();
                        work.extend(
                            step.filter(|s| self.check_size(s, "saga-log step").is_ok())
                                .map(TxnItem::Step),
                        );
                        self.report(&job, work);
                    }
                }
                return;
            }
        };
        let span = tracing::info_span!(
            "handle",
            service = %self.service,
            event_type = %event.event_type,
            correlation_id = %event.correlation_id,
            causation_id = event.causation_id.as_deref().unwrap_or(""),
            event_id = %event.id,
        );
        // Boxed: with it inline, a lane's task took 1,088 bytes, which glibc's malloc serves from
        // its large bins, merging all fast-bin chunks first (a profile of the chain benchmark);
        // apart, both allocations stay small.
        let finish = Box::pin(
            self.process_event(&job, &sink, &event, started_at)
                .instrument(span.clone()),
        )
        .await;
        let _entered = span.enter();
        let (step, marker) = self.tail(&job, &event, finish, started_at);
        match sink {
            Sink::Direct => self.hand_to_tail_writer(&job, step, marker),
            Sink::Transaction(_) => {
                let step = step.filter(|s| match self.check_size(s, "saga-log step") {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "a saga-log step could not be written; the saga's trace misses it");
                        false
                    }
                });
                let mut work = sink.into_items();
                work.extend(step.map(TxnItem::Step));
                work.extend(marker.map(TxnItem::Marker));
                self.report(&job, work);
            }
        }
    }

    /// What finishes a processed input: its saga-log step (when the saga log is on) and its
    /// handled marker (when idempotency is on and the input is to be remembered). The input
    /// counts as handled in this process from now on (a redelivery in the same lane is
    /// skipped); the marker makes that durable.
    fn tail(
        &self,
        job: &Job,
        event: &Arc<CloudEvent>,
        finish: Finish,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> (Option<OutRecord>, Option<Marker>) {
        let step = finish
            .step
            .filter(|_| self.saga_log)
            .map(|step| self.step_record(&job.message, event, step, started_at));
        let marker = match &self.handled_log {
            Some((_, log)) if finish.mark && self.still_owned(job) => {
                let partition = job.message.partition();
                log.insert(partition, job.handled_generation, &event.source, &event.id);
                Some(Marker {
                    partition,
                    event: event.clone(),
                })
            }
            _ => None,
        };
        (step, marker)
    }

    /// At-least-once: hands what finishes an input (its saga-log step and handled marker) to
    /// the tail writer, which writes them in batches and then reports the input finished.
    fn hand_to_tail_writer(&self, job: &Job, step: Option<OutRecord>, marker: Option<Marker>) {
        let completion = self.completion(job, Vec::new());
        if step.is_none() && marker.is_none() {
            self.send_completion(completion);
            return;
        }
        let tail = Tail {
            step,
            marker,
            completion,
        };
        // (Never closed: the tail writer lives as long as the lanes that hand it tails.)
        self.tails.push(tail);
    }

    /// The tail writer (at-least-once): takes the finished inputs' tails in batches, writes
    /// their saga-log steps and one handled-marker record per partition, waits for every
    /// acknowledgement, then reports the inputs finished. Batches go one after another, so the
    /// steps of one saga stay in order.
    async fn write_tails(self: Arc<Self>) {
        let this: &Self = &self;
        // Swapped with the queue each turn, so both keep their capacity.
        let mut batch: Vec<Tail> = Vec::new();
        loop {
            this.tails.take(&mut batch).await;
            while !batch.is_empty() {
                let n = batch.len().min(TAIL_BATCH);
                this.write_tail_batch(&mut batch[..n]).await;
                this.done
                    .send_all(batch.drain(..n).map(|tail| tail.completion));
            }
        }
    }

    /// Writes the saga-log steps and handled markers of a batch of tails and waits for their
    /// acknowledgements (failures are logged: the inputs are reported finished regardless).
    async fn write_tail_batch(&self, batch: &mut [Tail]) {
        let steps: Vec<OutRecord> = batch.iter_mut().filter_map(|t| t.step.take()).collect();
        let (markers, steps) = self
            .batching
            .records(steps, batch.iter().filter_map(|t| t.marker.as_ref()));
        let marker_writes = markers.into_iter().map(|out| async move {
            let partition = out.partition.unwrap_or_default();
            if let Err(e) = self
                .write_with(&self.tail_producer, &Sink::Direct, out, "handled marker")
                .await
            {
                tracing::error!(service = %self.service, partition, error = %e, "handled markers could not be written; a redelivery after a restart would run their handlers again");
            }
        });
        let step_writes = steps.into_iter().map(|out| async move {
            if let Err(e) = self
                .write_with(&self.tail_producer, &Sink::Direct, out, "saga-log step")
                .await
            {
                tracing::error!(service = %self.service, error = %e, "saga-log steps could not be written; their sagas' traces miss them");
            }
        });
        futures::join!(
            futures::future::join_all(marker_writes),
            futures::future::join_all(step_writes)
        );
    }

    /// Tells the consumer thread a record is finished (ignored there if its epoch is over).
    fn report(&self, job: &Job, work: Vec<TxnItem>) {
        self.send_completion(self.completion(job, work));
    }

    fn completion(&self, job: &Job, work: Vec<TxnItem>) -> Completion {
        Completion {
            topic: job.message.shared_topic().clone(),
            partition: job.message.partition(),
            offset: job.message.offset(),
            epoch: job.epoch,
            seq: job.seq,
            work,
        }
    }

    fn send_completion(&self, completion: Completion) {
        self.done.send(completion);
    }

    /// Handles a decoded event: handler, follow-up events (acknowledged, or in the input's share
    /// of the transaction), saga state; returns what finishes it: its saga-log step, and
    /// whether to remember it as handled (both written after the follow-up events).
    async fn process_event(
        &self,
        job: &Job,
        sink: &Sink,
        event: &Arc<CloudEvent>,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Finish {
        let message = &job.message;
        if let Some((_, log)) = &self.handled_log {
            if log.contains(message.partition(), &event.source, &event.id) {
                tracing::debug!("already handled: acknowledged without running the handler");
                return Finish::step(StepOutcome::Duplicate, 0, Vec::new());
            }
        }
        let slot = self.saga_state.as_ref().map(|(_, store)| {
            let key = message.key().unwrap_or_default();
            Arc::new(SagaSlot::new(store.get(message.partition(), key)))
        });
        let mut outcome = self
            .handle(sink, message, event, slot.clone(), started_at)
            .await;
        let mut emitted = Vec::new();
        if let Outcome::Handled { outgoing, attempts } = &outcome {
            match self.publish_outputs(sink, event, outgoing).await {
                Ok(e) => {
                    emitted = e;
                    if let Some(change) = slot.and_then(|s| s.take_change()) {
                        if !self.still_owned(job) {
                            tracing::info!("partition revoked while the handler ran: its saga state is not written, the next owner handles the event again");
                            return Finish {
                                step: None,
                                mark: false,
                            };
                        }
                        Box::pin(self.write_saga_state(sink, job, change)).await;
                    }
                }
                // The broker refused a follow-up event for good: the input is dead-lettered.
                Err(error) => {
                    outcome = Outcome::DeadLetter {
                        reason: DeadLetterReason::InvalidOutput,
                        error,
                        attempts: *attempts,
                    }
                }
            }
        }
        match outcome {
            Outcome::Handled { attempts, .. } => Finish {
                mark: true,
                ..Finish::step(StepOutcome::Handled, attempts, emitted)
            },
            Outcome::Skipped { logged: true } => Finish::step(StepOutcome::Skipped, 0, emitted),
            Outcome::Skipped { logged: false } => Finish {
                step: None,
                mark: false,
            },
            Outcome::DeadLetter {
                reason,
                error,
                attempts,
            } => {
                if !Box::pin(self.dead_letter(sink, job, reason, &error, attempts)).await {
                    // Left to the partition's next owner.
                    return Finish {
                        step: None,
                        mark: false,
                    };
                }
                Finish {
                    step: Some(StepRecord {
                        outcome: StepOutcome::DeadLettered,
                        attempts,
                        emitted,
                        error: Some(error),
                        reason: Some(reason),
                    }),
                    mark: false,
                }
            }
        }
    }

    /// Exactly-once: a record must fit the producer's `message.max.bytes` (with headroom for
    /// its framing), or librdkafka refuses it and the transaction with it.
    fn check_size(&self, record: &OutRecord, what: &str) -> Result<(), String> {
        let size = record.size();
        if size + 512 > self.max_message_bytes {
            return Err(format!(
                "the {what} is {size} bytes, more than the producer's message.max.bytes ({})",
                self.max_message_bytes
            ));
        }
        Ok(())
    }

    /// Writes one record: straight to the broker, retried with backoff until it is acknowledged
    /// (the input stays uncommitted meanwhile, so nothing is lost while the broker is away), or
    /// into the input's share of the transaction. Fails only when the record can never be
    /// written (too large, ...).
    async fn write(&self, sink: &Sink, record: OutRecord, what: &str) -> Result<(), String> {
        self.write_with(&self.producer, sink, record, what).await
    }

    /// [`Self::write`] with the given producer (the tail writer's may be its own).
    async fn write_with(
        &self,
        producer: &FutureProducer,
        sink: &Sink,
        record: OutRecord,
        what: &str,
    ) -> Result<(), String> {
        match sink {
            Sink::Transaction(records) => {
                self.check_size(&record, what)?;
                records
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(TxnItem::Record(record));
                Ok(())
            }
            Sink::Direct => {
                // The common case inline: enqueued at once, acknowledged with an offset. This
                // future is part of every record's task, so it holds only the record and the
                // delivery; a full queue or a failure takes the boxed path, which retries.
                let mut record = record;
                // (Scoped so that only the record and the delivery are kept across the wait.)
                let sent = {
                    let headers = record.headers.take();
                    let mut out = record.as_future();
                    out.headers = headers;
                    producer
                        .send_result(out)
                        .map_err(|(e, back)| (e, back.headers))
                };
                let failure = match sent {
                    Err((e, headers)) => {
                        record.headers = headers;
                        match e {
                            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => None,
                            e => Some(e),
                        }
                    }
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(d)) if d.offset >= 0 => {
                            tracing::debug!(topic = %record.topic, partition = d.partition, offset = d.offset, "{what} written");
                            return Ok(());
                        }
                        Ok(Ok(d)) => {
                            // librdkafka acknowledged it without an offset ("implicitly acked"):
                            // with one request in flight this should not happen; if it does, the
                            // record may not have been written (docs/delivery.md).
                            tracing::warn!(topic = %record.topic, partition = d.partition, offset = d.offset, "{what} acknowledged without an offset");
                            return Ok(());
                        }
                        Ok(Err((e, back))) => {
                            record.headers = back.headers().cloned();
                            Some(e)
                        }
                        // We hold the producer, so librdkafka cannot drop the record unsent
                        // (rdkafka's own `send` assumes the same).
                        Err(_) => {
                            return Err(format!(
                                "the producer dropped the {what} without a delivery report"
                            ))
                        }
                    },
                };
                Box::pin(self.write_retrying(producer, record, failure, what)).await
            }
        }
    }

    /// Writes a record straight to the broker, retrying with backoff until it is acknowledged;
    /// `failure` is how a first attempt failed (None: not tried yet, or the queue was full).
    async fn write_retrying(
        &self,
        producer: &FutureProducer,
        record: OutRecord,
        failure: Option<KafkaError>,
        what: &str,
    ) -> Result<(), String> {
        let mut record = record;
        let mut failures = 0u32;
        let mut queue_full_since: Option<Instant> = None;
        // The headers move into the send; a failed send hands them back for the next.
        let mut headers = record.headers.take();
        if let Some(e) = failure {
            if is_permanent(&e) {
                return Err(e.to_string());
            }
            failures += 1;
            tracing::warn!(topic = %record.topic, error = %e, attempt = failures, "writing a {what} failed; retrying (the input stays uncommitted)");
            pause(Duration::from_millis(100)).await;
        }
        loop {
            let mut out = record.as_future();
            out.headers = headers.take();
            let delivered = match producer.send_result(out) {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(d)) => Ok(d),
                    Ok(Err((e, back))) => {
                        headers = back.headers().cloned();
                        Err(e)
                    }
                    // We hold the producer, so librdkafka cannot drop the record unsent
                    // (rdkafka's own `send` assumes the same).
                    Err(_) => {
                        return Err(format!(
                            "the producer dropped the {what} without a delivery report"
                        ))
                    }
                },
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's queue is full: wait for room, as `send` would.
                    headers = back.headers;
                    let since = *queue_full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.delivery_timeout {
                        tracing::warn!(topic = %record.topic, "the producer queue stayed full for the delivery timeout; still waiting (the input stays uncommitted)");
                        queue_full_since = None;
                    }
                    pause(Duration::from_millis(10)).await;
                    continue;
                }
                Err((e, back)) => {
                    headers = back.headers;
                    Err(e)
                }
            };
            queue_full_since = None;
            match delivered {
                Ok(d) if d.offset < 0 => {
                    // librdkafka acknowledged it without an offset ("implicitly acked"):
                    // with one request in flight this should not happen; if it does, the
                    // record may not have been written (docs/delivery.md).
                    tracing::warn!(topic = %record.topic, partition = d.partition, offset = d.offset, "{what} acknowledged without an offset");
                    return Ok(());
                }
                Ok(d) => {
                    tracing::debug!(topic = %record.topic, partition = d.partition, offset = d.offset, "{what} written");
                    return Ok(());
                }
                Err(e) if is_permanent(&e) => return Err(e.to_string()),
                Err(e) => {
                    failures += 1;
                    tracing::warn!(topic = %record.topic, error = %e, attempt = failures, "writing a {what} failed; retrying (the input stays uncommitted)");
                    pause(Duration::from_millis(100 * u64::from(failures.min(50)))).await;
                }
            }
        }
    }

    /// The saga-log record of a step (built outside the async path, so the step itself is not
    /// part of any future).
    fn step_record(
        &self,
        message: &InputRecord,
        event: &CloudEvent,
        step: StepRecord,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> OutRecord {
        let input = StepInputRef {
            id: &event.id,
            event_type: &event.event_type,
            source: &event.source,
            causation_id: event.causation_id.as_deref(),
            time: event.time,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        self.step_record_of(event.correlation_id, input, step, started_at)
    }

    /// The step of a record dead-lettered because it is not a CloudEvent, when its correlation
    /// ID can be read (what else can be read fills in its input; an unreadable `ce_id` becomes
    /// the record's coordinates, `<topic>/<partition>/<offset>`).
    fn invalid_envelope_step(
        &self,
        message: &InputRecord,
        error: String,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Option<OutRecord> {
        if !self.saga_log {
            return None;
        }
        let headers: Vec<(&str, Option<&[u8]>)> = message
            .headers()
            .map(|hs| {
                use rdkafka::message::Headers as _;
                hs.iter().map(|h| (h.key, h.value)).collect()
            })
            .unwrap_or_default();
        let salvaged = Salvaged::of(RecordView {
            key: message.key(),
            value: message.payload(),
            headers: &headers,
        });
        let correlation_id: CorrelationId = salvaged.correlation_id?;
        let coordinates = format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let time = salvaged
            .time
            .or_else(|| {
                message
                    .timestamp()
                    .to_millis()
                    .and_then(chrono::DateTime::from_timestamp_millis)
            })
            .unwrap_or(started_at);
        let input = StepInputRef {
            id: salvaged.id.as_deref().unwrap_or(&coordinates),
            event_type: salvaged.event_type.as_deref().unwrap_or_default(),
            source: salvaged.source.as_deref().unwrap_or_default(),
            causation_id: salvaged.causation_id.as_deref(),
            time,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let step = StepRecord {
            outcome: StepOutcome::DeadLettered,
            attempts: 0,
            emitted: Vec::new(),
            error: Some(error),
            reason: Some(DeadLetterReason::InvalidEnvelope),
        };
        Some(self.step_record_of(correlation_id, input, step, started_at))
    }

    /// The saga-log record of a step of `correlation_id` whose input is `input`.
    fn step_record_of(
        &self,
        correlation_id: CorrelationId,
        input: StepInputRef<'_>,
        step: StepRecord,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> OutRecord {
        // Error texts are bounded, whatever the input (a schema error can quote all its data).
        let error = step.error.as_deref().map(bounded_error);
        let record = StepRef {
            version: 1,
            correlation_id,
            service: &self.service,
            instance: &self.instance,
            input,
            outcome: step.outcome,
            attempts: step.attempts,
            emitted: &step.emitted,
            started_at,
            finished_at: chrono::Utc::now(),
            error: error.as_deref(),
            dead_letter_reason: step.reason.map(|r| r.as_str()),
        };
        let mut key = [0u8; uuid::fmt::Hyphenated::LENGTH];
        correlation_id.as_uuid().hyphenated().encode_lower(&mut key);
        let mut out = OutRecord::new(&self.batching.saga_log_topic);
        out.key = Some(key.to_vec());
        let mut payload = Vec::with_capacity(record.json_capacity());
        if serde_json::to_writer(&mut payload, &record).is_err() {
            payload.clear();
        }
        out.payload = Some(payload);
        out
    }

    /// Appends a step to the saga log (acknowledged before the input is committed).
    async fn write_step(
        &self,
        sink: &Sink,
        message: &InputRecord,
        event: &CloudEvent,
        step: StepRecord,
        started_at: chrono::DateTime<chrono::Utc>,
    ) {
        if !self.saga_log {
            return;
        }
        let out = self.step_record(message, event, step, started_at);
        if let Err(e) = self.write(sink, out, "saga-log step").await {
            tracing::error!(error = %e, "a saga-log step could not be written; the saga's trace misses it");
        }
    }

    async fn handle(
        &self,
        sink: &Sink,
        message: &InputRecord,
        event: &Arc<CloudEvent>,
        slot: Option<Arc<SagaSlot>>,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Outcome {
        let Some(registered) = self.handlers.get(event.event_type.as_str()) else {
            // No handler takes it (the consumer thread skips the types the catalogue gives to
            // other services without reading them; structured-mode records of those end here).
            return Outcome::Skipped {
                logged: !self.silent_skips.contains(event.event_type.as_str()),
            };
        };
        // The envelope rules a handled event must meet beyond decoding.
        if let Err(e) = crate::envelope::check_key(message.key(), event) {
            return Outcome::DeadLetter {
                reason: DeadLetterReason::KeyMismatch,
                error: e.to_string(),
                attempts: 0,
            };
        }
        if let Err(e) = crate::envelope::check_json_data(event) {
            return Outcome::DeadLetter {
                reason: DeadLetterReason::UnsupportedContentType,
                error: e.to_string(),
                attempts: 0,
            };
        }
        if let Some(catalogue) = &self.catalogue {
            if let Err(v) = catalogue.validate(&event.event_type, &event.data) {
                return Outcome::DeadLetter {
                    reason: DeadLetterReason::SchemaInvalid,
                    error: v.to_string(),
                    attempts: 0,
                };
            }
        }
        let retry = registered.retry.as_ref().unwrap_or(&self.retry);
        let mut attempt = 1;
        loop {
            let ctx = Context {
                service: self.service.clone(),
                event: event.clone(),
                topic: message.shared_topic().clone(),
                partition: message.partition(),
                offset: message.offset(),
                attempt,
                saga: slot.clone(),
            };
            if let Some(slot) = &slot {
                // A retry starts again from the stored state.
                slot.take_change();
            }
            let handler = registered.handler.clone();
            let state = self.state.clone();
            let call = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(state, ctx)));
            let result = match call {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            match result {
                Ok(Ok(outgoing)) => {
                    let invalid = self.catalogue.as_ref().and_then(|c| {
                        outgoing
                            .iter()
                            .find_map(|o| c.validate(o.event_type, &o.data).err())
                    });
                    return match invalid {
                        None => Outcome::Handled {
                            outgoing,
                            attempts: attempt,
                        },
                        Some(v) => Outcome::DeadLetter {
                            reason: DeadLetterReason::InvalidOutput,
                            error: format!("the handler emitted an invalid event: {v}"),
                            attempts: attempt,
                        },
                    };
                }
                Ok(Err(CallError::Data(e))) => {
                    return Outcome::DeadLetter {
                        reason: DeadLetterReason::InvalidData,
                        error: e,
                        attempts: 0,
                    }
                }
                Ok(Err(CallError::Output(e))) => {
                    return Outcome::DeadLetter {
                        reason: DeadLetterReason::InvalidOutput,
                        error: e,
                        attempts: attempt,
                    }
                }
                Ok(Err(CallError::Handler(e))) if !retry.retries(&e) => {
                    return Outcome::DeadLetter {
                        reason: DeadLetterReason::HandlerFailed,
                        error: e.to_string(),
                        attempts: attempt,
                    }
                }
                Ok(Err(CallError::Handler(e))) => {
                    if attempt >= retry.max_attempts {
                        return Outcome::DeadLetter {
                            reason: DeadLetterReason::RetriesExhausted,
                            error: e.message().to_owned(),
                            attempts: attempt,
                        };
                    }
                    let backoff = retry.backoff(attempt);
                    let retried = StepRecord {
                        outcome: StepOutcome::Retried,
                        attempts: attempt,
                        emitted: Vec::new(),
                        error: Some(e.message().to_owned()),
                        reason: None,
                    };
                    // Boxed: the retry path should not grow every record's future.
                    Box::pin(self.write_step(sink, message, event, retried, started_at)).await;
                    tracing::info!(attempt, ?backoff, error = %e.message(), "handler failed, will retry");
                    pause(backoff).await;
                    attempt += 1;
                }
                Err(panic) => {
                    let text = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".to_owned());
                    return Outcome::DeadLetter {
                        reason: DeadLetterReason::HandlerPanicked,
                        error: format!("handler panicked: {text}"),
                        attempts: attempt,
                    };
                }
            }
        }
    }

    /// Publishes follow-up events and waits for every acknowledgement, retrying (with backoff)
    /// until the broker takes them: the input is never committed before its outputs are written.
    /// Fails only when the broker refuses an event for good (retrying cannot help).
    async fn publish_outputs(
        &self,
        sink: &Sink,
        input: &CloudEvent,
        outgoing: &[Outgoing],
    ) -> Result<Vec<Emitted>, String> {
        let trace = input
            .traceparent
            .as_deref()
            .and_then(|t| t.parse::<TraceParent>().ok());
        let cause_millis = uuid::Uuid::parse_str(&input.id)
            .ok()
            .and_then(|u| u.get_timestamp())
            .map(|t| {
                let (secs, nanos) = t.to_unix();
                secs * 1000 + u64::from(nanos / 1_000_000)
            })
            .unwrap_or_else(|| input.time.timestamp_millis().max(0) as u64);
        // Each follow-up event: its derived ID and its topic (both kept for the saga-log step).
        let events: Vec<(String, String)> = outgoing
            .iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    derived_event_id(&input.id, &self.source, i, cause_millis),
                    format!("{}{}", self.topic_prefix, o.topic),
                )
            })
            .collect();
        let sends = outgoing.iter().zip(&events).map(|(o, (id, topic))| async move {
            let mut failures = 0u32;
            // The topic first (created when missing), retried while the cluster is away.
            // (Boxed, and only when the topic is not known yet: every record's future stays small.)
            while !self.topics.is_known(topic) {
                let Err(e) = Box::pin(self.topics.ensure(&[topic.as_str()])).await else {
                    break;
                };
                failures += 1;
                let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
                tracing::warn!(%topic, event_type = %o.event_type, error = %e, attempt = failures, "publishing a follow-up event failed; retrying (the input stays uncommitted)");
                pause(backoff).await;
            }
            let record = self.follow_up_record(input, trace, o, id, topic);
            self.write(sink, record, "follow-up event")
                .await
                .map_err(|e| format!("`{}` to `{topic}`: {e}", o.event_type))
        });
        let refused: Vec<String> = futures::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if !refused.is_empty() {
            if let Sink::Transaction(records) = sink {
                // None of this input's events may go out with its dead letter.
                records.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            return Err(format!(
                "the broker refused a follow-up event: {}",
                refused.join("; ")
            ));
        }
        if !events.is_empty() {
            tracing::debug!(emitted = events.len(), "emitted follow-up events");
        }
        Ok(outgoing
            .iter()
            .zip(events)
            .map(|(o, (id, topic))| Emitted {
                id,
                event_type: o.event_type.to_owned(),
                topic,
            })
            .collect())
    }

    /// The record of a follow-up event of `input`, in binary mode, written straight from its
    /// parts (the same headers as [`CloudEvent::encode`]; no event is built).
    fn follow_up_record(
        &self,
        input: &CloudEvent,
        trace: Option<TraceParent>,
        outgoing: &Outgoing,
        id: &str,
        topic: &str,
    ) -> OutRecord {
        let mut traceparent = [0; crate::trace_context::TRACEPARENT_LEN];
        let traceparent = trace.map(|t| t.child().write_into(&mut traceparent) as &str);
        let headers = crate::publish::owned_headers(&HeaderParts {
            id,
            event_type: outgoing.event_type,
            source: &self.source,
            time: chrono::Utc::now(),
            correlation_id: input.correlation_id,
            content_type: Some(crate::envelope::JSON_CONTENT_TYPE),
            causation_id: Some(&input.id),
            subject: None,
            data_schema: None,
            traceparent,
            tracestate: trace.and(input.tracestate.as_deref()),
            extensions: None,
        });
        let mut key = vec![0; uuid::fmt::Hyphenated::LENGTH];
        input
            .correlation_id
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut key);
        let mut record = OutRecord::new(topic);
        record.key = Some(key);
        record.payload = Some(outgoing.data.clone());
        record.headers = Some(headers);
        record
    }

    /// Writes a saga's new state to the changelog (same partition number as the input) and,
    /// once acknowledged (or put in the transaction), to memory.
    async fn write_saga_state(&self, sink: &Sink, job: &Job, change: Option<serde_json::Value>) {
        let Some((changelog, store)) = &self.saga_state else {
            return;
        };
        let message = &job.message;
        let key = message.key().unwrap_or_default();
        let mut out = OutRecord::new(changelog);
        out.partition = Some(message.partition());
        out.key = Some(key.to_vec());
        out.payload = change.as_ref().map(|v| v.to_string().into_bytes());
        match self.write(sink, out, "saga state").await {
            Ok(()) => store.put(message.partition(), job.state_generation, key, change),
            Err(e) => {
                tracing::error!(error = %e, "the saga state could not be written; the saga keeps its previous state")
            }
        }
    }

    /// Writes the dead letter of a job's record: whole, or, when the broker refuses that as too
    /// large, without its value, then with only its `dlq_*` headers ([`Shrink`]). When not even
    /// that can be written (the dead-letter topic refuses a few hundred bytes), the record is
    /// held: never reported finished, so its partition never commits past it, and retried with
    /// backoff (0.5 s doubling to 15 s), logged as an error with its coordinates each time,
    /// until it is written or its partition is no longer this instance's (then `false`: it is
    /// left to the next owner). Other sagas and partitions go on meanwhile.
    async fn dead_letter(
        &self,
        sink: &Sink,
        job: &Job,
        reason: DeadLetterReason,
        error: &str,
        attempts: u32,
    ) -> bool {
        let message = &job.message;
        let dlq_topic = format!("{}{}", message.topic(), self.dead_letter_suffix);
        let error = bounded_error(error);
        let original = message.to_owned_message();
        let mut letter = DeadLetter {
            record: &original,
            reason,
            error: error.clone().into_owned(),
            service: &self.service,
            instance: &self.instance,
            attempts,
            shrink: Shrink::Whole,
        };
        let mut backoff = Duration::from_millis(500);
        let mut failures = 0u32;
        loop {
            let mut refused = String::new();
            for shrink in [Shrink::Whole, Shrink::WithoutValue, Shrink::CoordinatesOnly] {
                letter.shrink = shrink;
                let record = OutRecord::from_future(&letter.record(&dlq_topic));
                match self.write(sink, record, "dead letter").await {
                    Ok(()) => {
                        tracing::warn!(
                            service = %self.service,
                            topic = message.topic(),
                            partition = message.partition(),
                            offset = message.offset(),
                            %reason,
                            error = %error,
                            dead_letter_topic = %dlq_topic,
                            carried = ?shrink,
                            "record dead-lettered"
                        );
                        if failures > 0 {
                            tracing::info!(
                                topic = message.topic(),
                                partition = message.partition(),
                                offset = message.offset(),
                                failures,
                                "the held record's dead letter is written: its partition moves on"
                            );
                        }
                        return true;
                    }
                    Err(e) => {
                        tracing::debug!(dead_letter_topic = %dlq_topic, error = %e, ?shrink, "dead letter refused; trying a smaller one");
                        refused = e;
                    }
                }
            }
            failures += 1;
            tracing::error!(
                service = %self.service,
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                %reason,
                dead_letter_topic = %dlq_topic,
                error = %refused,
                failures,
                retry_in = ?backoff,
                "the dead letter cannot be written, not even its coordinates: the record is held \
                 (its partition commits nothing past it) and retried; check the dead-letter \
                 topic (does it exist, is its max.message.bytes large enough?)"
            );
            pause(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(15));
            if !self.still_owned(job) || !self.still_assigned(job) {
                tracing::info!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "partition no longer owned: the held record is left to its next owner"
                );
                return false;
            }
        }
    }
}

/// What one fetch response of a service consumer may hold (bytes): its `fetch.max.bytes` unless
/// configured (at least the client's `message.max.bytes`, which librdkafka requires). The bound is
/// on the response, not on each partition: a record batch larger than a partition's share is
/// returned only as the first of a response, so a per-partition share below the batches a
/// producer writes (librdkafka's `batch.size` is 1 MB) had a backlog read one partition at a time
/// (see [`ConsumerThread::consumer`]).
const FETCH_BUDGET: usize = 1024 * 1024;

/// A service consumer's `fetch.max.bytes` unless configured: [`FETCH_BUDGET`], or the client's
/// `message.max.bytes` when that is set higher (librdkafka refuses a smaller `fetch.max.bytes`).
fn fetch_max_bytes(properties: &std::collections::BTreeMap<String, String>) -> usize {
    properties
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .max(FETCH_BUDGET)
}

/// The fewest records librdkafka keeps prefetched per input partition (`queued.min.messages`),
/// unless the instance's `max_in_flight` is lower.
const MIN_PREFETCH: usize = 100;

/// A service consumer's `queued.min.messages` unless configured: the instance's bound shared
/// over its input partitions, at least [`MIN_PREFETCH`] records, at most the bound. librdkafka
/// applies the value to every partition, and a prefetched record pins its whole fetch response:
/// the whole bound per partition (1,000 × 18 partitions in the benchmark's `activity`) kept
/// 18,000 records and 3.6 MB of fetch responses at its peak (heaptrack), for an instance that
/// takes 1,000 at a time.
fn prefetch_per_partition(max_in_flight: usize, input_partitions: usize) -> usize {
    let bound = max_in_flight.max(1);
    (bound / input_partitions.max(1))
        .max(MIN_PREFETCH)
        .min(bound)
}

/// The consumer side, on its own OS thread.
struct ConsumerThread {
    service: Arc<str>,
    instance: Arc<str>,
    group: String,
    config: KafkaConfig,
    topics: Vec<String>,
    /// Partitions of all input topics together.
    input_partitions: usize,
    /// How exactly-once transactions batch steps and markers.
    batching: TailBatching,
    /// Types skipped without being read ([`Service::silent_skips`]).
    silent_skips: Arc<HashSet<String>>,
    /// The assigned partitions' offsets (shared with the workers, which read epochs from it).
    book: Arc<Mutex<Book>>,
    saga_state: Option<(String, SagaStore)>,
    handled_log: Option<(String, HandledLog)>,
    options: ServiceOptions,
    control: Arc<Control>,
    ready: ReadySignal,
}

/// Bookkeeping shared by the poll loop and the rebalance callbacks (both on the consumer thread).
struct Book {
    offsets: OffsetBook,
    paused: HashSet<PartitionKey>,
}

/// Exactly-once mode: the transactional producer and what waits for the next transaction.
type TxnProducer = Arc<ThreadedProducer<DefaultProducerContext>>;

struct Transactions {
    producer: TxnProducer,
    /// The producer's settings, to make a new one after a failure the old one cannot leave.
    producer_config: rdkafka::ClientConfig,
    book: TxnBook<Vec<TxnItem>>,
    /// How the saga-log steps and handled markers are batched.
    batching: TailBatching,
    /// Input offsets committed by this instance's transactions, by partition.
    committed: HashMap<PartitionKey, i64>,
    last_commit: Instant,
    interval: Duration,
    timeout: Duration,
    /// A call on the current producer never returned: it is abandoned, not aborted.
    wedged: AtomicBool,
    /// The transaction begun and not yet committed: the next input offsets of the work whose
    /// records were written into it.
    open: Option<HashMap<PartitionKey, i64>>,
}

/// Why a transaction did not commit.
enum TxnFailure {
    /// Aborted: everything since the last commit is handled again.
    Abort(String),
    /// The producer cannot go on (fenced by a newer instance with the same transactional.id,
    /// ...): the service stops with an error.
    Fatal(String),
}

/// A transaction call that failed, or that did not return.
enum TxnCallError {
    Kafka(KafkaError),
    /// No answer within the bound. librdkafka waits for some internal replies without a bound:
    /// seen here, `send_offsets_to_transaction` blocked for good after the coordinator's
    /// broker was killed and came back (the 3-node broker-loss test, about one run in four).
    Hung(&'static str, Duration),
    /// No thread to run the call on, or the call panicked.
    NoThread(String),
}

impl std::fmt::Display for TxnCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kafka(e) => e.fmt(f),
            Self::Hung(what, after) => write!(f, "{what} did not return within {after:?}"),
            Self::NoThread(e) => write!(f, "transaction call without an answer: {e}"),
        }
    }
}

/// Fenced: a newer producer with this `transactional.id` exists (another live instance with the
/// same ID): this one must stop.
fn is_fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
    )
}

/// Runs a blocking transaction call on a thread of its own and waits for it at most `limit`.
/// A call that does not return keeps its thread, and the producer with it, until it does; the
/// caller replaces the producer.
fn guarded(
    producer: &TxnProducer,
    what: &'static str,
    limit: Duration,
    call: impl FnOnce(&ThreadedProducer<DefaultProducerContext>) -> KafkaResult<()> + Send + 'static,
) -> Result<(), TxnCallError> {
    let (tx, rx) = std_mpsc::sync_channel(1);
    let producer = producer.clone();
    std::thread::Builder::new()
        .name("txn-call".into())
        .spawn(move || {
            let _ = tx.send(call(&producer));
        })
        .map_err(|e| TxnCallError::NoThread(format!("no thread for {what}: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(result) => result.map_err(TxnCallError::Kafka),
        Err(std_mpsc::RecvTimeoutError::Timeout) => Err(TxnCallError::Hung(what, limit)),
        // The call panicked: it returned, just not with an answer.
        Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(TxnCallError::NoThread(format!(
            "{what} ended without an answer (panicked)"
        ))),
    }
}

/// Runs a transaction call again while it fails with a retriable error (a coordinator moving,
/// a broker away), for up to `patience`.
fn retrying(
    patience: Duration,
    mut call: impl FnMut() -> Result<(), TxnCallError>,
) -> Result<(), TxnCallError> {
    let deadline = Instant::now() + patience;
    loop {
        match call() {
            Err(TxnCallError::Kafka(KafkaError::Transaction(rde)))
                if rde.is_retriable() && Instant::now() < deadline =>
            {
                tracing::debug!(error = %rde, "transaction call: retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

impl Transactions {
    /// How long a transaction call may take before the producer counts as wedged: its own
    /// timeout, and some slack.
    fn call_limit(&self) -> Duration {
        self.timeout + Duration::from_secs(15)
    }

    fn classify(&self, e: TxnCallError) -> TxnFailure {
        match e {
            TxnCallError::Kafka(e) if is_fenced(&e) => TxnFailure::Fatal(e.to_string()),
            TxnCallError::Hung(..) => {
                self.wedged.store(true, Ordering::SeqCst);
                TxnFailure::Abort(e.to_string())
            }
            e => TxnFailure::Abort(e.to_string()),
        }
    }

    /// Ends a failed transaction: abort it, or, when the producer cannot (its state is unknown
    /// after a coordinator failure, it failed fatally, or a call on it never returned), replace
    /// the producer: a new one with the same `transactional.id` fences the old one and aborts
    /// whatever it left open. Err: fenced, or no new producer could be started within two
    /// minutes.
    fn abort_or_reset(&mut self) -> Result<(), String> {
        let (t, limit) = (self.timeout, self.call_limit());
        let reason = if self.wedged.swap(false, Ordering::SeqCst) {
            "a call on it never returned".to_owned()
        } else {
            let aborted = retrying(t, || {
                guarded(&self.producer, "abort_transaction", limit, move |p| {
                    p.abort_transaction(t)
                })
            });
            match aborted {
                Ok(()) => return Ok(()),
                Err(TxnCallError::Kafka(e)) if is_fenced(&e) => return Err(format!("fenced: {e}")),
                Err(e) => format!("aborting the transaction failed: {e}"),
            }
        };
        tracing::warn!(reason = %reason, "starting a new transactional producer");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let attempt = self
                .producer_config
                .create::<ThreadedProducer<DefaultProducerContext>>()
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    let p = Arc::new(p);
                    guarded(&p, "init_transactions", limit, move |p| {
                        p.init_transactions(t)
                    })
                    .map(|()| p)
                    .map_err(|e| e.to_string())
                });
            match attempt {
                Ok(producer) => {
                    // The old one is dropped here, or by the thread of a call that never
                    // returned, when it does.
                    self.producer = producer;
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("no new transactional producer: {e}"))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "starting a new transactional producer failed; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Writes a batch of finished work into the open transaction, beginning one if none is
    /// (blocking; each transaction call on a thread of its own, bounded by
    /// [`Self::call_limit`]). The batch is the finished prefix of its partitions, so every record
    /// in a transaction belongs to an input whose offset the same transaction commits.
    fn write(&mut self, batch: crate::delivery::TxnBatch<Vec<TxnItem>>) -> Result<(), TxnFailure> {
        if batch.offsets.is_empty() {
            return Ok(());
        }
        if self.open.is_none() {
            let limit = self.call_limit();
            guarded(&self.producer, "begin_transaction", limit, |p| {
                p.begin_transaction()
            })
            .map_err(|e| self.classify(e))?;
            self.open = Some(HashMap::new());
        }
        let mut steps = Vec::new();
        let mut markers = Vec::new();
        for item in batch.work.into_iter().flatten() {
            match item {
                TxnItem::Record(record) => self.send(record)?,
                TxnItem::Step(step) => steps.push(step),
                TxnItem::Marker(marker) => markers.push(marker),
            }
        }
        // The batch's saga-log steps and handled markers, batched per partition: a few records
        // per batch, not two per input.
        let (markers, steps) = self.batching.records(steps, &markers);
        for record in markers.into_iter().chain(steps) {
            self.send(record)?;
        }
        if let Some(open) = &mut self.open {
            open.extend(batch.offsets);
        }
        Ok(())
    }

    /// Hands one record to the transactional producer, waiting while its queue is full.
    fn send(&self, mut record: OutRecord) -> Result<(), TxnFailure> {
        // The headers move into the send (librdkafka takes them over), not copied.
        let headers = record.headers.take();
        let mut base = record.as_base();
        base.headers = headers;
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => {
                    return Err(TxnFailure::Abort(format!(
                        "writing to `{}`: {e}",
                        record.topic
                    )))
                }
            }
        }
    }

    /// Commits the open transaction: its input offsets, then (once every record written into
    /// it is acknowledged) the commit itself. Ok(None) when no transaction is open.
    fn commit_open(
        &mut self,
        consumer: &BaseConsumer<RuntimeContext>,
    ) -> Result<Option<HashMap<PartitionKey, i64>>, TxnFailure> {
        let Some(offsets) = self.open.take() else {
            return Ok(None);
        };
        let (t, limit) = (self.timeout, self.call_limit());
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(|e| TxnFailure::Abort(e.to_string()))?;
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| TxnFailure::Abort("no consumer group metadata yet".into()))?;
        let (tpl, group) = (Arc::new(tpl), Arc::new(group));
        retrying(t, || {
            let (tpl, group) = (tpl.clone(), group.clone());
            guarded(
                &self.producer,
                "send_offsets_to_transaction",
                limit,
                move |p| p.send_offsets_to_transaction(&tpl, &group, t),
            )
        })
        .map_err(|e| self.classify(e))?;
        // Wait for the records' acknowledgements here, in 1 ms steps: rdkafka's
        // commit_transaction flushes first, polling in 100 ms steps that run to the end when
        // the producer's own thread takes the delivery reports (≥ 100 ms per transaction).
        let deadline = Instant::now() + t;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        retrying(t, || {
            guarded(&self.producer, "commit_transaction", limit, move |p| {
                p.commit_transaction(t)
            })
        })
        .map_err(|e| self.classify(e))?;
        Ok(Some(offsets))
    }
}

struct RuntimeContext {
    service: Arc<str>,
    config: KafkaConfig,
    book: Arc<Mutex<Book>>,
    completions: Arc<Completions>,
    /// What [`Self::absorb_completions`] takes from `completions` (kept for its capacity).
    absorbed: Mutex<Vec<Completion>>,
    revoke_grace: Duration,
    /// Changelog and store for restoring saga state on assignment.
    saga_state: Option<(String, SagaStore)>,
    /// Handled-marker topic and log, restored on assignment too.
    handled_log: Option<(String, HandledLog)>,
    /// Exactly-once mode.
    txn: Option<Mutex<Transactions>>,
    /// Set when the service must stop (a fatal transaction error in a callback).
    fatal: Mutex<Option<String>>,
    ready: ReadySignal,
    /// Records taken from the consumer but not yet handed to the workers: they go in batches,
    /// once per turn of the consumer loop (and before a revocation waits for in-flight work,
    /// which includes them). Boxed, as the lanes keep them.
    #[allow(clippy::vec_box)]
    taken: Mutex<Vec<Box<Job>>>,
    jobs: Arc<JobQueue>,
}

impl ClientContext for RuntimeContext {
    /// Consumer lag per assigned partition, every `statistics.interval.ms` (default 30 s): at
    /// `info` when there is any, else at `debug`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lags = Vec::new();
        let mut total = 0i64;
        for (name, topic) in &statistics.topics {
            for (p, partition) in &topic.partitions {
                // Records up to the last stable offset (what read_committed can read) not yet
                // taken by the runtime.
                if *p >= 0 && partition.app_offset >= 0 && partition.fetch_state == "active" {
                    let lag = (partition.ls_offset - partition.app_offset).max(0);
                    total += lag;
                    lags.push(format!("{name}[{p}]={lag}"));
                }
            }
        }
        if lags.is_empty() {
            return;
        }
        lags.sort_unstable();
        let in_flight = self
            .book
            .lock()
            .map(|b| b.offsets.total_in_flight())
            .unwrap_or(0);
        if total > 0 {
            tracing::info!(service = %self.service, lag = total, in_flight, partitions = %lags.join(" "), "consumer lag");
        } else {
            tracing::debug!(service = %self.service, in_flight, partitions = %lags.join(" "), "consumer lag: none");
        }
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            // Records taken in this turn of the consumer loop are in flight too: hand them over.
            self.hand_over();
            // Give in-flight work of the revoked partitions a moment to finish.
            let deadline = Instant::now() + self.revoke_grace;
            loop {
                self.absorb_completions(Some(Duration::from_millis(20)));
                let busy = {
                    let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
                    revoked.iter().any(|(t, p)| {
                        book.offsets
                            .get(t, *p)
                            .map(|tr| tr.in_flight() > 0)
                            .unwrap_or(false)
                    })
                };
                if !busy || Instant::now() >= deadline {
                    break;
                }
            }
            self.commit(consumer);
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            for (t, p) in &revoked {
                if let Some(tr) = book.offsets.revoke(t, *p) {
                    if tr.in_flight() > 0 {
                        tracing::info!(service = %self.service, topic = %t, partition = p, abandoned = tr.in_flight(), "partition revoked with work in flight; it will be handled again by the new owner");
                    }
                }
                book.paused.remove(&(t.clone(), *p));
            }
            // A partition number stays loaded while any input topic's partition of that number
            // is still assigned (cooperative rebalancing revokes some, not all).
            let still: HashSet<i32> = book.offsets.iter().map(|(_, p, _)| p).collect();
            drop(book);
            if let Some(txn) = &self.txn {
                let mut txn = txn.lock().unwrap_or_else(|e| e.into_inner());
                for (t, p) in &revoked {
                    txn.book.forget(t, *p);
                    txn.committed.remove(&(t.clone(), *p));
                }
            }
            for (_, p) in &revoked {
                if still.contains(p) {
                    continue;
                }
                // Another instance may own these sagas next: never keep stale state.
                if let Some((_, store)) = &self.saga_state {
                    store.drop_partition(*p);
                }
                if let Some((_, log)) = &self.handled_log {
                    log.drop_partition(*p);
                }
            }
            tracing::info!(service = %self.service, partitions = ?revoked, "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            let mut assigned = Vec::new();
            for e in tpl.elements() {
                book.offsets.assign(e.topic(), e.partition());
                book.paused.remove(&(e.topic().to_owned(), e.partition()));
                assigned.push((e.topic().to_owned(), e.partition()));
            }
            drop(book);
            // Restore before any record of these partitions is handled: records are only
            // dispatched after this callback returns.
            let mut numbers: Vec<i32> = assigned.iter().map(|(_, p)| *p).collect();
            numbers.sort_unstable();
            numbers.dedup();
            self.restore(&numbers, false);
            tracing::info!(service = %self.service, partitions = ?assigned, "partitions assigned");
            if !assigned.is_empty() {
                self.ready.raise();
            }
        }
    }
}

impl RuntimeContext {
    /// Loads the saga state and handled markers of these partition numbers (blocking); with
    /// `reload`, also those already loaded.
    fn restore(&self, numbers: &[i32], reload: bool) {
        let due = numbers.iter().any(|&p| {
            let state = self
                .saga_state
                .as_ref()
                .is_some_and(|(_, store)| reload || !store.is_loaded(p));
            let markers = self
                .handled_log
                .as_ref()
                .is_some_and(|(_, log)| reload || !log.is_loaded(p));
            state || markers
        });
        if due {
            // Said before the reads (each bounded to 60 s): records wait for them.
            tracing::info!(service = %self.service, partitions = ?numbers, "restoring saga state and handled markers");
        }
        for &p in numbers {
            if let Some((changelog, store)) = &self.saga_state {
                if reload || !store.is_loaded(p) {
                    store.drop_partition(p);
                    let started = Instant::now();
                    match store.restore(&self.config, changelog, p, Duration::from_secs(60)) {
                        Ok(sagas) => {
                            tracing::info!(service = %self.service, partition = p, sagas, took = ?started.elapsed(), "saga state restored")
                        }
                        Err(e) => {
                            tracing::error!(service = %self.service, partition = p, error = %e, "saga state restore failed; the partition's sagas start from empty state")
                        }
                    }
                }
            }
            if let Some((topic, log)) = &self.handled_log {
                if reload || !log.is_loaded(p) {
                    log.drop_partition(p);
                    let started = Instant::now();
                    match log.restore(&self.config, topic, p, Duration::from_secs(60)) {
                        Ok(events) => {
                            tracing::debug!(service = %self.service, partition = p, events, took = ?started.elapsed(), "handled markers restored")
                        }
                        Err(e) => {
                            tracing::error!(service = %self.service, partition = p, error = %e, "handled markers could not be restored; redelivered events of this partition may run their handlers again")
                        }
                    }
                }
            }
        }
    }

    /// Hands the records taken so far to the workers, all at once; false when the workers are
    /// gone.
    fn hand_over(&self) -> bool {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        self.jobs.append(&mut taken)
    }

    /// Applies finished records to the book (waiting up to `wait` for the first one).
    fn absorb_completions(&self, wait: Option<Duration>) -> usize {
        let mut absorbed = self.absorbed.lock().unwrap_or_else(|e| e.into_inner());
        self.completions.take(&mut absorbed, wait);
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut txn = self
            .txn
            .as_ref()
            .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()));
        let n = absorbed.len();
        for c in absorbed.drain(..) {
            book.offsets
                .finish(&c.topic, c.partition, c.offset, c.epoch);
            if let Some(txn) = &mut txn {
                txn.book.finish(c.seq, c.partition, c.epoch, c.work);
            }
        }
        n
    }

    /// Commits finished work: at-least-once, the stored offsets synchronously; exactly-once, a
    /// transaction with the finished work's records and offsets (see [`Self::transact`]).
    fn commit(&self, consumer: &BaseConsumer<Self>) {
        if self.txn.is_some() {
            self.transact(consumer, true);
            return;
        }
        self.store_pending(consumer);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(service = %self.service, error = %e, "commit failed")
            }
        }
    }

    /// Exactly-once: writes the finished work into the open transaction (see
    /// [`Transactions::write`]) and, with `commit`, commits it. When a transaction aborts,
    /// everything since the last commit is handled again ([`Self::rewind`]); when the producer
    /// fails for good, the service is told to stop.
    fn transact(&self, consumer: &BaseConsumer<Self>, commit: bool) {
        let Some(txn) = &self.txn else {
            return;
        };
        let mut txn = txn.lock().unwrap_or_else(|e| e.into_inner());
        if commit {
            txn.last_commit = Instant::now();
        }
        let batch = txn.book.take_committable();
        let inputs = batch.work.len();
        let mut result = txn.write(batch);
        if result.is_ok() && commit {
            let started = Instant::now();
            match txn.commit_open(consumer) {
                Ok(Some(offsets)) => {
                    tracing::debug!(service = %self.service, partitions = offsets.len(), took_ms = started.elapsed().as_secs_f64() * 1e3, "transaction committed");
                    txn.committed.extend(offsets);
                }
                Ok(None) => {}
                Err(f) => result = Err(f),
            }
        }
        let failure = match result {
            Ok(()) => return,
            Err(f) => f,
        };
        txn.open = None;
        let reason = match failure {
            TxnFailure::Fatal(reason) => reason,
            TxnFailure::Abort(reason) => {
                tracing::warn!(service = %self.service, error = %reason, inputs, "transaction failed; aborting it and handling its inputs again");
                match txn.abort_or_reset() {
                    Ok(()) => {
                        drop(txn);
                        self.rewind(consumer);
                        return;
                    }
                    Err(e) => format!("ending a failed transaction: {e} (after: {reason})"),
                }
            }
        };
        tracing::error!(service = %self.service, error = %reason, "exactly-once delivery cannot go on; stopping");
        *self.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// After an aborted transaction: every assigned partition starts again from its last
    /// committed offset, with saga state and handled markers reloaded from what was committed.
    /// Work in flight belongs to the old epoch and is ignored when it finishes.
    fn rewind(&self, consumer: &BaseConsumer<Self>) {
        let assigned: Vec<PartitionKey> = {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<PartitionKey> = book
                .offsets
                .iter()
                .map(|(t, p, _)| (t.to_owned(), p))
                .collect();
            for (t, p) in &keys {
                book.offsets.assign(t, *p);
            }
            keys
        };
        let known = match &self.txn {
            Some(txn) => {
                let mut txn = txn.lock().unwrap_or_else(|e| e.into_inner());
                for (t, p) in &assigned {
                    txn.book.forget(t, *p);
                }
                txn.committed.clone()
            }
            None => HashMap::new(),
        };
        let mut ask = TopicPartitionList::new();
        for key in assigned.iter().filter(|k| !known.contains_key(*k)) {
            ask.add_partition(&key.0, key.1);
        }
        let mut from_broker: HashMap<PartitionKey, i64> = HashMap::new();
        if ask.count() > 0 {
            match consumer.committed_offsets(ask, self.config.connect_timeout) {
                Ok(list) => {
                    for e in list.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            from_broker.insert((e.topic().to_owned(), e.partition()), o);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(service = %self.service, error = %e, "reading committed offsets failed")
                }
            }
        }
        for key in &assigned {
            let offset = known
                .get(key)
                .or_else(|| from_broker.get(key))
                .map(|o| Offset::Offset(*o))
                .unwrap_or(Offset::Beginning);
            if let Err(e) = consumer.seek(&key.0, key.1, offset, self.config.connect_timeout) {
                tracing::warn!(service = %self.service, topic = %key.0, partition = key.1, error = %e, "seeking back after an abort failed");
            }
        }
        let mut numbers: Vec<i32> = assigned.iter().map(|(_, p)| *p).collect();
        numbers.sort_unstable();
        numbers.dedup();
        self.restore(&numbers, true);
        tracing::info!(service = %self.service, partitions = ?assigned, "rewound to the last committed offsets");
    }

    /// Stores every advanced watermark for the next commit (at-least-once).
    fn store_pending(&self, consumer: &BaseConsumer<Self>) {
        if self.txn.is_some() {
            return;
        }
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        // Called on every turn of the consumer loop: nothing is allocated unless a watermark
        // moved.
        let stored: Vec<(PartitionKey, i64)> = book
            .offsets
            .iter()
            .filter_map(|(t, p, tr)| tr.pending_commit().map(|o| ((t.to_owned(), p), o)))
            .collect();
        if stored.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(stored.len());
        for ((t, p), o) in &stored {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        match consumer.store_offsets(&tpl) {
            Ok(()) => {
                for ((t, p), o) in stored {
                    if let Some(tr) = book.offsets.get_mut(&t, p) {
                        tr.mark_stored(o);
                    }
                }
            }
            // Benign during a rebalance (the partition is no longer ours).
            Err(e) => tracing::debug!(error = %e, "storing offsets failed"),
        }
    }
}

impl ConsumerThread {
    fn exactly_once(&self) -> bool {
        self.options.delivery == Delivery::ExactlyOnce
    }

    /// The transactional producer of this instance: `transactional.id` = `<group>.<instance>`,
    /// so a restarted instance with the same ID fences its predecessor and aborts what it left
    /// open.
    fn transactions(&self) -> Result<Transactions, ServiceError> {
        let mut cc = producer_config(&self.config);
        // A transaction left open by a crashed instance blocks read_committed readers of its
        // partitions until this runs out (or the instance restarts with the same ID).
        let txn_timeout: u64 = match self.config.properties().get("transaction.timeout.ms") {
            Some(v) => v.parse().unwrap_or(10_000),
            None => {
                cc.set("transaction.timeout.ms", "10000");
                10_000
            }
        };
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        let message_timeout = (self.config.delivery_timeout.as_millis() as u64).min(txn_timeout);
        cc.set("message.timeout.ms", message_timeout.to_string());
        let id = format!("{}.{}", self.group, self.instance);
        cc.set("transactional.id", &id);
        let producer: ThreadedProducer<DefaultProducerContext> = cc
            .create()
            .map_err(|e| ServiceError::Kafka(e.to_string()))?;
        let timeout = self.config.connect_timeout.max(Duration::from_secs(30));
        producer
            .init_transactions(timeout)
            .map_err(|e| ServiceError::Transactions {
                service: self.service.to_string(),
                reason: format!("initialising transactions (transactional.id `{id}`): {e}"),
            })?;
        tracing::info!(service = %self.service, transactional_id = %id, "exactly-once: transactions initialised");
        Ok(Transactions {
            producer: Arc::new(producer),
            producer_config: cc,
            book: TxnBook::default(),
            batching: self.batching.clone(),
            committed: HashMap::new(),
            last_commit: Instant::now(),
            interval: self.options.commit_interval,
            timeout,
            wedged: AtomicBool::new(false),
            open: None,
        })
    }

    fn consumer(&self, ctx: RuntimeContext) -> Result<BaseConsumer<RuntimeContext>, ServiceError> {
        let mut cc = self.config.client_config();
        // `range` gives one instance the same partition numbers of every topic, which per-saga
        // state needs; otherwise cooperative rebalancing moves only the partitions that move.
        let strategy = if self.saga_state.is_some() {
            "range"
        } else {
            "cooperative-sticky"
        };
        let min_messages =
            prefetch_per_partition(self.options.max_in_flight, self.input_partitions).to_string();
        let fetch_bytes = fetch_max_bytes(self.config.properties()).to_string();
        let defaults = [
            ("partition.assignment.strategy", strategy),
            ("auto.commit.interval.ms", "1000"),
            ("queued.max.messages.kbytes", "4096"),
            // librdkafka prefetches up to 100,000 records per partition by default, and its
            // kilobyte bound counts keys and values only, not headers (most of a CloudEvents
            // record): a backlog filled the heap with prefetched records and the fetch
            // responses they pin (heaptrack: 15 of a 24 MB peak). The instance's share per
            // partition of what it may have in flight is enough to keep it busy
            // ([`prefetch_per_partition`]).
            ("queued.min.messages", min_messages.as_str()),
            // A fetch response stays in memory whole while any of its records does; librdkafka
            // lets one hold the lesser of 50 MiB and `queued.max.messages.kbytes` (4 MiB here).
            // 1 MiB per response instead, with `max.partition.fetch.bytes` left at librdkafka's
            // 1 MiB: an earlier default shared 1 MiB over the input partitions (64 KiB each in
            // the benchmark's `activity`), and since the broker returns a batch larger than a
            // partition's share only as the first of a response, a backlog written in 1 MB
            // batches was read one partition at a time (consumer lag in the log: one partition
            // of six draining, the others untouched) and the whole pipeline with it.
            ("fetch.max.bytes", fetch_bytes.as_str()),
            // When the prefetch queue is over that bound (the runtime took as much work as it
            // may), librdkafka postpones the partition's next fetch by this much. Its default,
            // 1 s, suits its own 64 MiB bound; its docs advise lowering it with a low one.
            ("fetch.queue.backoff.ms", "10"),
            ("auto.offset.reset", "earliest"),
            // A subscribed topic the first metadata answer missed (just created) is found
            // within seconds, not after librdkafka's default 5 minutes.
            ("topic.metadata.refresh.interval.ms", "5000"),
            // Consumer lag in the log.
            ("statistics.interval.ms", "30000"),
        ];
        for (k, v) in defaults {
            if !self.config.properties().contains_key(k) {
                cc.set(k, v);
            }
        }
        cc.set("group.id", &self.group)
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false");
        if self.exactly_once() {
            // Offsets go with the transactions; aborted records are never read.
            cc.set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed");
        } else {
            cc.set("enable.auto.commit", "true");
        }
        let consumer: BaseConsumer<RuntimeContext> = cc
            .create_with_context(ctx)
            .map_err(|e| ServiceError::Kafka(e.to_string()))?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| ServiceError::Kafka(e.to_string()))?;
        Ok(consumer)
    }

    fn run(self, jobs: Arc<JobQueue>, done: Arc<Completions>) -> Result<(), ServiceError> {
        let txn = if self.exactly_once() {
            Some(Mutex::new(self.transactions()?))
        } else {
            None
        };
        let ctx = RuntimeContext {
            service: self.service.clone(),
            config: self.config.clone(),
            book: self.book.clone(),
            completions: done,
            absorbed: Mutex::new(Vec::new()),
            revoke_grace: self.options.revoke_grace,
            saga_state: self.saga_state.clone(),
            handled_log: self.handled_log.clone(),
            txn,
            fatal: Mutex::new(None),
            ready: self.ready.clone(),
            taken: Mutex::new(Vec::new()),
            jobs,
        };
        let consumer = self.consumer(ctx)?;
        // The subscribed topics' names, shared by every job and completion of the topic.
        let names: Vec<Arc<str>> = self.topics.iter().map(|t| Arc::from(t.as_str())).collect();
        let max = self.options.max_in_flight_per_partition.max(1);
        let max_total = self.options.max_in_flight.max(1);
        // Exactly-once: inputs finished but not yet written into a transaction (an earlier
        // input of their partition number is still being handled) count against the bound too,
        // which is twice the instance's there.
        let bound = if self.exactly_once() {
            2 * max_total
        } else {
            max_total
        };
        let mut draining_since: Option<Instant> = None;
        let mut last_poll_error: Option<Instant> = None;
        let mut seq = 0u64;
        let mut failed: Option<String> = None;
        let subscribed = Instant::now();
        let mut last_waiting_note = subscribed;
        loop {
            let ctx = consumer.context();
            ctx.absorb_completions(None);
            ctx.store_pending(&consumer);
            if let Some(txn) = &ctx.txn {
                // Finished work goes into the open transaction at once; it commits every
                // commit interval.
                let due = txn
                    .lock()
                    .map(|t| t.last_commit.elapsed() >= t.interval)
                    .unwrap_or(true);
                ctx.transact(&consumer, due);
            }
            if let Some(reason) = ctx.fatal.lock().ok().and_then(|f| f.clone()) {
                failed = Some(reason);
                break;
            }
            self.resume_drained(&consumer, max);

            if self.control.abandon.load(Ordering::SeqCst) {
                // The runtime was dropped (a crash, for the purpose of delivery): leave without
                // draining. Only finished work was stored, so only finished work is committed.
                break;
            }
            if self.control.stop.load(Ordering::SeqCst) {
                let since = *draining_since.get_or_insert_with(|| {
                    tracing::info!(service = %self.service, "shutting down: finishing in-flight work");
                    if let Ok(assignment) = consumer.assignment() {
                        let _ = consumer.pause(&assignment);
                    }
                    Instant::now()
                });
                let in_flight = ctx
                    .book
                    .lock()
                    .map(|b| b.offsets.total_in_flight())
                    .unwrap_or(0);
                if in_flight == 0 {
                    break;
                }
                if since.elapsed() >= self.options.shutdown_timeout {
                    tracing::warn!(service = %self.service, in_flight, "shutdown timeout: leaving unfinished work uncommitted");
                    break;
                }
            }

            // Over the instance's bound: take no records until work drains (librdkafka's own
            // prefetch stays bounded by queued.max.messages.kbytes; nothing is purged and
            // fetched again, as a pause would).
            // Exactly-once, an input's records are held until it is committable: finished
            // inputs behind an unfinished one of their partition number, in another topic (which
            // the offset book does not see), count too.
            let total = match &ctx.txn {
                Some(txn) => txn.lock().map(|t| t.book.len()).unwrap_or(0),
                None => ctx
                    .book
                    .lock()
                    .map(|b| b.offsets.total_in_flight())
                    .unwrap_or(0),
            };
            if total >= bound && draining_since.is_none() {
                ctx.absorb_completions(Some(Duration::from_millis(5)));
                continue;
            }
            // Start-up never waits in silence: joining the group is said every few seconds.
            if !self.ready.flag.is_raised() && last_waiting_note.elapsed() >= WAITING_NOTE_EVERY {
                tracing::info!(service = %self.service, group = %self.group, waited_s = subscribed.elapsed().as_secs(), "waiting for the group to assign partitions (an instance beyond the partition count gets none until another leaves)");
                last_waiting_note = Instant::now();
            }

            // Take up to a batch of records (the first poll waits up to 5 ms, the rest take only
            // what librdkafka has already fetched), then hand them to the workers in one go.
            let room = if draining_since.is_some() {
                TAKE_BATCH
            } else {
                bound.saturating_sub(total).min(TAKE_BATCH)
            };
            let mut wait = Duration::from_millis(5);
            let mut taken = 0;
            while taken < room {
                let polled = consumer.poll(wait);
                wait = Duration::ZERO;
                let message = match polled {
                    None => break,
                    // Logged at most every 5 s: librdkafka retries by itself.
                    Some(Err(e)) => {
                        if last_poll_error.map_or(true, |t| t.elapsed() > Duration::from_secs(5)) {
                            tracing::warn!(service = %self.service, error = %e, "consumer error (librdkafka retries by itself)");
                            last_poll_error = Some(Instant::now());
                        }
                        break;
                    }
                    Some(Ok(message)) => message,
                };
                if draining_since.is_some() {
                    // Not taken: not tracked, never committed; handled after a restart.
                    continue;
                }
                let (partition, offset) = (message.partition(), message.offset());
                let topic = names
                    .iter()
                    .find(|n| ***n == *message.topic())
                    .cloned()
                    .unwrap_or_else(|| Arc::from(message.topic()));
                // Read in place: a record of a type the catalogue gives to other services (one
                // `ce_type` header naming it) is not copied, but skipped by that rule. Everything
                // else goes to a worker, which decodes it and handles, dead-letters or skips it
                // with a step.
                let raw_headers = crate::record::raw_headers(&message);
                let unhandled = !self.silent_skips.is_empty()
                    && crate::record::only_header_in(raw_headers.as_ref(), headers::TYPE)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .is_some_and(|t| self.silent_skips.contains(t));
                let mut book = ctx.book.lock().unwrap_or_else(|e| e.into_inner());
                let Some(epoch) = book.offsets.start(&topic, partition, offset) else {
                    continue;
                };
                seq += 1;
                if let Some(txn) = &ctx.txn {
                    let mut txn = txn.lock().unwrap_or_else(|e| e.into_inner());
                    txn.book.start(seq, &topic, partition, offset, epoch);
                    if unhandled {
                        txn.book.finish(seq, partition, epoch, Vec::new());
                    }
                }
                if unhandled {
                    // Not ours to handle: the offset simply advances.
                    book.offsets.finish(&topic, partition, offset, epoch);
                    continue;
                }
                let in_flight = book
                    .offsets
                    .get(&topic, partition)
                    .map(|t| t.in_flight())
                    .unwrap_or(0);
                // Only a bound below the instance's can matter: a partition never holds more
                // than the instance takes, and a pause throws away librdkafka's prefetch of the
                // partition (fetched again on resume).
                if max < max_total
                    && in_flight >= max
                    && book.paused.insert((topic.to_string(), partition))
                {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&topic, partition);
                    if let Err(e) = consumer.pause(&tpl) {
                        tracing::warn!(error = %e, "pausing a partition failed");
                        book.paused.remove(&(topic.to_string(), partition));
                    } else {
                        tracing::debug!(topic = %topic, partition, in_flight, "partition paused (backpressure)");
                    }
                }
                drop(book);
                let job = Box::new(Job {
                    message: InputRecord::copy_with(&message, topic.clone(), raw_headers),
                    epoch,
                    seq,
                    state_generation: ctx
                        .saga_state
                        .as_ref()
                        .and_then(|(_, s)| s.generation(partition)),
                    handled_generation: ctx
                        .handled_log
                        .as_ref()
                        .and_then(|(_, l)| l.generation(partition)),
                });
                ctx.taken
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(job);
                taken += 1;
            }
            if !ctx.hand_over() {
                break;
            }
        }
        // Final commit of finished work, then leave the group (blocking; on this thread).
        let ctx = consumer.context();
        ctx.absorb_completions(None);
        if self.control.abandon.load(Ordering::SeqCst) {
            // Only finished work is stored (at-least-once), so closing commits only that.
            ctx.store_pending(&consumer);
        } else if failed.is_none() {
            ctx.commit(&consumer);
        }
        consumer.unsubscribe();
        drop(consumer);
        match failed {
            None => Ok(()),
            Some(reason) => Err(ServiceError::Transactions {
                service: self.service.to_string(),
                reason,
            }),
        }
    }

    /// Resumes paused partitions once their work in flight drained to half the bound.
    fn resume_drained(&self, consumer: &BaseConsumer<RuntimeContext>, max: usize) {
        let mut book = consumer
            .context()
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if book.paused.is_empty() || self.control.stop.load(Ordering::SeqCst) {
            return;
        }
        let ready: Vec<PartitionKey> = book
            .paused
            .iter()
            .filter(|(t, p)| {
                book.offsets
                    .get(t, *p)
                    .map(|tr| tr.in_flight() <= max / 2)
                    .unwrap_or(true)
            })
            .cloned()
            .collect();
        for key in ready {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&key.0, key.1);
            if consumer.resume(&tpl).is_ok() {
                book.paused.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_records_stay_under_the_producers_message_size() {
        assert_eq!(batch_bytes(1_000_000), BATCH_BYTES);
        assert_eq!(batch_bytes(100_000), 100_000 - 4096);
        assert_eq!(batch_bytes(2_000), 1024);
    }

    #[test]
    fn prefetch_shares_the_instance_bound_over_its_partitions() {
        // The benchmark's services: svc1 reads 6 partitions, activity 3 topics of 6.
        assert_eq!(prefetch_per_partition(1000, 6), 166);
        assert_eq!(prefetch_per_partition(1000, 18), MIN_PREFETCH);
        // One partition: the whole bound; never more than the bound, never zero.
        assert_eq!(prefetch_per_partition(1000, 1), 1000);
        assert_eq!(prefetch_per_partition(40, 18), 40);
        assert_eq!(prefetch_per_partition(0, 0), 1);
    }

    #[test]
    fn a_fetch_response_is_bounded_but_never_below_the_message_size() {
        let mut props = std::collections::BTreeMap::new();
        assert_eq!(fetch_max_bytes(&props), FETCH_BUDGET);
        // librdkafka refuses `fetch.max.bytes` below `message.max.bytes`.
        props.insert("message.max.bytes".to_owned(), "10000000".to_owned());
        assert_eq!(fetch_max_bytes(&props), 10_000_000);
        props.insert("message.max.bytes".to_owned(), "1000".to_owned());
        assert_eq!(fetch_max_bytes(&props), FETCH_BUDGET);
        // The budget itself is what librdkafka accepts with its default `message.max.bytes`.
        let consumer: Result<rdkafka::consumer::BaseConsumer, _> = rdkafka::ClientConfig::new()
            .set("group.id", "g")
            .set("fetch.max.bytes", FETCH_BUDGET.to_string())
            .create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }

    fn apply(vars: &[(&str, &str)]) -> Result<ServiceOptions, String> {
        let mut o = ServiceOptions::default();
        o.apply_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })?;
        Ok(o)
    }

    #[test]
    fn deployment_settings_from_the_environment() {
        let o = apply(&[]).unwrap();
        assert_eq!(o.delivery, Delivery::AtLeastOnce);
        assert!(o.separate_tail_producer);
        assert_eq!(o.idempotency, Some(Idempotency::default()));
        let o = apply(&[
            ("CHOREOGRAPH_DELIVERY", "exactly-once"),
            ("CHOREOGRAPH_INSTANCE_ID", "coupon-0"),
            ("CHOREOGRAPH_IDEMPOTENCY_WINDOW_SECS", "60"),
            ("CHOREOGRAPH_IDEMPOTENCY_MAX_PER_PARTITION", "500"),
            ("CHOREOGRAPH_COMMIT_INTERVAL_MS", "250"),
            ("CHOREOGRAPH_SAGA_LOG", "off"),
            ("CHOREOGRAPH_MAX_IN_FLIGHT", "2000"),
            ("CHOREOGRAPH_TAIL_PRODUCER", "separate"),
        ])
        .unwrap();
        assert_eq!(o.delivery, Delivery::ExactlyOnce);
        assert_eq!(o.instance_id.as_deref(), Some("coupon-0"));
        assert_eq!(
            o.idempotency,
            Some(Idempotency {
                window: Duration::from_secs(60),
                max_per_partition: 500
            })
        );
        assert_eq!(o.commit_interval, Duration::from_millis(250));
        assert!(!o.saga_log);
        assert_eq!(o.max_in_flight, 2000);
        assert!(o.separate_tail_producer);
        let o = apply(&[("CHOREOGRAPH_TAIL_PRODUCER", "shared")]).unwrap();
        assert!(!o.separate_tail_producer);
        let o = apply(&[("CHOREOGRAPH_IDEMPOTENCY_WINDOW_SECS", "0")]).unwrap();
        assert_eq!(o.idempotency, None, "0 turns it off");
        for (k, v, says) in [
            ("CHOREOGRAPH_DELIVERY", "twice", "at-least-once"),
            ("CHOREOGRAPH_INSTANCE_ID", "a b", "letters"),
            ("CHOREOGRAPH_COMMIT_INTERVAL_MS", "0", "from 1"),
            ("CHOREOGRAPH_TAIL_PRODUCER", "both", "separate"),
            (
                "CHOREOGRAPH_IDEMPOTENCY_WINDOW_SECS",
                "soon",
                "whole number",
            ),
        ] {
            let e = apply(&[(k, v)]).unwrap_err();
            assert!(e.contains(k) && e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_policy_retries_only_the_listed_kinds() {
        use crate::handler::HandlerError;
        let all = RetryPolicy::default();
        let some = RetryPolicy {
            retry_kinds: Some(vec!["timeout".into()]),
            ..RetryPolicy::default()
        };
        let timeout = HandlerError::retryable("slow").with_kind("timeout");
        let other = HandlerError::retryable("no").with_kind("bad-request");
        let unnamed = HandlerError::retryable("?");
        assert!(all.retries(&timeout) && all.retries(&other) && all.retries(&unnamed));
        assert!(some.retries(&timeout));
        assert!(!some.retries(&other) && !some.retries(&unnamed));
        assert!(!all.retries(&HandlerError::permanent("bug")));
    }
}
