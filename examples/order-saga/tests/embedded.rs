//! The newcomer's path, as a test: two services defined with the derive run on the embedded
//! cluster with no topic created by hand; three sagas are published, each traced with `Tracer`
//! (status and causal tree), listed with `sagas`, and the one dead-lettered record is listed
//! from its dead-letter topic.

use std::time::{Duration, Instant};

use choreograph::embedded::EmbeddedKafka;
use choreograph::trace::{SagaStatus, SagaTrace, TraceOptions, Tracer, TreeNode};
use choreograph::{dlq, CorrelationId, Event, Publisher};
use order_saga::*;

/// Traces a saga until it has ended and every step of it is logged (or 30 s pass: then the
/// last trace, to fail on). A saga's terminal event can be read before the steps of the
/// handlings that led to it: the saga log is written in batches, after the outputs.
fn trace_to_end(tracer: &Tracer, id: &CorrelationId) -> SagaTrace {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tracer.trace(id, &TraceOptions::default()) {
            Ok(t) if (t.status.is_final() && t.pending.is_empty()) || Instant::now() > deadline => {
                return t
            }
            Err(e) if Instant::now() > deadline => panic!("no trace of {id}: {e}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The causal tree as (depth, type, emitted by, handled by) rows.
fn rows(tree: &[TreeNode]) -> Vec<(usize, String, String, Vec<String>)> {
    fn walk(n: &TreeNode, depth: usize, out: &mut Vec<(usize, String, String, Vec<String>)>) {
        out.push((
            depth,
            n.event_type.clone(),
            n.emitted_by.clone(),
            n.handled_by.clone(),
        ));
        for c in &n.children {
            walk(c, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    for n in tree {
        walk(n, 0, &mut out);
    }
    out
}

fn row(
    depth: usize,
    event_type: &str,
    by: &str,
    handled: &[&str],
) -> (usize, String, String, Vec<String>) {
    (
        depth,
        event_type.to_owned(),
        by.to_owned(),
        handled.iter().map(|s| s.to_string()).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sagas_run_trace_list_and_dead_letter_on_the_embedded_cluster() {
    let kafka = EmbeddedKafka::start(1).unwrap();
    let config = kafka.kafka_config();
    let mut running = Vec::new();
    for service in [orders(&config).unwrap(), payments(&config).unwrap()] {
        let (ready, stop) = (service.ready_signal(), service.shutdown_handle());
        running.push((
            stop,
            tokio::spawn(service.run_until(std::future::pending())),
        ));
        tokio::time::timeout(Duration::from_secs(60), ready.wait())
            .await
            .expect("the service got ready in time")
            .expect("the service started");
    }

    let publisher = Publisher::new(&config, "/services/orders")
        .unwrap()
        .with_catalogue(catalogue());
    let place = |order_id: &str, cents, currency: &str| OrderPlaced {
        order_id: order_id.into(),
        cents,
        currency: currency.into(),
    };
    let mut ids = Vec::new();
    for order in [
        place("o-1", 4_200, "EUR"),
        place("o-2", LIMIT_CENTS + 1, "USD"),
        place("o-3", 900, "XTS"),
    ] {
        ids.push(publisher.start_saga(&order).await.unwrap().correlation_id);
    }

    let traces = tokio::task::spawn_blocking({
        let (config, ids) = (config.clone(), ids.clone());
        move || {
            let tracer = Tracer::new(&config, Some(catalogue())).unwrap();
            let traces: Vec<SagaTrace> = ids.iter().map(|id| trace_to_end(&tracer, id)).collect();
            let listed = tracer
                .sagas(Duration::from_secs(600), &TraceOptions::default())
                .unwrap();
            (traces, listed)
        }
    })
    .await
    .unwrap();
    let (traces, listed) = traces;

    let (paid, declined, refused) = (&traces[0], &traces[1], &traces[2]);
    assert_eq!(
        paid.status,
        SagaStatus::Completed,
        "{}",
        paid.to_text(false)
    );
    assert_eq!(
        rows(&paid.tree),
        vec![
            row(0, OrderPlaced::TYPE, "orders", &["payments"]),
            row(1, PaymentAccepted::TYPE, "payments", &["orders"]),
            row(2, OrderConfirmed::TYPE, "orders", &[]),
        ],
        "{}",
        paid.to_text(false)
    );
    assert_eq!(
        declined.status,
        SagaStatus::Failed,
        "{}",
        declined.to_text(false)
    );
    assert_eq!(
        rows(&declined.tree),
        vec![
            row(0, OrderPlaced::TYPE, "orders", &["payments"]),
            row(1, PaymentDeclined::TYPE, "payments", &["orders"]),
            row(2, OrderCancelled::TYPE, "orders", &[]),
        ],
        "{}",
        declined.to_text(false)
    );
    assert_eq!(
        refused.status,
        SagaStatus::Failed,
        "{}",
        refused.to_text(false)
    );
    assert!(
        refused.reason.contains("dead-lettered"),
        "{}",
        refused.reason
    );
    assert_eq!(
        rows(&refused.tree),
        vec![row(0, OrderPlaced::TYPE, "orders", &["payments"])],
        "{}",
        refused.to_text(false)
    );
    // The text view a program can print, as the CLI does.
    assert!(refused
        .to_text(false)
        .contains("currency `XTS` is not supported"));

    // `sagas` lists all three, with the same status.
    for t in &traces {
        let summary = listed
            .iter()
            .find(|s| s.correlation_id == t.correlation_id)
            .unwrap_or_else(|| panic!("saga {} is not listed: {listed:?}", t.correlation_id));
        assert_eq!(summary.status, t.status);
    }

    // The dead letter, listed as `choreograph dlq list` lists it.
    let dlq_topic = format!("{}.dlq", OrderPlaced::TOPIC);
    let letters = tokio::task::spawn_blocking({
        let config = config.clone();
        move || dlq::list(&config, &dlq_topic, Duration::from_secs(10)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].correlation_id, Some(ids[2].to_string()));
    assert_eq!(letters[0].service, "payments");
    assert_eq!(letters[0].reason, "handler-failed");
    assert!(letters[0].error.contains("XTS"), "{}", letters[0].error);

    for (stop, task) in running {
        stop.shutdown();
        task.await.unwrap().unwrap();
    }
}
