//! Publishing against a real broker: the record on the wire, read back by a plain consumer and
//! by an independent CloudEvents reader (the official Python SDK).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use choreograph::envelope::{encode_structured, ContentMode, STRUCTURED_CONTENT_TYPE};
use choreograph::record::decode_message;
use choreograph::testkit;
use choreograph::{CorrelationId, Event, Publisher, TraceParent};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserRegistered {
    user_id: String,
    email: String,
}

// Each test run publishes to its own topic (see `config_for`), but the type declares one.
impl Event for UserRegistered {
    const TYPE: &'static str = "test.user.registered.v1";
    const TOPIC: &'static str = "test.user";
}

fn headers_of(m: &OwnedMessage) -> HashMap<String, String> {
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn uuid_v7(s: &str) -> Uuid {
    let u = Uuid::parse_str(s).unwrap_or_else(|e| panic!("`{s}` is not a UUID: {e}"));
    assert_eq!(u.get_version_num(), 7, "`{s}` is not a UUIDv7");
    u
}

/// A test topic of its own, created by the publisher on first use.
async fn publish_into_fresh_topic(
    events: &[(Option<CorrelationId>, UserRegistered)],
) -> (String, Vec<choreograph::Published>) {
    let config = testkit::config();
    let topic = testkit::unique_topic("test.publish");
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let mut out = Vec::new();
    for (corr, data) in events {
        let mut ce =
            choreograph::event::to_cloud_event(data, "/services/test", corr.unwrap_or_default())
                .unwrap();
        if corr.is_none() {
            ce.traceparent = Some(TraceParent::new_root().to_string());
        } else {
            ce.causation_id = out
                .last()
                .map(|p: &choreograph::Published| p.event_id.clone());
        }
        out.push(publisher.publish_cloud_event(&topic, &ce).await.unwrap());
    }
    (topic, out)
}

#[tokio::test]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn published_record_carries_the_full_envelope() {
    let data = UserRegistered {
        user_id: "u-1".into(),
        email: "ada@example.com".into(),
    };
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (topic, published) = publish_into_fresh_topic(&[(None, data.clone())]).await;
    let saga = published[0].correlation_id;
    let (topic2, follow) = {
        // A follow-up in the same saga, with a causation ID.
        let config = testkit::config();
        let publisher = Publisher::new(&config, "/services/test").unwrap();
        let mut ce = choreograph::event::to_cloud_event(&data, "/services/test", saga).unwrap();
        ce.causation_id = Some(published[0].event_id.clone());
        let p = publisher.publish_cloud_event(&topic, &ce).await.unwrap();
        (topic.clone(), p)
    };
    assert_eq!(topic, topic2);

    let records = testkit::read_topic(&testkit::config(), &topic, 2, Duration::from_secs(20));
    assert_eq!(records.len(), 2, "both events are on the topic");
    // Same key, so same partition, in publish order.
    assert_eq!(records[0].partition(), records[1].partition());
    let first = records
        .iter()
        .find(|m| m.offset() == published[0].offset)
        .unwrap();
    let second = records
        .iter()
        .find(|m| m.offset() == follow.offset)
        .unwrap();

    let h = headers_of(first);
    assert_eq!(h["ce_specversion"], "1.0");
    assert_eq!(uuid_v7(&h["ce_id"]).to_string(), published[0].event_id);
    assert_eq!(h["ce_type"], "test.user.registered.v1");
    assert_eq!(h["ce_source"], "/services/test");
    let time = chrono::DateTime::parse_from_rfc3339(&h["ce_time"]).expect("ce_time is RFC 3339");
    assert!(time >= before && time <= chrono::Utc::now());
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        uuid_v7(&h["ce_correlationid"]).to_string(),
        saga.to_string()
    );
    assert!(
        !h.contains_key("ce_causationid"),
        "a saga's first event has no cause"
    );
    h["traceparent"]
        .parse::<TraceParent>()
        .expect("traceparent is W3C");
    assert_eq!(
        first.key(),
        Some(saga.to_string().as_bytes()),
        "key = correlation ID"
    );
    let value: UserRegistered = serde_json::from_slice(first.payload().unwrap()).unwrap();
    assert_eq!(value, data);

    let h2 = headers_of(second);
    assert_eq!(h2["ce_correlationid"], saga.to_string());
    assert_eq!(h2["ce_causationid"], published[0].event_id);
    assert_ne!(h2["ce_id"], h["ce_id"]);

    // Our decoder agrees with the wire.
    let (ce, mode) = decode_message(first).unwrap();
    assert_eq!(mode, ContentMode::Binary);
    assert_eq!(ce.correlation_id, saga);
    assert_eq!(ce.id, published[0].event_id);
}

#[tokio::test]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn start_saga_mints_a_v7_correlation_id_and_a_trace() {
    let config = testkit::config();
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let data = UserRegistered {
        user_id: "u-2".into(),
        email: "b@example.com".into(),
    };
    // `start_saga` publishes to the type's own topic.
    let p = publisher.start_saga(&data).await.unwrap();
    uuid_v7(&p.correlation_id.to_string());
    assert_eq!(p.topic, UserRegistered::TOPIC);
    let into = publisher.publish(p.correlation_id, &data).await.unwrap();
    assert_eq!(into.correlation_id, p.correlation_id);
    assert_eq!(into.partition, p.partition, "one saga, one partition");
    assert!(into.offset > p.offset);
}

