//! Tracing sagas of the registration choreography: the service binaries as processes against a
//! real broker, traced through the library ([`choreograph::trace`]) and the CLI
//! (`target/debug/choreograph trace`), each test on topics of its own.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use choreograph::trace::{
    partition_for_key, SagaStatus, SagaTrace, TraceError, TraceOptions, Tracer,
};
use choreograph::{testkit, CorrelationId, Event, KafkaConfig, Publisher, SagaOutcome};
use common::{binary, ServiceProcess};
use rdkafka::Message;
use registration_events::*;

/// Registers sample user `i`; returns the saga and how it must end.
async fn register(config: &KafkaConfig, i: u32) -> (CorrelationId, SagaOutcome) {
    let publisher = user::publisher(config).unwrap();
    let (registration, outcome) = samples::registration(i);
    let receipt = user::register(&publisher, &registration).await.unwrap();
    (receipt.correlation_id, outcome)
}

/// Traces `id` until `done` holds (the saga log may not exist before the first step).
async fn trace_until(
    config: &KafkaConfig,
    id: CorrelationId,
    options: &TraceOptions,
    what: &str,
    done: impl Fn(&SagaTrace) -> bool,
) -> SagaTrace {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last;
    loop {
        let config = config.clone();
        let options = options.clone();
        let result = tokio::task::spawn_blocking(move || {
            Tracer::new(&config, Some(catalogue()))?.trace(&id, &options)
        })
        .await
        .unwrap();
        match result {
            Ok(t) if done(&t) => return t,
            Ok(t) => last = format!("{} ({})", t.status, t.reason),
            Err(e @ (TraceError::NoSagaLog(_) | TraceError::UnknownSaga { .. })) => {
                last = e.to_string()
            }
            Err(e) => panic!("trace of {id} failed: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for saga {id}: {what}; last trace: {last}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One expected event: its type, the service that emits it, the services that handle it, and
/// the types its cause may have (the join and the compensation take whichever arrival came
/// last as their cause, so some events have two legitimate parents).
struct Expected {
    event_type: &'static str,
    emitted_by: &'static str,
    handled_by: &'static [&'static str],
    parents: &'static [&'static str],
}

const fn e(
    event_type: &'static str,
    emitted_by: &'static str,
    handled_by: &'static [&'static str],
    parents: &'static [&'static str],
) -> Expected {
    Expected {
        event_type,
        emitted_by,
        handled_by,
        parents,
    }
}

fn expected_tree(outcome: SagaOutcome) -> Vec<Expected> {
    let registered = e(UserRegistered::TYPE, "user", &["activity"], &[]);
    match outcome {
        SagaOutcome::Completed => vec![
            registered,
            e(
                NewcomerEnrolled::TYPE,
                "activity",
                &["coupon", "points"],
                &[UserRegistered::TYPE],
            ),
            e(
                CouponIssued::TYPE,
                "coupon",
                &["activity"],
                &[NewcomerEnrolled::TYPE],
            ),
            e(
                PointsGranted::TYPE,
                "points",
                &["activity"],
                &[NewcomerEnrolled::TYPE],
            ),
            e(
                WelcomePackageCompleted::TYPE,
                "activity",
                &["user"],
                &[CouponIssued::TYPE, PointsGranted::TYPE],
            ),
            e(
                UserWelcomed::TYPE,
                "user",
                &[],
                &[WelcomePackageCompleted::TYPE],
            ),
        ],
        SagaOutcome::Failed => vec![
            registered,
            e(
                EnrollmentRejected::TYPE,
                "activity",
                &["user"],
                &[UserRegistered::TYPE],
            ),
            e(
                RegistrationRejected::TYPE,
                "user",
                &[],
                &[EnrollmentRejected::TYPE],
            ),
        ],
        SagaOutcome::Compensated => vec![
            registered,
            e(
                NewcomerEnrolled::TYPE,
                "activity",
                &["coupon", "points"],
                &[UserRegistered::TYPE],
            ),
            e(
                CouponIssued::TYPE,
                "coupon",
                &["activity"],
                &[NewcomerEnrolled::TYPE],
            ),
            e(
                PointsGrantRejected::TYPE,
                "points",
                &["activity", "coupon"],
                &[NewcomerEnrolled::TYPE],
            ),
            // Revoked when coupon reads the refusal, or at once when the refusal came first.
            e(
                CouponRevoked::TYPE,
                "coupon",
                &["activity"],
                &[PointsGrantRejected::TYPE, NewcomerEnrolled::TYPE],
            ),
            e(
                WelcomePackageFailed::TYPE,
                "activity",
                &["user"],
                &[
                    PointsGrantRejected::TYPE,
                    CouponRevoked::TYPE,
                    CouponIssued::TYPE,
                ],
            ),
            e(
                RegistrationFlagged::TYPE,
                "user",
                &[],
                &[WelcomePackageFailed::TYPE],
            ),
        ],
    }
}

