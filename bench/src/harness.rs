//! The harness: broker, topics, service processes, measurements, in that order.
//!
//! After the broker's warm-up, one unmeasured run per workload × mode (`--warmup-runs`). Then
//! per repetition × workload × implementation (implementations interleaved, so slow drift of
//! the machine spreads over all of them, and each repetition starting at another place in the
//! list): fresh topics under a unique prefix, the service processes, a warm-up batch (which also
//! waits out the consumer-group joins), a fixed-rate batch (latency), a saturation batch
//! (throughput and CPU), then peak RSS, stop, delete topics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use crate::driver::{Driver, Monitor, Pace};
use crate::model::{Implementation, Mode, Workload};
use crate::procs::{self, Broker, ServiceProcess};
use crate::report::{self, LogRecords, Percentiles, Run};
use crate::RunArgs;

/// Everything written to the JSON file.
#[derive(Serialize)]
struct Results<'a> {
    schema: u32,
    started_at: String,
    finished_at: String,
    command: Vec<String>,
    environment: BTreeMap<&'static str, String>,
    settings: &'a RunArgs,
    runs: &'a [Run],
    summaries: &'a [report::Summary],
    targets: &'a [report::Target],
    /// Implementation × mode combinations asked for that have no row, and why.
    unavailable: Vec<report::Unavailable>,
    notes: &'static [&'static str],
}

