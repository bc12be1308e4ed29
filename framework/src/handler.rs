//! Handlers: plain async functions from a typed event (and its context) to follow-up events.
//!
//! ```
//! use choreograph::handler::{Context, Emit, HandlerError, State};
//! # use choreograph::Event;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] struct UserRegistered { email: String }
//! # impl Event for UserRegistered { const TYPE: &'static str = "a.v1"; const TOPIC: &'static str = "a"; }
//! # #[derive(Serialize, Deserialize)] struct NewcomerEnrolled { email: String }
//! # impl Event for NewcomerEnrolled { const TYPE: &'static str = "b.v1"; const TOPIC: &'static str = "b"; }
//! # #[derive(Clone)] struct Activity { blocked_domain: String }
//! // Without application state: the context, then the event.
//! async fn log_it(ctx: Context, event: UserRegistered) -> Result<(), HandlerError> {
//!     println!("saga {} registered {}", ctx.correlation_id(), event.email);
//!     Ok(())
//! }
//!
//! // With application state, axum-style: `State<S>` first.
//! async fn enrol(
//!     State(activity): State<Activity>,
//!     _ctx: Context,
//!     event: UserRegistered,
//! ) -> Result<Emit, HandlerError> {
//!     if event.email.ends_with(&activity.blocked_domain) {
//!         return Ok(Emit::none());
//!     }
//!     Ok(Emit::one(NewcomerEnrolled { email: event.email }))
//! }
//! ```
//!
//! A handler returns what it emits: `()`, one event, an `Option` of one, a `Vec` of one type, or
//! an [`Emit`] holding several of any types. The runtime turns each into a CloudEvent of the
//! same saga: the correlation ID is inherited, the causation ID is the input's `ce_id`, the
//! source is the service and the trace continues, so a handler cannot forget them.
//!
//! An `Err` says the handler could not decide: [`HandlerError::retryable`] is tried again with
//! backoff, [`HandlerError::permanent`] goes straight to the dead-letter topic. A business
//! refusal is not an error but an event (`PointsGrantRejected`) that others react to.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};

use crate::envelope::{CloudEvent, CorrelationId};
use crate::event::{from_cloud_event, DataError, Event};
use crate::saga_state::SagaSlot;

/// Application state handed to handlers, like axum's `State`.
#[derive(Clone, Debug, Default)]
pub struct State<S>(pub S);

/// Why a handler did not finish.
#[derive(Debug)]
pub struct HandlerError {
    retryable: bool,
    kind: Option<String>,
    message: String,
}

impl HandlerError {
    /// A failure that may go away (a dependency is down): retried with backoff.
    pub fn retryable(error: impl std::fmt::Display) -> Self {
        Self {
            retryable: true,
            kind: None,
            message: error.to_string(),
        }
    }

    /// A failure that will not go away (a bug, an impossible input): dead-lettered at once.
    pub fn permanent(error: impl std::fmt::Display) -> Self {
        Self {
            retryable: false,
            kind: None,
            message: error.to_string(),
        }
    }

    /// Names the error's class (`"timeout"`, `"unavailable"`, ...): a
    /// [`RetryPolicy`](crate::runtime::RetryPolicy) with `retry_kinds` retries only the
    /// retryable errors of the listed classes.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// The error's class, if it was given one.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.retryable {
            "retryable"
        } else {
            "permanent"
        };
        match &self.kind {
            Some(class) => write!(f, "{kind} ({class}): {}", self.message),
            None => write!(f, "{kind}: {}", self.message),
        }
    }
}

impl std::error::Error for HandlerError {}

/// One follow-up event, serialized, before the runtime fills in its envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub topic: &'static str,
    pub event_type: &'static str,
    pub data: Vec<u8>,
}

impl Outgoing {
    pub fn of<E: Event>(event: &E) -> Result<Self, DataError> {
        let data = serde_json::to_vec(event).map_err(|source| DataError::Shape {
            event_type: E::TYPE.to_owned(),
            source,
        })?;
        Ok(Self {
            topic: E::TOPIC,
            event_type: E::TYPE,
            data,
        })
    }
}

/// The events a handler emits, of any types.
#[derive(Debug, Default)]
pub struct Emit {
    events: Vec<Outgoing>,
    error: Option<String>,
}

impl Emit {
    /// Nothing to emit.
    pub fn none() -> Self {
        Self::default()
    }

    /// One event.
    pub fn one<E: Event>(event: E) -> Self {
        Self::none().and(event)
    }

