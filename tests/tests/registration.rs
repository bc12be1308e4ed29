//! The registration choreography end to end: the four services as separate processes (their
//! release binaries' debug builds, `target/debug/{user,activity,coupon,points}`) against a real
//! broker, each test on topics of its own.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use choreograph::watch::{SagaWatch, WatchedSaga};
use choreograph::{testkit, CorrelationId, Event, KafkaConfig, Publisher, SagaOutcome};
use common::{expected_types, start_all, ServiceProcess};
use registration_events::*;

fn watch(config: &KafkaConfig) -> SagaWatch {
    let topics: Vec<String> = catalogue()
        .topics()
        .iter()
        .map(|t| config.topic(t))
        .collect();
    SagaWatch::start(config, &topics, catalogue()).unwrap()
}

/// Registers `n` users (every branch); returns each saga with the outcome it must reach.
async fn register(config: &KafkaConfig, n: u32) -> HashMap<CorrelationId, SagaOutcome> {
    register_range(config, 0..n).await
}

/// Registers the sample users `range` (each sample's expected outcome depends on its index).
async fn register_range(
    config: &KafkaConfig,
    range: std::ops::Range<u32>,
) -> HashMap<CorrelationId, SagaOutcome> {
    let publisher = user::publisher(config).unwrap();
    let mut sagas = HashMap::new();
    for i in range {
        let (registration, outcome) = samples::registration(i);
        let receipt = user::register(&publisher, &registration).await.unwrap();
        sagas.insert(receipt.correlation_id, outcome);
    }
    sagas
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every saga ended and the watch has read its whole causal chain (the watch reads
/// the topics independently, so a terminal event may be seen before its causes).
async fn wait_for_all(watch: &SagaWatch, sagas: &HashMap<CorrelationId, SagaOutcome>) {
    let incomplete = || {
        let all = watch.all();
        sagas
            .iter()
            .filter(|(id, expected)| {
                !all.get(id)
                    .map(|s| {
                        s.ended.is_some() && s.events.len() >= expected_types(**expected).len()
                    })
                    .unwrap_or(false)
            })
            .map(|(id, expected)| {
                let seen: Vec<String> = all
                    .get(id)
                    .map(|s| s.events.iter().map(|e| e.event_type.clone()).collect())
                    .unwrap_or_default();
                format!("saga {id} ({expected:?}): seen {seen:?}")
            })
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let missing = incomplete();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} sagas did not end with their whole causal chain, e.g.\n{}",
            missing.len(),
            missing
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every saga ended as expected, once, with a complete causal chain. Returns the number of
/// re-delivered duplicate records seen (same `ce_id` twice).
fn check_sagas(watch: &SagaWatch, sagas: &HashMap<CorrelationId, SagaOutcome>) -> usize {
    let all = watch.all();
    let mut duplicates = 0;
    for (id, expected) in sagas {
        let saga: &WatchedSaga = all
            .get(id)
            .unwrap_or_else(|| panic!("saga {id}: nothing seen"));
        let (outcome, _) = saga
            .ended
            .unwrap_or_else(|| panic!("saga {id} did not end"));
        assert_eq!(outcome, *expected, "saga {id} ended wrongly");
        assert_eq!(
            saga.terminal_ids.len(),
            1,
            "saga {id}: exactly one terminal event"
        );
        let mut types: Vec<&str> = saga.events.iter().map(|e| e.event_type.as_str()).collect();
        types.sort_unstable();
        assert_eq!(
            types,
            expected_types(outcome),
            "saga {id}: the causal chain of a {outcome:?} saga"
        );
        let ids: Vec<&str> = saga.events.iter().map(|e| e.id.as_str()).collect();
        for e in &saga.events {
            match &e.causation_id {
                None => assert_eq!(
                    e.event_type,
                    UserRegistered::TYPE,
                    "saga {id}: only the start has no cause"
                ),
                Some(c) => assert!(
                    ids.contains(&c.as_str()),
                    "saga {id}: {} points to a cause outside the saga",
                    e.event_type
                ),
            }
        }
        duplicates += saga.records - saga.events.len();
    }
    duplicates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn every_branch_ends_right_for_hundreds_of_concurrent_sagas() {
    let config = testkit::isolated_config();
    let sagas = register(&config, 300).await;
    let watch = watch(&config);
    let mut services = start_all(&config);
    wait_for_all(&watch, &sagas).await;
    let duplicates = check_sagas(&watch, &sagas);
    assert_eq!(duplicates, 0, "no crash, no duplicates");
    for s in &mut services {
        let status = s.terminate();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            s.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn the_join_completes_once_whatever_the_order_and_duplicates() {
    let config = testkit::isolated_config();
    let coupons = Publisher::new(&config, "/services/coupon").unwrap();
    let points = Publisher::new(&config, "/services/points").unwrap();
    let mut sagas = Vec::new();
    for i in 0..90u32 {
        let saga = CorrelationId::new();
        let coupon = choreograph::event::to_cloud_event(
            &CouponIssued {
                user_id: format!("u{i}"),
                coupon_code: format!("C{i}"),
                value_cents: 500,
            },
            "/services/coupon",
            saga,
        )
        .unwrap();
        let granted = choreograph::event::to_cloud_event(
            &PointsGranted {
                user_id: format!("u{i}"),
                points: 100,
            },
            "/services/points",
            saga,
        )
        .unwrap();
        let (ct, pt) = (
            config.topic(CouponIssued::TOPIC),
            config.topic(PointsGranted::TOPIC),
        );
        // Coupon first, points first, or each twice (a redelivery: the same ce_id again).
        match i % 3 {
            0 => {
                coupons.publish_cloud_event(&ct, &coupon).await.unwrap();
                points.publish_cloud_event(&pt, &granted).await.unwrap();
            }
            1 => {
                points.publish_cloud_event(&pt, &granted).await.unwrap();
                coupons.publish_cloud_event(&ct, &coupon).await.unwrap();
            }
            _ => {
                coupons.publish_cloud_event(&ct, &coupon).await.unwrap();
                points.publish_cloud_event(&pt, &granted).await.unwrap();
                coupons.publish_cloud_event(&ct, &coupon).await.unwrap();
                points.publish_cloud_event(&pt, &granted).await.unwrap();
            }
        }
        sagas.push(saga);
    }
    let watch = SagaWatch::start(&config, &[config.topic(topics::ACTIVITY)], catalogue()).unwrap();
    let _activity = ServiceProcess::start("activity", &config);
    let completed = |w: &SagaWatch| {
        sagas
            .iter()
            .filter(|s| {
                w.saga(s)
                    .map(|s| s.of_type(WelcomePackageCompleted::TYPE).count() > 0)
                    .unwrap_or(false)
            })
            .count()
    };
    wait_until("every package completed", || {
        completed(&watch) == sagas.len()
    })
    .await;
    // Anything late would have arrived by now: the activity service is idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in &sagas {
        let seen = watch.saga(s).unwrap();
        assert_eq!(
            seen.of_type(WelcomePackageCompleted::TYPE).count(),
            1,
            "saga {s}: exactly one completed package"
        );
        assert_eq!(seen.records, 1, "saga {s}: not even a re-emitted duplicate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn kill_9_of_the_activity_service_mid_run_loses_no_saga() {
    let config = testkit::isolated_config();
    let sagas = register(&config, 400).await;
    let watch = watch(&config);
    let mut services = start_all(&config);
    wait_until("some sagas ended", || watch.ended(sagas.keys()) >= 40).await;
    services[1].kill_9();
    let ended_before = watch.ended(sagas.keys());
    // More sagas while the activity service is down: the run goes on across the kill whatever
    // the first wave's speed (on a fast machine all 400 may end within one poll of the watch).
    let mut sagas = sagas;
    sagas.extend(register_range(&config, 400..600).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    services[1] = ServiceProcess::start("activity", &config);
    wait_for_all(&watch, &sagas).await;
    let duplicates = check_sagas(&watch, &sagas);
    eprintln!("kill -9 test: {ended_before} of the first 400 ended before the kill, 200 more registered while the activity service was down; {duplicates} re-delivered duplicate records, each with a ce_id seen before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_second_coupon_instance_joining_mid_run_loses_no_saga() {
    let config = testkit::isolated_config();
    let sagas = register(&config, 400).await;
    let watch = watch(&config);
    let mut services = start_all(&config);
    wait_until("some sagas ended", || watch.ended(sagas.keys()) >= 40).await;
    services.push(ServiceProcess::start("coupon", &config));
    wait_for_all(&watch, &sagas).await;
    let duplicates = check_sagas(&watch, &sagas);
    eprintln!("rebalance test: {duplicates} re-delivered duplicate records");
    for s in &mut services {
        let status = s.terminate();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            s.name
        );
    }
}

/// The watch reads topics that did not exist when it started (services create their output
/// topics on first use), each from its beginning: it assigns partitions itself, so no consumer
/// group has to notice a new topic and rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn the_watch_reads_topics_created_after_it_started() {
    let config = testkit::isolated_config();
    // Under this test's prefix none of the catalogue's topics exist yet.
    let watch = watch(&config);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let (registration, _) = samples::registration(0);
    let started = publisher.start_saga(&registration).await.unwrap();
    wait_until(
        "the watch read the user topic, created after it started",
        || watch.saga(&started.correlation_id).is_some(),
    )
    .await;
    // Later still, a second topic: the watch keeps looking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let granted = PointsGranted {
        user_id: registration.user_id.clone(),
        points: 100,
    };
    publisher
        .publish(started.correlation_id, &granted)
        .await
        .unwrap();
    wait_until(
        "the watch read the points topic, created seconds later",
        || {
            watch
                .saga(&started.correlation_id)
                .is_some_and(|s| s.of_type(PointsGranted::TYPE).count() == 1)
        },
    )
    .await;
    let seen = watch.saga(&started.correlation_id).unwrap();
    assert_eq!(seen.events.len(), 2, "both events, once each");
    assert_eq!(seen.records, 2);
}