const NOTES: &[&str] = &[
    "Joins are kept in process memory keyed by correlation ID in every implementation (the framework's durable per-saga state is not there yet).",
    "CPU is the run time of every thread of the service processes (/proc/PID/task/*/schedstat, ns); utime+stime from /proc/PID/stat (10 ms ticks) is kept beside it; peak RSS is VmHWM from /proc/PID/status.",
    "Latency: terminal event seen by the driver minus the start event handed to the driver's producer, at the fixed offered rate.",
    "Ratios are ratios of medians against raw of the same delivery mode from the same harness run; eos_vs_alo divides an implementation's exactly-once medians by its at-least-once medians.",
    "Exactly-once: choreograph runs Delivery::ExactlyOnce (instance ID <role>-1, commit_interval 100 ms); raw is a hand-written transactional loop (bench/src/svc_raw.rs); the driver's watcher reads read_committed and fails a batch on any terminal record whose correlation ID or ce_id it saw before.",
];

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let exe = std::env::current_exe().context("locating this executable")?;
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("choreograph-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;

    let variables = choreograph_variables();
    if !variables.is_empty() {
        eprintln!(
            "the framework's services read these from the environment (not a default run): {variables}"
        );
    }

    let watermill = if args.impls.contains(&Implementation::Watermill) {
        Some(build_watermill(&bench_dir, &exe)?)
    } else {
        None
    };

    let mut broker_data = None;
    let broker = match &args.brokers {
        Some(_) => None,
        None => {
            let script = args
                .kafka_script
                .clone()
                .unwrap_or_else(|| bench_dir.join("../scripts/kafka-local.sh"));
            let parent = broker_data_parent(args.broker_data.as_deref(), &work);
            let dir = parent.join(format!("choreograph-bench-{}-kafka", std::process::id()));
            let data = format!("{} ({})", dir.display(), filesystem_of(&parent));
            eprintln!(
                "starting a benchmark broker on 127.0.0.1:{} (data in {data})",
                args.kafka_port
            );
            let broker = Broker::start(&script, &dir, args.kafka_port)?;
            broker_data = Some(data);
            Some(broker)
        }
    };
    let brokers = args
        .brokers
        .clone()
        .or_else(|| broker.as_ref().map(|b| b.bootstrap.clone()))
        .context("no broker")?;

    let broker_pid = broker.as_ref().and_then(Broker::pid);
    let result = measure_all(
        &args,
        &brokers,
        &exe,
        watermill.as_deref(),
        &logs,
        broker_pid,
    );
    procs::stop_everything();
    if let Some(b) = broker {
        b.stop();
    }
    let runs = result?;

    let summaries = report::summarize(&runs);
    let targets = report::targets(&summaries);
    let unavailable = report::unavailable(&args.impls, &args.workloads, &args.modes);
    let md = report::markdown(&summaries, &targets, &unavailable, args.rate, args.reps);
    println!("{md}");

    let results = Results {
        schema: 2,
        started_at: started_at.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        command: std::env::args().collect(),
        environment: environment(&args, broker_data),
        settings: &args,
        runs: &runs,
        summaries: &summaries,
        targets: &targets,
        unavailable,
        notes: NOTES,
    };
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("results written to {}", args.out.display());
    if args.keep_logs {
        eprintln!("service logs kept in {}", logs.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

fn measure_all(
    args: &RunArgs,
    brokers: &str,
    exe: &Path,
    watermill: Option<&Path>,
    logs: &Path,
    broker_pid: Option<u32>,
) -> anyhow::Result<Vec<Run>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating an admin client")?;
    let run_id = &uuid::Uuid::now_v7().simple().to_string()[20..];

    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let say = |line: String| multi.suspend(|| eprintln!("{line}"));

    say("warming the broker up".into());
    warm_broker(&rt, &admin, brokers, &format!("bench.{run_id}.warmup"))?;

    // Per workload, the measured (mode, implementation) pairs in the list's order, modes
    // interleaved with implementations.
    let pairs: Vec<(Mode, Implementation)> = args
        .modes
        .iter()
        .flat_map(|&m| args.impls.iter().map(move |&i| (m, i)))
        .filter(|(m, i)| i.unavailable(*m).is_none())
        .collect();
    // Per workload and mode, the first implementation of the list that has the mode.
    let firsts: Vec<(Mode, Implementation)> = args
        .modes
        .iter()
        .filter_map(|&m| pairs.iter().find(|(pm, _)| *pm == m).copied())
        .collect();
    let warmups: Vec<(Workload, Mode, Implementation)> = args
        .workloads
        .iter()
        .flat_map(|&w| firsts.iter().map(move |&(m, i)| (w, m, i)))
        .collect();
    let warmups = if args.warmup_runs == 0 {
        Vec::new()
    } else {
        warmups.repeat(args.warmup_runs)
    };
    let total = warmups.len() + args.reps * args.workloads.len() * pairs.len();
    let overall = multi.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30} {pos}/{len} configurations {msg}",
        )
        .expect("valid template"),
    );
    let phase = multi.add(ProgressBar::new(0));
    phase.set_style(
        ProgressStyle::with_template("  {msg:42} {bar:30} {pos}/{len} sagas")
            .expect("valid template"),
    );

    // One configuration; repetition 0 is an unmeasured warm-up run.
    let measure = |workload: Workload, mode: Mode, implementation: Implementation, rep: usize| {
        let label = if rep == 0 {
            format!(
                "warm-up: {} {} {}",
                implementation.name(),
                mode.short(),
                workload.name()
            )
        } else {
            format!(
                "{} {} {} #{rep}",
                implementation.name(),
                mode.short(),
                workload.name()
            )
        };
        overall.set_message(label.clone());
        let prefix = format!(
            "bench.{run_id}.{}.{}.{}.r{rep}.",
            implementation.name(),
            mode.short(),
            workload.name()
        );
        let run = measure_one(
            &rt,
            &admin,
            args,
            Config {
                implementation,
                mode,
                workload,
                rep,
                brokers,
                prefix: &prefix,
                exe,
                watermill,
                logs,
                broker_pid,
            },
            &phase,
        )
        .with_context(|| format!("measuring {label}"));
        if args.keep_topics {
            say(format!("{label}: topics kept, prefix `{prefix}`"));
        } else {
            let _ = delete_topics(&rt, &admin, &prefix);
        }
        let run = run?;
        say(format!(
            "{label:32} {:7.0} sagas/s  load {:.1}  p50 {:6.1} ms  p99 {:6.1} ms  max {:6.1} ms (last hop to driver p50 {:.1} p99 {:.1})  CPU {:.2} s/1k   RSS {}",
            run.throughput_sagas_per_s,
            run.load_average.1,
            run.latency_ms.p50,
            run.latency_ms.p99,
            run.latency_ms.max,
            run.driver_observation_ms.p50,
            run.driver_observation_ms.p99,
            run.cpu_s_per_1k_sagas,
            run.peak_rss_mib
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        overall.inc(1);
        anyhow::Ok(run)
    };

    for &(workload, mode, implementation) in &warmups {
        measure(workload, mode, implementation, 0)?;
    }
    let mut runs = Vec::new();
    for rep in 1..=args.reps {
        // Each repetition starts at another place in the list, so that whatever the first
        // configurations of a repetition pay (a broker still settling) is not always charged
        // to the same implementation.
        let mut order = pairs.clone();
        let start = (rep - 1) * order.len() / args.reps;
        order.rotate_left(start);
        for &workload in &args.workloads {
            for &(mode, implementation) in &order {
                runs.push(measure(workload, mode, implementation, rep)?);
            }
        }
    }
    phase.finish_and_clear();
    overall.finish_and_clear();
    Ok(runs)
}

struct Config<'a> {
    implementation: Implementation,
    mode: Mode,
    workload: Workload,
    rep: usize,
    brokers: &'a str,
    prefix: &'a str,
    exe: &'a Path,
    watermill: Option<&'a Path>,
    logs: &'a Path,
    broker_pid: Option<u32>,
}

