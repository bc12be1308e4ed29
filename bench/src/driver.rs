//! The driver: starts sagas and watches their terminal events.
//!
//! It is the same for every implementation. Start events carry the framework's CloudEvents
//! binary-mode encoding (`CloudEvent::encode`: a new UUIDv7 correlation ID as the key, a new
//! trace) and are written by a plain rdkafka producer with the framework's producer settings
//! (`acks=all`, idempotent, `linger.ms=2`, murmur2 partitioner), so the driver does not change
//! when the framework's publishing does. A watcher thread reads the terminal topic from the
//! beginning (no consumer group, `isolation.level=read_committed`, so records of aborted or
//! still open transactions are never seen) and timestamps every terminal event as it arrives;
//! it also checks the terminal event's type and data, and counts terminal records whose
//! correlation ID or `ce_id` it saw before. Exactly-once: any such duplicate fails the batch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use choreograph::envelope::CloudEvent;
use choreograph::{CorrelationId, TraceParent};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::model::{Mode, Workload};

/// Exactly-once: how long the watcher goes on reading after a batch completed before the
/// duplicate check (duplicates from a rewind would follow within a few commit intervals).
const DUPLICATE_SETTLE: Duration = Duration::from_secs(1);

/// Starts sagas of one workload on one set of topics.
pub struct Driver {
    producer: FutureProducer,
    workload: Workload,
    mode: Mode,
    start_topic: String,
    watcher: Watcher,
    /// Sagas started so far (numbers the start events' `user_id`s).
    started: usize,
}

/// What one batch of sagas did.
pub struct Batch {
    /// Per saga: when its start event was handed to the producer, and when its terminal
    /// event was seen.
    pub sagas: Vec<(Instant, Instant)>,
    /// First start to last terminal.
    pub elapsed: Duration,
    /// Terminal events of this batch's sagas seen more than once (at-least-once redelivery).
    pub duplicates: usize,
    /// Per saga: from the terminal record's timestamp (set by the producing service) to the
    /// driver seeing it — the last hop's delivery to the driver, clocks of one machine.
    pub observation: Vec<Duration>,
    /// First start to the last start event acknowledged by the broker: how fast the driver
    /// offered the batch (the saturation rate cannot exceed n / this).
    pub publish_elapsed: Duration,
}

impl Batch {
    pub fn latencies(&self) -> Vec<Duration> {
        self.sagas.iter().map(|(s, e)| *e - *s).collect()
    }
}

/// How a batch is offered.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Everything at once, as fast as the producer takes it.
    Saturate,
    /// Everything published while the services are paused (SIGSTOP), then the services are
    /// resumed (SIGCONT) and the clock starts: they drain a backlog as fast as they can, and
    /// the driver's own publishing speed is no limit.
    Backlog,
    /// This many sagas per second, on a fixed schedule (open loop).
    Rate(f64),
}

/// What the harness checks while a batch runs (service processes alive) and reports to.
pub trait Monitor {
    /// Called about every 100 ms; an error aborts the batch.
    fn check(&mut self) -> anyhow::Result<()>;
    /// Sagas completed so far.
    fn progress(&mut self, done: usize);
    /// Stops the service processes (SIGSTOP).
    fn pause(&mut self) -> anyhow::Result<()>;
    /// Continues them (SIGCONT).
    fn resume(&mut self) -> anyhow::Result<()>;
}

