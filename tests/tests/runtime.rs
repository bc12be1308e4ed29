//! The service runtime against a real broker: a two-service chain, no loss across a crash,
//! order within a saga under concurrency, dead letters, graceful shutdown, rebalancing.
//!
//! Every test runs on topics of its own (`testkit::isolated_config` prefixes them).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreograph::dead_letter::headers as dlq;
use choreograph::record::decode_message;
use choreograph::runtime::{RetryPolicy, Service, ServiceOptions, ShutdownHandle};
use choreograph::{
    testkit, Context, CorrelationId, Event, HandlerError, KafkaConfig, Publisher, State,
};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Started {
    n: u32,
    seq: u32,
}
impl Event for Started {
    const TYPE: &'static str = "test.chain.started.v1";
    const TOPIC: &'static str = "chain.a";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Middle {
    n: u32,
    /// Padding, to make an event too large for the broker.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pad: String,
}
impl Event for Middle {
    const TYPE: &'static str = "test.chain.middle.v1";
    const TOPIC: &'static str = "chain.b";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Finished {
    n: u32,
}
impl Event for Finished {
    const TYPE: &'static str = "test.chain.finished.v1";
    const TOPIC: &'static str = "chain.c";
}

/// What handlers saw, for the assertions.
#[derive(Default)]
struct Probe {
    /// Handler runs per input event id (a redelivery counts again).
    runs: Mutex<HashMap<String, usize>>,
    /// Per saga, the `seq` of each handled `Started`, in handling order.
    order: Mutex<HashMap<CorrelationId, Vec<u32>>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Maximum handler delay in ms (0 = none).
    max_delay_ms: u64,
}

impl Probe {
    fn with_delay(ms: u64) -> Arc<Self> {
        Arc::new(Self {
            max_delay_ms: ms,
            ..Default::default()
        })
    }

    fn handled(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    fn duplicates(&self) -> usize {
        self.runs.lock().unwrap().values().map(|n| n - 1).sum()
    }
}

/// While set, the handler fails retryably for n == 999 (a downstream outage that gets fixed).
static OUTAGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

async fn start_to_middle(
    State(probe): State<Arc<Probe>>,
    ctx: Context,
    e: Started,
) -> Result<Middle, HandlerError> {
    let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
    probe.max_running.fetch_max(now, Ordering::SeqCst);
    if probe.max_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=probe.max_delay_ms))).await;
    }
    match e.n {
        666 => panic!("the handler hit a bug on purpose"),
        777 => {
            probe.running.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError::retryable(
                "the downstream is down (on purpose)",
            ));
        }
        999 if OUTAGE.load(Ordering::SeqCst) => {
            probe.running.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError::retryable(
                "the downstream is down until fixed",
            ));
        }
        _ => {}
    }
    probe
        .order
        .lock()
        .unwrap()
        .entry(ctx.correlation_id())
        .or_default()
        .push(e.seq);
    *probe
        .runs
        .lock()
        .unwrap()
        .entry(ctx.event_id().to_owned())
        .or_default() += 1;
    probe.running.fetch_sub(1, Ordering::SeqCst);
    let pad = if e.n == 888 {
        "x".repeat(2_000_000)
    } else {
        String::new()
    };
    Ok(Middle { n: e.n, pad })
}

async fn middle_to_finished(ctx: Context, e: Middle) -> Result<Finished, HandlerError> {
    assert_eq!(ctx.service(), "svc2");
    Ok(Finished { n: e.n })
}

fn fast_options() -> ServiceOptions {
    ServiceOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            retry_kinds: None,
        },
        ..Default::default()
    }
}

fn service1(config: &KafkaConfig, probe: Arc<Probe>) -> Service<Arc<Probe>> {
    service1_with(config, probe, fast_options())
}

/// Few records in flight per partition: the pause/resume backpressure path, and runs long
/// enough that a crash or a shutdown lands in the middle of the work.
fn throttled() -> ServiceOptions {
    ServiceOptions {
        max_in_flight_per_partition: 4,
        ..fast_options()
    }
}

fn service1_with(
    config: &KafkaConfig,
    probe: Arc<Probe>,
    options: ServiceOptions,
) -> Service<Arc<Probe>> {
    Service::with_state("svc1", probe)
        .options(options)
        .handle(start_to_middle)
        .build(config)
        .unwrap()
}

fn service2(config: &KafkaConfig) -> Service<()> {
    Service::builder("svc2")
        .handle(middle_to_finished)
        .build(config)
        .unwrap()
}

/// svc1 and svc2 running (A → B → C), until stopped gracefully.
struct Chain {
    handles: [ShutdownHandle; 2],
    tasks: Vec<tokio::task::JoinHandle<Result<(), choreograph::runtime::ServiceError>>>,
}

impl Chain {
    fn start(config: &KafkaConfig, probe: Arc<Probe>) -> Self {
        let s1 = service1(config, probe);
        let s2 = service2(config);
        Self {
            handles: [s1.shutdown_handle(), s2.shutdown_handle()],
            tasks: vec![
                tokio::spawn(s1.run_until(futures::future::pending())),
                tokio::spawn(s2.run_until(futures::future::pending())),
            ],
        }
    }