/// Watches the service processes and moves the phase bar.
struct Services<'a> {
    procs: Vec<ServiceProcess>,
    bar: &'a ProgressBar,
    /// Where to write profiles of the next resumed batch (`--profile-dir`), file name stem.
    profile: Option<(PathBuf, String)>,
    profilers: Vec<std::process::Child>,
}

impl Monitor for Services<'_> {
    fn check(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            p.check_alive()?;
        }
        Ok(())
    }

    fn progress(&mut self, done: usize) {
        self.bar.set_position(done as u64);
    }

    fn pause(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            p.set_running(false)?;
        }
        Ok(())
    }

    fn resume(&mut self) -> anyhow::Result<()> {
        if let Some((dir, stem)) = self.profile.take() {
            std::fs::create_dir_all(&dir)?;
            for p in &self.procs {
                let role = p.name.rsplit_once('-').map(|(_, r)| r).unwrap_or(&p.name);
                let out = dir.join(format!("{stem}-{role}.perf.data"));
                let child = Command::new("perf")
                    .args([
                        "record",
                        "-F",
                        "999",
                        "-g",
                        "--call-graph",
                        "dwarf,16384",
                        "-p",
                    ])
                    .arg(p.pid().to_string())
                    .arg("-o")
                    .arg(&out)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .context("starting `perf record` (install linux-perf)")?;
                procs::track(child.id());
                self.profilers.push(child);
            }
            // Let perf attach before the clock starts.
            std::thread::sleep(Duration::from_millis(700));
        }
        for p in &mut self.procs {
            p.set_running(true)?;
        }
        Ok(())
    }
}

impl Services<'_> {
    /// VmHWM of every service process, by role.
    fn peak_rss(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for p in &self.procs {
            // `<implementation>-<role>`: role names have no `-`, implementation names may.
            let role = p.name.rsplit_once('-').map(|(_, r)| r).unwrap_or(&p.name);
            out.insert(role.to_owned(), procs::peak_rss_mib(p.pid())?);
        }
        Ok(out)
    }

    /// Stops the profilers (SIGINT: perf writes its file and exits).
    fn stop_profilers(&mut self) {
        for mut child in self.profilers.drain(..) {
            // SAFETY: kill(2) on our own, unreaped child.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            let _ = child.wait();
            procs::untrack(child.id());
        }
    }

    /// CPU seconds of every service process: (schedstat, stat ticks).
    fn cpu_seconds(&self) -> anyhow::Result<(f64, f64)> {
        let mut total = (0.0, 0.0);
        for p in &self.procs {
            let (a, b) = procs::cpu_seconds(p.pid())?;
            total.0 += a;
            total.1 += b;
        }
        Ok(total)
    }
}

