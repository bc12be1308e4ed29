//! Typed events: a Rust type that declares its CloudEvents `type`, its topic and its place in
//! the choreography.
//!
//! Derive it, and the type is the one definition of the event: its data (serde), its schema
//! (schemars, see [`crate::schema`]) and its catalogue placement (this attribute):
//!
//! ```
//! use choreograph::Event;
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, JsonSchema, Event)]
//! #[event(
//!     type = "registration.user.registered.v1",
//!     topic = "registration.user",
//!     producer = "user",
//!     consumers = ["activity"],
//! )]
//! struct UserRegistered { user_id: String, email: String }
//!
//! assert_eq!(UserRegistered::TYPE, "registration.user.registered.v1");
//! assert_eq!(UserRegistered::placement().consumers, ["activity"]);
//! ```
//!
//! or implement the trait by hand (the placement constants have defaults):
//!
//! ```
//! use choreograph::Event;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct UserRegistered { user_id: String, email: String }
//!
//! impl Event for UserRegistered {
//!     const TYPE: &'static str = "registration.user.registered.v1";
//!     const TOPIC: &'static str = "registration.user";
//! }
//! ```
//!
//! serde does the data: the event's JSON form is the record value. The `type` names a version
//! (`.v1`): a change that breaks readers is a new type, not an edit of an old one.

use serde::{de::DeserializeOwned, Serialize};

use crate::catalogue::{Placement, SagaOutcome};
use crate::envelope::{CloudEvent, CorrelationId};

/// `#[derive(Event)]`: implements [`Event`](trait@Event) from an `#[event(...)]` attribute.
///
/// ```
/// use choreograph::{Event, SagaOutcome};
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// mod topics {
///     pub const ORDER: &str = "orders.order";
/// }
///
/// #[derive(Serialize, Deserialize, JsonSchema, Event)]
/// #[event(type = "orders.order.placed.v1", topic = topics::ORDER, producer = "orders",
///         consumers = ["payments", "shipping"])]
/// pub struct OrderPlaced { pub order_id: String }
///
/// #[derive(Serialize, Deserialize, JsonSchema, Event)]
/// #[event(type = "orders.order.delivered.v1", topic = topics::ORDER, producer = "shipping",
///         ends_saga = "completed")]
/// pub struct OrderDelivered { pub order_id: String }
///
/// assert_eq!(OrderPlaced::TOPIC, "orders.order");
/// assert_eq!(OrderPlaced::PRODUCER, Some("orders"));
/// assert_eq!(OrderPlaced::CONSUMERS, ["payments", "shipping"]);
/// assert_eq!(OrderPlaced::ENDS_SAGA, None);
/// assert_eq!(OrderDelivered::ENDS_SAGA, Some(SagaOutcome::Completed));
/// ```
///
/// | key         | value                                                   | required |
/// |-------------|---------------------------------------------------------|----------|
/// | `type`      | string literal: [`Event::TYPE`]                          | yes      |
/// | `topic`     | string literal or `&str` constant: [`Event::TOPIC`]     | yes      |
/// | `producer`  | string literal: [`Event::PRODUCER`]                     | no       |
/// | `consumers` | `["a", "b"]`: [`Event::CONSUMERS`]                      | no       |
/// | `ends_saga` | `"completed"`, `"failed"` or `"compensated"`: [`Event::ENDS_SAGA`] | no |
/// | `crate`     | `"path::to::choreograph"` when the framework is used through a re-export | no |
///
/// Mistakes are compile errors pointing at the token: a missing `type` or `topic`, an unknown
/// or repeated key, an `ends_saga` that is not one of the three outcomes, an empty `type` (or
/// one with whitespace, `/` or `\`: it names the schema file `<type>.json`), a topic Kafka
/// would refuse (also when given as a constant), a producer or consumer that is not a service
/// name, a consumer listed twice, and generic parameters (an event type is one concrete
/// contract). The derive does not check that the type is `Serialize + DeserializeOwned`; the
/// trait's bounds do.
///
/// ```compile_fail
/// #[derive(serde::Serialize, serde::Deserialize, choreograph::Event)]
/// #[event(type = "orders.order.placed.v1", topic = "orders.order", ends_saga = "done")]
/// struct OrderPlaced { order_id: String }
/// ```
///
/// ```compile_fail
/// #[derive(serde::Serialize, serde::Deserialize, choreograph::Event)]
/// #[event(type = "orders.order.placed.v1")] // no topic
/// struct OrderPlaced { order_id: String }
/// ```
///
/// ```compile_fail
/// const TOPIC: &str = "orders order"; // not a Kafka topic name: refused by a const assertion
/// #[derive(serde::Serialize, serde::Deserialize, choreograph::Event)]
/// #[event(type = "orders.order.placed.v1", topic = TOPIC)]
/// struct OrderPlaced { order_id: String }
/// ```
#[doc(inline)]
pub use choreograph_derive::Event;

