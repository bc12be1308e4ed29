//! The embedded default: librdkafka's mock cluster, in-process, nothing to install.
//!
//! It speaks the Kafka protocol well enough to run a choreography end to end (produce, consumer
//! groups, commits), so the demo runs on a fresh machine. It is NOT proof of Kafka behaviour:
//! its transactions are not enforced, its retention is tiny (about 5 MiB or 100,000 batches per
//! partition) and it has no admin API for creating topics, so topics are created through the
//! mock's own API here. Claims about Kafka are tested against a real broker.

use std::ffi::CString;

use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

/// The mock cluster could not be started or changed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("embedded Kafka (librdkafka mock cluster): {0}")]
pub struct EmbeddedError(String);

/// An in-process Kafka-protocol cluster. Dropping it stops the cluster.
pub struct EmbeddedKafka {
    // The mock cluster belongs to this client handle: it lives as long as the handle.
    owner: BaseProducer,
    cluster: *mut rdkafka_sys::rd_kafka_mock_cluster_t,
    bootstrap_servers: String,
}

// SAFETY: librdkafka's mock cluster API posts every operation to the cluster's own thread
// through a locked queue (rd_kafka_mock_cluster_op), so it may be called from any thread; the
// pointer stays valid while `owner` lives, and `owner` is itself Send + Sync.
unsafe impl Send for EmbeddedKafka {}
unsafe impl Sync for EmbeddedKafka {}

impl EmbeddedKafka {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: u32) -> Result<Self, EmbeddedError> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .set("log_level", "3")
            .create()
            .map_err(|e| EmbeddedError(e.to_string()))?;
        // SAFETY: the handle is valid; the returned pointer is owned by it.
        let cluster =
            unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(owner.client().native_ptr()) };
        if cluster.is_null() {
            return Err(EmbeddedError(
                "librdkafka did not create a mock cluster".into(),
            ));
        }
        // SAFETY: cluster is a valid mock cluster; the string is owned by it and copied here.
        let bootstrap_servers = unsafe {
            std::ffi::CStr::from_ptr(rdkafka_sys::rd_kafka_mock_cluster_bootstraps(cluster))
                .to_string_lossy()
                .into_owned()
        };
        // Consumer groups join at once instead of after the 3 s initial rebalance delay.
        // SAFETY: valid cluster pointer.
        unsafe { rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0) };
        Ok(Self {
            owner,
            cluster,
            bootstrap_servers,
        })
    }

    /// The `host:port` list clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Creates a topic (the mock has no CreateTopics API).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), EmbeddedError> {
        let name = CString::new(topic).map_err(|e| EmbeddedError(e.to_string()))?;
        // SAFETY: valid cluster pointer and NUL-terminated name.
        let err = unsafe {
            rdkafka_sys::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, 1)
        };
        if err != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(EmbeddedError(format!("create topic `{topic}`: {err:?}")));
        }
        Ok(())
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        let _ = self.owner.flush(std::time::Duration::from_millis(100));
    }
}
