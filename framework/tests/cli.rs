//! The `choreograph` command line: bad input gets a clear error and a non-zero exit, never a
//! hang; against a real broker, `publish` writes what it says.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use choreograph::testkit;
use rdkafka::message::{Headers, Message};

fn choreograph(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_choreograph"))
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .envs(env.iter().copied())
        .output()
        .expect("cannot run choreograph");
    (out, started.elapsed())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn malformed_input_is_refused_clearly() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["publish", "-b", "h:1", "--type", "t", "-d", "{}"],
            "--topic",
        ),
        (
            &[
                "publish",
                "-b",
                "h:1",
                "-t",
                "x",
                "--type",
                "t",
                "-d",
                "{not json",
            ],
            "not JSON",
        ),
        (
            &[
                "publish", "-b", "h:1", "-t", "x", "--type", "t", "-d", "{}", "-c", "saga-7",
            ],
            "not a correlation ID",
        ),
        (
            &[
                "publish",
                "-b",
                "h:1",
                "-t",
                "x",
                "--type",
                "t",
                "-d",
                "{}",
                "--partitions",
                "0",
            ],
            "--partitions",
        ),
        (
            &[
                "publish",
                "-b",
                "h:1",
                "-t",
                "x",
                "--type",
                "t",
                "-d",
                "{}",
                "--replication-factor",
                "0",
            ],
            "replication factor",
        ),
        (
            &[
                "publish", "-b", "h:1", "-t", "x", "--type", "t", "-d", "{}", "-X", "novalue",
            ],
            "KEY=VALUE",
        ),
        (
            &[
                "publish",
                "-b",
                "h:1",
                "-t",
                "x",
                "--type",
                "t",
                "--data-file",
                "/nonexistent/data.json",
            ],
            "cannot read the data file",
        ),
        (
            &[
                "publish", "-b", "nohost", "-t", "x", "--type", "t", "-d", "{}",
            ],
            "not host:port",
        ),
        (
            &["publish", "-t", "x", "--type", "t", "-d", "{}"],
            "KAFKA_BOOTSTRAP_SERVERS",
        ),
        (
            &[
                "publish",
                "-b",
                "h:1",
                "-t",
                "x",
                "--type",
                "t",
                "-d",
                "{}",
                "--traceparent",
                "00-xyz",
            ],
            "invalid traceparent",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
        (&["dlq", "replay", "-b", "h:1", "--topic", "x"], "required"),
        (
            &[
                "dlq", "replay", "-b", "h:1", "--topic", "x", "--offset", "3-7",
            ],
            "PARTITION:OFFSET",
        ),
        (
            &["dlq", "replay", "-b", "h:1", "--topic", "x", "-c", "nope"],
            "not a correlation ID",
        ),
    ];
    for (args, expected) in cases {
        let (out, _) = choreograph(args, &[]);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in:\n{err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
}

#[test]
fn the_catalogue_gives_the_topic_and_refuses_invalid_data() {
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas");
    let invalid = r#"{"user_id":"u","email":"not-an-address","display_name":"x","plan":"gold"}"#;
    let (out, _) = choreograph(
        &[
            "--schemas",
            schemas,
            "publish",
            "-b",
            "127.0.0.1:1",
            "--type",
            "registration.user.registered.v1",
            "-d",
            invalid,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("breaks its schema") && err.contains("/email") && err.contains("/plan"),
        "{err}"
    );

    let (out, _) = choreograph(
        &[
            "--schemas",
            schemas,
            "publish",
            "-b",
            "127.0.0.1:1",
            "--type",
            "unknown.v1",
            "-d",
            "{}",
        ],
        &[],
    );
    assert!(
        stderr(&out).contains("not in the catalogue"),
        "{}",
        stderr(&out)
    );
    let (out, _) = choreograph(
        &[
            "--schemas",
            "/nonexistent",
            "publish",
            "-b",
            "127.0.0.1:1",
            "--type",
            "t",
            "-d",
            "{}",
        ],
        &[],
    );
    assert!(
        stderr(&out).contains("cannot read the catalogue"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_broker_is_reported_within_the_connect_timeout() {
    let (out, took) = choreograph(
        &[
            "publish",
            "-b",
            "127.0.0.1:1",
            "-t",
            "x",
            "--type",
            "t",
            "-d",
            "{}",
        ],
        &[("CHOREOGRAPH_CONNECT_TIMEOUT_MS", "2000")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the Kafka cluster at 127.0.0.1:1"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
#[ignore = "needs Kafka: run scripts/test.sh"]
fn publish_starts_a_saga_and_continues_it() {
    let brokers = testkit::bootstrap_servers();
    let topic = testkit::unique_topic("test.cli");
    let (out, _) = choreograph(
        &[
            "publish",
            "-t",
            &topic,
            "--type",
            "test.cli.started.v1",
            "-d",
            r#"{"n":1}"#,
            "--partitions",
            "3",
        ],
        &[("KAFKA_BOOTSTRAP_SERVERS", &brokers)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let saga = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let uuid = uuid::Uuid::parse_str(&saga).expect("prints the correlation ID");
    assert_eq!(uuid.get_version_num(), 7);

    let (out, _) = choreograph(
        &[
            "publish",
            "-t",
            &topic,
            "--type",
            "test.cli.continued.v1",
            "--data-file",
            "-",
            "-c",
            &saga,
            "--format",
            "json",
        ],
        &[("KAFKA_BOOTSTRAP_SERVERS", &brokers)],
    );
    // --data-file - with no stdin input is empty: not JSON.
    assert!(!out.status.success());

    let data_file = std::env::temp_dir().join(format!("{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&data_file, r#"{"n":2}"#).unwrap();
    let (out, _) = choreograph(
        &[
            "publish",
            "-t",
            &topic,
            "--type",
            "test.cli.continued.v1",
            "--data-file",
            data_file.to_str().unwrap(),
            "-c",
            &saga,
            "--format",
            "json",
        ],
        &[("KAFKA_BOOTSTRAP_SERVERS", &brokers)],
    );
    std::fs::remove_file(&data_file).ok();
    assert!(out.status.success(), "{}", stderr(&out));
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["correlation_id"], saga.as_str());
    assert_eq!(receipt["topic"], topic.as_str());

    let config = testkit::config();
    let records = testkit::read_topic(&config, &topic, 2, Duration::from_secs(20));
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.key(), Some(saga.as_bytes()));
        let (ce, _) = choreograph::record::decode_message(r).unwrap();
        assert_eq!(ce.source, "/cli");
    }
    assert_eq!(records[1].payload(), Some(&br#"{"n":2}"#[..]));
    let headers = records[1].headers().unwrap();
    assert!(headers
        .iter()
        .any(|h| h.key == "ce_type" && h.value == Some(&b"test.cli.continued.v1"[..])));
}

#[test]
#[ignore = "needs Kafka: run scripts/test.sh"]
fn publish_to_a_missing_topic_without_creation_fails_clearly() {
    let brokers = testkit::bootstrap_servers();
    let topic = testkit::unique_topic("test.cli.missing");
    let (out, took) = choreograph(
        &[
            "publish",
            "-t",
            &topic,
            "--type",
            "t.v1",
            "-d",
            "{}",
            "--no-create-topics",
        ],
        &[("KAFKA_BOOTSTRAP_SERVERS", &brokers)],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&topic) && err.contains("does not exist"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30));
}