/// A domain event with a fixed CloudEvents type and topic, and its place in the choreography.
///
/// Derive it with [`#[derive(Event)]`](macro@Event) and `#[event(type = "...", topic = "...",
/// ...)]`, or implement it by hand. [`TYPE`](Event::TYPE) and [`TOPIC`](Event::TOPIC) are
/// required; the other constants describe the event's catalogue entry (its `x-choreograph`
/// block, see [`crate::catalogue`]) and default to "unknown":
///
/// | constant                         | catalogue key | default |
/// |----------------------------------|---------------|---------|
/// | [`TYPE`](Event::TYPE)            | `type`        | (required) |
/// | [`TOPIC`](Event::TOPIC)          | `topic`       | (required) |
/// | [`PRODUCER`](Event::PRODUCER)    | `producer`    | `None` (`null`: published from outside, e.g. by the CLI) |
/// | [`CONSUMERS`](Event::CONSUMERS)  | `consumers`   | `&[]` |
/// | [`ENDS_SAGA`](Event::ENDS_SAGA)  | `ends-saga`   | `None` (`null`: does not end a saga) |
///
/// [`placement`](Event::placement) gathers them; [`crate::schema`] writes them, with the
/// type's JSON Schema, into the catalogue document. The runtime itself reads only `TYPE` and
/// `TOPIC`: the placement reaches services through the catalogue.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The CloudEvents `type`, e.g. `registration.user.registered.v1`.
    const TYPE: &'static str;
    /// The Kafka topic events of this type are published to.
    const TOPIC: &'static str;
    /// The service that emits events of this type; `None` for events published from outside
    /// the choreography (e.g. with the CLI).
    const PRODUCER: Option<&'static str> = None;
    /// The services expected to handle events of this type.
    const CONSUMERS: &'static [&'static str] = &[];
    /// How a saga ends when this event is emitted; `None` for the events that do not end one.
    const ENDS_SAGA: Option<SagaOutcome> = None;

    /// The event's catalogue placement (`x-choreograph` block), from the constants above.
    fn placement() -> Placement {
        Placement {
            event_type: Self::TYPE.to_owned(),
            topic: Self::TOPIC.to_owned(),
            producer: Self::PRODUCER.map(str::to_owned),
            consumers: Self::CONSUMERS.iter().map(|c| (*c).to_owned()).collect(),
            ends_saga: Self::ENDS_SAGA,
        }
    }
}

/// Used by `#[derive(Event)]`; not part of the API.
#[doc(hidden)]
pub mod __private {
    /// Kafka's rule for topic names, evaluated at compile time for a topic given as a
    /// constant (a literal one is checked by the derive itself).
    pub const fn assert_topic(topic: &str) {
        let b = topic.as_bytes();
        if b.is_empty() || b.len() > 249 {
            panic!("an event's topic must be 1 to 249 characters long (Kafka's rule)");
        }
        if (b.len() == 1 && b[0] == b'.') || (b.len() == 2 && b[0] == b'.' && b[1] == b'.') {
            panic!("an event's topic cannot be `.` or `..` (Kafka's rule)");
        }
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if !(c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-') {
                panic!(
                    "an event's topic holds only ASCII letters, digits, `.`, `_` and `-` (Kafka's rule)"
                );
            }
            i += 1;
        }
    }
}

