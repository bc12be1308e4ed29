//! Topics: finding out whether the cluster answers, and creating the topics Choreograph needs.
//!
//! Missing topics are created through the Kafka admin API with the partitions and replication
//! factor of [`TopicSettings`](crate::config::TopicSettings) (defaults: 6 partitions, the
//! broker's default replication factor). With topic creation off, a missing topic is an error
//! that names it. Every call is bounded by the configured connect timeout: an unreachable
//! cluster is reported as such, not waited on forever.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;

/// A topic could not be found, created or inspected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TopicError {
    #[error("cannot reach the Kafka cluster at {servers} (no answer within {:.1} s): is the broker running and the address right? ({detail})", .waited.as_secs_f64())]
    Unreachable {
        servers: String,
        waited: Duration,
        detail: String,
    },
    #[error("topic `{0}` does not exist and topic creation is off (CHOREOGRAPH_CREATE_TOPICS=false / --no-create-topics): create it first")]
    Missing(String),
    #[error("topic `{topic}` does not exist and this client may not create it ({code}): create it with an admin account, or grant CREATE on it")]
    CreateDenied { topic: String, code: String },
    #[error("topic `{topic}` could not be created: {reason}")]
    CreateFailed { topic: String, reason: String },
    #[error("topic `{topic}`: {reason}")]
    Metadata { topic: String, reason: String },
    #[error("topic `{topic}` does not exist and the cluster at {servers} is a librdkafka mock cluster of another process, which cannot create topics for this one: create it in the process that runs the cluster (`EmbeddedKafka::create_topic`, or let a service of that process create it), or use a real broker")]
    MockElsewhere { topic: String, servers: String },
    #[error("cannot create a Kafka client: {0}")]
    Client(String),
}

/// How to create a topic that is missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicSpec {
    /// Partitions (default: the configured topic partitions).
    pub partitions: Option<i32>,
    /// `cleanup.policy=compact` (changelogs).
    pub compacted: bool,
    /// `retention.ms` (default: the broker's).
    pub retention_ms: Option<i64>,
}

/// Finds and creates topics, remembering the ones known to exist.
#[derive(Clone)]
pub struct Topics {
    admin: Arc<AdminClient<DefaultClientContext>>,
    config: KafkaConfig,
    known: Arc<Mutex<HashSet<String>>>,
    /// One lock per topic being ensured: concurrent callers for a topic not known yet wait for
    /// the first one's answer instead of asking the cluster each (a service's first burst of
    /// records to a new output topic otherwise asked once per record, each metadata call on a
    /// blocking thread of its own: dozens of threads, and their memory, for one topic).
    ensuring: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Metadata requests made (tests).
    metadata_requests: Arc<AtomicU64>,
}

impl Topics {
    pub fn new(config: &KafkaConfig) -> Result<Self, TopicError> {
        let mut cc = config.client_config();
        cc.set("allow.auto.create.topics", "false");
        let admin = cc
            .create::<AdminClient<DefaultClientContext>>()
            .map_err(|e| TopicError::Client(e.to_string()))?;
        Ok(Self {
            admin: Arc::new(admin),
            config: config.clone(),
            known: Arc::new(Mutex::new(HashSet::new())),
            ensuring: Arc::new(Mutex::new(HashMap::new())),
            metadata_requests: Arc::new(AtomicU64::new(0)),
        })
    }

    fn unreachable(&self, started: Instant, detail: impl ToString) -> TopicError {
        TopicError::Unreachable {
            servers: self.config.bootstrap_servers().to_owned(),
            waited: started.elapsed(),
            detail: detail.to_string(),
        }
    }

