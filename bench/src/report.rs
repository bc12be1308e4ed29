//! Results: one record per measured run, summaries (median, min–max over repetitions), ratios
//! against raw of the same delivery mode from the same harness run, exactly-once against
//! at-least-once per implementation, the targets, Markdown tables and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Implementation, Mode, Workload};

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles.
    pub fn of(latencies: &[Duration]) -> Self {
        Self::of_ms(latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    /// Nearest-rank percentiles of latencies in milliseconds.
    pub fn of_ms(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if ms.is_empty() {
                return f64::NAN;
            }
            let rank = (q * ms.len() as f64).ceil() as usize;
            ms[rank.clamp(1, ms.len()) - 1]
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: ms.last().copied().unwrap_or(f64::NAN),
            mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        }
    }
}

/// One implementation × delivery mode × workload × repetition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub implementation: Implementation,
    /// Absent in results files written before the mode existed: at-least-once.
    #[serde(default)]
    pub mode: Mode,
    pub workload: Workload,
    pub repetition: usize,
    /// Saturation: a backlog of this many sagas, seconds from resuming the services to the last
    /// terminal event, sagas/s.
    pub throughput_sagas: usize,
    pub throughput_seconds: f64,
    pub throughput_sagas_per_s: f64,
    /// How long publishing the backlog took (services stopped meanwhile; not in the timing).
    pub backlog_publish_seconds: f64,
    /// Latency of the sagas of the saturation batch (queueing included; for reference).
    pub saturation_latency_ms: Percentiles,
    /// Fixed offered rate: sagas, rate, end-to-end latency.
    pub latency_sagas: usize,
    pub offered_rate: f64,
    pub latency_ms: Percentiles,
    /// Every saga's latency of the fixed-rate batch, microseconds, in the order offered: the
    /// summary pools them over the repetitions (empty in results files written before).
    #[serde(default)]
    pub latency_us: Vec<u32>,
    /// Of that latency, the last hop's delivery to the driver (terminal record timestamp to
    /// the driver seeing it; millisecond timestamps).
    pub driver_observation_ms: Percentiles,
    /// CPU seconds (all threads of all service processes, /proc/PID/task/*/schedstat) per
    /// 1,000 sagas, saturation batch.
    pub cpu_s_per_1k_sagas: f64,
    /// The broker's CPU over the same batch, per 1,000 sagas (when the harness started it): the
    /// load an implementation puts on Kafka, which shares the machine's cores.
    pub broker_cpu_s_per_1k_sagas: Option<f64>,
    /// The same from utime+stime of /proc/PID/stat (10 ms ticks), for cross-checking.
    pub cpu_s_per_1k_sagas_stat_ticks: f64,
    /// The same over the fixed-rate batch.
    pub cpu_s_per_1k_sagas_fixed_rate: f64,
    /// Peak RSS (VmHWM) per service process over the whole run, i.e. with the saturation
    /// backlog, MiB.
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// Peak RSS per service process before the backlog: warm-up and the fixed-rate batch.
    pub peak_rss_mib_fixed_rate: BTreeMap<String, f64>,
    /// Terminal events of a batch's sagas seen twice within the batch (at-least-once
    /// redelivery), all batches.
    pub duplicate_terminals: usize,
    /// Valid terminal records the watcher read over the whole configuration (warm-up, fixed
    /// rate, saturation), and how many of them repeated a correlation ID or a `ce_id` read
    /// before. Exactly-once: a repeat fails the run, so a recorded exactly-once run has 0.
    #[serde(default)]
    pub terminal_records: usize,
    #[serde(default)]
    pub duplicate_terminal_sagas: usize,
    #[serde(default)]
    pub duplicate_terminal_ce_ids: usize,
    /// The machine's 1-minute load average when the configuration started and ended (on 2
    /// cores, anything well above 2 means other work competed with the measurement).
    pub load_average: (f64, f64),
    /// Saga-log and handled-marker records the services wrote over the whole configuration
    /// (implementations that write them).
    #[serde(default)]
    pub log_records: Option<LogRecords>,
}

/// How the saga-log steps and handled markers of a configuration were batched into records.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct LogRecords {
    /// Inputs the services handled: sagas started (warm-up, fixed rate, saturation) × inputs
    /// per saga (one step and one marker each).
    pub inputs: u64,
    /// Offsets the saga-log topic and the services' handled topics advanced by (exactly-once
    /// this includes the transactions' commit markers).
    pub saga_log_records: u64,
    pub handled_records: u64,
}

impl Run {
    pub fn max_rss(&self) -> f64 {
        self.peak_rss_mib.values().copied().fold(0.0, f64::max)
    }