    /// Adds an event.
    pub fn and<E: Event>(mut self, event: E) -> Self {
        match Outgoing::of(&event) {
            Ok(o) => self.events.push(o),
            Err(e) => self.error = Some(e.to_string()),
        }
        self
    }

    /// The serialized events (or why one could not be serialized).
    pub fn into_outgoing(self) -> Result<Vec<Outgoing>, String> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.events),
        }
    }
}

/// What a handler may return as its follow-up events.
pub trait IntoEmit {
    fn into_emit(self) -> Emit;
}

impl IntoEmit for Emit {
    fn into_emit(self) -> Emit {
        self
    }
}

impl IntoEmit for () {
    fn into_emit(self) -> Emit {
        Emit::none()
    }
}

impl<E: Event> IntoEmit for E {
    fn into_emit(self) -> Emit {
        Emit::one(self)
    }
}

impl<E: Event> IntoEmit for Option<E> {
    fn into_emit(self) -> Emit {
        match self {
            Some(e) => Emit::one(e),
            None => Emit::none(),
        }
    }
}

impl<E: Event> IntoEmit for Vec<E> {
    fn into_emit(self) -> Emit {
        self.into_iter().fold(Emit::none(), Emit::and)
    }
}

/// What a handler sees besides its event: the saga and where the event came from.
#[derive(Clone, Debug)]
pub struct Context {
    pub(crate) service: Arc<str>,
    pub(crate) event: Arc<CloudEvent>,
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) attempt: u32,
    pub(crate) saga: Option<Arc<SagaSlot>>,
}

impl Context {
    /// A context for calling a handler directly, without a runtime (unit tests of handlers).
    /// `saga_state` is the saga's state before the call (`None`: none yet); read what the
    /// handler left with [`Context::saga_state`] afterwards.
    pub fn for_test(
        service: &str,
        event: CloudEvent,
        saga_state: Option<serde_json::Value>,
    ) -> Self {
        Self {
            service: service.into(),
            event: Arc::new(event),
            topic: "test".into(),
            partition: 0,
            offset: 0,
            attempt: 1,
            saga: Some(Arc::new(SagaSlot::new(saga_state))),
        }
    }

    /// [`Context::for_test`] for a typed event of a new saga.
    pub fn for_test_event<E: Event>(
        service: &str,
        event: &E,
        saga_state: Option<serde_json::Value>,
    ) -> Self {
        Self::for_test_in_saga(service, event, CorrelationId::new(), saga_state)
    }

    /// [`Context::for_test`] for a typed event of a given saga.
    pub fn for_test_in_saga<E: Event>(
        service: &str,
        event: &E,
        saga: CorrelationId,
        saga_state: Option<serde_json::Value>,
    ) -> Self {
        let ce =
            crate::event::to_cloud_event(event, "/test", saga).expect("the test event serializes");
        Self::for_test(service, ce, saga_state)
    }

    /// The same test context on attempt `attempt` (1 is the first, 2 the first retry, ...):
    /// for testing a handler's retry path, which reads [`Context::attempt`]. Attempt 0 is
    /// taken as 1.
    ///
    /// ```
    /// # use choreograph::{CloudEvent, Context, CorrelationId};
    /// let ctx = Context::for_test("svc", CloudEvent::new("/t", "t.v1", CorrelationId::new(), b"{}".to_vec()), None)
    ///     .with_attempt(3);
    /// assert_eq!(ctx.attempt(), 3);
    /// ```
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt.max(1);
        self
    }

    /// The saga state as stored JSON (for tests: what a handler left behind).
    pub fn saga_state_json(&self) -> Option<serde_json::Value> {
        self.saga.as_ref().and_then(|s| s.read())
    }

    fn slot(&self) -> Result<&SagaSlot, HandlerError> {
        self.saga.as_deref().ok_or_else(|| {
            HandlerError::permanent(format!(
                "service `{}` keeps no saga state: enable it with ServiceBuilder::keep_saga_state()",
                self.service
            ))
        })
    }

    /// This saga's state in this service, `None` before anything was stored.
    pub fn saga_state<T: DeserializeOwned>(&self) -> Result<Option<T>, HandlerError> {
        match self.slot()?.read() {
            None => Ok(None),
            Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
                HandlerError::permanent(format!("stored saga state does not match its type: {e}"))
            }),
        }
    }

    /// Replaces this saga's state; written durably (before the input is committed) once the
    /// handler returns `Ok`. Discarded if the handler fails.
    pub fn set_saga_state<T: Serialize>(&self, state: &T) -> Result<(), HandlerError> {
        let v = serde_json::to_value(state)
            .map_err(|e| HandlerError::permanent(format!("saga state does not serialize: {e}")))?;
        self.slot()?.write(Some(v));
        Ok(())
    }

    /// Forgets this saga's state (a tombstone in the changelog).
    pub fn clear_saga_state(&self) -> Result<(), HandlerError> {
        self.slot()?.write(None);
        Ok(())
    }
    /// The saga this event belongs to.
    pub fn correlation_id(&self) -> CorrelationId {
        self.event.correlation_id
    }

    /// The input event's `ce_id` (the causation ID of whatever this handler emits).
    pub fn event_id(&self) -> &str {
        &self.event.id
    }

    /// The input event's own cause, if any.
    pub fn causation_id(&self) -> Option<&str> {
        self.event.causation_id.as_deref()
    }

    /// The input event's `ce_source`.
    pub fn source(&self) -> &str {
        &self.event.source
    }

    /// When the input event happened.
    pub fn event_time(&self) -> DateTime<Utc> {
        self.event.time
    }

    /// The whole input envelope.
    pub fn cloud_event(&self) -> &CloudEvent {
        &self.event
    }

    /// The service handling the event.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Where the input record was read from.
    pub fn record(&self) -> (&str, i32, i64) {
        (&self.topic, self.partition, self.offset)
    }

    /// 1 on the first attempt, 2 on the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why an erased handler call did not produce events.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The data does not deserialize into the handler's type.
    Data(String),
    /// The handler returned an error.
    Handler(HandlerError),
    /// What it returned could not be serialized.
    Output(String),
}

