//! The embedded default: librdkafka's mock cluster, in-process, nothing to install.
//!
//! It speaks the Kafka protocol well enough to run a choreography end to end (produce, consumer
//! groups, commits), so the demo runs on a fresh machine. It is NOT proof of Kafka behaviour:
//! its transactions are not enforced, its retention is tiny (about 5 MiB or 100,000 batches per
//! partition) and it has no admin API for creating topics. Claims about Kafka are tested
//! against a real broker.
//!
//! It is still a full place to develop in, within the process that started it:
//! - **Topics.** Every cluster started here is registered by its bootstrap address, and
//!   [`Topics`](crate::topics::Topics) (which services, the [`Publisher`](crate::Publisher) and
//!   the CLI use) creates missing topics through the mock's own API, with the partitions they
//!   would get on a real broker. A client of another process cannot do that: the mock is
//!   recognised by its cluster ID ([`is_mock_cluster`]) and the error says so.
//! - **Reading by time.** The mock answers every offsets-by-time lookup with "no such record";
//!   the readers that seek by time (`trace`, `sagas`, restoring handled markers) read such a
//!   cluster's partitions from their start instead, which its small retention keeps cheap.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

/// The cluster ID of every librdkafka mock cluster starts with this (`mockCluster<hex>`).
const MOCK_CLUSTER_ID_PREFIX: &str = "mockCluster";

/// Mock clusters of this process by bootstrap address (`host:port`), as the address of their
/// `rd_kafka_mock_cluster_t`. An entry lives exactly as long as its [`EmbeddedKafka`]: it is
/// removed under this lock before the cluster is dropped, and used only under it.
static IN_PROCESS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

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
        IN_PROCESS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(bootstrap_servers.clone(), cluster as usize);
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

    /// The configuration of a client of this cluster: its bootstrap address, and fetches that
    /// return after 5 ms when there is nothing to read (an empty fetch on the mock waits the
    /// whole `fetch.wait.max.ms`, 500 ms by default, which would make every hop of a saga
    /// that slow).
    pub fn kafka_config(&self) -> crate::config::KafkaConfig {
        crate::config::KafkaConfig::new(&self.bootstrap_servers)
            .expect("the mock cluster's bootstrap address is a valid one")
            .with("fetch.wait.max.ms", "5")
    }

    /// Creates a topic, or does nothing when it exists (whatever its partitions). Services,
    /// publishers and the CLI of this process create the topics they need themselves; this is
    /// for topics nothing else creates.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), EmbeddedError> {
        create(self.cluster, topic, partitions)
    }
}

fn create(
    cluster: *mut rdkafka_sys::rd_kafka_mock_cluster_t,
    topic: &str,
    partitions: i32,
) -> Result<(), EmbeddedError> {
    use rdkafka_sys::rd_kafka_resp_err_t::*;
    if partitions < 1 {
        return Err(EmbeddedError(format!(
            "create topic `{topic}`: {partitions} partitions (at least 1)"
        )));
    }
    let name = CString::new(topic).map_err(|e| EmbeddedError(e.to_string()))?;
    // SAFETY: valid cluster pointer (the caller's) and NUL-terminated name.
    let err =
        unsafe { rdkafka_sys::rd_kafka_mock_topic_create(cluster, name.as_ptr(), partitions, 1) };
    match err {
        RD_KAFKA_RESP_ERR_NO_ERROR | RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS => Ok(()),
        other => Err(EmbeddedError(format!("create topic `{topic}`: {other:?}"))),
    }
}

/// Creates `topic` on a mock cluster of this process whose bootstrap address is one of
/// `bootstrap_servers` (comma-separated); `None` when there is no such cluster here.
pub(crate) fn create_in_process(
    bootstrap_servers: &str,
    topic: &str,
    partitions: i32,
) -> Option<Result<(), EmbeddedError>> {
    let clusters = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = bootstrap_servers
        .split(',')
        .map(str::trim)
        .find_map(|server| clusters.as_ref()?.get(server).copied())?;
    // The entry is removed (under this lock) before its cluster is dropped: it is alive.
    Some(create(
        cluster as *mut rdkafka_sys::rd_kafka_mock_cluster_t,
        topic,
        partitions,
    ))
}

/// Whether the cluster a client talks to is a librdkafka mock cluster (of any process), by
/// its cluster ID. `false` when the cluster does not say within `timeout`.
pub fn is_mock_cluster<C: ClientContext>(client: &Client<C>, timeout: Duration) -> bool {
    client
        .fetch_cluster_id(timeout)
        .is_some_and(|id| id.starts_with(MOCK_CLUSTER_ID_PREFIX))
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        if let Some(clusters) = IN_PROCESS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            clusters.remove(&self.bootstrap_servers);
        }
        let _ = self.owner.flush(std::time::Duration::from_millis(100));
    }
}