    pub fn max_rss_fixed_rate(&self) -> f64 {
        self.peak_rss_mib_fixed_rate
            .values()
            .copied()
            .fold(0.0, f64::max)
    }
}

/// Median and range over repetitions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Self {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// An implementation × delivery mode × workload over its repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub implementation: Implementation,
    pub mode: Mode,
    pub workload: Workload,
    pub repetitions: usize,
    pub throughput_sagas_per_s: Spread,
    pub latency_p50_ms: Spread,
    pub latency_p90_ms: Spread,
    pub latency_p99_ms: Spread,
    pub latency_max_ms: Spread,
    /// Percentiles of the fixed-rate latencies of all repetitions together (`None` when a
    /// repetition has no samples recorded): with 500 sagas a batch, one batch's p99 (nearest
    /// rank) is its 6th-worst saga, so a single stall moves it; pooled, the p99 of 3 × 500 is
    /// the 16th-worst.
    pub latency_pooled_ms: Option<Percentiles>,
    pub cpu_s_per_1k_sagas: Spread,
    /// The broker's CPU per 1,000 sagas over the saturation batch.
    pub broker_cpu_s_per_1k_sagas: Spread,
    /// Largest service process of each repetition, whole run (saturation backlog included).
    pub peak_rss_mib: Spread,
    /// Largest service process of each repetition, before the backlog (fixed rate).
    pub peak_rss_mib_fixed_rate: Spread,
    /// The machine's 1-minute load average while measuring (the higher of start and end).
    pub load_average: Spread,
    /// Per service process, over repetitions.
    pub peak_rss_mib_per_service: BTreeMap<String, Spread>,
    /// Terminal records that repeated a correlation ID, all repetitions (at-least-once:
    /// redelivery; exactly-once: must be 0).
    pub duplicate_terminal_sagas: usize,
    /// Inputs per saga-log record and per handled-marker record, all repetitions (how well
    /// the steps and markers were batched), for implementations that write them (`None` for a
    /// topic with no record, e.g. with the saga log turned off).
    pub inputs_per_log_record: Option<(Option<f64>, Option<f64>)>,
    /// Ratios of medians against raw of the same mode and harness run (absent for raw itself
    /// or when raw was not measured in this mode).
    pub vs_raw: Option<Ratios>,
    /// Exactly-once rows: ratios of medians against the same implementation's at-least-once
    /// row of the same run (absent when that was not measured).
    pub eos_vs_alo: Option<ModeRatios>,
}

/// Exactly-once medians divided by at-least-once medians, one implementation and workload.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ModeRatios {
    pub throughput: f64,
    /// The throughput ratio per repetition (exactly-once run ÷ the at-least-once run of the
    /// same repetition, measured a few tens of seconds apart), median and range: less exposed
    /// to slow drift of a shared machine than the ratio of medians.
    pub throughput_paired: Spread,
    pub latency_p50: f64,
    pub latency_p99: f64,
    pub cpu: f64,
    pub peak_rss: f64,
}

/// An implementation × mode asked for but not measurable, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unavailable {
    pub implementation: Implementation,
    pub mode: Mode,
    pub workload: Workload,
    pub reason: String,
}

