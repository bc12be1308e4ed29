//! Configuration: where the brokers are, what else the Kafka client should be told, and how
//! topics are created.
//!
//! Every value can come from the builder methods or from the environment (the whole table, with
//! the services' variables and the librdkafka settings the runtime sets: `docs/configuration.md`):
//!
//! | environment variable                   | meaning                                               | default            |
//! |----------------------------------------|-------------------------------------------------------|--------------------|
//! | `KAFKA_BOOTSTRAP_SERVERS`              | `host:port[,host:port...]` of the cluster             | none: required     |
//! | `CHOREOGRAPH_KAFKA_<NAME>`             | any librdkafka property: `<NAME>` lower-cased, `_`→`.` (`CHOREOGRAPH_KAFKA_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`) | — |
//! | `CHOREOGRAPH_TOPIC_PARTITIONS`         | partitions of topics Choreograph creates              | `6`                |
//! | `CHOREOGRAPH_TOPIC_REPLICATION_FACTOR` | replication factor of topics it creates; `-1` = the broker's `default.replication.factor` | `-1` |
//! | `CHOREOGRAPH_CREATE_TOPICS`            | create missing topics through the admin API (`true`/`false`) | `true`      |
//! | `CHOREOGRAPH_TOPIC_PREFIX`             | prefix of every topic named by an event type, of the saga log and changelogs, and of service consumer groups (`staging.` makes `registration.user` `staging.registration.user`) | empty |
//! | `CHOREOGRAPH_SAGA_LOG_TOPIC`           | the saga-log topic (steps of every service; read by `choreograph trace`) | `choreograph.saga-log` |
//! | `CHOREOGRAPH_CONNECT_TIMEOUT_MS`       | how long to wait for the cluster to answer at all     | `10000`            |
//! | `CHOREOGRAPH_DELIVERY_TIMEOUT_MS`      | how long a publish may take before it fails (librdkafka `message.timeout.ms`) | `30000` |
//!
//! librdkafka properties pass through untouched, so security settings (`security.protocol`,
//! `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, ...) work as documented in
//! librdkafka's `CONFIGURATION.md`. Properties Choreograph sets itself for its guarantees
//! (`acks=all`, `enable.idempotence=true`, `max.in.flight.requests.per.connection=1` on
//! producers) are applied after the pass-through ones and cannot be weakened by them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no Kafka bootstrap servers: set KAFKA_BOOTSTRAP_SERVERS (host:port[,host:port]) or pass them explicitly (--brokers)")]
    MissingBootstrapServers,
    #[error("bootstrap server `{0}` is not host:port")]
    InvalidBootstrapServer(String),
    #[error("{name}={value}: {reason}")]
    InvalidValue {
        name: String,
        value: String,
        reason: String,
    },
}

/// How Choreograph creates the topics it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSettings {
    /// Create missing topics through the admin API.
    pub create: bool,
    /// Partitions of created topics.
    pub partitions: i32,
    /// Replication factor of created topics; `-1` leaves it to the broker's default.
    pub replication_factor: i32,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            create: true,
            partitions: 6,
            replication_factor: -1,
        }
    }
}

/// Connection settings shared by publishers, services and the CLI.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    bootstrap_servers: String,
    properties: BTreeMap<String, String>,
    /// How topics are created.
    pub topics: TopicSettings,
    /// How long to wait for the cluster to answer a metadata request.
    pub connect_timeout: Duration,
    /// How long a publish may take, retries included, before it fails.
    pub delivery_timeout: Duration,
    /// Prefix of every topic named by an event type (`<prefix><Event::TOPIC>`), for sharing a
    /// cluster between environments or test runs. Explicitly named topics are left alone.
    pub topic_prefix: String,
    /// The saga-log topic (before the prefix): where services log steps and traces read them.
    pub saga_log_topic: String,
}

/// The prefix of environment variables that pass librdkafka properties through.
pub const PROPERTY_ENV_PREFIX: &str = "CHOREOGRAPH_KAFKA_";

