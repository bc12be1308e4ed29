//! Typed events: a Rust type that declares its CloudEvents `type` and its topic.
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

use crate::envelope::{CloudEvent, CorrelationId};

/// A domain event with a fixed CloudEvents type and topic.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The CloudEvents `type`, e.g. `registration.user.registered.v1`.
    const TYPE: &'static str;
    /// The Kafka topic events of this type are published to.
    const TOPIC: &'static str;
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
