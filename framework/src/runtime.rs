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
//!   ([`crate::delivery`]). A partition with too many records in flight is paused until work
//!   drains (backpressure), so memory stays bounded.
//! - On revoke, finished offsets are committed synchronously (after waiting briefly for
//!   in-flight work of the revoked partitions); work that finishes later is not committed.
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::catalogue::Catalogue;
use crate::config::KafkaConfig;
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::delivery::{OffsetBook, PartitionKey};
use crate::envelope::{derived_event_id, headers, CloudEvent};
use crate::event::Event;
use crate::handler::{CallError, Context, ErasedHandler, Handler, Outgoing, Typed};
use crate::publish::{producer_config, record_headers};
use crate::record::decode_message;
use crate::saga_log::{Emitted, Step, StepInput, StepOutcome};
use crate::saga_state::{SagaSlot, SagaStore};
use crate::topics::{TopicError, Topics};
use crate::trace_context::TraceParent;

/// How retryable handler errors are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each time, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
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

/// Runtime settings of a service; every field has a sane default.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// The consumer group (default: the service name, with the configured topic prefix).
    pub group_id: Option<String>,
    /// This instance's name in logs and dead letters (default: `<service>-<pid>-<random>`).
    pub instance_id: Option<String>,
    pub retry: RetryPolicy,
    /// Records in flight per partition before the partition is paused (default 1000).
    pub max_in_flight_per_partition: usize,
    /// How long shutdown waits for in-flight work (default 30 s).
    pub shutdown_timeout: Duration,
    /// How long a revoke waits for in-flight work of the revoked partitions (default 5 s).
    pub revoke_grace: Duration,
    /// Dead-letter topic = input topic + this suffix (default `.dlq`).
    pub dead_letter_suffix: String,
    /// Keep per-saga state (see [`crate::saga_state`]); set by
    /// [`ServiceBuilder::keep_saga_state`].
    pub saga_state: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            group_id: None,
            instance_id: None,
            retry: RetryPolicy::default(),
            max_in_flight_per_partition: 1000,
            shutdown_timeout: Duration::from_secs(30),
            revoke_grace: Duration::from_secs(5),
            dead_letter_suffix: ".dlq".to_owned(),
            saga_state: false,
        }
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
}

struct Registered<S> {
    topic: &'static str,
    handler: Arc<dyn ErasedHandler<S>>,
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
    pub fn handle<E, M, H>(mut self, handler: H) -> Self
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

    /// Sets the retry policy of retryable handler errors.
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

/// Tells when a running service first got its partitions (and restored their saga state).
#[derive(Clone, Default)]
pub struct ReadySignal(Flag);

impl ReadySignal {
    /// Resolves once the service has joined its group and been assigned partitions.
    pub async fn wait(&self) {
        self.0.wait().await
    }