impl KafkaConfig {
    /// A configuration for the given bootstrap servers (`host:port[,host:port...]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Result<Self, ConfigError> {
        let bootstrap_servers = bootstrap_servers.into();
        validate_servers(&bootstrap_servers)?;
        Ok(Self {
            bootstrap_servers,
            properties: BTreeMap::new(),
            topics: TopicSettings::default(),
            connect_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            topic_prefix: String::new(),
            saga_log_topic: crate::saga_log::DEFAULT_TOPIC.to_owned(),
        })
    }

    /// Reads the configuration from the process environment (see the module docs).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Like [`KafkaConfig::from_env`], with the bootstrap servers given explicitly when `Some`.
    pub fn from_env_with(bootstrap_servers: Option<&str>) -> Result<Self, ConfigError> {
        let vars = std::env::vars()
            .filter(|(k, _)| bootstrap_servers.is_none() || k != "KAFKA_BOOTSTRAP_SERVERS");
        let vars: Vec<_> = match bootstrap_servers {
            Some(s) => vars
                .chain(std::iter::once((
                    "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
                    s.to_owned(),
                )))
                .collect(),
            None => vars.collect(),
        };
        Self::from_vars(vars)
    }

    /// Reads the configuration from `(name, value)` pairs shaped like environment variables.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let servers = vars
            .get("KAFKA_BOOTSTRAP_SERVERS")
            .filter(|s| !s.trim().is_empty())
            .ok_or(ConfigError::MissingBootstrapServers)?;
        let mut config = Self::new(servers.trim())?;
        for (name, value) in &vars {
            if let Some(prop) = name.strip_prefix(PROPERTY_ENV_PREFIX) {
                if !prop.is_empty() {
                    config.set(prop.to_ascii_lowercase().replace('_', "."), value.clone());
                }
            }
        }
        if let Some(v) = vars.get("CHOREOGRAPH_TOPIC_PARTITIONS") {
            config.topics.partitions = parse_num(v, "CHOREOGRAPH_TOPIC_PARTITIONS", 1)?;
        }
        if let Some(v) = vars.get("CHOREOGRAPH_TOPIC_REPLICATION_FACTOR") {
            let rf: i32 = parse_num(v, "CHOREOGRAPH_TOPIC_REPLICATION_FACTOR", -1)?;
            if rf == 0 {
                return Err(invalid(
                    "CHOREOGRAPH_TOPIC_REPLICATION_FACTOR",
                    v,
                    "must be -1 or at least 1",
                ));
            }
            config.topics.replication_factor = rf;
        }
        if let Some(v) = vars.get("CHOREOGRAPH_CREATE_TOPICS") {
            config.topics.create = match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(invalid(
                        "CHOREOGRAPH_CREATE_TOPICS",
                        v,
                        "must be true or false",
                    ))
                }
            };
        }
        if let Some(v) = vars.get("CHOREOGRAPH_SAGA_LOG_TOPIC") {
            if v.trim().is_empty() {
                return Err(invalid(
                    "CHOREOGRAPH_SAGA_LOG_TOPIC",
                    v,
                    "must not be empty",
                ));
            }
            config.saga_log_topic = v.clone();
        }
        if let Some(v) = vars.get("CHOREOGRAPH_TOPIC_PREFIX") {
            config.topic_prefix = v.clone();
        }
        if let Some(v) = vars.get("CHOREOGRAPH_CONNECT_TIMEOUT_MS") {
            config.connect_timeout =
                Duration::from_millis(parse_num(v, "CHOREOGRAPH_CONNECT_TIMEOUT_MS", 1)?);
        }
        if let Some(v) = vars.get("CHOREOGRAPH_DELIVERY_TIMEOUT_MS") {
            config.delivery_timeout =
                Duration::from_millis(parse_num(v, "CHOREOGRAPH_DELIVERY_TIMEOUT_MS", 1)?);
        }
        Ok(config)
    }

    /// Sets a librdkafka property (for example `security.protocol`).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Builder-style [`KafkaConfig::set`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// Builder-style topic settings.
    pub fn with_topics(mut self, topics: TopicSettings) -> Self {
        self.topics = topics;
        self
    }

    /// The topic of an event type: the type's topic with the configured prefix.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The pass-through librdkafka properties.
    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// The producers' `message.max.bytes` (librdkafka's default, 1,000,000, unless set).
    pub fn max_message_bytes(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    }

    /// A client configuration with the bootstrap servers and every pass-through property.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

