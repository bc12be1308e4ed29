//! The "raw" implementation: the same services written directly on rdkafka, no framework.
//!
//! This is the client's limit, the baseline the framework's overhead is measured against. Each
//! service is a hand-written consume → produce → commit loop with the same guarantee and the
//! same client settings as the framework's at-least-once runtime:
//! - consumer: `enable.auto.commit=true`, `enable.auto.offset.store=false` (librdkafka's
//!   at-least-once recipe), range assignment, `auto.offset.reset=earliest`,
//!   `queued.max.messages.kbytes=16384`;
//! - producer: `acks=all`, `enable.idempotence=true`, `linger.ms=2`,
//!   `partitioner=murmur2_random` (the Java clients' partitioner, as the framework sets it);
//! - an input offset is stored (for the next auto-commit) only after every record it caused
//!   was acknowledged, in consume order, so the committed offset never passes unfinished work.
//!
//! Records carry the same CloudEvents binary-mode headers and key as the framework writes, so
//! the bytes on the wire are comparable. Processing is one task on a current-thread runtime;
//! the acknowledgements are awaited by a second task, so produce calls never wait on the broker.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use choreograph::Event;
use chrono::{SecondsFormat, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::model::*;

/// Inputs whose outputs are not acknowledged yet, before the consumer waits (backpressure):
/// the framework's default per partition (1000) times the 6 partitions of an input topic.
const MAX_IN_FLIGHT: usize = 6_000;

/// An input record whose output is on its way.
struct Pending {
    topic: usize,
    partition: i32,
    offset: i64,
    delivery: Option<DeliveryFuture>,
}

/// One output record, before its envelope.
struct Output {
    topic: usize,
    event_type: &'static str,
    data: Vec<u8>,
}

/// The business logic of every role, on plain bytes.
struct Logic {
    role: Role,
    /// Output topics, prefixed, indexed by [`Output::topic`].
    outputs: Vec<String>,
    joins: HashMap<Vec<u8>, (Option<String>, Option<u32>)>,
}

fn parse<E: DeserializeOwned>(data: &[u8]) -> anyhow::Result<E> {
    serde_json::from_slice(data).context("event data does not match its type")
}

fn out<E: Event>(topic: usize, event: &E) -> anyhow::Result<Option<Output>> {
    Ok(Some(Output {
        topic,
        event_type: E::TYPE,
        data: serde_json::to_vec(event)?,
    }))
}

impl Logic {
    fn new(role: Role, prefix: &str) -> Self {
        let outputs: &[&str] = match role {
            Role::Activity => &[NewcomerEnrolled::TOPIC, WelcomePackageCompleted::TOPIC],
            Role::Coupon => &[CouponIssued::TOPIC],
            Role::Points => &[PointsGranted::TOPIC],
            Role::Svc1 => &[ChainContinued::TOPIC],
            Role::Svc2 => &[ChainFinished::TOPIC],
        };
        Self {
            role,
            outputs: outputs.iter().map(|t| format!("{prefix}{t}")).collect(),
            joins: HashMap::new(),
        }
    }

    fn inputs(role: Role) -> &'static [&'static str] {
        match role {
            Role::Activity => &[
                UserRegistered::TOPIC,
                CouponIssued::TOPIC,
                PointsGranted::TOPIC,
            ],
            Role::Coupon | Role::Points => &[NewcomerEnrolled::TOPIC],
            Role::Svc1 => &[ChainStarted::TOPIC],
            Role::Svc2 => &[ChainContinued::TOPIC],
        }
    }

    /// The event this input causes, if any (`saga` is the correlation ID, as the key).
    fn handle(
        &mut self,
        event_type: &str,
        saga: &[u8],
        data: &[u8],
    ) -> anyhow::Result<Option<Output>> {
        match (self.role, event_type) {
            (Role::Activity, UserRegistered::TYPE) => {
                let e: UserRegistered = parse(data)?;
                out(
                    0,
                    &NewcomerEnrolled {
                        user_id: e.user_id,
                        email: e.email,
                    },
                )
            }
            (Role::Activity, CouponIssued::TYPE) => {
                let e: CouponIssued = parse(data)?;
                self.join(saga, e.user_id, |j| j.0 = Some(e.coupon_code))
            }
            (Role::Activity, PointsGranted::TYPE) => {
                let e: PointsGranted = parse(data)?;
                self.join(saga, e.user_id, |j| j.1 = Some(e.points))
            }
            (Role::Coupon, NewcomerEnrolled::TYPE) => {
                let e: NewcomerEnrolled = parse(data)?;
                out(
                    0,
                    &CouponIssued {
                        coupon_code: coupon_code(&e.user_id),
                        user_id: e.user_id,
                    },
                )
            }
            (Role::Points, NewcomerEnrolled::TYPE) => {
                let e: NewcomerEnrolled = parse(data)?;
                out(
                    0,
                    &PointsGranted {
                        user_id: e.user_id,
                        points: WELCOME_POINTS,
                    },
                )
            }
            (Role::Svc1, ChainStarted::TYPE) => {
                let e: ChainStarted = parse(data)?;
                out(
                    0,
                    &ChainContinued {
                        user_id: e.user_id,
                        step: e.step + 1,
                    },
                )
            }
            (Role::Svc2, ChainContinued::TYPE) => {
                let e: ChainContinued = parse(data)?;
                out(
                    0,
                    &ChainFinished {
                        user_id: e.user_id,
                        step: e.step + 1,
                    },
                )
            }
            _ => Ok(None),
        }
    }

    fn join(
        &mut self,
        saga: &[u8],
        user_id: String,
        update: impl FnOnce(&mut (Option<String>, Option<u32>)),
    ) -> anyhow::Result<Option<Output>> {
        let entry = self.joins.entry(saga.to_vec()).or_default();
        update(entry);
        if entry.0.is_none() || entry.1.is_none() {
            return Ok(None);
        }
        match self.joins.remove(saga) {
            Some((Some(coupon_code), Some(points))) => out(
                1,
                &WelcomePackageCompleted {
                    user_id,
                    coupon_code,
                    points,
                },
            ),
            _ => Ok(None),
        }
    }
}