fn measure_one(
    rt: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    args: &RunArgs,
    c: Config<'_>,
    bar: &ProgressBar,
) -> anyhow::Result<Run> {
    let mut topics: Vec<String> = c
        .workload
        .topics()
        .iter()
        .map(|t| format!("{}{t}", c.prefix))
        .collect();
    if c.implementation == Implementation::RawLogged {
        // Where its steps and markers go (the framework's services create theirs themselves).
        topics.push(format!(
            "{}{}",
            c.prefix,
            choreograph::saga_log::DEFAULT_TOPIC
        ));
        for role in c.workload.roles() {
            topics.push(format!("{}{}.handled", c.prefix, role.name()));
        }
    }
    create_topics(rt, admin, &topics, args.partitions)?;
    let load_before = load_average();

    let mut services = Services {
        procs: Vec::new(),
        bar,
        profile: None,
        profilers: Vec::new(),
    };
    let label = format!(
        "{} {} {} #{}",
        c.implementation.name(),
        c.mode.short(),
        c.workload.name(),
        c.rep
    );
    // Names in logs and profiles: <impl>-<mode>-<workload>-r<rep>.
    let stem = format!(
        "{}-{}-{}-r{}",
        c.implementation.name(),
        c.mode.short(),
        c.workload.name(),
        c.rep
    );
    for role in c.workload.roles() {
        let name = format!("{}-{}", c.implementation.name(), role.name());
        let log = c.logs.join(format!("{stem}-{}.log", role.name()));
        let (program, argv): (&Path, Vec<String>) = match c.implementation {
            Implementation::Watermill => (
                c.watermill.context("the Watermill peer was not built")?,
                vec![
                    "-role".into(),
                    role.name().into(),
                    "-brokers".into(),
                    c.brokers.into(),
                    "-prefix".into(),
                    c.prefix.into(),
                ],
            ),
            _ => {
                let mut argv: Vec<String> = vec![
                    "service".into(),
                    "--impl".into(),
                    c.implementation.name().into(),
                    "--role".into(),
                    role.name().into(),
                    "--brokers".into(),
                    c.brokers.into(),
                    "--prefix".into(),
                    c.prefix.into(),
                    "--mode".into(),
                    c.mode.name().into(),
                    // Stable per process: exactly-once, the transactional.id is
                    // <group>.<instance>, and the group is unique to this configuration.
                    "--instance-id".into(),
                    format!("{}-1", role.name()),
                ];
                for (k, v) in &args.kafka_properties {
                    argv.push("--property".into());
                    argv.push(format!("{k}={v}"));
                }
                if let (Implementation::Choreograph | Implementation::ChoreographBare, Some(m)) =
                    (c.implementation, args.max_in_flight)
                {
                    argv.push("--max-in-flight".into());
                    argv.push(m.to_string());
                }
                (c.exe, argv)
            }
        };
        let heap_profile = match (&args.heap_profile_dir, c.implementation) {
            (None, _) | (_, Implementation::Watermill) => None,
            _ if c.rep == 0 => None,
            (Some(dir), _) => Some(dir.join(format!("{stem}-{}.heaptrack.zst", role.name()))),
        };
        services.procs.push(ServiceProcess::spawn(
            &name,
            program,
            &argv,
            log,
            heap_profile.as_deref(),
        )?);
    }

    let result = (|| -> anyhow::Result<Run> {
        let mut driver = Driver::new(c.brokers, c.prefix, c.workload, c.mode)?;
        let stall = Duration::from_secs(args.stall_timeout);
        let set_phase = |what: &str, n: usize| {
            bar.reset();
            bar.set_length(n as u64);
            bar.set_message(format!("{label}: {what}"));
        };

        // Warm-up: also waits until every service has joined its group and is assigned.
        set_phase("warm-up (group joins)", args.warmup_sagas);
        let warm_stall = stall.max(Duration::from_secs(120));
        let warm = driver.run(
            rt,
            args.warmup_sagas,
            Pace::Saturate,
            warm_stall,
            &mut services,
        )?;
        std::thread::sleep(Duration::from_millis(500));

        // Fixed rate first, so its peak RSS is not the saturation backlog's.
        set_phase(&format!("fixed rate {}/s", args.rate), args.latency_sagas);
        let cpu2 = services.cpu_seconds()?;
        let fixed = driver.run(
            rt,
            args.latency_sagas,
            Pace::Rate(args.rate),
            stall,
            &mut services,
        )?;
        let cpu3 = services.cpu_seconds()?;
        let rss_fixed = services.peak_rss()?;
        std::thread::sleep(Duration::from_millis(500));

        // CPU while stopped does not move, so sampling before the backlog is published is
        // the same as sampling at the resume.
        set_phase("saturation (backlog)", args.sagas);
        services.profile = args
            .profile_dir
            .as_ref()
            .filter(|_| c.rep > 0)
            .map(|d| (d.clone(), stem.clone()));
        let broker_cpu = || {
            c.broker_pid
                .and_then(|p| procs::cpu_seconds(p).ok())
                .map(|c| c.0)
        };
        let cpu0 = services.cpu_seconds()?;
        let broker0 = broker_cpu();
        let sat = driver.run(rt, args.sagas, Pace::Backlog, stall, &mut services);
        let cpu1 = services.cpu_seconds()?;
        let broker1 = broker_cpu();
        services.stop_profilers();
        let sat = sat?;
        let peak_rss_mib = services.peak_rss()?;

        let duplicates = driver.duplicates();
        if c.mode == Mode::ExactlyOnce {
            driver.check_no_duplicates()?;
        }
        if driver.strays() > 0 {
            bail!(
                "{} terminal events are wrong (wrong type, wrong data, or no saga the driver started)",
                driver.strays()
            );
        }
        let secs = sat.elapsed.as_secs_f64();
        Ok(Run {
            implementation: c.implementation,
            mode: c.mode,
            workload: c.workload,
            repetition: c.rep,
            throughput_sagas: args.sagas,
            throughput_seconds: secs,
            throughput_sagas_per_s: args.sagas as f64 / secs,
            backlog_publish_seconds: sat.publish_elapsed.as_secs_f64(),
            saturation_latency_ms: Percentiles::of(&sat.latencies()),
            latency_sagas: args.latency_sagas,
            offered_rate: args.rate,
            latency_ms: Percentiles::of(&fixed.latencies()),
            latency_us: {
                let mut sagas = fixed.sagas.clone();
                sagas.sort_unstable_by_key(|&(start, _)| start);
                sagas
                    .iter()
                    .map(|&(start, end)| {
                        u32::try_from((end - start).as_micros()).unwrap_or(u32::MAX)
                    })
                    .collect()
            },
            driver_observation_ms: Percentiles::of(&fixed.observation),
            cpu_s_per_1k_sagas: (cpu1.0 - cpu0.0) / args.sagas as f64 * 1000.0,
            broker_cpu_s_per_1k_sagas: broker0
                .zip(broker1)
                .map(|(a, b)| (b - a) / args.sagas as f64 * 1000.0),
            cpu_s_per_1k_sagas_stat_ticks: (cpu1.1 - cpu0.1) / args.sagas as f64 * 1000.0,
            cpu_s_per_1k_sagas_fixed_rate: (cpu3.0 - cpu2.0) / args.latency_sagas as f64 * 1000.0,
            peak_rss_mib,
            peak_rss_mib_fixed_rate: rss_fixed,
            load_average: (load_before, load_average()),
            duplicate_terminals: warm.duplicates + sat.duplicates + fixed.duplicates,
            terminal_records: duplicates.records,
            duplicate_terminal_sagas: duplicates.sagas,
            duplicate_terminal_ce_ids: duplicates.ids,
            log_records: log_records(
                admin,
                &c,
                (args.warmup_sagas + args.latency_sagas + args.sagas) as u64,
            ),
        })
    })();
    let failed = result.is_err();
    for p in services.procs {
        if failed {
            eprintln!("  log of {}: {}", p.name, p.log.display());
        }
        p.stop(Duration::from_secs(10));
    }
    result
}