impl Driver {
    pub fn new(
        brokers: &str,
        prefix: &str,
        workload: Workload,
        mode: Mode,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "2")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "30000")
            .set("allow.auto.create.topics", "false")
            .create()
            .context("creating the driver's producer")?;
        let (start, _) = workload.start();
        let (terminal, terminal_type) = workload.terminal();
        let watcher = Watcher::start(
            brokers,
            &format!("{prefix}{terminal}"),
            terminal_type,
            workload,
        )?;
        Ok(Self {
            producer,
            workload,
            mode,
            start_topic: format!("{prefix}{start}"),
            watcher,
            started: 0,
        })
    }

    /// Starts `n` sagas and waits until every one of them completed. Fails when no saga
    /// completes for `stall_timeout` while some are missing (a lost saga fails the run).
    pub fn run(
        &mut self,
        rt: &tokio::runtime::Runtime,
        n: usize,
        pace: Pace,
        stall_timeout: Duration,
        monitor: &mut dyn Monitor,
    ) -> anyhow::Result<Batch> {
        let first = self.started;
        self.started += n;
        if let Pace::Backlog = pace {
            monitor.pause()?;
        }
        let published = rt.block_on(self.publish(first, n, pace, monitor));
        let (mut starts, mut first_start) = match published {
            Ok(p) => p,
            Err(e) => {
                let _ = monitor.resume();
                return Err(e);
            }
        };
        let publish_elapsed = first_start.elapsed();
        if let Pace::Backlog = pace {
            first_start = Instant::now();
            for s in starts.values_mut() {
                *s = first_start;
            }
            monitor.resume()?;
        }
        let mut batch = self.await_terminals(starts, first_start, stall_timeout, monitor)?;
        batch.publish_elapsed = publish_elapsed;
        if self.mode == Mode::ExactlyOnce {
            std::thread::sleep(DUPLICATE_SETTLE);
            self.check_no_duplicates()?;
        }
        Ok(batch)
    }

    /// Exactly-once: fails when the watcher has seen any terminal record twice (the same
    /// correlation ID, or the same `ce_id`), in this batch or an earlier one.
    pub fn check_no_duplicates(&self) -> anyhow::Result<()> {
        let d = self.watcher.duplicates();
        if d.sagas > 0 || d.ids > 0 {
            bail!(
                "DUPLICATES in exactly-once mode: {} terminal records repeat a correlation ID, {} repeat a ce_id ({} terminal records read); first ones: {}",
                d.sagas,
                d.ids,
                d.records,
                d.examples.join("; ")
            );
        }
        Ok(())
    }

    /// Duplicate terminal records seen so far, all batches.
    pub fn duplicates(&self) -> Duplicates {
        self.watcher.duplicates()
    }

    async fn publish(
        &self,
        first: usize,
        n: usize,
        pace: Pace,
        monitor: &mut dyn Monitor,
    ) -> anyhow::Result<(HashMap<Uuid, Instant>, Instant)> {
        let (_, start_type) = self.workload.start();
        let mut starts = HashMap::with_capacity(n);
        let mut acks = FuturesUnordered::new();
        let began = Instant::now();
        let mut last_check = began;
        for i in 0..n {
            if let Pace::Rate(rate) = pace {
                let due = began + Duration::from_secs_f64(i as f64 / rate);
                // Collect acknowledgements while waiting for the next slot.
                while Instant::now() < due {
                    tokio::select! {
                        Some(ack) = acks.next(), if !acks.is_empty() => check_ack(ack)?,
                        _ = tokio::time::sleep_until(due.into()) => {}
                    }
                }
            }
            if last_check.elapsed() > Duration::from_millis(100) && !matches!(pace, Pace::Backlog) {
                monitor.check()?;
                last_check = Instant::now();
            }
            let saga = CorrelationId::new();
            let mut event = CloudEvent::new(
                "/bench/driver",
                start_type,
                saga,
                self.workload.start_data(first + i),
            );
            event.traceparent = Some(TraceParent::new_root().to_string());
            let encoded = event.encode();
            let mut headers = OwnedHeaders::new_with_capacity(encoded.headers.len());
            for (k, v) in &encoded.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&self.start_topic)
                .key(&encoded.key)
                .payload(&encoded.value)
                .headers(headers);
            let started = Instant::now();
            loop {
                match self.producer.send_result(record) {
                    Ok(ack) => {
                        acks.push(ack);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        match acks.next().await {
                            Some(ack) => check_ack(ack)?,
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    Err((e, _)) => bail!("the driver could not publish a start event: {e}"),
                }
            }
            starts.insert(*saga.as_uuid(), started);
        }
        while let Some(ack) = acks.next().await {
            check_ack(ack)?;
        }
        Ok((starts, began))
    }

    fn await_terminals(
        &mut self,
        starts: HashMap<Uuid, Instant>,
        first_start: Instant,
        stall_timeout: Duration,
        monitor: &mut dyn Monitor,
    ) -> anyhow::Result<Batch> {
        let n = starts.len();
        let mut ends: HashMap<Uuid, Instant> = HashMap::with_capacity(n);
        let mut observation = Vec::with_capacity(n);
        let mut duplicates = 0;
        let mut last_progress = Instant::now();
        let mut last_check = Instant::now();
        while ends.len() < n {
            match self
                .watcher
                .arrivals
                .recv_timeout(Duration::from_millis(50))
            {
                Ok(a) => {
                    if starts.contains_key(&a.saga) {
                        if ends.insert(a.saga, a.at).is_some() {
                            duplicates += 1;
                        } else {
                            observation.push(a.observation);
                            last_progress = Instant::now();
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "the terminal-topic watcher stopped: {}",
                        self.watcher.error()
                    )
                }
            }
            if last_check.elapsed() > Duration::from_millis(100) {
                monitor.progress(ends.len());
                monitor.check()?;
                last_check = Instant::now();
            }
            if last_progress.elapsed() > stall_timeout {
                bail!(
                    "LOST SAGAS: {} of {n} sagas never completed (no terminal event for {} s)",
                    n - ends.len(),
                    stall_timeout.as_secs()
                );
            }
        }
        monitor.progress(n);
        // Redeliveries that arrive right behind the last first arrival.
        while let Ok(a) = self.watcher.arrivals.try_recv() {
            if starts.contains_key(&a.saga) {
                duplicates += 1;
            }
        }
        let last_end = ends.values().max().copied().unwrap_or(first_start);
        let sagas = starts
            .iter()
            .map(|(saga, start)| (*start, ends[saga]))
            .collect();
        Ok(Batch {
            sagas,
            elapsed: last_end - first_start,
            duplicates,
            observation,
            publish_elapsed: Duration::ZERO,
        })
    }

    /// Terminal events of sagas this driver did not start, of the wrong type, or with data
    /// the choreography cannot have produced (must stay 0).
    pub fn strays(&self) -> usize {
        self.watcher.strays.load(Ordering::Relaxed)
    }
}

fn check_ack<E: std::fmt::Display>(ack: Result<OwnedDeliveryResult, E>) -> anyhow::Result<()> {
    match ack {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => bail!("a start event was not acknowledged: {e}"),
        Err(e) => bail!("the driver's producer went away: {e}"),
    }
}

/// A terminal event as the watcher saw it.
struct Arrival {
    saga: Uuid,
    at: Instant,
    /// Arrival (wall clock) minus the record's timestamp.
    observation: Duration,
}

/// Terminal records seen twice by the watcher, over every batch of one configuration.
#[derive(Clone, Debug, Default)]
pub struct Duplicates {
    /// Valid terminal records read.
    pub records: usize,
    /// Records whose correlation ID (the key) was seen before.
    pub sagas: usize,
    /// Records whose `ce_id` was seen before.
    pub ids: usize,
    /// The first few: correlation ID, ce_id, partition, offset.
    pub examples: Vec<String>,
}

/// Reads the terminal topic on its own thread.
struct Watcher {
    arrivals: mpsc::Receiver<Arrival>,
    stop: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    strays: Arc<AtomicUsize>,
    duplicates: Arc<Mutex<Duplicates>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(
        brokers: &str,
        topic: &str,
        event_type: &'static str,
        workload: Workload,
    ) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "choreograph-bench-watcher")
            .set("enable.auto.commit", "false")
            // librdkafka's default, explicit: never a record of an aborted transaction.
            .set("isolation.level", "read_committed")
            .set("allow.auto.create.topics", "false")
            .create()
            .context("creating the terminal-topic watcher")?;
        let partitions = {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .context("reading the terminal topic's metadata")?;
            md.topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0)
        };
        if partitions == 0 {
            bail!("terminal topic {topic} has no partitions");
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let strays = Arc::new(AtomicUsize::new(0));
        let duplicates = Arc::new(Mutex::new(Duplicates::default()));
        let thread = {
            let stop = stop.clone();
            let error = error.clone();
            let strays = strays.clone();
            let duplicates = duplicates.clone();
            std::thread::Builder::new()
                .name("terminal-watcher".into())
                .spawn(move || {
                    let mut seen_sagas: HashSet<Uuid> = HashSet::new();
                    let mut seen_ids: HashSet<Vec<u8>> = HashSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        match consumer.poll(Duration::from_millis(20)) {
                            None => {}
                            Some(Err(e)) => {
                                if let Ok(mut slot) = error.lock() {
                                    *slot = Some(e.to_string());
                                }
                            }
                            Some(Ok(m)) => {
                                let at = Instant::now();
                                let now_ms = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map(|d| d.as_micros() as i64)
                                    .unwrap_or(0);
                                let observation = m
                                    .timestamp()
                                    .to_millis()
                                    .map(|t| {
                                        Duration::from_micros((now_ms - t * 1000).max(0) as u64)
                                    })
                                    .unwrap_or_default();
                                let typed = m
                                    .headers()
                                    .and_then(|hs| hs.iter().find(|h| h.key == "ce_type"))
                                    .and_then(|h| h.value)
                                    == Some(event_type.as_bytes())
                                    && workload.terminal_is_valid(m.payload().unwrap_or_default());
                                let saga = m
                                    .key()
                                    .and_then(|k| std::str::from_utf8(k).ok())
                                    .and_then(|k| Uuid::parse_str(k).ok());
                                match (typed, saga) {
                                    (true, Some(saga)) => {
                                        let ce_id = m
                                            .headers()
                                            .and_then(|hs| hs.iter().find(|h| h.key == "ce_id"))
                                            .and_then(|h| h.value);
                                        let again_saga = !seen_sagas.insert(saga);
                                        let again_id =
                                            ce_id.is_some_and(|id| !seen_ids.insert(id.to_vec()));
                                        if let Ok(mut d) = duplicates.lock() {
                                            d.records += 1;
                                            d.sagas += usize::from(again_saga);
                                            d.ids += usize::from(again_id);
                                            if (again_saga || again_id) && d.examples.len() < 10 {
                                                d.examples.push(format!(
                                                    "saga {saga} ce_id {} at {}[{}]@{}",
                                                    String::from_utf8_lossy(
                                                        ce_id.unwrap_or_default()
                                                    ),
                                                    m.topic(),
                                                    m.partition(),
                                                    m.offset()
                                                ));
                                            }
                                        }
                                        let arrival = Arrival {
                                            saga,
                                            at,
                                            observation,
                                        };
                                        if tx.send(arrival).is_err() {
                                            return;
                                        }
                                    }
                                    _ => {
                                        strays.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                    }
                })?
        };
        Ok(Self {
            arrivals: rx,
            stop,
            error,
            strays,
            duplicates,
            thread: Some(thread),
        })
    }

    fn duplicates(&self) -> Duplicates {
        self.duplicates
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    fn error(&self) -> String {
        self.error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "no error recorded".into())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