    async fn stop(self) {
        for h in &self.handles {
            h.shutdown();
        }
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}

/// Starts `n` sagas, each with `per_saga` `Started` events (seq 0..per_saga), interleaved.
async fn start_sagas(config: &KafkaConfig, n: u32, per_saga: u32) -> Vec<CorrelationId> {
    let publisher = Publisher::new(config, "/services/test").unwrap();
    let mut sagas = Vec::new();
    for i in 0..n {
        sagas.push(
            publisher
                .start_saga(&Started { n: i, seq: 0 })
                .await
                .unwrap()
                .correlation_id,
        );
    }
    for seq in 1..per_saga {
        let events: Vec<Started> = (0..n).map(|i| Started { n: i, seq }).collect();
        let sends = sagas
            .iter()
            .zip(&events)
            .map(|(c, e)| publisher.publish(*c, e));
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
    }
    sagas
}

/// Waits until `cond` holds, failing the test (with `what`) after a generous bound.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a topic off the async workers (the read blocks), so services keep running meanwhile.
async fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let (config, topic) = (config.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || testkit::read_topic(&config, &topic, count, timeout))
        .await
        .unwrap()
}

async fn read_events(config: &KafkaConfig, topic_of_type: &str, count: usize) -> Vec<OwnedMessage> {
    read_topic(
        config,
        &config.topic(topic_of_type),
        count,
        Duration::from_secs(60),
    )
    .await
}

/// Every record of an event type's topic, up to its current end.
async fn read_all_events(config: &KafkaConfig, topic_of_type: &str) -> Vec<OwnedMessage> {
    let (config, topic) = (config.clone(), config.topic(topic_of_type));
    tokio::task::spawn_blocking(move || {
        testkit::read_to_end(&config, &topic, Duration::from_secs(60))
    })
    .await
    .unwrap()
}