/// The CloudEvents attributes of an input record that its output needs.
#[derive(Default)]
struct Attributes<'a> {
    event_type: Option<&'a str>,
    id: Option<&'a [u8]>,
    correlation_id: Option<&'a [u8]>,
    traceparent: Option<&'a str>,
}

fn attributes<'a, M: Message>(m: &'a M) -> Attributes<'a> {
    let mut a = Attributes::default();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            match h.key {
                "ce_type" => a.event_type = h.value.and_then(|v| std::str::from_utf8(v).ok()),
                "ce_id" => a.id = h.value,
                "ce_correlationid" => a.correlation_id = h.value,
                "traceparent" => a.traceparent = h.value.and_then(|v| std::str::from_utf8(v).ok()),
                _ => {}
            }
        }
    }
    a
}

/// The `traceparent` of a child span: same trace, new span ID.
fn child_traceparent(parent: &str) -> Option<String> {
    // 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
    if parent.len() != 55 || !parent.is_ascii() {
        return None;
    }
    let span = loop {
        let s = uuid::Uuid::new_v4().as_u64_pair().1;
        if s != 0 {
            break s;
        }
    };
    Some(format!("{}{span:016x}{}", &parent[..36], &parent[52..]))
}

/// The binary-mode headers the framework writes, in the same order.
fn envelope(
    source: &str,
    event_type: &str,
    correlation_id: &[u8],
    causation_id: Option<&[u8]>,
    traceparent: Option<&str>,
) -> OwnedHeaders {
    let id = uuid::Uuid::now_v7().hyphenated().to_string();
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut h = OwnedHeaders::new_with_capacity(9)
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(&id),
        })
        .insert(Header {
            key: "ce_type",
            value: Some(event_type),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(source),
        })
        .insert(Header {
            key: "ce_time",
            value: Some(&time),
        })
        .insert(Header {
            key: "ce_correlationid",
            value: Some(correlation_id),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
    if let Some(c) = causation_id {
        h = h.insert(Header {
            key: "ce_causationid",
            value: Some(c),
        });
    }
    if let Some(child) = traceparent.and_then(child_traceparent) {
        h = h.insert(Header {
            key: "traceparent",
            value: Some(&child),
        });
    }
    h
}

/// Runs one service until SIGINT/SIGTERM.
pub fn run(
    role: Role,
    brokers: &str,
    prefix: &str,
    properties: &[(String, String)],
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(role, brokers, prefix, properties))
}

