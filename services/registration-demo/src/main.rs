//! The registration demo: runs on an embedded Kafka (librdkafka's mock cluster, in-process)
//! unless `--brokers` names a real cluster.
//!
//! For now it starts one registration saga, publishes its first event and reads it back.

use std::time::Duration;

use anyhow::Context;
use choreograph::embedded::EmbeddedKafka;
use choreograph::{Event, KafkaConfig, Publisher};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "Run the registration saga end to end (embedded Kafka unless --brokers)")]
struct Args {
    /// A real cluster to run against (host:port[,host:port]); default: an embedded mock cluster
    #[arg(long, short = 'b')]
    brokers: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct UserRegistered {
    user_id: String,
    email: String,
}

impl Event for UserRegistered {
    const TYPE: &'static str = "registration.user.registered.v1";
    const TOPIC: &'static str = "registration.user";
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,librdkafka=off,rdkafka::client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let embedded;
    let config = match &args.brokers {
        Some(b) => KafkaConfig::new(b)?,
        None => {
            embedded = EmbeddedKafka::start(1)?;
            embedded.create_topic(UserRegistered::TOPIC, 6)?;
            println!(
                "embedded Kafka (librdkafka mock cluster) at {}",
                embedded.bootstrap_servers()
            );
            KafkaConfig::new(embedded.bootstrap_servers())?
        }
    };
    let publisher = Publisher::new(&config, "/services/user")?;
    let published = publisher
        .start_saga(&UserRegistered {
            user_id: "u-1".into(),
            email: "ada@example.com".into(),
        })
        .await
        .context("publishing the saga's first event")?;
    println!("started saga {}", published.correlation_id);
    let records = choreograph::testkit::read_topic(
        &config,
        UserRegistered::TOPIC,
        usize::MAX,
        Duration::from_secs(3),
    );
    for r in records {
        if let Ok((ce, _)) = choreograph::record::decode_message(&r) {
            if ce.correlation_id == published.correlation_id {
                println!(
                    "  {} {} from {} at {}: {}",
                    ce.event_type,
                    ce.id,
                    ce.source,
                    ce.time,
                    String::from_utf8_lossy(&ce.data)
                );
            }
        }
    }
    Ok(())
}