/// Waits until every saga has an output event on `Middle`'s topic (a handler that ran may still
/// be writing its output, or its record may be handled again after a rebalance).
async fn wait_for_outputs(config: &KafkaConfig, sagas: &[CorrelationId]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let outputs = read_all_events(config, Middle::TOPIC).await;
        let done: HashSet<CorrelationId> = outputs
            .iter()
            .map(|m| decode_message(m).unwrap().0.correlation_id)
            .collect();
        if sagas.iter().all(|s| done.contains(s)) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = explain_missing(config, Middle::TOPIC, sagas).await;
            panic!(
                "gave up waiting for every saga's output ({} of {}); {why}",
                done.len(),
                sagas.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// For a failed count of outputs: which sagas have none on `topic_of_type`'s topic, whether a
/// second read finds them (a reader's miss, not a lost record), and each one's saga-log steps.
async fn explain_missing(
    config: &KafkaConfig,
    topic_of_type: &str,
    sagas: &[CorrelationId],
) -> String {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = read_all_events(config, topic_of_type).await;
    let found: HashSet<CorrelationId> = again
        .iter()
        .map(|m| decode_message(m).unwrap().0.correlation_id)
        .collect();
    let missing: Vec<&CorrelationId> = sagas.iter().filter(|s| !found.contains(s)).collect();
    let log_topic = config.topic(&config.saga_log_topic);
    let steps = tokio::task::spawn_blocking({
        let config = config.clone();
        move || testkit::read_to_end(&config, &log_topic, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let dead = read_all_events(config, &format!("{}.dlq", Started::TOPIC)).await;
    let mut out = format!(
        "a second read of `{topic_of_type}` 2 s later has {} records; {} dead letters; sagas without one: {missing:?}",
        again.len(),
        dead.len()
    );
    for saga in &missing {
        let id = saga.to_string();
        for m in dead.iter().filter(|m| m.key() == Some(id.as_bytes())) {
            out.push_str(&format!(
                "\n  dead letter: {:?} {:?}",
                header(m, dlq::REASON),
                header(m, dlq::ERROR)
            ));
        }
        for m in &steps {
            let text = String::from_utf8_lossy(m.payload().unwrap_or_default());
            if text.contains(&id) {
                out.push_str(&format!("\n  saga-log step: {text}"));
            }
        }
    }
    out
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    choreograph::record::header_value(m, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_two_service_chain_links_every_event() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(0);
    let chain = Chain::start(&config, probe.clone());

    let sagas = start_sagas(&config, 20, 1).await;
    let a = read_events(&config, Started::TOPIC, 20).await;
    let b = read_events(&config, Middle::TOPIC, 20).await;
    let c = read_events(&config, Finished::TOPIC, 20).await;
    chain.stop().await;
    if (a.len(), b.len(), c.len()) != (20, 20, 20) {
        let why = explain_missing(&config, Finished::TOPIC, &sagas).await;
        panic!(
            "every saga went A → B → C exactly once: {} / {} / {} records; {why}",
            a.len(),
            b.len(),
            c.len()
        );
    }

    let decode =
        |ms: &[OwnedMessage]| -> HashMap<CorrelationId, (choreograph::CloudEvent, OwnedMessage)> {
            ms.iter()
                .map(|m| {
                    let (ce, _) = decode_message(m).unwrap();
                    (ce.correlation_id, (ce, m.clone()))
                })
                .collect()
        };
    let (a, b, c) = (decode(&a), decode(&b), decode(&c));
    for saga in &sagas {
        let (ea, ma) = &a[saga];
        let (eb, mb) = &b[saga];
        let (ec, mc) = &c[saga];
        for (e, m) in [(ea, ma), (eb, mb), (ec, mc)] {
            assert_eq!(
                m.key(),
                Some(saga.to_string().as_bytes()),
                "key = correlation ID"
            );
            assert_eq!(header(m, "ce_specversion").as_deref(), Some("1.0"));
            assert_eq!(
                header(m, "content-type").as_deref(),
                Some("application/json")
            );
            assert_eq!(uuid::Uuid::parse_str(&e.id).unwrap().get_version_num(), 7);
        }
        assert_eq!(ea.causation_id, None);
        assert_eq!(
            eb.causation_id.as_deref(),
            Some(ea.id.as_str()),
            "B was caused by A"
        );
        assert_eq!(
            ec.causation_id.as_deref(),
            Some(eb.id.as_str()),
            "C was caused by B"
        );
        assert_eq!(eb.source, "/services/svc1");
        assert_eq!(ec.source, "/services/svc2");
        assert_eq!(eb.event_type, Middle::TYPE);
        assert_eq!(ec.event_type, Finished::TYPE);
        // One trace across the saga, a new span per hop.
        let tp = |e: &choreograph::CloudEvent| {
            e.traceparent
                .as_deref()
                .unwrap()
                .parse::<choreograph::TraceParent>()
                .unwrap()
        };
        assert_eq!(tp(ea).trace_id, tp(eb).trace_id);
        assert_eq!(tp(eb).trace_id, tp(ec).trace_id);
        assert_ne!(tp(ea).span_id, tp(eb).span_id);
        // Same key, same partition number on every topic.
        assert_eq!(ma.partition(), mb.partition());
        assert_eq!(mb.partition(), mc.partition());
    }
    assert_eq!(probe.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn no_loss_when_a_service_crashes_with_uncommitted_work() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(200);
    let sagas = start_sagas(&config, 300, 1).await;

    let first = tokio::spawn(
        service1_with(&config, probe.clone(), throttled()).run_until(futures::future::pending()),
    );
    wait_for("a third of the sagas handled", || probe.handled() >= 100).await;
    // A crash: the runtime is dropped mid-flight, with no graceful shutdown.
    first.abort();
    let _ = first.await;
    let handled_before = probe.handled();
    assert!(
        handled_before < 300,
        "the crash happened with work left ({handled_before} handled)"
    );

    let second = service1(&config, probe.clone());
    let h = second.shutdown_handle();
    let t = tokio::spawn(second.run_until(futures::future::pending()));
    wait_for("every saga handled", || probe.handled() == 300).await;
    wait_for_outputs(&config, &sagas).await;
    h.shutdown();
    t.await.unwrap().unwrap();

    let outputs = read_all_events(&config, Middle::TOPIC).await;
    let done: HashSet<CorrelationId> = outputs
        .iter()
        .map(|m| decode_message(m).unwrap().0.correlation_id)
        .collect();
    for s in &sagas {
        assert!(done.contains(s), "saga {s} lost");
    }
    let duplicates = outputs.len() - done.len();
    eprintln!(
        "crash test: {} sagas, {} handled before the crash, {} handler re-runs, {} duplicate outputs",
        sagas.len(),
        handled_before,
        probe.duplicates(),
        duplicates
    );
    assert_eq!(
        probe.duplicates(),
        duplicates,
        "every re-run re-emitted, nothing else did"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn order_within_a_saga_holds_under_concurrency() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(15);
    let sagas = start_sagas(&config, 300, 5).await;
    let s = service1(&config, probe.clone());
    let h = s.shutdown_handle();
    let t = tokio::spawn(s.run_until(futures::future::pending()));
    wait_for("1,500 events handled", || probe.handled() == 1500).await;
    h.shutdown();
    t.await.unwrap().unwrap();

    let order = probe.order.lock().unwrap();
    for saga in &sagas {
        assert_eq!(
            order[saga],
            vec![0, 1, 2, 3, 4],
            "saga {saga} handled out of order"
        );
    }
    let max = probe.max_running.load(Ordering::SeqCst);
    eprintln!("order test: up to {max} handlers ran at once");
    assert!(max > 1, "sagas were handled concurrently");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn bad_records_are_dead_lettered_and_the_partition_keeps_moving() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(0);
    let topic = config.topic(Started::TOPIC);
    choreograph::Topics::new(&config)
        .unwrap()
        .ensure(&[&topic])
        .await
        .unwrap();
    let producer: FutureProducer = config.client_config().create().unwrap();
    // Every record shares one key: one partition, one lane, so "after it" is well defined.
    let saga = CorrelationId::new();
    let key = saga.to_string();
    let good = |n: u32| {
        let mut ce =
            choreograph::event::to_cloud_event(&Started { n, seq: n }, "/services/test", saga)
                .unwrap();
        ce.causation_id = None;
        ce
    };
    let send = |value: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let producer = producer.clone();
        let topic = topic.clone();
        let key = key.clone();
        async move {
            let mut hs = OwnedHeaders::new();
            for (k, v) in &headers {
                hs = hs.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&value)
                        .headers(hs),
                    Duration::from_secs(10),
                )
                .await
                .unwrap()
        }
    };
    let full =
        |ce: &choreograph::CloudEvent| -> Vec<(&'static str, String)> { ce.encode().headers };
    let mut expected_dlq = Vec::new();

    send(good(1).data.clone(), full(&good(1))).await;
    let garbage = send(vec![0xde, 0xad, 0xbe, 0xef], vec![]).await;
    expected_dlq.push((garbage.offset, "invalid-envelope", "ce_specversion"));
    // A header name that is not UTF-8 (Kafka allows any bytes; rdkafka's header accessors
    // panic on it): dead-lettered like any record that is not a CloudEvent.
    let bad_name = {
        let hs = OwnedHeaders::new();
        // rdkafka's API only takes `&str` names: add this one through librdkafka. (A
        // `&BorrowedHeaders` is librdkafka's header list pointer.)
        let native = hs.as_borrowed() as *const rdkafka::message::BorrowedHeaders
            as *mut rdkafka_sys::rd_kafka_headers_t;
        let (name, value) = (b"x-\xff\xfe-name", b"value");
        let err = unsafe {
            rdkafka_sys::rd_kafka_header_add(
                native,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(
            err,
            rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&b"bad header name"[..])
                    .headers(hs),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
    };
    expected_dlq.push((bad_name.offset, "invalid-envelope", "ce_specversion"));
    let missing = send(
        good(2).data.clone(),
        vec![
            ("ce_type", Started::TYPE.to_owned()),
            ("ce_specversion", "1.0".into()),
        ],
    )
    .await;
    expected_dlq.push((missing.offset, "invalid-envelope", "ce_id"));
    let mut shape = good(3);
    shape.data = br#"{"n":"three"}"#.to_vec();
    let wrong_shape = send(shape.data.clone(), full(&shape)).await;
    expected_dlq.push((wrong_shape.offset, "invalid-data", "does not match"));
    let panics = send(good(666).data.clone(), full(&good(666))).await;
    expected_dlq.push((panics.offset, "handler-panicked", "on purpose"));
    let retries = send(good(777).data.clone(), full(&good(777))).await;
    expected_dlq.push((retries.offset, "retries-exhausted", "downstream is down"));
    let too_large_output = send(good(888).data.clone(), full(&good(888))).await;
    expected_dlq.push((
        too_large_output.offset,
        "invalid-output",
        "MessageSizeTooLarge",
    ));
    // Fits the broker, but not once the dead-letter headers are added: dead-lettered without
    // its value.
    let huge = send(vec![b'z'; 999_800], vec![]).await;
    expected_dlq.push((huge.offset, "invalid-envelope", "ce_specversion"));
    let mut other = good(4);
    other.event_type = "test.chain.unrelated.v1".into();
    send(other.data.clone(), full(&other)).await; // not handled here: skipped, not dead-lettered
    send(good(5).data.clone(), full(&good(5))).await;

    let s = service1(&config, probe.clone());
    let h = s.shutdown_handle();
    let t = tokio::spawn(s.run_until(futures::future::pending()));
    // 1, 888 (whose output is too large: dead-lettered after its handler ran) and 5. (This
    // waited for `== 2` before: a poll that missed the moment between 888 and 5 waited forever.)
    wait_for("the good records around the bad ones handled", || {
        probe.handled() >= 3
    })
    .await;
    let dead = read_topic(
        &config,
        &format!("{topic}.dlq"),
        expected_dlq.len(),
        Duration::from_secs(30),
    )
    .await;
    h.shutdown();
    t.await.unwrap().unwrap();

    assert_eq!(
        probe.order.lock().unwrap()[&saga],
        vec![1, 888, 5],
        "records after the bad ones were handled, in order"
    );
    assert_eq!(
        dead.len(),
        expected_dlq.len(),
        "one dead letter per bad record, none for the skipped type"
    );
    for (m, (offset, reason, error_part)) in dead.iter().zip(&expected_dlq) {
        assert_eq!(header(m, dlq::REASON).as_deref(), Some(*reason));
        let error = header(m, dlq::ERROR).unwrap();
        assert!(
            error.contains(error_part),
            "{reason}: `{error}` should mention `{error_part}`"
        );
        assert_eq!(header(m, dlq::SERVICE).as_deref(), Some("svc1"));
        assert_eq!(header(m, dlq::TOPIC).as_deref(), Some(topic.as_str()));
        assert_eq!(header(m, dlq::OFFSET), Some(offset.to_string()));
        assert!(header(m, dlq::PARTITION).is_some() && header(m, dlq::TIMESTAMP).is_some());
        assert_eq!(
            m.key(),
            Some(key.as_bytes()),
            "the record is kept unchanged"
        );
    }
    assert_eq!(
        header(&dead[5], dlq::ATTEMPTS).as_deref(),
        Some("3"),
        "retried up to max_attempts"
    );
    assert_eq!(
        header(&dead[0], dlq::ATTEMPTS).as_deref(),
        Some("0"),
        "never reached a handler"
    );
    assert_eq!(dead[0].payload(), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
    let names: Vec<&str> = dead[1]
        .headers()
        .map(|hs| hs.iter().map(|h| h.key).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"x-\u{fffd}\u{fffd}-name"),
        "the bad name is kept, its bad bytes replaced: {names:?}"
    );
    let huge = dead.last().unwrap();
    assert_eq!(header(huge, dlq::VALUE_DROPPED).as_deref(), Some("true"));
    assert_eq!(huge.payload(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn graceful_shutdown_under_load_loses_and_repeats_nothing() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(200);
    let sagas = start_sagas(&config, 300, 1).await;
    let s = service1_with(&config, probe.clone(), throttled());
    let h = s.shutdown_handle();
    let t = tokio::spawn(s.run_until(futures::future::pending()));
    wait_for("some sagas handled", || probe.handled() >= 80).await;
    h.shutdown();
    t.await.unwrap().unwrap();
    let at_shutdown = probe.handled();

    let s = service1(&config, probe.clone());
    let h = s.shutdown_handle();
    let t = tokio::spawn(s.run_until(futures::future::pending()));
    wait_for("every saga handled", || probe.handled() == sagas.len()).await;
    h.shutdown();
    t.await.unwrap().unwrap();
    eprintln!(
        "shutdown test: {at_shutdown} of {} handled before the shutdown",
        sagas.len()
    );
    assert!(
        at_shutdown < sagas.len(),
        "the shutdown happened under load"
    );
    assert_eq!(probe.duplicates(), 0, "nothing handled twice");
    let outputs = read_all_events(&config, Middle::TOPIC).await;
    if outputs.len() != sagas.len() {
        let why = explain_missing(&config, Middle::TOPIC, &sagas).await;
        panic!(
            "one output per saga, none lost, none repeated: {} outputs for {} sagas; {why}",
            outputs.len(),
            sagas.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_rebalance_between_two_instances_loses_nothing() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(200);
    let sagas = start_sagas(&config, 400, 1).await;
    let a = service1_with(&config, probe.clone(), throttled());
    let ha = a.shutdown_handle();
    let ta = tokio::spawn(a.run_until(futures::future::pending()));
    wait_for("some sagas handled", || probe.handled() >= 60).await;
    // A second instance joins the group mid-run: partitions move.
    let b = service1_with(&config, probe.clone(), throttled());
    let hb = b.shutdown_handle();
    let tb = tokio::spawn(b.run_until(futures::future::pending()));
    wait_for("every saga handled", || probe.handled() == sagas.len()).await;
    wait_for_outputs(&config, &sagas).await;
    ha.shutdown();
    hb.shutdown();
    ta.await.unwrap().unwrap();
    tb.await.unwrap().unwrap();
    let outputs = read_all_events(&config, Middle::TOPIC).await;
    let done: HashSet<CorrelationId> = outputs
        .iter()
        .map(|m| decode_message(m).unwrap().0.correlation_id)
        .collect();
    assert_eq!(done.len(), sagas.len(), "no saga lost");
    eprintln!("rebalance test: {} handler re-runs", probe.duplicates());
}

async fn middle_noop(
    State(_): State<Arc<Probe>>,
    _ctx: Context,
    _e: Middle,
) -> Result<(), HandlerError> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn saga_state_refuses_topics_with_unequal_partition_counts() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let topics = choreograph::Topics::new(&config).unwrap();
    for (topic, partitions) in [(Started::TOPIC, 6), (Middle::TOPIC, 3)] {
        let spec = choreograph::topics::TopicSpec {
            partitions: Some(partitions),
            compacted: false,
            ..Default::default()
        };
        topics
            .ensure_spec(&config.topic(topic), &spec)
            .await
            .unwrap();
    }
    let service = Service::with_state("joiner", Probe::with_delay(0))
        .keep_saga_state()
        .handle(start_to_middle)
        .handle(middle_noop)
        .build(&config)
        .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        service.run_until(futures::future::pending()),
    )
    .await
    .expect("refuses at once, no hang")
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, choreograph::ServiceError::NotCoPartitioned { .. }),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}=6", config.topic(Started::TOPIC)))
            && text.contains(&format!("{}=3", config.topic(Middle::TOPIC))),
        "{text}"
    );
}

fn choreograph_cli(config: &KafkaConfig, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::binary("choreograph"))
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", config.bootstrap_servers())
        .env("CHOREOGRAPH_TOPIC_PREFIX", &config.topic_prefix)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_dead_letter_is_replayed_once_after_the_fix() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(0);
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let poisoned = publisher
        .start_saga(&Started { n: 999, seq: 0 })
        .await
        .unwrap();
    let healthy = publisher
        .start_saga(&Started { n: 1, seq: 0 })
        .await
        .unwrap();
    let s = service1(&config, probe.clone());
    let h = s.shutdown_handle();
    let t = tokio::spawn(s.run_until(futures::future::pending()));
    let dlq_topic = format!("{}.dlq", config.topic(Started::TOPIC));
    wait_for("the healthy saga handled", || probe.handled() == 1).await;
    let dead = read_topic(&config, &dlq_topic, 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1, "the poisoned event is dead-lettered");

    // `dlq list` shows it, pending.
    let out = choreograph_cli(
        &config,
        &[
            "dlq",
            "list",
            "--topic",
            &config.topic(Started::TOPIC),
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["reason"], "retries-exhausted");
    assert_eq!(
        listed[0]["correlation_id"],
        poisoned.correlation_id.to_string().as_str()
    );
    assert_eq!(listed[0]["replayed"], false);

    // The cause is fixed; the saga is replayed and completes.
    OUTAGE.store(false, Ordering::SeqCst);
    let saga = poisoned.correlation_id.to_string();
    let out = choreograph_cli(
        &config,
        &[
            "dlq",
            "replay",
            "--topic",
            &dlq_topic,
            "--correlation-id",
            &saga,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replayed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for("the replayed saga handled", || probe.handled() == 2).await;
    wait_for_outputs(&config, &[poisoned.correlation_id, healthy.correlation_id]).await;

    // Never twice by accident.
    let out = choreograph_cli(
        &config,
        &[
            "dlq",
            "replay",
            "--topic",
            &dlq_topic,
            "--correlation-id",
            &saga,
        ],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already replayed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = choreograph_cli(
        &config,
        &["dlq", "list", "--topic", &dlq_topic, "--format", "json"],
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["replayed"], true);
    let replayed = read_topic(
        &config,
        &config.topic(Started::TOPIC),
        3,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        replayed.len(),
        3,
        "two sagas' starts and exactly one replay"
    );
    let replay = replayed
        .iter()
        .find(|m| header(m, "dlq_replayed_from").is_some())
        .expect("the replayed record says where it came from");
    assert!(
        header(replay, "dlq_reason").is_none(),
        "replayed without the dlq headers"
    );
    h.shutdown();
    t.await.unwrap().unwrap();
    assert_eq!(probe.duplicates(), 0);
}

/// Steps of the saga log (all services of this test's topics).
async fn saga_log_steps(config: &KafkaConfig) -> Vec<choreograph::saga_log::Step> {
    let topic = config.topic(choreograph::saga_log::DEFAULT_TOPIC);
    let (config, topic) = (config.clone(), topic);
    tokio::task::spawn_blocking(move || {
        testkit::read_to_end(&config, &topic, Duration::from_secs(60))
    })
    .await
    .unwrap()
    .iter()
    .flat_map(|m| {
        m.payload()
            .map(choreograph::saga_log::decode_steps)
            .unwrap_or_default()
    })
    .collect()
}

/// Writes `record` again as it is: same partition, key, value and headers (the same event,
/// redelivered).
async fn produce_again(config: &KafkaConfig, record: &OwnedMessage) {
    let producer: FutureProducer = config.client_config().create().unwrap();
    let mut r = FutureRecord::<[u8], [u8]>::to(record.topic()).partition(record.partition());
    r.key = record.key();
    r.payload = record.payload();
    r.headers = record.headers().cloned();
    producer.send(r, Duration::from_secs(30)).await.unwrap();
}

async fn count_steps(
    config: &KafkaConfig,
    event_id: &str,
    outcome: choreograph::saga_log::StepOutcome,
) -> usize {
    saga_log_steps(config)
        .await
        .iter()
        .filter(|s| s.service == "svc1" && s.input.id == event_id && s.outcome == outcome)
        .count()
}

/// Waits until svc1's saga log holds `n` steps with `outcome` for the event (60 s at most).
async fn wait_for_steps(
    config: &KafkaConfig,
    event_id: &str,
    outcome: choreograph::saga_log::StepOutcome,
    n: usize,
    what: &str,
) {
    for _ in 0..300 {
        if count_steps(config, event_id, outcome).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("gave up waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_redelivered_event_runs_its_handler_once_even_after_a_restart() {
    use choreograph::saga_log::StepOutcome::Duplicate;
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(0);
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let published = publisher
        .start_saga(&Started { n: 1, seq: 0 })
        .await
        .unwrap();
    let id = published.event_id.clone();
    let original = read_events(&config, Started::TOPIC, 1).await.remove(0);
    // The same event twice more (what an upstream crash between write and commit produces).
    produce_again(&config, &original).await;
    produce_again(&config, &original).await;

    let run = |options: ServiceOptions| {
        let service = service1_with(&config, probe.clone(), options);
        let h = service.shutdown_handle();
        (
            h,
            tokio::spawn(service.run_until(futures::future::pending())),
        )
    };
    let (h, t) = run(fast_options());
    wait_for_steps(
        &config,
        &id,
        Duplicate,
        2,
        "the two redeliveries acknowledged as duplicates",
    )
    .await;
    h.shutdown();
    t.await.unwrap().unwrap();
    assert_eq!(
        probe.runs.lock().unwrap()[&id],
        1,
        "one run for three deliveries"
    );

    // A new instance (empty memory) learns what was handled from the handled topic.
    produce_again(&config, &original).await;
    let (h, t) = run(fast_options());
    wait_for_steps(
        &config,
        &id,
        Duplicate,
        3,
        "the redelivery after a restart acknowledged as a duplicate",
    )
    .await;
    h.shutdown();
    t.await.unwrap().unwrap();
    assert_eq!(
        probe.runs.lock().unwrap()[&id],
        1,
        "still one run after a restart"
    );

    // The control: with idempotency off the handler runs again.
    produce_again(&config, &original).await;
    let (h, t) = run(ServiceOptions {
        idempotency: None,
        ..fast_options()
    });
    wait_for("the handler run again with idempotency off", || {
        probe.runs.lock().unwrap()[&id] == 2
    })
    .await;
    h.shutdown();
    t.await.unwrap().unwrap();
    assert_eq!(
        count_steps(&config, &id, choreograph::saga_log::StepOutcome::Handled).await,
        2
    );
}

/// Fails with a retryable error: kind `timeout` for the first two attempts of `n == 1`, kind
/// `bad-request` always for `n == 2`.
async fn flaky(ctx: Context, e: Started) -> Result<Middle, HandlerError> {
    match e.n {
        1 if ctx.attempt() <= 2 => {
            Err(HandlerError::retryable("upstream timed out").with_kind("timeout"))
        }
        2 => Err(HandlerError::retryable("upstream said 400").with_kind("bad-request")),
        n => Ok(Middle {
            n,
            pad: String::new(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn a_handler_retry_policy_overrides_the_default_and_retries_only_listed_kinds() {
    common::capture_logs();
    let config = testkit::isolated_config();
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let one = publisher
        .start_saga(&Started { n: 1, seq: 0 })
        .await
        .unwrap();
    let two = publisher
        .start_saga(&Started { n: 2, seq: 0 })
        .await
        .unwrap();
    let service = Service::builder("svc1")
        // The service default would not retry at all.
        .retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .handle_with_retry(
            flaky,
            RetryPolicy {
                max_attempts: 4,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                retry_kinds: Some(vec!["timeout".into()]),
            },
        )
        .build(&config)
        .unwrap();
    let h = service.shutdown_handle();
    let t = tokio::spawn(service.run_until(futures::future::pending()));
    wait_for_outputs(&config, &[one.correlation_id]).await;
    let outputs = read_all_events(&config, Middle::TOPIC).await;
    assert_eq!(outputs.len(), 1);
    assert_eq!(
        decode_message(&outputs[0]).unwrap().0.correlation_id,
        one.correlation_id,
        "n = 1 succeeded on its third attempt"
    );
    let letters = read_topic(
        &config,
        &format!("{}.dlq", config.topic(Started::TOPIC)),
        1,
        Duration::from_secs(60),
    )
    .await;
    h.shutdown();
    t.await.unwrap().unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        decode_message(letter).unwrap().0.correlation_id,
        two.correlation_id
    );
    assert_eq!(
        header(letter, dlq::REASON).as_deref(),
        Some("handler-failed")
    );
    assert_eq!(
        header(letter, dlq::ATTEMPTS).as_deref(),
        Some("1"),
        "a kind the policy does not list is not retried"
    );
    assert!(header(letter, dlq::ERROR).unwrap().contains("bad-request"));
    let retried = count_steps(
        &config,
        &one.event_id,
        choreograph::saga_log::StepOutcome::Retried,
    )
    .await;
    assert_eq!(retried, 2, "two failed attempts of n = 1 logged as retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn exactly_once_a_crash_leaves_no_duplicate_outputs() {
    if std::env::var_os("TEST_LOG").is_some() {
        choreograph::runtime::init_logging("info");
    }
    common::capture_logs();
    let config = testkit::isolated_config();
    let probe = Probe::with_delay(200);
    let sagas = start_sagas(&config, 300, 1).await;
    let eos = |options: ServiceOptions| ServiceOptions {
        delivery: choreograph::runtime::Delivery::ExactlyOnce,
        instance_id: Some("svc1-a".into()),
        ..options
    };

    let first = tokio::spawn(
        service1_with(&config, probe.clone(), eos(throttled()))
            .run_until(futures::future::pending()),
    );
    wait_for("a third of the sagas handled", || probe.handled() >= 100).await;
    // A crash: the runtime is dropped mid-flight, with a transaction possibly half written.
    first.abort();
    let _ = first.await;
    let handled_before = probe.handled();
    assert!(handled_before < 300, "the crash happened with work left");

    // The same instance ID again: it fences the old producer and aborts what it left open.
    let second = service1_with(&config, probe.clone(), eos(fast_options()));
    let handled_topic = second.handled_topic();
    let h = second.shutdown_handle();
    let t = tokio::spawn(second.run_until(futures::future::pending()));
    wait_for("every saga handled", || probe.handled() == 300).await;
    wait_for_outputs(&config, &sagas).await;
    h.shutdown();
    t.await.unwrap().unwrap();

    // Read committed (the test kit's reader), as a downstream service would.
    let outputs = read_all_events(&config, Middle::TOPIC).await;
    let ids: HashSet<String> = outputs
        .iter()
        .map(|m| decode_message(m).unwrap().0.id)
        .collect();
    let done: HashSet<CorrelationId> = outputs
        .iter()
        .map(|m| decode_message(m).unwrap().0.correlation_id)
        .collect();
    eprintln!(
        "exactly-once crash test: {} sagas, {} handled before the crash, {} handler re-runs, {} output records",
        sagas.len(),
        handled_before,
        probe.duplicates(),
        outputs.len()
    );
    for s in &sagas {
        assert!(done.contains(s), "saga {s} lost");
    }
    assert_eq!(outputs.len(), sagas.len(), "no duplicate output record");
    assert_eq!(ids.len(), sagas.len());
    let steps = saga_log_steps(&config).await;
    let handled_steps = steps
        .iter()
        .filter(|s| s.service == "svc1" && s.outcome == choreograph::saga_log::StepOutcome::Handled)
        .count();
    assert_eq!(
        handled_steps,
        sagas.len(),
        "one committed saga-log step per event"
    );
    // Steps and markers are written at each commit, batched per partition: fewer records than
    // events, and no marker lost or repeated (committed ones only).
    let log_records = read_all_events(&config, choreograph::saga_log::DEFAULT_TOPIC).await;
    let markers = tokio::task::spawn_blocking({
        let config = config.clone();
        move || testkit::read_to_end(&config, &handled_topic, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let marked: Vec<(String, String)> = markers
        .iter()
        .flat_map(|m| {
            serde_json::from_slice::<Vec<(String, String)>>(m.payload().unwrap_or_default())
                .unwrap()
        })
        .collect();
    eprintln!(
        "exactly-once crash test: {} steps in {} saga-log records, {} markers in {} records",
        steps.len(),
        log_records.len(),
        marked.len(),
        markers.len()
    );
    assert_eq!(marked.len(), sagas.len(), "one committed marker per event");
    let marked_ids: HashSet<&str> = marked.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(marked_ids.len(), sagas.len());
    assert!(log_records.len() < steps.len() && markers.len() < marked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn batched_saga_log_steps_trace_like_single_ones() {
    common::capture_logs();
    let config = testkit::isolated_config();
    // A backlog first, so the services finish many inputs at once and their tail writers put
    // many steps in one saga-log record.
    let sagas = start_sagas(&config, 400, 1).await;
    let chain = Chain::start(&config, Probe::with_delay(0));
    let finished = read_events(&config, Finished::TOPIC, sagas.len()).await;
    chain.stop().await;
    assert_eq!(finished.len(), sagas.len(), "every saga finished");

    let topic = config.topic(choreograph::saga_log::DEFAULT_TOPIC);
    let records = tokio::task::spawn_blocking({
        let config = config.clone();
        move || testkit::read_to_end(&config, &topic, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let per_record: Vec<usize> = records
        .iter()
        .map(|m| choreograph::saga_log::decode_steps(m.payload().unwrap_or_default()).len())
        .collect();
    assert!(
        per_record.iter().all(|n| *n >= 1),
        "every saga-log record holds a step or a batch of steps"
    );
    assert_eq!(
        per_record.iter().sum::<usize>(),
        2 * sagas.len(),
        "one step per handled event (svc1 and svc2)"
    );
    assert!(
        per_record.iter().any(|n| *n > 1),
        "with a backlog, steps were batched ({} records for {} steps)",
        records.len(),
        2 * sagas.len()
    );
    // Every batched step is in the partition of its saga, where a trace looks for it.
    let partitions = choreograph::Topics::new(&config)
        .unwrap()
        .partition_count(&config.topic(choreograph::saga_log::DEFAULT_TOPIC))
        .await
        .unwrap()
        .unwrap();
    for m in &records {
        for step in choreograph::saga_log::decode_steps(m.payload().unwrap_or_default()) {
            assert_eq!(
                m.partition(),
                choreograph::trace::partition_for_key(
                    step.correlation_id.to_string().as_bytes(),
                    partitions as i32
                ),
                "the step of {} is in its saga's partition",
                step.correlation_id
            );
        }
    }
    for id in sagas.iter().step_by(97) {
        let (config, id) = (config.clone(), *id);
        let trace = tokio::task::spawn_blocking(move || {
            choreograph::trace::Tracer::new(&config, None)?.trace(&id, &Default::default())
        })
        .await
        .unwrap()
        .unwrap();
        let mut services: Vec<&str> = trace.steps.iter().map(|s| s.service.as_str()).collect();
        services.sort_unstable();
        assert_eq!(
            services,
            ["svc1", "svc2"],
            "the trace of {id} has both steps"
        );
    }
}

/// An event on a second input topic of the gated service.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Other {
    n: u32,
}
impl Event for Other {
    const TYPE: &'static str = "test.chain.other.v1";
    const TOPIC: &'static str = "chain.x";
}

/// Holds every `Started` handler until opened; counts the handlers started.
#[derive(Default)]
struct Gate {
    held: AtomicUsize,
    others: AtomicUsize,
    open: std::sync::atomic::AtomicBool,
}

async fn gated(
    State(gate): State<Arc<Gate>>,
    _ctx: Context,
    e: Started,
) -> Result<Middle, HandlerError> {
    gate.held.fetch_add(1, Ordering::SeqCst);
    while !gate.open.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Middle {
        n: e.n,
        pad: String::new(),
    })
}

async fn other(
    State(gate): State<Arc<Gate>>,
    _ctx: Context,
    e: Other,
) -> Result<Middle, HandlerError> {
    gate.others.fetch_add(1, Ordering::SeqCst);
    Ok(Middle {
        n: e.n,
        pad: String::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn exactly_once_finished_work_waiting_for_its_transaction_counts_against_the_bound() {
    common::capture_logs();
    let mut config = testkit::isolated_config();
    // One partition per topic: a held `Started` (topic chain.a) keeps every later input of
    // partition number 0 (topic chain.x too) out of the transactions. Those finish, and wait
    // in memory for it.
    config.topics.partitions = 1;
    let gate = Arc::new(Gate::default());
    let service = Service::with_state("svc1", gate.clone())
        .options(ServiceOptions {
            delivery: choreograph::runtime::Delivery::ExactlyOnce,
            instance_id: Some("svc1-bound".into()),
            max_in_flight: 10,
            ..fast_options()
        })
        .handle(gated)
        .handle(other)
        .build(&config)
        .unwrap();
    let h = service.shutdown_handle();
    let t = tokio::spawn(service.run_until(futures::future::pending()));
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    publisher
        .start_saga(&Started { n: 0, seq: 0 })
        .await
        .unwrap();
    wait_for("the first input held", || {
        gate.held.load(Ordering::SeqCst) == 1
    })
    .await;
    for n in 1..=300 {
        publisher.start_saga(&Other { n }).await.unwrap();
    }
    wait_for("the instance at its bound", || {
        gate.others.load(Ordering::SeqCst) >= 19
    })
    .await;
    // Room for more to be taken, if the bound let it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        gate.others.load(Ordering::SeqCst),
        19,
        "exactly-once with max_in_flight 10: 20 inputs held (the unfinished one, and 19 finished \
         inputs of its partition number waiting for it) until it finishes"
    );

    gate.open.store(true, Ordering::SeqCst);
    let outputs = read_events(&config, Middle::TOPIC, 301).await;
    assert_eq!(outputs.len(), 301, "every input once");
    h.shutdown();
    t.await.unwrap().unwrap();
    assert_eq!(read_all_events(&config, Middle::TOPIC).await.len(), 301);
}

/// An event type no service of this test handles, on svc1's input topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stray {
    n: u32,
}
impl Event for Stray {
    const TYPE: &'static str = "test.chain.stray.v1";
    const TOPIC: &'static str = "chain.a";
}

/// Records of a type the service does not handle, interleaved with ones it does, are skipped
/// (no handler runs, nothing is dead-lettered) and their offsets advance with the others': the
/// group's committed offsets reach the end of the input topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn records_of_types_the_service_does_not_handle_are_skipped_and_committed() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    common::capture_logs();
    let config = testkit::isolated_config();
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    for n in 0..20 {
        publisher.start_saga(&Started { n, seq: 0 }).await.unwrap();
        publisher.start_saga(&Stray { n }).await.unwrap();
    }
    let probe = Probe::with_delay(0);
    let service = service1(&config, probe.clone());
    let handle = service.shutdown_handle();
    let task = tokio::spawn(service.run_until(futures::future::pending()));
    wait_for("svc1 handled the 20 Started events", || {
        probe.handled() == 20
    })
    .await;
    // The strays after the last Started are taken within a poll or two.
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(probe.handled(), 20, "no handler ran for a stray");

    let topic = config.topic(Started::TOPIC);
    let c = config.clone();
    let (committed, ends) = tokio::task::spawn_blocking(move || {
        // The service's group (its name, prefixed), read without joining it.
        let consumer: BaseConsumer = c
            .client_config()
            .set("group.id", c.topic("svc1"))
            .create()
            .unwrap();
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout).unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition(&topic, p.id());
            let (_, high) = consumer.fetch_watermarks(&topic, p.id(), timeout).unwrap();
            ends.insert(p.id(), high);
        }
        let committed: HashMap<i32, rdkafka::Offset> = consumer
            .committed_offsets(tpl, timeout)
            .unwrap()
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        (committed, ends)
    })
    .await
    .unwrap();
    assert_eq!(
        ends.values().sum::<i64>(),
        40,
        "20 handled and 20 strays written"
    );
    for (p, high) in ends {
        if high > 0 {
            assert_eq!(
                committed.get(&p),
                Some(&rdkafka::Offset::Offset(high)),
                "partition {p}: committed up to its end, strays included"
            );
        }
    }
    let dead = testkit::read_to_end(
        &config,
        &config.topic("chain.a.dlq"),
        Duration::from_secs(10),
    );
    assert!(dead.is_empty(), "no stray was dead-lettered");
}
