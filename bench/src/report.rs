//! Results: one record per measured run, summaries (median, min–max over repetitions), ratios
//! against raw from the same harness run, the targets, a Markdown table and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Implementation, Workload};

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
        let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
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

/// One implementation × workload × repetition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub implementation: Implementation,
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
    /// Terminal events seen twice (at-least-once redelivery), all batches.
    pub duplicate_terminals: usize,
    /// The machine's 1-minute load average when the configuration started and ended (on 2
    /// cores, anything well above 2 means other work competed with the measurement).
    pub load_average: (f64, f64),
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

/// An implementation × workload over its repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub implementation: Implementation,
    pub workload: Workload,
    pub repetitions: usize,
    pub throughput_sagas_per_s: Spread,
    pub latency_p50_ms: Spread,
    pub latency_p90_ms: Spread,
    pub latency_p99_ms: Spread,
    pub latency_max_ms: Spread,
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
    /// Ratios of medians against raw of the same harness run (absent for raw itself or when
    /// raw was not measured).
    pub vs_raw: Option<Ratios>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ratios {
    pub throughput: f64,
    pub latency_p99: f64,
    pub cpu: f64,
    pub peak_rss: f64,
}

pub fn summarize(runs: &[Run]) -> Vec<Summary> {
    let mut keys: Vec<(Workload, Implementation)> = Vec::new();
    for r in runs {
        if !keys.contains(&(r.workload, r.implementation)) {
            keys.push((r.workload, r.implementation));
        }
    }
    let mut out: Vec<Summary> = keys
        .iter()
        .map(|&(w, i)| {
            let rs: Vec<&Run> = runs
                .iter()
                .filter(|r| r.workload == w && r.implementation == i)
                .collect();
            let mut per_service: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &rs {
                for (k, v) in &r.peak_rss_mib {
                    per_service.entry(k.clone()).or_default().push(*v);
                }
            }
            Summary {
                implementation: i,
                workload: w,
                repetitions: rs.len(),
                throughput_sagas_per_s: Spread::of(rs.iter().map(|r| r.throughput_sagas_per_s)),
                latency_p50_ms: Spread::of(rs.iter().map(|r| r.latency_ms.p50)),
                latency_p90_ms: Spread::of(rs.iter().map(|r| r.latency_ms.p90)),
                latency_p99_ms: Spread::of(rs.iter().map(|r| r.latency_ms.p99)),
                latency_max_ms: Spread::of(rs.iter().map(|r| r.latency_ms.max)),
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
                vs_raw: None,
            }
        })
        .collect();
    let raws: Vec<Summary> = out
        .iter()
        .filter(|s| s.implementation == Implementation::Raw)
        .cloned()
        .collect();
    for s in &mut out {
        if s.implementation == Implementation::Raw {
            continue;
        }
        if let Some(raw) = raws.iter().find(|r| r.workload == s.workload) {
            s.vs_raw = Some(Ratios {
                throughput: s.throughput_sagas_per_s.median / raw.throughput_sagas_per_s.median,
                latency_p99: s.latency_p99_ms.median / raw.latency_p99_ms.median,
                cpu: s.cpu_s_per_1k_sagas.median / raw.cpu_s_per_1k_sagas.median,
                peak_rss: s.peak_rss_mib.median / raw.peak_rss_mib.median,
            });
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
    let find = |w: Workload, i: Implementation| {
        summaries
            .iter()
            .find(|s| s.workload == w && s.implementation == i)
    };
    let mut workloads: Vec<Workload> = Vec::new();
    for s in summaries {
        if !workloads.contains(&s.workload) {
            workloads.push(s.workload);
        }
    }
    for w in workloads {
        let Some(c) = find(w, Implementation::Choreograph) else {
            continue;
        };
        let raw = find(w, Implementation::Raw);
        let wm = find(w, Implementation::Watermill);
        let ratio_target =
            |name: &str, num: f64, den: Option<f64>, ok: &dyn Fn(f64) -> bool| match den {
                Some(d) => {
                    let r = num / d;
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
        out.push(ratio_target(
            "at-least-once throughput ≥ 0.9 × raw",
            c.throughput_sagas_per_s.median,
            raw.map(|r| r.throughput_sagas_per_s.median),
            &|r| r >= 0.9,
        ));
        out.push(ratio_target(
            "at-least-once throughput ≥ 2 × Watermill",
            c.throughput_sagas_per_s.median,
            wm.map(|r| r.throughput_sagas_per_s.median),
            &|r| r >= 2.0,
        ));
        out.push(ratio_target(
            "p99 at the fixed rate ≤ 1.2 × raw",
            c.latency_p99_ms.median,
            raw.map(|r| r.latency_p99_ms.median),
            &|r| r <= 1.2,
        ));
        out.push(Target {
            workload: w,
            name: "exactly-once throughput ≥ 0.5 × at-least-once".into(),
            measured: "not available: the framework has no exactly-once mode yet".into(),
            met: None,
        });
        out.push(Target {
            workload: w,
            name: "peak RSS per service process < 30 MiB, fixed rate".into(),
            measured: format!(
                "{:.1} MiB (largest service, worst repetition)",
                c.peak_rss_mib_fixed_rate.max
            ),
            met: Some(c.peak_rss_mib_fixed_rate.max < 30.0),
        });
        out.push(Target {
            workload: w,
            name: "peak RSS per service process < 30 MiB, with the saturation backlog".into(),
            measured: format!(
                "{:.1} MiB (largest service, worst repetition)",
                c.peak_rss_mib.max
            ),
            met: Some(c.peak_rss_mib.max < 30.0),
        });
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
    }
    let text = std::fs::read_to_string(path)?;
    let file: File = serde_json::from_str(&text)?;
    let summaries = summarize(&file.runs);
    let targets = targets(&summaries);
    println!(
        "{}",
        markdown(&summaries, &targets, file.settings.rate, file.settings.reps)
    );
    Ok(())
}

/// The results as Markdown: one table per workload, then the targets.
pub fn markdown(summaries: &[Summary], targets: &[Target], rate: f64, reps: usize) -> String {
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
            "\n### {} ({hops} hops), at-least-once — median (min–max) of {reps} repetitions\n",
            w.name()
        );
        let _ = writeln!(
            md,
            "| implementation | sagas/s at saturation | × raw | p50 ms @ {rate:.0}/s | p90 ms | p99 ms | p99 × raw | max ms | CPU s / 1k sagas | × raw | broker CPU s / 1k sagas | peak RSS MiB, fixed rate | peak RSS MiB, with backlog |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for s in summaries.iter().filter(|s| s.workload == w) {
            let v = s.vs_raw;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.implementation.name(),
                cell(s.throughput_sagas_per_s, 0),
                if s.implementation == Implementation::Raw {
                    "1.00×".into()
                } else {
                    ratio(v.map(|v| v.throughput))
                },
                cell(s.latency_p50_ms, 1),
                cell(s.latency_p90_ms, 1),
                cell(s.latency_p99_ms, 1),
                if s.implementation == Implementation::Raw {
                    "1.00×".into()
                } else {
                    ratio(v.map(|v| v.latency_p99))
                },
                cell(s.latency_max_ms, 1),
                cell(s.cpu_s_per_1k_sagas, 3),
                if s.implementation == Implementation::Raw {
                    "1.00×".into()
                } else {
                    ratio(v.map(|v| v.cpu))
                },
                cell(s.broker_cpu_s_per_1k_sagas, 3),
                cell(s.peak_rss_mib_fixed_rate, 1),
                cell(s.peak_rss_mib, 1),
            );
        }
        let _ = writeln!(
            md,
            "| choreograph, exactly-once | not available: the framework has no exactly-once mode yet | | | | | | | | | | | |"
        );
        let rss: Vec<String> = summaries
            .iter()
            .filter(|s| s.workload == w)
            .map(|s| {
                let per: Vec<String> = s
                    .peak_rss_mib_per_service
                    .iter()
                    .map(|(k, v)| format!("{k} {:.1}", v.median))
                    .collect();
                format!("{}: {}", s.implementation.name(), per.join(", "))
            })
            .collect();
        let _ = writeln!(
            md,
            "\nPeak RSS per service process with the backlog, MiB (median): {}.",
            rss.join("; ")
        );
        let load: Vec<String> = summaries
            .iter()
            .filter(|s| s.workload == w)
            .map(|s| {
                format!(
                    "{} {:.1}–{:.1}",
                    s.implementation.name(),
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
    }
    if !targets.is_empty() {
        let _ = writeln!(md, "\n### Targets (choreograph, at-least-once)\n");
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

    #[test]
    fn spread_median() {
        let s = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 2.0]).median, 1.5);
    }
}