/// An async function usable as a handler of events `E` in a service with state `S`.
///
/// Implemented for `async fn(Context, E) -> Result<impl IntoEmit, HandlerError>` and
/// `async fn(State<S>, Context, E) -> Result<impl IntoEmit, HandlerError>`; `M` only tells the
/// two apart. Users never implement it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Choreograph handler",
    note = "a handler is `async fn(Context, E) -> Result<O, HandlerError>` or `async fn(State<S>, Context, E) -> Result<O, HandlerError>`, with `E: Event`, `O: IntoEmit` and `S` the service's state type"
)]
pub trait Handler<S, E, M>: Clone + Send + Sync + 'static {
    fn call(&self, state: S, ctx: Context, event: E) -> BoxFuture<Result<Emit, HandlerError>>;
}

#[doc(hidden)]
pub struct WithoutState;
#[doc(hidden)]
pub struct WithState;

impl<S, E, F, Fut, O> Handler<S, E, WithoutState> for F
where
    F: Fn(Context, E) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    O: IntoEmit,
    E: Event,
{
    fn call(&self, _state: S, ctx: Context, event: E) -> BoxFuture<Result<Emit, HandlerError>> {
        let fut = (self)(ctx, event);
        Box::pin(async move { fut.await.map(IntoEmit::into_emit) })
    }
}

impl<S, E, F, Fut, O> Handler<S, E, WithState> for F
where
    F: Fn(State<S>, Context, E) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    O: IntoEmit,
    E: Event,
{
    fn call(&self, state: S, ctx: Context, event: E) -> BoxFuture<Result<Emit, HandlerError>> {
        let fut = (self)(State(state), ctx, event);
        Box::pin(async move { fut.await.map(IntoEmit::into_emit) })
    }
}

/// A handler with its event type erased, as the runtime stores it.
pub(crate) trait ErasedHandler<S>: Send + Sync {
    fn call(&self, state: S, ctx: Context) -> BoxFuture<Result<Vec<Outgoing>, CallError>>;
}

pub(crate) struct Typed<H, E, M> {
    pub(crate) handler: H,
    pub(crate) _marker: PhantomData<fn(E, M)>,
}

impl<S, E, M, H> ErasedHandler<S> for Typed<H, E, M>
where
    H: Handler<S, E, M>,
    E: Event,
    S: Send + 'static,
{
    fn call(&self, state: S, ctx: Context) -> BoxFuture<Result<Vec<Outgoing>, CallError>> {
        let event = match from_cloud_event::<E>(&ctx.event) {
            Ok(e) => e,
            Err(e) => return Box::pin(async move { Err(CallError::Data(e.to_string())) }),
        };
        let fut = self.handler.call(state, ctx, event);
        Box::pin(async move {
            let emit = fut.await.map_err(CallError::Handler)?;
            emit.into_outgoing().map_err(CallError::Output)
        })
    }
}