fn validate_servers(servers: &str) -> Result<(), ConfigError> {
    if servers.trim().is_empty() {
        return Err(ConfigError::MissingBootstrapServers);
    }
    for server in servers.split(',') {
        let server = server.trim();
        let server = server.rsplit_once("://").map(|(_, s)| s).unwrap_or(server);
        let ok = match server.rsplit_once(':') {
            Some((host, port)) => {
                !host.is_empty() && port.parse::<u16>().map(|p| p > 0).unwrap_or(false)
            }
            None => false,
        };
        if !ok {
            return Err(ConfigError::InvalidBootstrapServer(server.to_owned()));
        }
    }
    Ok(())
}

fn invalid(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_num<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    value: &str,
    name: &str,
    min: T,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        _ => Err(invalid(
            name,
            value,
            &format!("must be a whole number >= {min}"),
        )),
    }
}

/// The fixes the linked librdkafka carries, comma-separated: `idempotent-producer-spin` when
/// `rdkafka-sys` comes from this workspace's `vendor/rdkafka-sys` (`[patch.crates-io]`), empty
/// when it comes from crates.io.
pub const LIBRDKAFKA_PATCHES: &str = env!("CHOREOGRAPH_LIBRDKAFKA_PATCHES");

/// Whether the linked librdkafka carries the fix for the idempotent producer's busy loop
/// (`vendor/rdkafka-sys/PATCH.md`).
pub fn librdkafka_has_busy_loop_fix() -> bool {
    LIBRDKAFKA_PATCHES
        .split(',')
        .any(|p| p.trim() == "idempotent-producer-spin")
}

/// Warns once per process when the linked librdkafka lacks the busy-loop fix: services and
/// publishers call it when they start.
pub(crate) fn check_librdkafka() {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        if !librdkafka_has_busy_loop_fix() {
            let (_, version) = rdkafka::util::get_rdkafka_version();
            tracing::warn!(
                librdkafka = %version,
                "this build links librdkafka {version} without Choreograph's fix for the idempotent \
                 producer's busy loop (a producer thread spins while a partition waits for its request \
                 in flight: up to twice the CPU per record); take rdkafka-sys from Choreograph's \
                 vendor/rdkafka-sys with `[patch.crates-io] rdkafka-sys = {{ path = \"<choreograph>/vendor/rdkafka-sys\" }}` \
                 in your workspace's Cargo.toml (docs/your-own-choreography.md)"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_servers_and_pass_through_properties() {
        let c = KafkaConfig::from_vars(vars(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092,kafka-2:9093"),
            ("CHOREOGRAPH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("CHOREOGRAPH_KAFKA_SASL_MECHANISM", "PLAIN"),
            ("CHOREOGRAPH_TOPIC_PARTITIONS", "12"),
            ("CHOREOGRAPH_TOPIC_REPLICATION_FACTOR", "3"),
            ("CHOREOGRAPH_CREATE_TOPICS", "false"),
            ("UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(c.bootstrap_servers(), "127.0.0.1:9092,kafka-2:9093");
        assert_eq!(c.properties()["security.protocol"], "SASL_SSL");
        assert_eq!(c.properties()["sasl.mechanism"], "PLAIN");
        assert_eq!(c.properties().len(), 2);
        assert_eq!(
            c.topics,
            TopicSettings {
                create: false,
                partitions: 12,
                replication_factor: 3
            }
        );
        assert_eq!(c.client_config().get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn refuses_bad_values_clearly() {
        assert_eq!(
            KafkaConfig::from_vars(vars(&[])).unwrap_err(),
            ConfigError::MissingBootstrapServers
        );
        assert_eq!(
            KafkaConfig::new("localhost").unwrap_err(),
            ConfigError::InvalidBootstrapServer("localhost".into())
        );
        assert!(KafkaConfig::new("localhost:notaport").is_err());
        let err = KafkaConfig::from_vars(vars(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "h:1"),
            ("CHOREOGRAPH_TOPIC_PARTITIONS", "0"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("CHOREOGRAPH_TOPIC_PARTITIONS=0"),
            "{err}"
        );
        assert!(KafkaConfig::from_vars(vars(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "h:1"),
            ("CHOREOGRAPH_TOPIC_REPLICATION_FACTOR", "0"),
        ]))
        .is_err());
    }
}