/// The saga-log and handled-marker records written over a configuration, for the
/// implementations that write them (`None` for the others, or when the broker does not say).
fn log_records(
    admin: &AdminClient<DefaultClientContext>,
    c: &Config<'_>,
    sagas: u64,
) -> Option<LogRecords> {
    if !matches!(
        c.implementation,
        Implementation::Choreograph | Implementation::RawLogged
    ) {
        return None;
    }
    let records = |topic: &str| -> Option<u64> {
        let timeout = Duration::from_secs(10);
        let metadata = admin.inner().fetch_metadata(Some(topic), timeout).ok()?;
        let partitions = metadata.topics().first()?.partitions().len();
        (0..partitions as i32)
            .map(|p| {
                let (low, high) = admin.inner().fetch_watermarks(topic, p, timeout).ok()?;
                Some((high - low).max(0) as u64)
            })
            .sum()
    };
    let saga_log_records = records(&format!(
        "{}{}",
        c.prefix,
        choreograph::saga_log::DEFAULT_TOPIC
    ))?;
    let handled_records = c
        .workload
        .roles()
        .iter()
        .map(|r| records(&format!("{}{}.handled", c.prefix, r.name())))
        .sum::<Option<u64>>()?;
    Some(LogRecords {
        inputs: sagas * c.workload.inputs_per_saga(),
        saga_log_records,
        handled_records,
    })
}