/// The causal tree as indented text (children sorted by type), for messages.
fn render(trace: &SagaTrace) -> String {
    fn walk(n: &choreograph::trace::TreeNode, depth: usize, out: &mut String) {
        out.push_str(&format!(
            "{}{} (from {}, handled by {:?})\n",
            "  ".repeat(depth),
            n.event_type,
            n.emitted_by,
            n.handled_by
        ));
        let mut cs: Vec<_> = n.children.iter().collect();
        cs.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        for c in cs {
            walk(c, depth + 1, out);
        }
    }
    let mut out = String::new();
    for n in &trace.tree {
        walk(n, 0, &mut out);
    }
    out
}

/// The trace's causal tree is exactly the expected one: the same events (each once), each
/// under an allowed cause, emitted and handled by the expected services.
fn check_tree(trace: &SagaTrace, outcome: SagaOutcome) {
    let expected = expected_tree(outcome);
    let tree = render(trace);
    let mut types: Vec<&str> = trace.events.iter().map(|e| e.event_type.as_str()).collect();
    types.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|e| e.event_type).collect();
    want.sort_unstable();
    assert_eq!(types, want, "events of a {outcome:?} saga; tree:\n{tree}");
    assert_eq!(trace.tree.len(), 1, "one root; tree:\n{tree}");
    assert_eq!(trace.tree[0].event_type, UserRegistered::TYPE, "{tree}");
    // Parent of every node, from the tree itself.
    fn parents<'a>(
        n: &'a choreograph::trace::TreeNode,
        parent: Option<&'a str>,
        out: &mut Vec<(&'a choreograph::trace::TreeNode, Option<&'a str>)>,
    ) {
        out.push((n, parent));
        for c in &n.children {
            parents(c, Some(&n.event_type), out);
        }
    }
    let mut nodes = Vec::new();
    parents(&trace.tree[0], None, &mut nodes);
    assert_eq!(
        nodes.len(),
        expected.len(),
        "every event in the tree:\n{tree}"
    );
    for (node, parent) in nodes {
        let x = expected
            .iter()
            .find(|x| x.event_type == node.event_type)
            .unwrap();
        assert_eq!(
            node.emitted_by, x.emitted_by,
            "emitter of {}:\n{tree}",
            x.event_type
        );
        let handled: BTreeSet<&str> = node.handled_by.iter().map(String::as_str).collect();
        let want: BTreeSet<&str> = x.handled_by.iter().copied().collect();
        assert_eq!(handled, want, "handlers of {}:\n{tree}", x.event_type);
        assert_eq!(
            node.handled_by.len(),
            x.handled_by.len(),
            "each handler once: {}",
            x.event_type
        );
        match parent {
            None => assert!(x.parents.is_empty(), "{} is a root:\n{tree}", x.event_type),
            Some(p) => assert!(
                x.parents.contains(&p),
                "{} under {p}, expected under one of {:?}:\n{tree}",
                x.event_type,
                x.parents
            ),
        }
    }
    // The causation IDs agree with the steps: each non-root event was emitted by a step on
    // its parent.
    for ev in trace.events.iter().filter(|e| e.causation_id.is_some()) {
        let cause = ev.causation_id.as_deref().unwrap();
        let step = trace
            .steps
            .iter()
            .find(|s| s.emitted.iter().any(|x| x.id == ev.id))
            .unwrap_or_else(|| panic!("no step emitted {}", ev.event_type));
        assert_eq!(
            step.input.id, cause,
            "{} caused by the step's input",
            ev.event_type
        );
        assert!(ev.in_topic, "{} was read from its topic", ev.event_type);
    }
    assert!(
        trace.pending.is_empty(),
        "nothing pending: {:?}",
        trace.pending
    );
    assert_eq!(trace.status, SagaStatus::from(outcome));
    let offsets: Vec<i64> = trace.timeline.iter().map(|t| t.offset_ms).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "timeline in order: {offsets:?}"
    );
}

