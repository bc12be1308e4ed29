//! Glue between rdkafka messages and the envelope.

use rdkafka::message::{Headers, Message};

use crate::envelope::{CloudEvent, ContentMode, DecodeError, RecordView};

/// Decodes an rdkafka message (binary or structured mode) into a CloudEvent.
pub fn decode_message<M: Message>(message: &M) -> Result<(CloudEvent, ContentMode), DecodeError> {
    let headers: Vec<(&str, Option<&[u8]>)> = message
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    CloudEvent::decode(RecordView {
        key: message.key(),
        value: message.payload(),
        headers: &headers,
    })
}