fn create_topics(
    rt: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = rt.block_on(admin.create_topics(&new, &opts))?;
    for r in results {
        if let Err((topic, code)) = r {
            bail!("creating topic {topic}: {code}");
        }
    }
    // Wait until every partition has a leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in topics {
        loop {
            let md = admin
                .inner()
                .fetch_metadata(Some(t), Duration::from_secs(10))?;
            let ready = md.topics().first().is_some_and(|mt| {
                mt.error().is_none()
                    && mt.partitions().len() == partitions as usize
                    && mt.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("topic {t} has no leader for every partition after 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Deletes every topic whose name starts with `prefix` (the framework's dead-letter topics
/// included).
fn delete_topics(
    rt: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    prefix: &str,
) -> anyhow::Result<()> {
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    drop(md);
    if names.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    rt.block_on(admin.delete_topics(&refs, &opts))?;
    Ok(())
}

/// Produces and consumes a few tens of thousands of small records (acks=all, idempotent, a
/// consumer group with commits), so the broker's JIT and caches are warm before measuring.
fn warm_broker(
    rt: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<()> {
    const N: usize = 30_000;
    create_topics(rt, admin, &[topic.to_owned()], 6)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()?;
    let payload = vec![b'x'; 200];
    rt.block_on(async {
        let mut acks = Vec::with_capacity(N);
        for i in 0..N {
            let key = i.to_string();
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            match producer.send_result(record) {
                Ok(a) => acks.push(a),
                Err((e, _)) => bail!("warm-up produce failed: {e}"),
            }
        }
        for a in acks {
            if let Ok(Err((e, _))) = a.await {
                bail!("warm-up produce failed: {e}");
            }
        }
        Ok(())
    })?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}.group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen < N {
        if Instant::now() > deadline {
            bail!("broker warm-up: read {seen} of {N} records in 120 s");
        }
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    consumer.unsubscribe();
    drop(consumer);
    delete_topics(rt, admin, topic)?;
    Ok(())
}

/// Builds the Go peer (`bench/watermill`) next to this executable.
fn build_watermill(bench_dir: &Path, exe: &Path) -> anyhow::Result<PathBuf> {
    let src = bench_dir.join("watermill");
    let out = exe
        .parent()
        .context("executable has no directory")?
        .join("watermill-bench");
    eprintln!(
        "building the Watermill peer (go build in {})",
        src.display()
    );
    let status = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod")
        .status()
        .context(
            "running `go build` (is Go installed? or leave watermill out: --impls choreograph,raw)",
        )?;
    if !status.success() {
        bail!("go build of {} failed ({status})", src.display());
    }
    Ok(out)
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The `CHOREOGRAPH_*` variables of the harness's environment, which the framework's service
/// processes inherit and read (`KEY=VALUE`, space-separated; empty when none is set).
fn choreograph_variables() -> String {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CHOREOGRAPH_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    vars.join(" ")
}

/// Where the broker the harness starts keeps its data: `--broker-data`, else /dev/shm when it
/// is a writable tmpfs (no disk under the broker's memory-mapped index files), else the run's
/// work folder in $TMPDIR.
fn broker_data_parent(chosen: Option<&Path>, work: &Path) -> PathBuf {
    if let Some(dir) = chosen {
        return dir.to_owned();
    }
    let shm = Path::new("/dev/shm");
    let writable = shm.is_dir() && tempfile_probe(shm).is_ok() && filesystem_of(shm) == "tmpfs";
    if writable {
        shm.to_owned()
    } else {
        work.to_owned()
    }
}

fn tempfile_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".choreograph-bench-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// The type of the file system that holds `path` (the longest mount point of /proc/mounts that
/// is a prefix of it), e.g. `tmpfs`, `ext4`; empty when unknown.
pub(crate) fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), fstype.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fstype)| fstype)
        .unwrap_or_default()
}

fn environment(args: &RunArgs, broker_data: Option<String>) -> BTreeMap<&'static str, String> {
    let mut env = BTreeMap::new();
    // The started broker's data folder and its file system (tmpfs or a disk).
    env.insert("broker_data", broker_data.unwrap_or_default());
    // A what-if run must be told from a default one.
    env.insert("choreograph_variables", choreograph_variables());
    env.insert(
        "cpus",
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
    env.insert(
        "cpu_model",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default(),
    );
    env.insert("kernel", command_line("uname", &["-r"]));
    env.insert("librdkafka", rdkafka::util::get_rdkafka_version().1);
    env.insert("go", command_line("go", &["version"]));
    env.insert("java", {
        let out = Command::new("java").arg("-version").output().ok();
        out.map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
    });
    env.insert(
        "kafka",
        match &args.brokers {
            Some(b) => format!("external cluster at {b}"),
            None => format!(
                "Apache Kafka {} (scripts/kafka-local.sh, 1 node, loopback)",
                std::env::var("KAFKA_VERSION").unwrap_or_else(|_| "4.3.1".into())
            ),
        },
    );
    env.insert(
        "git_commit",
        command_line(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        ),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_system_of_a_path_is_its_longest_mount_point() {
        // /proc is procfs on every Linux; a path below it belongs to it too.
        assert_eq!(filesystem_of(Path::new("/proc")), "proc");
        assert_eq!(filesystem_of(Path::new("/proc/self/status")), "proc");
        // / is mounted, so a path always has a file system.
        assert!(!filesystem_of(Path::new("/")).is_empty());
    }

    #[test]
    fn a_chosen_broker_folder_is_taken_as_given() {
        let work = Path::new("/nonexistent/work");
        assert_eq!(
            broker_data_parent(Some(Path::new("/var/tmp")), work),
            Path::new("/var/tmp")
        );
        let default = broker_data_parent(None, work);
        assert!(default == Path::new("/dev/shm") || default == work);
    }
}