/// The implementation × mode × workload combinations without a row.
pub fn unavailable(
    impls: &[Implementation],
    workloads: &[Workload],
    modes: &[Mode],
) -> Vec<Unavailable> {
    let mut out = Vec::new();
    for &workload in workloads {
        for &mode in modes {
            for &implementation in impls {
                if let Some(reason) = implementation.unavailable(mode) {
                    out.push(Unavailable {
                        implementation,
                        mode,
                        workload,
                        reason: reason.to_owned(),
                    });
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ratios {
    pub throughput: f64,
    pub latency_p99: f64,
    /// The pooled p99 against raw's pooled p99 (when both have samples).
    pub latency_p99_pooled: Option<f64>,
    pub cpu: f64,
    pub peak_rss: f64,
}

pub fn summarize(runs: &[Run]) -> Vec<Summary> {
    let mut keys: Vec<(Workload, Mode, Implementation)> = Vec::new();
    for r in runs {
        if !keys.contains(&(r.workload, r.mode, r.implementation)) {
            keys.push((r.workload, r.mode, r.implementation));
        }
    }
    // Per workload: at-least-once first, then exactly-once; implementations in run order.
    keys.sort_by_key(|&(w, m, _)| {
        (
            runs.iter().position(|r| r.workload == w).unwrap_or(0),
            m == Mode::ExactlyOnce,
        )
    });
    let mut out: Vec<Summary> = keys
        .iter()
        .map(|&(w, m, i)| {
            let rs: Vec<&Run> = runs
                .iter()
                .filter(|r| r.workload == w && r.mode == m && r.implementation == i)
                .collect();
            let mut per_service: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &rs {
                for (k, v) in &r.peak_rss_mib {
                    per_service.entry(k.clone()).or_default().push(*v);
                }
            }
            Summary {
                implementation: i,
                mode: m,
                workload: w,
                repetitions: rs.len(),
                throughput_sagas_per_s: Spread::of(rs.iter().map(|r| r.throughput_sagas_per_s)),
                latency_p50_ms: Spread::of(rs.iter().map(|r| r.latency_ms.p50)),
                latency_p90_ms: Spread::of(rs.iter().map(|r| r.latency_ms.p90)),
                latency_p99_ms: Spread::of(rs.iter().map(|r| r.latency_ms.p99)),
                latency_max_ms: Spread::of(rs.iter().map(|r| r.latency_ms.max)),
                latency_pooled_ms: rs.iter().all(|r| !r.latency_us.is_empty()).then(|| {
                    Percentiles::of_ms(
                        rs.iter()
                            .flat_map(|r| r.latency_us.iter().map(|&us| f64::from(us) / 1e3))
                            .collect(),
                    )
                }),
                cpu_s_per_1k_sagas: Spread::of(rs.iter().map(|r| r.cpu_s_per_1k_sagas)),
                broker_cpu_s_per_1k_sagas: Spread::of(
                    rs.iter().filter_map(|r| r.broker_cpu_s_per_1k_sagas),
                ),
                peak_rss_mib: Spread::of(rs.iter().map(|r| r.max_rss())),
                peak_rss_mib_fixed_rate: Spread::of(rs.iter().map(|r| r.max_rss_fixed_rate())),
                load_average: Spread::of(rs.iter().map(|r| r.load_average.0.max(r.load_average.1))),
                peak_rss_mib_per_service: per_service
                    .into_iter()
                    .map(|(k, v)| (k, Spread::of(v)))
                    .collect(),
                duplicate_terminal_sagas: rs.iter().map(|r| r.duplicate_terminal_sagas).sum(),
                inputs_per_log_record: {
                    let logs: Vec<LogRecords> = rs.iter().filter_map(|r| r.log_records).collect();
                    let inputs = logs.iter().map(|l| l.inputs).sum::<u64>() as f64;
                    let per = |records: u64| (records > 0).then(|| inputs / records as f64);
                    (!logs.is_empty()).then(|| {
                        (
                            per(logs.iter().map(|l| l.saga_log_records).sum()),
                            per(logs.iter().map(|l| l.handled_records).sum()),
                        )
                    })
                },
                vs_raw: None,
                eos_vs_alo: None,
            }
        })
        .collect();
    let all = out.clone();
    for s in &mut out {
        if s.implementation != Implementation::Raw {
            if let Some(raw) = all.iter().find(|r| {
                r.implementation == Implementation::Raw
                    && r.workload == s.workload
                    && r.mode == s.mode
            }) {
                s.vs_raw = Some(Ratios {
                    throughput: s.throughput_sagas_per_s.median / raw.throughput_sagas_per_s.median,
                    latency_p99: s.latency_p99_ms.median / raw.latency_p99_ms.median,
                    latency_p99_pooled: s
                        .latency_pooled_ms
                        .as_ref()
                        .zip(raw.latency_pooled_ms.as_ref())
                        .map(|(s, r)| s.p99 / r.p99),
                    cpu: s.cpu_s_per_1k_sagas.median / raw.cpu_s_per_1k_sagas.median,
                    peak_rss: s.peak_rss_mib.median / raw.peak_rss_mib.median,
                });
            }
        }
        if s.mode == Mode::ExactlyOnce {
            if let Some(alo) = all.iter().find(|a| {
                a.implementation == s.implementation
                    && a.workload == s.workload
                    && a.mode == Mode::AtLeastOnce
            }) {
                let paired = runs.iter().filter(|e| {
                    e.mode == Mode::ExactlyOnce
                        && e.implementation == s.implementation
                        && e.workload == s.workload
                });
                let paired = Spread::of(paired.filter_map(|e| {
                    runs.iter()
                        .find(|a| {
                            a.mode == Mode::AtLeastOnce
                                && a.implementation == e.implementation
                                && a.workload == e.workload
                                && a.repetition == e.repetition
                        })
                        .map(|a| e.throughput_sagas_per_s / a.throughput_sagas_per_s)
                }));
                s.eos_vs_alo = Some(ModeRatios {
                    throughput: s.throughput_sagas_per_s.median / alo.throughput_sagas_per_s.median,
                    throughput_paired: paired,
                    latency_p50: s.latency_p50_ms.median / alo.latency_p50_ms.median,
                    latency_p99: s.latency_p99_ms.median / alo.latency_p99_ms.median,
                    cpu: s.cpu_s_per_1k_sagas.median / alo.cpu_s_per_1k_sagas.median,
                    peak_rss: s.peak_rss_mib.median / alo.peak_rss_mib.median,
                });
            }
        }
    }
    out
}

/// One of the targets, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub workload: Workload,
    pub name: String,
    pub measured: String,
    /// `None`: not measurable in this run (an implementation or mode is missing).
    pub met: Option<bool>,
}

pub fn targets(summaries: &[Summary]) -> Vec<Target> {
    let mut out = Vec::new();
    let find = |w: Workload, m: Mode, i: Implementation| {
        summaries
            .iter()
            .find(|s| s.workload == w && s.mode == m && s.implementation == i)
    };
    let mut workloads: Vec<Workload> = Vec::new();
    for s in summaries {
        if !workloads.contains(&s.workload) {
            workloads.push(s.workload);
        }
    }
    for w in workloads {
        let alo = find(w, Mode::AtLeastOnce, Implementation::Choreograph);
        let eos = find(w, Mode::ExactlyOnce, Implementation::Choreograph);
        if alo.is_none() && eos.is_none() {
            continue;
        }
        let ratio_target =
            |name: &str, num: Option<f64>, den: Option<f64>, ok: &dyn Fn(f64) -> bool| match num
                .zip(den)
            {
                Some((n, d)) => {
                    let r = n / d;
                    Target {
                        workload: w,
                        name: name.to_owned(),
                        measured: format!("{r:.2}×"),
                        met: Some(ok(r)),
                    }
                }
                None => Target {
                    workload: w,
                    name: name.to_owned(),
                    measured: "not measured in this run".into(),
                    met: None,
                },
            };
        let raw_alo = find(w, Mode::AtLeastOnce, Implementation::Raw);
        let wm_alo = find(w, Mode::AtLeastOnce, Implementation::Watermill);
        let mut raw_target = ratio_target(
            "at-least-once throughput ≥ 0.9 × raw",
            alo.map(|c| c.throughput_sagas_per_s.median),
            raw_alo.map(|r| r.throughput_sagas_per_s.median),
            &|r| r >= 0.9,
        );
        // The same durable work written by hand: how far the saga log and markers alone take
        // the client's limit, and the framework against that.
        if let (Some(c), Some(r), Some(logged)) = (
            alo,
            raw_alo,
            find(w, Mode::AtLeastOnce, Implementation::RawLogged),
        ) {
            let l = logged.throughput_sagas_per_s.median;
            let _ = write!(
                raw_target.measured,
                " (raw-logged: {:.2}× raw; choreograph ÷ raw-logged: {:.2}×)",
                l / r.throughput_sagas_per_s.median,
                c.throughput_sagas_per_s.median / l
            );
        }
        out.push(raw_target);
        out.push(ratio_target(
            "at-least-once throughput ≥ 2 × Watermill",
            alo.map(|c| c.throughput_sagas_per_s.median),
            wm_alo.map(|r| r.throughput_sagas_per_s.median),
            &|r| r >= 2.0,
        ));
        let mut p99_target = ratio_target(
            "p99 at the fixed rate ≤ 1.2 × raw",
            alo.map(|c| c.latency_p99_ms.median),
            raw_alo.map(|r| r.latency_p99_ms.median),
            &|r| r <= 1.2,
        );
        // The same split for the tail: raw with the framework's durable work, and the framework
        // without it.
        if alo.and(raw_alo).is_some() {
            let others: Vec<String> = [Implementation::RawLogged, Implementation::ChoreographBare]
                .into_iter()
                .filter_map(|i| {
                    let vs = find(w, Mode::AtLeastOnce, i)?.vs_raw?;
                    Some(format!("{}: {:.2}× raw", i.name(), vs.latency_p99))
                })
                .collect();
            if !others.is_empty() {
                let _ = write!(p99_target.measured, " ({})", others.join("; "));
            }
        }
        // The same from all repetitions' sagas together, a steadier estimate (shown, not judged:
        // the target is the median of the repetitions' p99s, as for every other figure).
        if let Some(pooled) = alo
            .and_then(|c| c.vs_raw)
            .and_then(|v| v.latency_p99_pooled)
        {
            let _ = write!(
                p99_target.measured,
                "; pooled over the repetitions' sagas: {pooled:.2}×"
            );
        }
        out.push(p99_target);
        let mut eos_target = ratio_target(
            "exactly-once throughput ≥ 0.5 × at-least-once",
            eos.map(|c| c.throughput_sagas_per_s.median),
            alo.map(|c| c.throughput_sagas_per_s.median),
            &|r| r >= 0.5,
        );
        if let (Some(e), Some(a)) = (eos, alo) {
            let _ = write!(
                eos_target.measured,
                " ({:.0} ÷ {:.0} sagas/s",
                e.throughput_sagas_per_s.median, a.throughput_sagas_per_s.median
            );
            if let Some(p) = e.eos_vs_alo.map(|r| r.throughput_paired) {
                let _ = write!(
                    eos_target.measured,
                    "; per repetition {:.2} ({:.2}–{:.2})",
                    p.median, p.min, p.max
                );
            }
            if let Some(r) =
                find(w, Mode::ExactlyOnce, Implementation::Raw).and_then(|r| r.eos_vs_alo)
            {
                let _ = write!(eos_target.measured, "; raw: {:.2}×", r.throughput);
            }
            eos_target.measured.push(')');
        }
        out.push(eos_target);
        for c in [alo, eos].into_iter().flatten() {
            out.push(Target {
                workload: w,
                name: format!(
                    "peak RSS per service process < 30 MiB, fixed rate ({})",
                    c.mode.name()
                ),
                measured: format!(
                    "{:.1} MiB (largest service, worst repetition)",
                    c.peak_rss_mib_fixed_rate.max
                ),
                met: Some(c.peak_rss_mib_fixed_rate.max < 30.0),
            });
            out.push(Target {
                workload: w,
                name: format!(
                    "peak RSS per service process < 30 MiB, with the saturation backlog ({})",
                    c.mode.name()
                ),
                measured: format!(
                    "{:.1} MiB (largest service, worst repetition)",
                    c.peak_rss_mib.max
                ),
                met: Some(c.peak_rss_mib.max < 30.0),
            });
        }
    }
    out
}

fn cell(s: Spread, decimals: usize) -> String {
    if !s.median.is_finite() {
        return "–".into();
    }
    format!(
        "{:.d$} ({:.d$}–{:.d$})",
        s.median,
        s.min,
        s.max,
        d = decimals
    )
}

fn ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r.is_finite() => format!("{r:.2}×"),
        _ => "–".into(),
    }
}

/// Re-prints the tables of a results file written by the harness.
pub fn reprint(path: &std::path::Path) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Settings {
        rate: f64,
        reps: usize,
    }
    #[derive(Deserialize)]
    struct File {
        settings: Settings,
        runs: Vec<Run>,
        #[serde(default)]
        unavailable: Vec<Unavailable>,
    }
    let text = std::fs::read_to_string(path)?;
    let file: File = serde_json::from_str(&text)?;
    let summaries = summarize(&file.runs);
    let targets = targets(&summaries);
    println!(
        "{}",
        markdown(
            &summaries,
            &targets,
            &file.unavailable,
            file.settings.rate,
            file.settings.reps
        )
    );
    Ok(())
}

/// The results as Markdown: per workload one table (both modes, ratios against raw of the
/// same mode) and the exactly-once ÷ at-least-once ratios; then the targets.
pub fn markdown(
    summaries: &[Summary],
    targets: &[Target],
    unavailable: &[Unavailable],
    rate: f64,
    reps: usize,
) -> String {
    let mut md = String::new();
    let mut workloads: Vec<Workload> = Vec::new();
    for s in summaries {
        if !workloads.contains(&s.workload) {
            workloads.push(s.workload);
        }
    }
    for w in workloads {
        let hops = match w {
            Workload::Registration => 5,
            Workload::Chain => 3,
        };
        let _ = writeln!(
            md,
            "\n### {} ({hops} hops) — median (min–max) of {reps} repetitions\n",
            w.name()
        );
        let _ = writeln!(
            md,
            "| implementation | mode | sagas/s at saturation | × raw | p50 ms @ {rate:.0}/s | p90 ms | p99 ms | p99 × raw | max ms | CPU s / 1k sagas | × raw | broker CPU s / 1k sagas | peak RSS MiB, fixed rate | peak RSS MiB, with backlog |"
        );
        let _ = writeln!(
            md,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let rows: Vec<&Summary> = summaries.iter().filter(|s| s.workload == w).collect();
        for mode in [Mode::AtLeastOnce, Mode::ExactlyOnce] {
            for s in rows.iter().filter(|s| s.mode == mode) {
                let v = s.vs_raw;
                let raw = s.implementation == Implementation::Raw;
                let vs = |f: fn(&Ratios) -> f64| {
                    if raw {
                        "1.00×".to_owned()
                    } else {
                        ratio(v.as_ref().map(f))
                    }
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.implementation.name(),
                    s.mode.name(),
                    cell(s.throughput_sagas_per_s, 0),
                    vs(|r| r.throughput),
                    cell(s.latency_p50_ms, 1),
                    cell(s.latency_p90_ms, 1),
                    cell(s.latency_p99_ms, 1),
                    vs(|r| r.latency_p99),
                    cell(s.latency_max_ms, 1),
                    cell(s.cpu_s_per_1k_sagas, 3),
                    vs(|r| r.cpu),
                    cell(s.broker_cpu_s_per_1k_sagas, 3),
                    cell(s.peak_rss_mib_fixed_rate, 1),
                    cell(s.peak_rss_mib, 1),
                );
            }
            for u in unavailable
                .iter()
                .filter(|u| u.workload == w && u.mode == mode)
            {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | | | | | | | | | | | |",
                    u.implementation.name(),
                    u.mode.name(),
                    u.reason
                );
            }
        }
        let rss: Vec<String> = rows
            .iter()
            .map(|s| {
                let per: Vec<String> = s
                    .peak_rss_mib_per_service
                    .iter()
                    .map(|(k, v)| format!("{k} {:.1}", v.median))
                    .collect();
                format!(
                    "{} {}: {}",
                    s.implementation.name(),
                    s.mode.name(),
                    per.join(", ")
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "\nPeak RSS per service process with the backlog, MiB (median): {}.",
            rss.join("; ")
        );
        let pooled: Vec<String> = rows
            .iter()
            .filter_map(|s| {
                let p = s.latency_pooled_ms.as_ref()?;
                // (Raw has no ratio to itself: its `vs_raw` is `None`.)
                let vs = s
                    .vs_raw
                    .and_then(|v| v.latency_p99_pooled)
                    .map(|r| format!(" ({r:.2}× raw)"))
                    .unwrap_or_default();
                Some(format!(
                    "{} {} p50 {:.1} / p99 {:.1}{vs} / max {:.1}",
                    s.implementation.name(),
                    s.mode.name(),
                    p.p50,
                    p.p99,
                    p.max
                ))
            })
            .collect();
        if !pooled.is_empty() {
            let _ = writeln!(
                md,
                "Latency at the fixed rate, ms, all repetitions' sagas pooled: {}.",
                pooled.join("; ")
            );
        }
        let load: Vec<String> = rows
            .iter()
            .map(|s| {
                format!(
                    "{} {} {:.1}–{:.1}",
                    s.implementation.name(),
                    s.mode.name(),
                    s.load_average.min,
                    s.load_average.max
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "1-minute load average while measuring (2 cores): {}.",
            load.join(", ")
        );
        let dups: Vec<String> = rows
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}",
                    s.implementation.name(),
                    s.mode.name(),
                    s.duplicate_terminal_sagas
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "Duplicate terminal records (same correlation ID), all repetitions: {}.",
            dups.join(", ")
        );
        let batching: Vec<String> = rows
            .iter()
            .filter_map(|s| {
                let (steps, markers) = s.inputs_per_log_record?;
                let per = |x: Option<f64>| x.map_or("–".to_owned(), |x| format!("{x:.1}"));
                Some(format!(
                    "{} {} {} / {}",
                    s.implementation.name(),
                    s.mode.name(),
                    per(steps),
                    per(markers),
                ))
            })
            .collect();
        if !batching.is_empty() {
            let _ = writeln!(
                md,
                "Inputs per saga-log record / per handled-marker record (batching), all repetitions: {}.",
                batching.join(", ")
            );
        }
        let eos: Vec<&&Summary> = rows.iter().filter(|s| s.eos_vs_alo.is_some()).collect();
        if !eos.is_empty() {
            let _ = writeln!(
                md,
                "\nExactly-once ÷ at-least-once, {} (ratios of medians, same implementation, same run):\n",
                w.name()
            );
            let _ = writeln!(
                md,
                "| implementation | throughput | throughput, per repetition: median (min–max) | p50 @ {rate:.0}/s | p99 @ {rate:.0}/s | CPU s / 1k sagas | peak RSS, with backlog |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|");
            for s in eos {
                let r = s.eos_vs_alo.expect("filtered");
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    s.implementation.name(),
                    ratio(Some(r.throughput)),
                    cell(r.throughput_paired, 2),
                    ratio(Some(r.latency_p50)),
                    ratio(Some(r.latency_p99)),
                    ratio(Some(r.cpu)),
                    ratio(Some(r.peak_rss)),
                );
            }
        }
    }
    if !targets.is_empty() {
        let _ = writeln!(md, "\n### Targets (choreograph)\n");
        let _ = writeln!(md, "| workload | target | measured | met |");
        let _ = writeln!(md, "|---|---|---|---|");
        for t in targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {met} |",
                t.workload.name(),
                t.name,
                t.measured
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&l);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
    }

    fn run(implementation: Implementation, mode: Mode, repetition: usize, tput: f64) -> Run {
        let p = Percentiles::of(&[Duration::from_millis(10)]);
        Run {
            implementation,
            mode,
            workload: Workload::Chain,
            repetition,
            throughput_sagas: 1000,
            throughput_seconds: 1000.0 / tput,
            throughput_sagas_per_s: tput,
            backlog_publish_seconds: 0.1,
            saturation_latency_ms: p.clone(),
            latency_sagas: 10,
            offered_rate: 100.0,
            latency_ms: p.clone(),
            latency_us: Vec::new(),
            driver_observation_ms: p,
            cpu_s_per_1k_sagas: 1.0,
            broker_cpu_s_per_1k_sagas: None,
            cpu_s_per_1k_sagas_stat_ticks: 1.0,
            cpu_s_per_1k_sagas_fixed_rate: 1.0,
            peak_rss_mib: BTreeMap::new(),
            peak_rss_mib_fixed_rate: BTreeMap::new(),
            duplicate_terminals: 0,
            terminal_records: 0,
            duplicate_terminal_sagas: 0,
            duplicate_terminal_ce_ids: 0,
            load_average: (1.0, 1.0),
            log_records: None,
        }
    }

    #[test]
    fn ratios_against_raw_of_the_same_mode_and_eos_over_alo() {
        use Implementation::{Choreograph, Raw};
        use Mode::{AtLeastOnce, ExactlyOnce};
        let runs = [
            run(Choreograph, AtLeastOnce, 1, 100.0),
            run(Raw, AtLeastOnce, 1, 400.0),
            run(Choreograph, ExactlyOnce, 1, 60.0),
            run(Raw, ExactlyOnce, 1, 120.0),
            run(Choreograph, AtLeastOnce, 2, 200.0),
            run(Raw, AtLeastOnce, 2, 400.0),
            run(Choreograph, ExactlyOnce, 2, 60.0),
            run(Raw, ExactlyOnce, 2, 120.0),
        ];
        let s = summarize(&runs);
        let get = |i, m| {
            s.iter()
                .find(|x| x.implementation == i && x.mode == m)
                .unwrap()
        };
        // Medians: choreograph ALO 150, raw ALO 400, choreograph EOS 60, raw EOS 120.
        assert_eq!(
            get(Choreograph, AtLeastOnce).vs_raw.unwrap().throughput,
            0.375
        );
        assert_eq!(
            get(Choreograph, ExactlyOnce).vs_raw.unwrap().throughput,
            0.5
        );
        assert!(get(Raw, ExactlyOnce).vs_raw.is_none());
        assert!(get(Choreograph, AtLeastOnce).eos_vs_alo.is_none());
        let c = get(Choreograph, ExactlyOnce).eos_vs_alo.unwrap();
        assert_eq!(c.throughput, 0.4);
        // Per repetition: 0.6 and 0.3.
        assert_eq!(
            (c.throughput_paired.min, c.throughput_paired.max),
            (0.3, 0.6)
        );
        assert_eq!(get(Raw, ExactlyOnce).eos_vs_alo.unwrap().throughput, 0.3);
        let t = targets(&s);
        let eos = t
            .iter()
            .find(|t| t.name.starts_with("exactly-once"))
            .unwrap();
        assert_eq!(eos.met, Some(false));
        assert!(eos.measured.starts_with("0.40×"), "{}", eos.measured);
    }

    #[test]
    fn the_raw_target_says_how_far_raw_logged_gets() {
        use Implementation::{Choreograph, Raw, RawLogged};
        let runs = [
            run(Choreograph, Mode::AtLeastOnce, 1, 150.0),
            run(Raw, Mode::AtLeastOnce, 1, 400.0),
            run(RawLogged, Mode::AtLeastOnce, 1, 200.0),
        ];
        let s = summarize(&runs);
        assert_eq!(
            s.iter()
                .find(|x| x.implementation == RawLogged)
                .and_then(|x| x.vs_raw)
                .map(|r| r.throughput),
            Some(0.5)
        );
        let t = targets(&s);
        let raw = t.iter().find(|t| t.name.contains("0.9 × raw")).unwrap();
        assert_eq!(raw.met, Some(false));
        assert_eq!(
            raw.measured,
            "0.38× (raw-logged: 0.50× raw; choreograph ÷ raw-logged: 0.75×)"
        );
    }

    #[test]
    fn the_p99_target_says_where_raw_logged_and_bare_are() {
        use Implementation::{Choreograph, ChoreographBare, Raw, RawLogged};
        let with_p99 = |i, p99| {
            let mut r = run(i, Mode::AtLeastOnce, 1, 100.0);
            r.latency_ms.p99 = p99;
            r
        };
        let runs = [
            with_p99(Choreograph, 300.0),
            with_p99(Raw, 100.0),
            with_p99(RawLogged, 250.0),
            with_p99(ChoreographBare, 80.0),
        ];
        let t = targets(&summarize(&runs));
        let p99 = t.iter().find(|t| t.name.starts_with("p99")).unwrap();
        assert_eq!(p99.met, Some(false));
        assert_eq!(
            p99.measured,
            "3.00× (raw-logged: 2.50× raw; choreograph-bare: 0.80× raw)"
        );
        // Without the extra rows, the ratio alone.
        let t = targets(&summarize(&runs[..2]));
        let p99 = t.iter().find(|t| t.name.starts_with("p99")).unwrap();
        assert_eq!(p99.measured, "3.00×");
    }

    #[test]
    fn pooled_latency_takes_every_repetitions_sagas() {
        use Implementation::{Choreograph, Raw};
        // Two repetitions of 100 sagas each: one batch has a stall (its 5 worst at 500 ms), so
        // its own p99 is 500 ms; pooled, the p99 of the 200 sagas is the 3rd-worst of all.
        let with_latencies = |i, rep, stalled: bool| {
            let mut r = run(i, Mode::AtLeastOnce, rep, 100.0);
            r.latency_us = (1..=100u32)
                .map(|k| {
                    if stalled && k > 95 {
                        500_000
                    } else {
                        k * 1_000
                    }
                })
                .collect();
            r
        };
        let runs = [
            with_latencies(Choreograph, 1, true),
            with_latencies(Choreograph, 2, false),
            with_latencies(Raw, 1, false),
            with_latencies(Raw, 2, false),
        ];
        let s = summarize(&runs);
        let c = s.iter().find(|s| s.implementation == Choreograph).unwrap();
        let pooled = c.latency_pooled_ms.as_ref().unwrap();
        assert_eq!((pooled.p50, pooled.p99, pooled.max), (50.0, 500.0, 500.0));
        let raw = s.iter().find(|s| s.implementation == Raw).unwrap();
        assert_eq!(raw.latency_pooled_ms.as_ref().unwrap().p99, 99.0);
        let vs = c.vs_raw.unwrap().latency_p99_pooled.unwrap();
        assert!((vs - 500.0 / 99.0).abs() < 1e-9);
        let t = targets(&s);
        let p99 = t.iter().find(|t| t.name.starts_with("p99")).unwrap();
        assert!(
            p99.measured
                .ends_with("; pooled over the repetitions' sagas: 5.05×"),
            "{}",
            p99.measured
        );
        let md = markdown(&s, &t, &[], 100.0, 2);
        assert!(
            md.contains("choreograph at-least-once p50 50.0 / p99 500.0 (5.05× raw) / max 500.0"),
            "{md}"
        );
        // A repetition without samples (an older results file): no pooled figures.
        let mut old = runs.clone();
        old[1].latency_us.clear();
        let s = summarize(&old);
        assert!(s[0].latency_pooled_ms.is_none());
        assert!(!markdown(&s, &targets(&s), &[], 100.0, 2).contains("pooled: choreograph"));
    }

    #[test]
    fn inputs_per_log_record_leaves_out_topics_without_records() {
        let mut a = run(Implementation::Choreograph, Mode::AtLeastOnce, 1, 100.0);
        a.log_records = Some(LogRecords {
            inputs: 1000,
            saga_log_records: 40,
            handled_records: 0,
        });
        let mut b = run(Implementation::Choreograph, Mode::AtLeastOnce, 2, 100.0);
        b.log_records = Some(LogRecords {
            inputs: 1000,
            saga_log_records: 60,
            handled_records: 0,
        });
        let s = summarize(&[a, b]);
        assert_eq!(s[0].inputs_per_log_record, Some((Some(20.0), None)));
        let md = markdown(&s, &targets(&s), &[], 100.0, 2);
        assert!(md.contains("choreograph at-least-once 20.0 / –"), "{md}");
    }

    #[test]
    fn watermill_and_raw_logged_have_no_exactly_once_row() {
        for at_least_once_only in [Implementation::Watermill, Implementation::RawLogged] {
            let u = unavailable(
                &[Implementation::Choreograph, at_least_once_only],
                &[Workload::Chain],
                &[Mode::AtLeastOnce, Mode::ExactlyOnce],
            );
            assert_eq!(u.len(), 1);
            assert_eq!(
                (u[0].implementation, u[0].mode),
                (at_least_once_only, Mode::ExactlyOnce)
            );
        }
    }

    #[test]
    fn spread_median() {
        let s = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 2.0]).median, 1.5);
    }
}
