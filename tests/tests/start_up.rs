//! A service that cannot start says so at once: the error is logged, its `ReadySignal` resolves
//! with it, `run` returns it and a service binary exits with status 2. Against a real broker
//! that refuses to create its topics (a replication factor the single test broker cannot give),
//! and against an embedded (mock) cluster of another process, which cannot create topics for it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use choreograph::embedded::EmbeddedKafka;
use choreograph::{Context, Event, HandlerError, NotReadyCause, Service, ServiceError, TopicError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl Event for Ping {
    const TYPE: &'static str = "test.start-up.ping.v1";
    const TOPIC: &'static str = "test.start-up.ping";
}

async fn on_ping(_ctx: Context, _e: Ping) -> Result<(), HandlerError> {
    Ok(())
}

/// Runs a service binary to its end (at most `limit`, a guard against a hang, not a timing
/// claim); returns its exit code and what it logged.
fn run_binary(name: &str, env: &[(&str, String)], limit: Duration) -> (Option<i32>, String) {
    let mut command = Command::new(common::binary(name));
    command
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("the service binary starts");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} was still running after {limit:?} (it should have given up):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks a binary exited 2 and returns the line where it said it cannot start.
fn cannot_start_line(code: Option<i32>, log: &str) -> &str {
    assert_eq!(code, Some(2), "{log}");
    log.lines()
        .find(|l| l.contains("cannot start"))
        .unwrap_or_else(|| panic!("no `cannot start` line:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_service_whose_topics_cannot_be_created_fails_its_ready_signal_and_run() {
    let mut config = choreograph::testkit::isolated_config();
    // One broker cannot hold three replicas: the broker refuses the topic.
    config.topics.replication_factor = 3;
    config.connect_timeout = Duration::from_secs(5);
    let service = Service::builder("start-up")
        .handle(on_ping)
        .build(&config)
        .unwrap();
    let ready = service.ready_signal();
    let running = tokio::spawn(service.run_until(std::future::pending()));
    let not_ready = tokio::time::timeout(Duration::from_secs(60), ready.wait())
        .await
        .expect("the ready signal resolved")
        .expect_err("the service cannot be ready");
    assert_eq!(not_ready.cause, NotReadyCause::CannotStart, "{not_ready}");
    assert!(
        not_ready.reason.contains(&config.topic(Ping::TOPIC))
            && not_ready.reason.contains("could not be created"),
        "{not_ready}"
    );
    assert!(!ready.is_ready());
    let result = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("run returned")
        .unwrap();
    match result {
        Err(ServiceError::Topic(TopicError::CreateFailed { topic, reason })) => {
            assert_eq!(topic, config.topic(Ping::TOPIC));
            assert!(reason.to_lowercase().contains("replication"), "{reason}");
        }
        other => panic!("run returned {other:?}"),
    }
}

#[test]
#[ignore = "needs Kafka: run scripts/test.sh"]
fn a_service_binary_refused_its_topics_logs_why_and_exits_2() {
    let config = choreograph::testkit::isolated_config();
    let (code, log) = run_binary(
        "points",
        &[
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                config.bootstrap_servers().to_owned(),
            ),
            ("CHOREOGRAPH_TOPIC_PREFIX", config.topic_prefix.clone()),
            ("CHOREOGRAPH_TOPIC_REPLICATION_FACTOR", "3".into()),
            ("CHOREOGRAPH_CONNECT_TIMEOUT_MS", "5000".into()),
        ],
        Duration::from_secs(60),
    );
    let line = cannot_start_line(code, &log);
    assert!(
        line.contains("ERROR")
            && line.contains(&format!("{}registration.activity", config.topic_prefix))
            && line.to_lowercase().contains("replication"),
        "{line}"
    );
}

#[test]
fn a_service_binary_on_another_process_embedded_cluster_says_what_to_do_and_exits_2() {
    let kafka = EmbeddedKafka::start(1).unwrap();
    let (code, log) = run_binary(
        "points",
        &[
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                kafka.bootstrap_servers().to_owned(),
            ),
            ("CHOREOGRAPH_CONNECT_TIMEOUT_MS", "5000".into()),
        ],
        Duration::from_secs(60),
    );
    let line = cannot_start_line(code, &log);
    assert!(
        line.contains("mock cluster of another process") && line.contains("create it"),
        "{line}"
    );
}

#[test]
fn creating_an_embedded_topic_twice_is_fine() {
    let kafka = EmbeddedKafka::start(1).unwrap();
    kafka.create_topic("twice", 3).unwrap();
    kafka.create_topic("twice", 3).unwrap();
    assert!(kafka.create_topic("none", 0).is_err());
}
