//! The registration demo: the whole choreography end to end in one process.
//!
//! Starts an embedded Kafka (librdkafka's mock cluster, in-process) unless `--brokers` names a
//! real cluster, runs the four services (user, activity, coupon, points: the same code as their
//! binaries), registers users so that every branch runs (welcomed, rejected enrolment,
//! compensated points refusal), shows progress, and prints a sample saga of each outcome in
//! causal order with timings, then a summary. With `--serve` it keeps running afterwards, for
//! the CLI to trace, list and publish against.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use choreograph::embedded::EmbeddedKafka;
use choreograph::watch::{SagaWatch, WatchedSaga};
use choreograph::{Catalogue, CloudEvent, CorrelationId, KafkaConfig, SagaOutcome};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use registration_events::samples;

#[derive(Parser)]
#[command(about = "Run the registration choreography end to end (embedded Kafka unless --brokers)")]
struct Args {
    /// A real cluster to run against (host:port[,host:port]); default: an embedded mock cluster
    #[arg(long, short = 'b')]
    brokers: Option<String>,
    /// How many registrations (sagas) to run
    #[arg(long, short = 'n', default_value_t = 300, value_parser = clap::value_parser!(u32).range(3..=100_000))]
    sagas: u32,
    /// Give up waiting for the sagas to end after this many seconds
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Keep the cluster and the services running after the report, until Ctrl-C, so the CLI
    /// (`choreograph --brokers ADDRESS trace ...`) can look at them
    #[arg(long)]
    serve: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    choreograph::runtime::init_logging("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let catalogue = registration_events::catalogue();
    let _embedded;
    let config = match &args.brokers {
        Some(b) => {
            println!("Kafka: {b}");
            KafkaConfig::new(b)?
        }
        None => {
            let kafka = EmbeddedKafka::start(1)?;
            // Nothing to create by hand: the services create their topics (events, dead
            // letters, saga log, markers, saga state) on the embedded cluster as on a broker.
            println!(
                "Kafka: embedded (librdkafka mock cluster at {}; pass --brokers HOST:PORT for a real cluster)",
                kafka.bootstrap_servers()
            );
            let config = kafka.kafka_config();
            _embedded = kafka;
            config
        }
    };

    // The four services, each with its own consumer group, as separate processes would be.
    let services = vec![
        spawn(user::service(&config)?),
        spawn(activity::service(&config, activity::Settings::default())?),
        spawn(coupon::service(&config, coupon::Settings::default())?),
        spawn(points::service(&config, points::Settings::default())?),
    ];
    // Register once every service has joined its group, so the timings show the choreography,
    // not the services starting up.
    let joined = all_joined(&services);
    match tokio::time::timeout(Duration::from_secs(60), joined).await {
        Ok(result) => result?,
        Err(_) => anyhow::bail!("the services did not join their consumer groups within 60 s"),
    }
    println!("services: user, activity, coupon, points (joined their consumer groups)");

    let topics: Vec<String> = catalogue.topics().iter().map(|t| config.topic(t)).collect();
    let watch = SagaWatch::start(&config, &topics, catalogue.clone())?;
    let publisher = user::publisher(&config)?;
    let started = Instant::now();
    let mut sagas: HashMap<CorrelationId, u32> = HashMap::new();
    for i in 0..args.sagas {
        let receipt = user::register(&publisher, &samples::registration(i).0)
            .await
            .with_context(|| format!("registering user {i}"))?;
        sagas.insert(receipt.correlation_id, i);
    }
    println!(
        "registered {} users in {:.2?}",
        args.sagas,
        started.elapsed()
    );

    let bar = ProgressBar::new(u64::from(args.sagas));
    bar.set_style(
        ProgressStyle::with_template("sagas ended {bar:40} {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let ended = watch.ended(sagas.keys());
        bar.set_position(ended as u64);
        if ended == sagas.len() || Instant::now() > deadline {
            bar.finish();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = started.elapsed();
    watch
        .settle(Duration::from_millis(500), Duration::from_secs(10))
        .await;
    let ok = report(&watch.all(), &sagas, &catalogue, total)?;
    if args.serve {
        let sample = sagas
            .iter()
            .min_by_key(|(_, i)| **i)
            .map(|(id, _)| id.to_string())
            .unwrap_or_default();
        let servers = config.bootstrap_servers();
        println!();
        println!("serving: Kafka at {servers}, the four services running; Ctrl-C stops them. Try:");
        println!(
            "  cargo run -q -p choreograph -- --brokers {servers} --schemas schemas trace {sample}"
        );
        println!("  cargo run -q -p choreograph -- --brokers {servers} --schemas schemas sagas --since 10m");
        println!("  cargo run -q -p choreograph -- --brokers {servers} --schemas schemas publish --type registration.user.registered.v1 --data '{{\"user_id\":\"u-1\",\"email\":\"ada@example.com\",\"display_name\":\"Ada\",\"plan\":\"pro\"}}'");
        choreograph::runtime::termination_signal().await;
    }
    for (handle, _, task) in services {
        handle.shutdown();
        task.await.context("a service task")??;
    }
    Ok(ok)
}

type Running = (
    choreograph::ShutdownHandle,
    choreograph::ReadySignal,
    tokio::task::JoinHandle<Result<(), choreograph::ServiceError>>,
);

async fn all_joined(services: &[Running]) -> Result<(), choreograph::NotReady> {
    for (_, ready, _) in services {
        ready.wait().await?;
    }
    Ok(())
}

fn spawn<S: Clone + Send + Sync + 'static>(service: choreograph::Service<S>) -> Running {
    let handle = service.shutdown_handle();
    let ready = service.ready_signal();
    (
        handle,
        ready,
        tokio::spawn(service.run_until(std::future::pending())),
    )
}

fn ms(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// Prints one saga as a causal tree: each event under the event that caused it.
fn print_tree(saga: &WatchedSaga) {
    let Some(root) = saga.events.iter().find(|e| e.causation_id.is_none()) else {
        return;
    };
    let mut children: HashMap<&str, Vec<&CloudEvent>> = HashMap::new();
    for e in &saga.events {
        if let Some(c) = &e.causation_id {
            children.entry(c.as_str()).or_default().push(e);
        }
    }
    fn walk(
        e: &CloudEvent,
        start: chrono::DateTime<chrono::Utc>,
        cause: Option<&CloudEvent>,
        depth: usize,
        children: &HashMap<&str, Vec<&CloudEvent>>,
    ) {
        let after = cause
            .map(|c| format!("  (+{:.1} ms after its cause)", ms(e.time - c.time)))
            .unwrap_or_default();
        println!(
            "    {:>8.1} ms  {}{:<52} {}{}",
            ms(e.time - start),
            "  ".repeat(depth),
            e.event_type,
            e.source,
            after
        );
        let mut next = children.get(e.id.as_str()).cloned().unwrap_or_default();
        next.sort_by_key(|c| c.time);
        for c in next {
            walk(c, start, Some(e), depth + 1, children);
        }
    }
    walk(root, root.time, None, 0, &children);
}

fn report(
    seen: &HashMap<CorrelationId, WatchedSaga>,
    sagas: &HashMap<CorrelationId, u32>,
    catalogue: &Catalogue,
    total: Duration,
) -> anyhow::Result<bool> {
    let mut by_outcome: BTreeMap<&'static str, Vec<(CorrelationId, f64)>> = BTreeMap::new();
    let mut unfinished = Vec::new();
    for (id, i) in sagas {
        match seen.get(id).and_then(|s| s.ended.map(|(o, t)| (o, t, s))) {
            Some((outcome, end, saga)) => {
                let start = saga.events.iter().map(|e| e.time).min().unwrap_or(end);
                let label = match outcome {
                    SagaOutcome::Completed => "completed (user welcomed)",
                    SagaOutcome::Failed => "rejected (enrolment refused)",
                    SagaOutcome::Compensated => "compensated (points refused, coupon revoked)",
                };
                by_outcome
                    .entry(label)
                    .or_default()
                    .push((*id, ms(end - start)));
            }
            None => unfinished.push((*i, *id)),
        }
    }
    println!();
    for (label, list) in &by_outcome {
        let (sample, took) = list
            .iter()
            .min_by_key(|(c, _)| sagas[c])
            .copied()
            .unwrap_or((CorrelationId::new(), 0.0));
        println!(
            "{label}: sample saga {sample} ({} events, {took:.1} ms)",
            seen[&sample].events.len()
        );
        print_tree(&seen[&sample]);
        println!();
    }
    println!("summary ({} sagas in {:.2?}):", sagas.len(), total);
    for (label, list) in &by_outcome {
        let mut times: Vec<f64> = list.iter().map(|(_, t)| *t).collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!("  {:<46} {:>6}   time per saga: median {median:.1} ms, mean {mean:.1} ms, max {:.1} ms", label, list.len(), times[times.len() - 1]);
    }
    let ends: Vec<&str> = catalogue
        .entries()
        .filter(|e| e.placement.ends_saga.is_some())
        .map(|e| e.placement.event_type.as_str())
        .collect();
    println!("  (a saga ends with one of: {})", ends.join(", "));
    if !unfinished.is_empty() {
        unfinished.sort();
        println!(
            "  NOT ENDED: {} sagas, e.g. user {} (saga {})",
            unfinished.len(),
            unfinished[0].0,
            unfinished[0].1
        );
        return Ok(false);
    }
    Ok(true)
}
