//! `choreograph trace` and `choreograph sagas` fail clearly and never hang: a malformed ID, an
//! unreachable broker, an unknown saga.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use choreograph::{testkit, CorrelationId, Topics};

fn choreograph(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreograph"));
    cmd.args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("CHOREOGRAPH_TOPIC_PREFIX")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().expect("cannot run choreograph");
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_malformed_correlation_id_is_refused_clearly() {
    let (out, _) = choreograph(&["-b", "127.0.0.1:1", "trace", "not-a-uuid"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`not-a-uuid` is not a correlation ID"),
        "{}",
        stderr(&out)
    );
    let (out, _) = choreograph(&["-b", "127.0.0.1:1", "sagas", "--since", "soon"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_broker_fails_within_the_connect_timeout() {
    for args in [
        vec!["trace", "01934f4e-8a2c-7d3e-9b1a-2f4c6e8a0b1c"],
        vec!["sagas"],
    ] {
        let mut all = vec!["-b", "127.0.0.1:1"];
        all.extend(args);
        let (out, took) = choreograph(&all, &[("CHOREOGRAPH_CONNECT_TIMEOUT_MS", "1500")]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot reach the Kafka cluster at 127.0.0.1:1"),
            "{}",
            stderr(&out)
        );
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
}

#[tokio::test]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn an_unknown_saga_is_reported_not_hung_on() {
    let config = testkit::isolated_config();
    let servers = config.bootstrap_servers().to_owned();
    let prefix = config.topic_prefix.clone();
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", servers.as_str()),
        ("CHOREOGRAPH_TOPIC_PREFIX", prefix.as_str()),
        (
            "CHOREOGRAPH_SCHEMAS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas"),
        ),
    ];
    let id = CorrelationId::new().to_string();
    // No saga log at all yet: says so.
    let (out, took) = choreograph(&["trace", &id], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // A saga log and event topics, but not this saga.
    let log = config.topic(&config.saga_log_topic);
    let user = config.topic("registration.user");
    Topics::new(&config)
        .unwrap()
        .ensure(&[&log, &user])
        .await
        .unwrap();
    let (out, took) = choreograph(&["trace", &id], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("no saga {id}")),
        "{}",
        stderr(&out)
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Following a saga that never shows up ends at the timeout, with a message.
    let (out, took) = choreograph(&["trace", &id, "--follow", "--timeout", "2s"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not end within"),
        "{}",
        stderr(&out)
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