    /// The partition count of a topic, or `None` when it does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<usize>, TopicError> {
        let admin = self.admin.clone();
        let timeout = self.config.connect_timeout;
        let name = topic.to_owned();
        let started = Instant::now();
        self.metadata_requests.fetch_add(1, Ordering::Relaxed);
        let result = tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&name), timeout)
                .map(|md| {
                    md.topics()
                        .first()
                        .map(|t| (t.error(), t.partitions().len()))
                })
        })
        .await
        .map_err(|e| TopicError::Client(e.to_string()))?;
        match result {
            Ok(Some((None, n))) if n > 0 => Ok(Some(n)),
            Ok(Some((Some(err), _))) => {
                let code = RDKafkaErrorCode::from(err);
                match code {
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                        Ok(None)
                    }
                    // A topic being created answers LeaderNotAvailable for a moment.
                    RDKafkaErrorCode::LeaderNotAvailable => Ok(Some(0)),
                    other => Err(TopicError::Metadata {
                        topic: topic.to_owned(),
                        reason: other.to_string(),
                    }),
                }
            }
            Ok(_) => Ok(None),
            Err(e @ KafkaError::MetadataFetch(_)) => Err(self.unreachable(started, e)),
            Err(e) => Err(TopicError::Metadata {
                topic: topic.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// The partition count of a topic known to exist (just ensured), waiting (up to the connect
    /// timeout) while the broker answering has not caught up: on a fresh multi-node cluster one
    /// may still say the topic is unknown, or its partitions have no leader.
    pub async fn settled_partition_count(&self, topic: &str) -> Result<Option<usize>, TopicError> {
        let deadline = Instant::now() + self.config.connect_timeout;
        loop {
            match self.partition_count(topic).await? {
                None | Some(0) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => return Ok(other),
            }
        }
    }

    /// Makes sure every topic exists, creating the missing ones when creation is on.
    pub async fn ensure(&self, topics: &[&str]) -> Result<(), TopicError> {
        for topic in topics {
            self.ensure_spec(topic, &TopicSpec::default()).await?;
        }
        Ok(())
    }

    /// Whether a topic is known to exist (ensured before by this client).
    pub fn is_known(&self, topic: &str) -> bool {
        self.known
            .lock()
            .map(|k| k.contains(topic))
            .unwrap_or(false)
    }

    /// Makes sure a topic exists, creating it as `spec` says when it is missing.
    pub async fn ensure_spec(&self, topic: &str, spec: &TopicSpec) -> Result<(), TopicError> {
        if self.is_known(topic) {
            return Ok(());
        }
        let lock = match self.ensuring.lock() {
            Ok(mut m) => m.entry(topic.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let _ensuring = lock.lock().await;
        if self.is_known(topic) {
            return Ok(());
        }
        match self.partition_count(topic).await? {
            Some(n) if n > 0 => {}
            Some(_) => self.wait_until_ready(topic).await?,
            None => {
                if !self.config.topics.create {
                    return Err(TopicError::Missing(topic.to_owned()));
                }
                self.create(topic, spec).await?;
                self.wait_until_ready(topic).await?;
            }
        }
        if let Ok(mut k) = self.known.lock() {
            k.insert(topic.to_owned());
        }
        if let Ok(mut m) = self.ensuring.lock() {
            m.remove(topic);
        }
        Ok(())
    }

    async fn create(&self, topic: &str, spec: &TopicSpec) -> Result<(), TopicError> {
        let settings = &self.config.topics;
        let partitions = spec.partitions.unwrap_or(settings.partitions);
        // librdkafka's mock cluster has no CreateTopics: one of this process is asked directly
        // (it keeps no cleanup policy or retention), one of another process cannot be.
        if let Some(created) =
            crate::embedded::create_in_process(self.config.bootstrap_servers(), topic, partitions)
        {
            created.map_err(|e| TopicError::CreateFailed {
                topic: topic.to_owned(),
                reason: e.to_string(),
            })?;
            tracing::info!(topic, partitions, "created topic (embedded cluster)");
            return Ok(());
        }
        let admin = self.admin.clone();
        let timeout = self.config.connect_timeout;
        let mock = tokio::task::spawn_blocking(move || {
            crate::embedded::is_mock_cluster(admin.inner(), timeout)
        })
        .await
        .unwrap_or(false);
        if mock {
            return Err(TopicError::MockElsewhere {
                topic: topic.to_owned(),
                servers: self.config.bootstrap_servers().to_owned(),
            });
        }
        let mut new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(settings.replication_factor),
        );
        if spec.compacted {
            new = new.set("cleanup.policy", "compact");
        }
        let retention = spec.retention_ms.map(|ms| ms.to_string());
        if let Some(ms) = &retention {
            new = new.set("retention.ms", ms);
        }
        let options = AdminOptions::new().operation_timeout(Some(self.config.connect_timeout));
        let started = Instant::now();
        let results = tokio::time::timeout(
            self.config.connect_timeout + Duration::from_secs(1),
            self.admin.create_topics([&new], &options),
        )
        .await
        .map_err(|_| TopicError::CreateFailed {
            topic: topic.to_owned(),
            reason: format!(
                "the cluster answered metadata requests but not CreateTopics within {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        })?
        .map_err(|e| TopicError::CreateFailed {
            topic: topic.to_owned(),
            reason: e.to_string(),
        })?;
        let mut created = false;
        for result in results {
            match result {
                Ok(_) => created = true,
                // Created meanwhile by another client (or another task of this one).
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((
                    name,
                    code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed),
                )) => {
                    return Err(TopicError::CreateDenied {
                        topic: name,
                        code: code.to_string(),
                    })
                }
                Err((name, code)) => {
                    return Err(TopicError::CreateFailed {
                        topic: name,
                        reason: code.to_string(),
                    })
                }
            }
        }
        if created {
            tracing::info!(
                topic,
                partitions,
                replication_factor = settings.replication_factor,
                "created topic"
            );
        }
        Ok(())
    }

    async fn wait_until_ready(&self, topic: &str) -> Result<(), TopicError> {
        let deadline = Instant::now() + self.config.connect_timeout;
        loop {
            if let Some(n) = self.partition_count(topic).await? {
                if n > 0 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(TopicError::CreateFailed {
                    topic: topic.to_owned(),
                    reason: format!(
                        "created, but no partition leader after {:?}",
                        self.config.connect_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka: run scripts/test.sh"]
    async fn concurrent_ensures_of_a_new_topic_ask_the_cluster_once() {
        let topics = Topics::new(&crate::testkit::config()).unwrap();
        let topic = crate::testkit::unique_topic("ensure");
        let calls = (0..200).map(|_| {
            let (topics, topic) = (topics.clone(), topic.clone());
            tokio::spawn(async move { topics.ensure(&[topic.as_str()]).await })
        });
        for result in futures::future::join_all(calls).await {
            result.unwrap().unwrap();
        }
        assert!(topics.is_known(&topic));
        assert_eq!(topics.partition_count(&topic).await.unwrap(), Some(6));
        // One request to find the topic missing, then the creation's readiness polls (one when
        // the new topic has its leader at once, more while it has not); the 199 other callers
        // waited for that answer. Before, each of them asked on a blocking thread of its own.
        let before_check = topics.metadata_requests.load(Ordering::Relaxed) - 1;
        assert!(
            (2..=20).contains(&before_check),
            "{before_check} metadata requests for 200 concurrent ensures of one topic"
        );
    }
}