/// A client configuration: the pass-through properties, then `defaults` unless overridden,
/// then `forced` (what the guarantee needs), as the framework does.
fn client_config(
    brokers: &str,
    properties: &[(String, String)],
    defaults: &[(&str, &str)],
    forced: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        c.set(k, v);
    }
    for (k, v) in defaults {
        if !properties.iter().any(|(pk, _)| pk == k) {
            c.set(*k, *v);
        }
    }
    for (k, v) in forced {
        c.set(*k, *v);
    }
    c
}

async fn serve(
    role: Role,
    brokers: &str,
    prefix: &str,
    properties: &[(String, String)],
) -> anyhow::Result<()> {
    let inputs: Vec<String> = Logic::inputs(role)
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let group = format!("{prefix}{}", role.name());
    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(
            brokers,
            properties,
            &[
                ("partition.assignment.strategy", "range"),
                ("auto.commit.interval.ms", "1000"),
                ("queued.max.messages.kbytes", "16384"),
                ("auto.offset.reset", "earliest"),
            ],
            &[
                ("group.id", &group),
                ("enable.auto.commit", "true"),
                ("enable.auto.offset.store", "false"),
                ("allow.auto.create.topics", "false"),
            ],
        )
        .create()
        .context("creating the consumer")?,
    );
    let topic_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    let producer: FutureProducer = client_config(
        brokers,
        properties,
        &[("linger.ms", "2"), ("partitioner", "murmur2_random")],
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("allow.auto.create.topics", "false"),
            ("message.timeout.ms", "30000"),
        ],
    )
    .create()
    .context("creating the producer")?;
    let source = format!("/services/{}", role.name());
    let mut logic = Logic::new(role, prefix);

    // Acknowledgements, awaited in consume order; then the input offset is stored.
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let acker = {
        let consumer = consumer.clone();
        let inputs = inputs.clone();
        tokio::spawn(async move {
            while let Some(p) = pending_rx.recv().await {
                if let Some(d) = p.delivery {
                    match d.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => bail!("an output was not acknowledged: {e}"),
                        Err(_) => bail!("the producer went away"),
                    }
                }
                // Fails with __STATE only when the partition was revoked meanwhile: benign.
                let _ = consumer.store_offset(&inputs[p.topic], p.partition, p.offset);
            }
            anyhow::Ok(())
        })
    };

    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = &mut stop => break,
        };
        let m = match message {
            Ok(m) => m,
            Err(e) => {
                eprintln!("raw {}: consumer error: {e}", role.name());
                continue;
            }
        };
        let Some(topic) = inputs.iter().position(|t| t == m.topic()) else {
            continue;
        };
        let attrs = attributes(&m);
        let delivery = match (attrs.event_type, attrs.correlation_id) {
            (Some(event_type), Some(correlation_id)) => {
                let key = m.key().unwrap_or(correlation_id);
                match logic.handle(event_type, key, m.payload().unwrap_or_default()) {
                    Ok(Some(o)) => {
                        let headers = envelope(
                            &source,
                            o.event_type,
                            correlation_id,
                            attrs.id,
                            attrs.traceparent,
                        );
                        Some(
                            send(
                                &producer,
                                FutureRecord::to(&logic.outputs[o.topic])
                                    .key(key)
                                    .payload(&o.data)
                                    .headers(headers),
                            )
                            .await?,
                        )
                    }
                    Ok(None) => None,
                    Err(e) => {
                        eprintln!("raw {}: skipping {}: {e:#}", role.name(), m.offset());
                        None
                    }
                }
            }
            _ => None,
        };
        let p = Pending {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            delivery,
        };
        drop(m);
        if pending_tx.send(p).await.is_err() {
            break;
        }
    }
    // Finish in-flight work, commit it, leave.
    drop(pending_tx);
    acker
        .await
        .map_err(|e| anyhow!("acknowledgement task: {e}"))??;
    tokio::task::spawn_blocking(move || {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => eprintln!("raw: final commit failed: {e}"),
        }
        consumer.unsubscribe();
    })
    .await?;
    Ok(())
}

/// Enqueues one record, waiting while librdkafka's queue is full.
async fn send(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], Vec<u8>>,
) -> anyhow::Result<DeliveryFuture> {
    loop {
        match producer.send_result(record) {
            Ok(d) => return Ok(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err((e, _)) => bail!("produce failed: {e}"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
