//! A test kit: what tests of Choreograph services (and Choreograph's own tests) need to talk to
//! a real broker.
//!
//! Tests that need Kafka call [`bootstrap_servers`], which fails the test with instructions when
//! no broker is configured: such a test never passes silently. Mark them
//! `#[ignore = "needs Kafka: run scripts/test.sh"]` so plain `cargo test` skips them visibly,
//! and `scripts/test.sh` (which starts a broker) runs them with `--include-ignored`.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// The bootstrap servers of the test broker, from `KAFKA_BOOTSTRAP_SERVERS`.
///
/// # Panics
/// When the variable is not set, with a message that says how to run the test.
pub fn bootstrap_servers() -> String {
    match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(s) if !s.trim().is_empty() => s,
        _ => panic!(
            "this test needs a real Kafka broker and KAFKA_BOOTSTRAP_SERVERS is not set: run \
             `scripts/test.sh` (starts a throwaway broker), or start one with \
             `scripts/kafka-local.sh start` and export KAFKA_BOOTSTRAP_SERVERS=<the address it prints>"
        ),
    }
}

/// A [`KafkaConfig`] for the test broker.
pub fn config() -> KafkaConfig {
    KafkaConfig::new(bootstrap_servers()).expect("KAFKA_BOOTSTRAP_SERVERS is not host:port")
}

/// A [`KafkaConfig`] for the test broker whose event-type topics are prefixed with a prefix of
/// their own, so a test's topics (and consumer groups reading them) see no other test's records.
pub fn isolated_config() -> KafkaConfig {
    let mut c = config();
    c.topic_prefix = format!("t{}.", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    c
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::now_v7().simple())
}

/// Reads every record of `topic` up to its current end (the high watermarks when called).
pub fn read_to_end(config: &KafkaConfig, topic: &str, timeout: Duration) -> Vec<OwnedMessage> {
    match crate::record::read_to_end(config, topic, timeout) {
        Ok(records) => records,
        // Not created yet: nothing in it.
        Err(e) if e.contains("does not exist") => Vec::new(),
        Err(e) => panic!("reading `{topic}`: {e}"),
    }
}

/// Reads records of `topic` from the beginning of every partition, without a consumer group,
/// until `count` records arrived or `timeout` passed (waiting for the topic to exist, too).
/// Returns what it read.
pub fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", "choreograph-testkit-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("cannot create a test consumer");
    let deadline = Instant::now() + timeout;
    // The topic may not exist yet (its writer creates it with its first record): wait for it.
    let mut tpl = TopicPartitionList::new();
    while tpl.count() == 0 && Instant::now() < deadline {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("cannot read topic metadata");
        for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .expect("bad partition");
            }
        }
        if tpl.count() == 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    consumer.assign(&tpl).expect("cannot assign partitions");
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(crate::record::copy_consumed(&m));
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    out
}