    pub fn is_ready(&self) -> bool {
        self.0.is_raised()
    }
}

/// Logs to stderr with the filter from `RUST_LOG`, else `default_level` for everything but
/// librdkafka's own messages: it reports every failed connection attempt, and Choreograph
/// reports outages itself, rate-limited (`RUST_LOG=librdkafka=warn` shows them all).
pub fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                format!("{default_level},librdkafka=off,rdkafka::client=off").into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The `main` of a service binary.
///
/// Logs to stderr (filter from `RUST_LOG`, default `info`), reads the Kafka configuration from
/// the environment ([`KafkaConfig::from_env`]), builds the service with `build`, and runs it
/// until SIGINT/SIGTERM. Exit status: 0 after a clean shutdown, 1 when the service failed while
/// running, 2 when it could not start (bad configuration, unreachable cluster at start-up).
pub fn service_main<S, F>(build: F) -> std::process::ExitCode
where
    S: Clone + Send + Sync + 'static,
    F: FnOnce(&KafkaConfig) -> Result<Service<S>, Box<dyn std::error::Error>>,
{
    use std::process::ExitCode;
    init_logging("info");
    let config = match KafkaConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let service = match build(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(2);
        }
    };
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
    match runtime.block_on(service.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (ServiceError::Topic(_) | ServiceError::NotCoPartitioned { .. })) => {
            tracing::error!("cannot start: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("stopped: {e}");
            ExitCode::FAILURE
        }
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

/// A record handed from the consumer thread to the async workers.
struct Job {
    message: OwnedMessage,
    epoch: u64,
}

/// A finished record, reported back to the consumer thread.
struct Completion {
    topic: String,
    partition: i32,
    offset: i64,
    epoch: u64,
}

impl<S: Clone + Send + Sync + 'static> Service<S> {
    pub fn name(&self) -> &str {
        &self.name
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
                self.topics.partition_count(t).await?.unwrap_or(0),
            ));
        }
        let n = counts[0].1;
        self.topics
            .ensure_spec(
                &changelog,
                &crate::topics::TopicSpec {
                    partitions: Some(n as i32),
                    compacted: true,
                },
            )
            .await?;
        counts.push((
            changelog.clone(),
            self.topics.partition_count(&changelog).await?.unwrap_or(0),
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

    /// The dead-letter topic of an input topic.
    pub fn dead_letter_topic(&self, topic: &str) -> String {
        format!("{topic}{}", self.options.dead_letter_suffix)
    }

    /// Runs until SIGINT/SIGTERM or [`ShutdownHandle::shutdown`], then shuts down gracefully.
    pub async fn run(self) -> Result<(), ServiceError> {
        self.run_until(termination_signal()).await
    }

    /// Runs until `stop` resolves (or [`ShutdownHandle::shutdown`]), then shuts down gracefully.
    ///
    /// Dropping the returned future instead abandons in-flight work without committing it, as
    /// a crash would (the next owner of the partitions handles it again).
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<(), ServiceError> {
        let inputs = self.input_topics();
        let dlqs: Vec<String> = inputs.iter().map(|t| self.dead_letter_topic(t)).collect();
        let saga_log = self.config.topic(&self.config.saga_log_topic);
        let mut all: Vec<&str> = inputs.iter().map(String::as_str).collect();
        all.extend(dlqs.iter().map(String::as_str));
        all.push(&saga_log);
        self.topics.ensure(&all).await?;
        let changelog = self.prepare_saga_state(&inputs).await?;
        let store = changelog.as_ref().map(|_| SagaStore::default());

        let (job_tx, mut job_rx) = mpsc::unbounded_channel::<Job>();
        let (done_tx, done_rx) = std_mpsc::channel::<Completion>();
        let (exit_tx, mut exit_rx) = oneshot::channel::<Result<(), ServiceError>>();
        let control = Arc::new(Control::default());
        let _abandon_on_drop = AbandonOnDrop(control.clone());

        let handled: HashSet<&'static str> = self.handlers.keys().copied().collect();
        let thread = ConsumerThread {
            service: self.name.clone(),
            group: self
                .options
                .group_id
                .clone()
                .unwrap_or_else(|| self.config.topic(&self.name)),
            config: self.config.clone(),
            topics: inputs.clone(),
            saga_state: changelog.clone().zip(store.clone()),
            handled,
            options: self.options.clone(),
            control: control.clone(),
            ready: self.ready.clone(),
        };
        std::thread::Builder::new()
            .name(format!("{}-consumer", self.name))
            .spawn(move || {
                let result = thread.run(job_tx, done_rx);
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
            topics: self.topics.clone(),
            retry: self.options.retry.clone(),
            dead_letter_suffix: self.options.dead_letter_suffix.clone(),
            delivery_timeout: self.config.delivery_timeout,
            topic_prefix: self.config.topic_prefix.clone(),
            saga_log_topic: self.config.topic(&self.config.saga_log_topic),
            saga_state: changelog.zip(store),
            catalogue: self.catalogue.clone(),
            done: Mutex::new(done_tx),
        });
        let lanes: Lanes = Arc::new(Mutex::new(HashMap::new()));
        let mut workers = JoinSet::new();
        tracing::info!(service = %self.name, instance = %self.instance, topics = ?inputs, "service started");

        tokio::pin!(stop);
        let shutdown = self.shutdown.clone();
        let mut stopping = false;
        let result = loop {
            tokio::select! {
                job = job_rx.recv() => match job {
                    Some(job) => dispatch(job, &lanes, &worker, &mut workers),
                    None => {
                        // The consumer thread is gone; its result follows.
                        break (&mut exit_rx).await.unwrap_or_else(|_| Err(ServiceError::ConsumerThread(self.name.to_string())));
                    }
                },
                Some(_) = workers.join_next(), if !workers.is_empty() => {}
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
        workers.abort_all();
        let producer = self.producer.clone();
        let flush =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        if let Ok(Err(e)) = flush {
            tracing::warn!(service = %self.name, error = %e, "producer flush at shutdown failed");
        }
        tracing::info!(service = %self.name, instance = %self.instance, "service stopped");
        result
    }
}

type Lanes = Arc<Mutex<HashMap<Vec<u8>, VecDeque<Job>>>>;

/// Sends a job to its saga's lane: a new lane (and worker task) if the saga is idle, else the
/// back of its queue.
fn dispatch<S: Clone + Send + Sync + 'static>(
    job: Job,
    lanes: &Lanes,
    worker: &Arc<Worker<S>>,
    workers: &mut JoinSet<()>,
) {
    let key = match job.message.key() {
        Some(k) if !k.is_empty() => k.to_vec(),
        // No key: no saga to order by; a lane of its own.
        _ => format!(
            "\0{}:{}:{}",
            job.message.topic(),
            job.message.partition(),
            job.message.offset()
        )
        .into_bytes(),
    };
    {
        let mut map = lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = map.get_mut(&key) {
            queue.push_back(job);
            return;
        }
        map.insert(key.clone(), VecDeque::new());
    }
    let lanes = lanes.clone();
    let worker = worker.clone();
    workers.spawn(async move {
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
    });
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
    topics: Topics,
    retry: RetryPolicy,
    dead_letter_suffix: String,
    delivery_timeout: Duration,
    topic_prefix: String,
    saga_log_topic: String,
    /// The changelog topic and the in-memory store, when the service keeps saga state.
    saga_state: Option<(String, SagaStore)>,
    catalogue: Option<Arc<Catalogue>>,
    done: Mutex<std_mpsc::Sender<Completion>>,
}

/// What a step record says, before it is written.
struct StepRecord {
    outcome: StepOutcome,
    attempts: u32,
    emitted: Vec<Emitted>,
    error: Option<String>,
    reason: Option<DeadLetterReason>,
}

enum Outcome {
    Handled {
        outgoing: Vec<Outgoing>,
        attempts: u32,
    },
    Skipped,
    DeadLetter {
        reason: DeadLetterReason,
        error: String,
        attempts: u32,
    },
}

impl<S: Clone + Send + Sync + 'static> Worker<S> {
    async fn process(&self, job: Job) {
        let message = &job.message;
        let started_at = chrono::Utc::now();
        match decode_message(message) {
            // Not a CloudEvent: no saga to log it under; the dead letter says why.
            Err(e) => {
                self.dead_letter(message, DeadLetterReason::InvalidEnvelope, e.to_string(), 0)
                    .await
            }
            Ok((event, _)) => {
                let span = tracing::info_span!(
                    "handle",
                    service = %self.service,
                    event_type = %event.event_type,
                    correlation_id = %event.correlation_id,
                    causation_id = event.causation_id.as_deref().unwrap_or(""),
                    event_id = %event.id,
                );
                self.process_event(message, Arc::new(event), started_at)
                    .instrument(span)
                    .await
            }
        }
        let completion = Completion {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            epoch: job.epoch,
        };
        if let Ok(done) = self.done.lock() {
            let _ = done.send(completion);
        }
    }

    /// Handles a decoded event: handler, follow-up events, saga state, saga-log step, each
    /// acknowledged in that order before the input counts as finished.
    async fn process_event(
        &self,
        message: &OwnedMessage,
        event: Arc<CloudEvent>,
        started_at: chrono::DateTime<chrono::Utc>,
    ) {
        let slot = self.saga_state.as_ref().map(|(_, store)| {
            let key = message.key().unwrap_or_default();
            Arc::new(SagaSlot::new(store.get(message.partition(), key)))
        });
        let mut outcome = self.handle(message, &event, slot.clone(), started_at).await;
        let mut emitted = Vec::new();
        if let Outcome::Handled { outgoing, attempts } = &outcome {
            match self.publish_outputs(&event, outgoing).await {
                Ok(e) => {
                    emitted = e;
                    if let Some(change) = slot.and_then(|s| s.take_change()) {
                        self.write_saga_state(message, change).await;
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
        let step = match outcome {
            Outcome::Handled { attempts, .. } => StepRecord {
                outcome: StepOutcome::Handled,
                attempts,
                emitted,
                error: None,
                reason: None,
            },
            Outcome::Skipped => StepRecord {
                outcome: StepOutcome::Skipped,
                attempts: 0,
                emitted,
                error: None,
                reason: None,
            },
            Outcome::DeadLetter {
                reason,
                error,
                attempts,
            } => {
                self.dead_letter(message, reason, error.clone(), attempts)
                    .await;
                StepRecord {
                    outcome: StepOutcome::DeadLettered,
                    attempts,
                    emitted,
                    error: Some(error),
                    reason: Some(reason),
                }
            }
        };
        self.write_step(message, &event, step, started_at).await;
    }

    /// Appends a step to the saga log (acknowledged before the input is committed).
    async fn write_step(
        &self,
        message: &OwnedMessage,
        event: &CloudEvent,
        step: StepRecord,
        started_at: chrono::DateTime<chrono::Utc>,
    ) {
        let record = Step {
            version: 1,
            correlation_id: event.correlation_id,
            service: self.service.to_string(),
            instance: self.instance.to_string(),
            input: StepInput {
                id: event.id.clone(),
                event_type: event.event_type.clone(),
                source: event.source.clone(),
                causation_id: event.causation_id.clone(),
                time: event.time,
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
            outcome: step.outcome,
            attempts: step.attempts,
            emitted: step.emitted,
            started_at,
            finished_at: chrono::Utc::now(),
            error: step.error,
            dead_letter_reason: step.reason.map(|r| r.as_str().to_owned()),
        };
        let payload = serde_json::to_vec(&record).unwrap_or_default();
        let key = event.correlation_id.to_string();
        self.send_until_acked(
            "saga-log step",
            &self.saga_log_topic,
            Some(key.as_bytes()),
            Some(&payload),
            None,
        )
        .await;
    }

    /// Produces one record, retrying with backoff until the broker acknowledges it: the input
    /// it belongs to stays uncommitted meanwhile, so nothing is lost when the broker is away.
    async fn send_until_acked(
        &self,
        what: &str,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        partition: Option<i32>,
    ) {
        let mut failures = 0u32;
        loop {
            let mut record = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(p) = payload {
                record = record.payload(p);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            match self
                .producer
                .send(record, rdkafka::util::Timeout::After(self.delivery_timeout))
                .await
            {
                Ok(_) => return,
                Err((e, _)) => {
                    failures += 1;
                    tracing::warn!(%topic, error = %e, attempt = failures, "writing a {what} failed; retrying (the input stays uncommitted)");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                }
            }
        }
    }

    async fn handle(
        &self,
        message: &OwnedMessage,
        event: &Arc<CloudEvent>,
        slot: Option<Arc<SagaSlot>>,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Outcome {
        let Some(registered) = self.handlers.get(event.event_type.as_str()) else {
            // A structured-mode record of a type this service does not handle.
            return Outcome::Skipped;
        };
        if let Some(catalogue) = &self.catalogue {
            if let Err(v) = catalogue.validate(&event.event_type, &event.data) {
                return Outcome::DeadLetter {
                    reason: DeadLetterReason::SchemaInvalid,
                    error: v.to_string(),
                    attempts: 0,
                };
            }
        }
        let mut attempt = 1;
        loop {
            let ctx = Context {
                service: self.service.clone(),
                event: event.clone(),
                topic: message.topic().into(),
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
                Ok(Err(CallError::Handler(e))) if !e.is_retryable() => {
                    return Outcome::DeadLetter {
                        reason: DeadLetterReason::HandlerFailed,
                        error: e.message().to_owned(),
                        attempts: attempt,
                    }
                }
                Ok(Err(CallError::Handler(e))) => {
                    if attempt >= self.retry.max_attempts {
                        return Outcome::DeadLetter {
                            reason: DeadLetterReason::RetriesExhausted,
                            error: e.message().to_owned(),
                            attempts: attempt,
                        };
                    }
                    let backoff = self.retry.backoff(attempt);
                    let retried = StepRecord {
                        outcome: StepOutcome::Retried,
                        attempts: attempt,
                        emitted: Vec::new(),
                        error: Some(e.message().to_owned()),
                        reason: None,
                    };
                    self.write_step(message, event, retried, started_at).await;
                    tracing::info!(attempt, ?backoff, error = %e.message(), "handler failed, will retry");
                    tokio::time::sleep(backoff).await;
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
        let events: Vec<(String, CloudEvent)> = outgoing
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut ce = CloudEvent::new(
                    &*self.source,
                    o.event_type,
                    input.correlation_id,
                    o.data.clone(),
                );
                ce.causation_id = Some(input.id.clone());
                ce.id = derived_event_id(&input.id, &self.source, i, cause_millis);
                ce.traceparent = trace.map(|t| t.child().to_string());
                ce.tracestate = trace.and(input.tracestate.clone());
                (format!("{}{}", self.topic_prefix, o.topic), ce)
            })
            .collect();
        let sends = events.iter().map(|(topic, ce)| async move {
            let mut failures = 0u32;
            loop {
                let result = match self.topics.ensure(&[topic.as_str()]).await {
                    Ok(()) => self.send(topic, ce).await,
                    Err(e) => Err((e.to_string(), false)),
                };
                match result {
                    Ok(()) => return Ok(()),
                    // Retrying cannot help (the event is too large for the broker, ...).
                    Err((e, true)) => return Err(format!("`{}` to `{topic}`: {e}", ce.event_type)),
                    Err((e, false)) => {
                        failures += 1;
                        let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
                        tracing::warn!(%topic, event_type = %ce.event_type, error = %e, attempt = failures, "publishing a follow-up event failed; retrying (the input stays uncommitted)");
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        });
        let refused: Vec<String> = futures::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if !refused.is_empty() {
            return Err(format!(
                "the broker refused a follow-up event: {}",
                refused.join("; ")
            ));
        }
        if !events.is_empty() {
            tracing::debug!(emitted = events.len(), "emitted follow-up events");
        }
        Ok(events
            .into_iter()
            .map(|(topic, ce)| Emitted {
                id: ce.id,
                event_type: ce.event_type,
                topic,
            })
            .collect())
    }

    /// Writes a saga's new state to the changelog (same partition number as the input) and,
    /// once acknowledged, to memory. Retries until the broker takes it.
    async fn write_saga_state(&self, message: &OwnedMessage, change: Option<serde_json::Value>) {
        let Some((changelog, store)) = &self.saga_state else {
            return;
        };
        let key = message.key().unwrap_or_default();
        let payload = change.as_ref().map(|v| v.to_string());
        self.send_until_acked(
            "saga state",
            changelog,
            Some(key),
            payload.as_deref().map(str::as_bytes),
            Some(message.partition()),
        )
        .await;
        store.put(message.partition(), key, change);
    }

    /// Sends one event; the error says whether it is permanent.
    async fn send(&self, topic: &str, ce: &CloudEvent) -> Result<(), (String, bool)> {
        let (key, value, headers) = record_headers(ce);
        let record = rdkafka::producer::FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        self.producer
            .send(record, rdkafka::util::Timeout::After(self.delivery_timeout))
            .await
            .map(|_| ())
            .map_err(|(e, _)| (e.to_string(), is_permanent(&e)))
    }

    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: DeadLetterReason,
        error: String,
        attempts: u32,
    ) {
        let dlq_topic = format!("{}{}", message.topic(), self.dead_letter_suffix);
        tracing::warn!(
            service = %self.service,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            %reason,
            %error,
            dead_letter_topic = %dlq_topic,
            "record dead-lettered"
        );
        let letter = DeadLetter {
            record: message,
            reason,
            error,
            service: &self.service,
            instance: &self.instance,
            attempts,
            without_value: false,
        };
        let mut failures = 0u32;
        let mut letter = letter;
        loop {
            match self
                .producer
                .send(
                    letter.record(&dlq_topic),
                    rdkafka::util::Timeout::After(self.delivery_timeout),
                )
                .await
            {
                Ok(_) => return,
                Err((e, _)) if is_permanent(&e) && !letter.without_value => {
                    // Too large to copy whole (the added headers): keep the headers, which say
                    // where the original is, and drop the value.
                    tracing::warn!(dead_letter_topic = %dlq_topic, error = %e, "dead letter refused; writing it without its value");
                    letter.without_value = true;
                }
                Err((e, _)) => {
                    failures += 1;
                    tracing::warn!(dead_letter_topic = %dlq_topic, error = %e, attempt = failures, "writing a dead letter failed; retrying (the input stays uncommitted)");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                }
            }
        }
    }
}

/// The consumer side, on its own OS thread.
struct ConsumerThread {
    service: Arc<str>,
    group: String,
    config: KafkaConfig,
    topics: Vec<String>,
    handled: HashSet<&'static str>,
    saga_state: Option<(String, SagaStore)>,
    options: ServiceOptions,
    control: Arc<Control>,
    ready: ReadySignal,
}

/// Bookkeeping shared by the poll loop and the rebalance callbacks (both on the consumer thread).
struct Book {
    offsets: OffsetBook,
    paused: HashSet<PartitionKey>,
}

struct RuntimeContext {
    service: Arc<str>,
    book: Mutex<Book>,
    completions: Mutex<std_mpsc::Receiver<Completion>>,
    revoke_grace: Duration,
    /// Changelog, store and client settings for restoring saga state on assignment.
    saga_state: Option<(String, SagaStore, KafkaConfig)>,
    ready: ReadySignal,
}

impl ClientContext for RuntimeContext {}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
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
            self.store_pending(consumer);
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => {
                    tracing::warn!(service = %self.service, error = %e, "commit on revoke failed")
                }
            }
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            for (t, p) in &revoked {
                if let Some(tr) = book.offsets.revoke(t, *p) {
                    if tr.in_flight() > 0 {
                        tracing::info!(service = %self.service, topic = %t, partition = p, abandoned = tr.in_flight(), "partition revoked with work in flight; it will be handled again by the new owner");
                    }
                }
                book.paused.remove(&(t.clone(), *p));
            }
            drop(book);
            if let Some((_, store, _)) = &self.saga_state {
                // Another instance may own these sagas next: never keep stale state.
                for (_, p) in &revoked {
                    store.drop_partition(*p);
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
            if let Some((changelog, store, config)) = &self.saga_state {
                // Restore before any record of these partitions is handled: records are only
                // dispatched after this callback returns.
                let mut numbers: Vec<i32> = assigned.iter().map(|(_, p)| *p).collect();
                numbers.sort_unstable();
                numbers.dedup();
                for p in numbers {
                    if store.is_loaded(p) {
                        continue;
                    }
                    let started = Instant::now();
                    match store.restore(config, changelog, p, Duration::from_secs(60)) {
                        Ok(sagas) => {
                            tracing::info!(service = %self.service, partition = p, sagas, took = ?started.elapsed(), "saga state restored")
                        }
                        Err(e) => {
                            tracing::error!(service = %self.service, partition = p, error = %e, "saga state restore failed; the partition's sagas start from empty state")
                        }
                    }
                }
            }
            tracing::info!(service = %self.service, partitions = ?assigned, "partitions assigned");
            if !assigned.is_empty() {
                self.ready.0.raise();
            }
        }
    }
}

impl RuntimeContext {
    /// Applies finished records to the book (waiting up to `wait` for the first one).
    fn absorb_completions(&self, wait: Option<Duration>) -> usize {
        let rx = self.completions.lock().unwrap_or_else(|e| e.into_inner());
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        if let Some(w) = wait {
            if let Ok(c) = rx.recv_timeout(w) {
                book.offsets
                    .finish(&c.topic, c.partition, c.offset, c.epoch);
                n += 1;
            }
        }
        while let Ok(c) = rx.try_recv() {
            book.offsets
                .finish(&c.topic, c.partition, c.offset, c.epoch);
            n += 1;
        }
        n
    }

    /// Stores every advanced watermark for the next commit.
    fn store_pending(&self, consumer: &BaseConsumer<Self>) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut tpl = TopicPartitionList::new();
        let mut stored = Vec::new();
        for ((t, p), tr) in book.offsets.iter_mut() {
            if let Some(o) = tr.pending_commit() {
                if tpl.add_partition_offset(t, *p, Offset::Offset(o)).is_ok() {
                    stored.push(((t.clone(), *p), o));
                }
            }
        }
        if tpl.count() == 0 {
            return;
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
    fn consumer(&self, ctx: RuntimeContext) -> Result<BaseConsumer<RuntimeContext>, ServiceError> {
        let mut cc = self.config.client_config();
        let defaults = [
            ("partition.assignment.strategy", "range"),
            ("auto.commit.interval.ms", "1000"),
            ("queued.max.messages.kbytes", "16384"),
            ("auto.offset.reset", "earliest"),
            // A subscribed topic the first metadata answer missed (just created) is found
            // within seconds, not after librdkafka's default 5 minutes.
            ("topic.metadata.refresh.interval.ms", "5000"),
        ];
        for (k, v) in defaults {
            if !self.config.properties().contains_key(k) {
                cc.set(k, v);
            }
        }
        cc.set("group.id", &self.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false");
        let consumer: BaseConsumer<RuntimeContext> = cc
            .create_with_context(ctx)
            .map_err(|e| ServiceError::Kafka(e.to_string()))?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| ServiceError::Kafka(e.to_string()))?;
        Ok(consumer)
    }

    fn run(
        self,
        jobs: mpsc::UnboundedSender<Job>,
        done: std_mpsc::Receiver<Completion>,
    ) -> Result<(), ServiceError> {
        let ctx = RuntimeContext {
            service: self.service.clone(),
            book: Mutex::new(Book {
                offsets: OffsetBook::default(),
                paused: HashSet::new(),
            }),
            completions: Mutex::new(done),
            revoke_grace: self.options.revoke_grace,
            saga_state: self
                .saga_state
                .clone()
                .map(|(t, s)| (t, s, self.config.clone())),
            ready: self.ready.clone(),
        };
        let consumer = self.consumer(ctx)?;
        let max = self.options.max_in_flight_per_partition.max(1);
        let mut draining_since: Option<Instant> = None;
        let mut last_poll_error: Option<Instant> = None;
        loop {
            let ctx = consumer.context();
            ctx.absorb_completions(None);
            ctx.store_pending(&consumer);
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

            match consumer.poll(Duration::from_millis(5)) {
                None => {}
                // Logged at most every 5 s: librdkafka retries by itself.
                Some(Err(e))
                    if last_poll_error
                        .map(|t| t.elapsed() > Duration::from_secs(5))
                        .unwrap_or(true) =>
                {
                    tracing::warn!(service = %self.service, error = %e, "consumer error (librdkafka retries by itself)");
                    last_poll_error = Some(Instant::now());
                }
                Some(Err(_)) => {}
                Some(Ok(message)) => {
                    if draining_since.is_some() {
                        // Not taken: not tracked, never committed; handled after a restart.
                        continue;
                    }
                    let (topic, partition, offset) = (
                        message.topic().to_owned(),
                        message.partition(),
                        message.offset(),
                    );
                    let unhandled = message
                        .headers()
                        .and_then(|hs| hs.iter().filter(|h| h.key == headers::TYPE).last())
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(|t| !self.handled.contains(t))
                        .unwrap_or(false);
                    let mut book = ctx.book.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(epoch) = book.offsets.start(&topic, partition, offset) else {
                        continue;
                    };
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
                    if in_flight >= max && book.paused.insert((topic.clone(), partition)) {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(&topic, partition);
                        if let Err(e) = consumer.pause(&tpl) {
                            tracing::warn!(error = %e, "pausing a partition failed");
                            book.paused.remove(&(topic.clone(), partition));
                        } else {
                            tracing::debug!(topic = %topic, partition, in_flight, "partition paused (backpressure)");
                        }
                    }
                    drop(book);
                    if jobs
                        .send(Job {
                            message: message.detach(),
                            epoch,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Final commit of finished work, then leave the group (blocking; on this thread).
        let ctx = consumer.context();
        ctx.absorb_completions(None);
        ctx.store_pending(&consumer);
        if !self.control.abandon.load(Ordering::SeqCst) {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => {
                    tracing::warn!(service = %self.service, error = %e, "final commit failed")
                }
            }
        }
        consumer.unsubscribe();
        drop(consumer);
        Ok(())
    }

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