fn python() -> String {
    std::env::var("CHOREOGRAPH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Decodes a record with the official CloudEvents Python SDK.
fn read_with_python_sdk(m: &OwnedMessage) -> serde_json::Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let headers: serde_json::Map<String, serde_json::Value> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), b64(h.value.unwrap_or_default()).into()))
                .collect()
        })
        .unwrap_or_default();
    let input = serde_json::json!({
        "headers": headers,
        "key": m.key().map(b64),
        "value": b64(m.payload().unwrap_or_default()),
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/cloudevents_reader.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the CloudEvents Python SDK could not read the record (is it installed? scripts/test.sh \
         installs it into a venv and sets CHOREOGRAPH_PYTHON; or `pip install cloudevents==1.12.0`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn an_independent_cloudevents_reader_agrees() {
    let data = UserRegistered {
        user_id: "u-3".into(),
        email: "c@example.com".into(),
    };
    let (topic, published) = publish_into_fresh_topic(&[
        (None, data.clone()),
        (Some(CorrelationId::new()), data.clone()),
    ])
    .await;
    let records = testkit::read_topic(&testkit::config(), &topic, 2, Duration::from_secs(20));
    assert_eq!(records.len(), 2);
    for (m, p) in records.iter().map(|m| {
        (
            m,
            published
                .iter()
                .find(|p| p.offset == m.offset() && p.partition == m.partition())
                .unwrap(),
        )
    }) {
        let (ours, _) = decode_message(m).unwrap();
        let theirs = read_with_python_sdk(m);
        let attr = &theirs["attributes"];
        assert_eq!(attr["specversion"], "1.0");
        assert_eq!(attr["id"], p.event_id.as_str());
        assert_eq!(attr["id"], ours.id.as_str());
        assert_eq!(attr["type"], ours.event_type.as_str());
        assert_eq!(attr["source"], ours.source.as_str());
        assert_eq!(
            attr["correlationid"],
            ours.correlation_id.to_string().as_str()
        );
        assert_eq!(attr["datacontenttype"], "application/json");
        assert_eq!(
            attr["partitionkey"],
            ours.correlation_id.to_string().as_str()
        );
        // The SDK parses `time`; same instant.
        let their_time =
            chrono::DateTime::parse_from_rfc3339(&attr["time"].as_str().unwrap().replace(' ', "T"))
                .unwrap();
        assert_eq!(their_time, ours.time);
        match &ours.causation_id {
            Some(c) => assert_eq!(attr["causationid"], c.as_str()),
            None => assert!(attr.get("causationid").is_none()),
        }
        assert_eq!(theirs["data"], serde_json::to_value(&data).unwrap());
    }
}

#[tokio::test]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn structured_mode_records_decode_like_binary_ones() {
    let data = UserRegistered {
        user_id: "u-4".into(),
        email: "d@example.com".into(),
    };
    let (topic, _) = publish_into_fresh_topic(&[(None, data.clone())]).await;
    let binary = testkit::read_topic(&testkit::config(), &topic, 1, Duration::from_secs(20));
    let (event, _) = decode_message(&binary[0]).unwrap();

    // The same event written in structured mode by a plain producer.
    let producer: FutureProducer = testkit::config().client_config().create().unwrap();
    let value = encode_structured(&event);
    let key = event.correlation_id.to_string();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&key)
                .payload(&value)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some(STRUCTURED_CONTENT_TYPE),
                })),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let both = testkit::read_topic(&testkit::config(), &topic, 2, Duration::from_secs(20));
    assert_eq!(both.len(), 2);
    let structured_record = both
        .iter()
        .find(|m| m.offset() != binary[0].offset() || m.partition() != binary[0].partition())
        .unwrap();
    let (structured, mode) = decode_message(structured_record).unwrap();
    assert_eq!(mode, ContentMode::Structured);
    let typed: UserRegistered = choreograph::event::from_cloud_event(&structured).unwrap();
    assert_eq!(typed, data);
    let mut normalized = structured.clone();
    normalized.data = event.data.clone();
    assert_eq!(normalized, event);
    // The Python SDK reads our structured record too.
    let theirs = read_with_python_sdk(structured_record);
    assert_eq!(theirs["attributes"]["id"], event.id.as_str());
    assert_eq!(theirs["data"], serde_json::to_value(&data).unwrap());
}

#[tokio::test]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_missing_topic_without_creation_is_a_clear_error() {
    let mut config = testkit::config();
    config.topics.create = false;
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let topic = testkit::unique_topic("test.missing");
    let event = choreograph::event::to_cloud_event(
        &UserRegistered {
            user_id: "u".into(),
            email: "e@x".into(),
        },
        "/services/test",
        CorrelationId::new(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = publisher
        .publish_cloud_event(&topic, &event)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");
    let msg = err.to_string();
    assert!(
        msg.contains(&topic) && msg.contains("does not exist"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unreachable_broker_fails_within_the_connect_timeout() {
    // No broker needed: nothing listens on port 1.
    let mut config = choreograph::KafkaConfig::new("127.0.0.1:1").unwrap();
    config.connect_timeout = Duration::from_secs(2);
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let started = std::time::Instant::now();
    let err = publisher
        .start_saga(&UserRegistered {
            user_id: "u".into(),
            email: "e@x".into(),
        })
        .await
        .unwrap_err();
    // Bounded: the connect timeout plus slack for a loaded machine, never a hang.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            choreograph::PublishError::Topic(choreograph::TopicError::Unreachable { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("cannot reach the Kafka cluster at 127.0.0.1:1"),
        "{err}"
    );
}