/// Runs the CLI with the test's topics.
fn cli(config: &KafkaConfig, args: &[&str]) -> std::process::Output {
    Command::new(binary("choreograph"))
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", config.bootstrap_servers())
        .env("CHOREOGRAPH_TOPIC_PREFIX", &config.topic_prefix)
        .env(
            "CHOREOGRAPH_SCHEMAS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("cannot run the choreograph CLI")
}

/// Parses Mermaid text with the real Mermaid parser (npm `mermaid`, see tests/mermaid/).
fn check_mermaid(text: &str) {
    let parser = std::env::var("CHOREOGRAPH_MERMAID_PARSER").unwrap_or_else(|_| {
        panic!(
            "CHOREOGRAPH_MERMAID_PARSER is not set: run scripts/test.sh (installs the Mermaid \
             parser from tests/mermaid/ into a cache and sets it), or `npm ci` in tests/mermaid \
             and set it to tests/mermaid/parse.mjs"
        )
    });
    let mut child = Command::new("node")
        .arg(&parser)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run node (needed for the Mermaid parser)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Mermaid parser refused the diagram: {}\n{}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn traces_of_the_three_outcomes_match_the_expected_causal_trees() {
    let config = testkit::isolated_config();
    let _services = common::start_all(&config);
    // Sample 0 is welcomed, 7 rejected, 8 compensated.
    let mut sagas = Vec::new();
    for i in [0, 7, 8] {
        sagas.push(register(&config, i).await);
    }
    let options = TraceOptions::default();
    for (id, outcome) in &sagas {
        let expected = SagaStatus::from(*outcome);
        let want = expected_tree(*outcome).len();
        let trace = trace_until(&config, *id, &options, "its end and every event", |t| {
            t.status == expected
                && t.events.len() >= want
                && t.events.iter().all(|e| e.in_topic)
                && t.pending.is_empty()
        })
        .await;
        check_tree(&trace, *outcome);

        // The CLI gives the same data: JSON with a top-level status, Mermaid the parser
        // accepts, and a terminal view without colours (not a TTY).
        let id = id.to_string();
        let out = cli(&config, &["trace", &id, "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["status"], expected.as_str());
        assert_eq!(json["correlation_id"], id.as_str());
        assert_eq!(json["version"], 1);
        let from_cli: SagaTrace = serde_json::from_value(json).unwrap();
        assert_eq!(from_cli.tree, trace.tree, "the CLI and the library agree");

        let out = cli(&config, &["trace", &id, "--format", "mermaid"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mermaid = String::from_utf8(out.stdout).unwrap();
        assert!(mermaid.starts_with("sequenceDiagram\n"), "{mermaid}");
        check_mermaid(&mermaid);

        let out = cli(&config, &["trace", &id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains('\x1b'), "no colours when not a TTY:\n{text}");
        assert!(text.contains(expected.as_str()), "{text}");
        assert!(
            text.contains("causal tree") && text.contains("timeline"),
            "{text}"
        );
    }

    // `sagas` lists all three with their status, and filters.
    let out = cli(&config, &["sagas", "--since", "10m", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (id, outcome) in &sagas {
        let s = list
            .iter()
            .find(|s| s["correlation_id"] == id.to_string().as_str())
            .unwrap_or_else(|| panic!("saga {id} listed"));
        assert_eq!(s["status"], SagaStatus::from(*outcome).as_str());
    }
    let out = cli(
        &config,
        &["sagas", "--status", "compensated", "--format", "json"],
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["correlation_id"], sagas[2].0.to_string().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_saga_without_its_points_service_is_stalled_then_completes() {
    let config = testkit::isolated_config();
    let _services = common::start(&["user", "activity", "coupon"], &config);
    let (id, outcome) = register(&config, 0).await;
    assert_eq!(outcome, SagaOutcome::Completed);
    let options = TraceOptions {
        stall_after: Duration::from_secs(2),
        ..TraceOptions::default()
    };
    // Stalled once everything but points has happened (the others may take longer than the
    // threshold to start on a busy machine: they would be named too, rightly, until then).
    let trace = trace_until(&config, id, &options, "stalled on points alone", |t| {
        t.status == SagaStatus::Stalled
            && t.events.iter().any(|e| {
                e.event_type == CouponIssued::TYPE
                    && e.handled_by.iter().any(|h| h.service == "activity")
            })
    })
    .await;
    assert_eq!(
        trace.stalled,
        vec!["points".to_owned()],
        "{:?}",
        trace.pending
    );
    let behind: Vec<_> = trace.pending.iter().filter(|p| p.stalled).collect();
    assert_eq!(behind.len(), 1, "{behind:?}");
    assert_eq!(behind[0].event_type, NewcomerEnrolled::TYPE);
    assert!(trace.reason.contains("points"), "{}", trace.reason);
    check_mermaid(&trace.to_mermaid());

    // The CLI says the same, naming the service behind.
    let out = cli(&config, &["trace", &id.to_string(), "--stall-after", "2s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stalled") && text.contains("points"),
        "{text}"
    );
    let out = cli(
        &config,
        &[
            "sagas",
            "--status",
            "stalled",
            "--stall-after",
            "2s",
            "--format",
            "json",
        ],
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["stalled"], serde_json::json!(["points"]));

    // `trace --follow` runs until the saga ends once points is back.
    let follow = Command::new(binary("choreograph"))
        .args(["trace", &id.to_string(), "--follow", "--timeout", "120s"])
        .env("KAFKA_BOOTSTRAP_SERVERS", config.bootstrap_servers())
        .env("CHOREOGRAPH_TOPIC_PREFIX", &config.topic_prefix)
        .env(
            "CHOREOGRAPH_SCHEMAS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _points = ServiceProcess::start("points", &config);
    let trace = trace_until(&config, id, &options, "completed", |t| {
        // A service logs its step after publishing what it emitted: the saga may end before
        // the points step is in the log.
        t.status == SagaStatus::Completed
            && t.events.iter().all(|e| e.in_topic)
            && t.pending.is_empty()
    })
    .await;
    check_tree(&trace, SagaOutcome::Completed);
    let out = tokio::task::spawn_blocking(move || follow.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("points handled"), "{text}");
    assert!(text.contains("saga completed"), "{text}");
}

/// The trace finds records where the producers put them: our murmur2 agrees with librdkafka.
#[tokio::test]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn murmur2_agrees_with_where_librdkafka_put_the_records() {
    let config = testkit::config();
    let topic = testkit::unique_topic("trace.partitioning");
    choreograph::Topics::new(&config)
        .unwrap()
        .ensure_spec(
            &topic,
            &choreograph::topics::TopicSpec {
                partitions: Some(7),
                compacted: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let publisher = Publisher::new(&config, "/test").unwrap();
    let mut keys = Vec::new();
    for i in 0..200u32 {
        let saga = CorrelationId::new();
        let event = choreograph::event::to_cloud_event(
            &PointsGranted {
                user_id: format!("u{i}"),
                points: i,
            },
            "/test",
            saga,
        )
        .unwrap();
        publisher.publish_cloud_event(&topic, &event).await.unwrap();
        keys.push(saga.to_string());
    }
    let records = testkit::read_topic(&config, &topic, keys.len(), Duration::from_secs(30));
    assert_eq!(records.len(), keys.len());
    for m in records {
        let key = m.key().unwrap();
        assert_eq!(
            m.partition(),
            partition_for_key(key, 7),
            "key {}",
            String::from_utf8_lossy(key)
        );
    }
}