/// The data of an event could not be turned into (or from) its Rust type.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("event type `{actual}` is not `{expected}`")]
    WrongType {
        expected: &'static str,
        actual: String,
    },
    #[error("data of `{event_type}` does not match its Rust type: {source}")]
    Shape {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Serializes a typed event into a CloudEvent of the given saga.
pub fn to_cloud_event<E: Event>(
    event: &E,
    source: &str,
    correlation_id: CorrelationId,
) -> Result<CloudEvent, DataError> {
    let data = serde_json::to_vec(event).map_err(|source| DataError::Shape {
        event_type: E::TYPE.to_owned(),
        source,
    })?;
    Ok(CloudEvent::new(source, E::TYPE, correlation_id, data))
}

/// Deserializes the data of a CloudEvent into its typed event.
pub fn from_cloud_event<E: Event>(event: &CloudEvent) -> Result<E, DataError> {
    if event.event_type != E::TYPE {
        return Err(DataError::WrongType {
            expected: E::TYPE,
            actual: event.event_type.clone(),
        });
    }
    serde_json::from_slice(&event.data).map_err(|source| DataError::Shape {
        event_type: event.event_type.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }
    impl Event for Ping {
        const TYPE: &'static str = "test.ping.v1";
        const TOPIC: &'static str = "test.ping";
    }

    #[test]
    fn placement_defaults_for_a_manual_impl() {
        let p = Ping::placement();
        assert_eq!(p.event_type, "test.ping.v1");
        assert_eq!(p.topic, "test.ping");
        assert_eq!(p.producer, None);
        assert!(p.consumers.is_empty());
        assert_eq!(p.ends_saga, None);
    }

    #[test]
    fn placement_from_the_derive() {
        const TOPIC: &str = "test.pong";
        #[derive(Serialize, Deserialize, crate::Event)]
        #[event(type = "test.pong.v1", topic = TOPIC, producer = "b", consumers = ["a", "c"],
                ends_saga = "compensated")]
        struct Pong {
            n: u32,
        }
        let p = Pong::placement();
        assert_eq!(
            p,
            Placement {
                event_type: "test.pong.v1".into(),
                topic: "test.pong".into(),
                producer: Some("b".into()),
                consumers: vec!["a".into(), "c".into()],
                ends_saga: Some(SagaOutcome::Compensated),
            }
        );
        let ce = to_cloud_event(&Pong { n: 1 }, "/t", CorrelationId::new()).unwrap();
        assert_eq!(from_cloud_event::<Pong>(&ce).unwrap().n, 1);
    }

    #[test]
    fn assert_topic_accepts_kafka_names() {
        __private::assert_topic("a.b_c-D9");
        __private::assert_topic(&"t".repeat(249));
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            let r = std::panic::catch_unwind(|| __private::assert_topic(bad));
            assert!(r.is_err(), "{bad:?} passed");
        }
        let long = "t".repeat(250);
        assert!(std::panic::catch_unwind(|| __private::assert_topic(&long)).is_err());
    }

    #[test]
    fn round_trip_and_errors() {
        let c = CorrelationId::new();
        let ce = to_cloud_event(&Ping { n: 7 }, "/t", c).unwrap();
        assert_eq!(ce.event_type, "test.ping.v1");
        assert_eq!(ce.data, br#"{"n":7}"#);
        assert_eq!(from_cloud_event::<Ping>(&ce).unwrap(), Ping { n: 7 });

        let mut bad = ce.clone();
        bad.data = br#"{"n":"seven"}"#.to_vec();
        let err = from_cloud_event::<Ping>(&bad).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        let mut other = ce;
        other.event_type = "test.pong.v1".into();
        assert!(matches!(
            from_cloud_event::<Ping>(&other),
            Err(DataError::WrongType { .. })
        ));
    }
}
