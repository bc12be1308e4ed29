//! The text views of a trace and of a saga list, as `choreograph trace` and `choreograph
//! sagas` print them: [`render`] (also [`SagaTrace::to_text`]) and [`summary_line`].

use crate::saga_log::StepOutcome;

use super::{SagaStatus, SagaSummary, SagaTrace, TimelineKind, TreeNode};

/// `s` in ANSI style `code` (e.g. `1` bold, `31` red) when `color`.
pub fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// A status word, coloured when `color`.
pub fn status_word(color: bool, s: SagaStatus) -> String {
    let code = match s {
        SagaStatus::Completed => "1;32",
        SagaStatus::Compensated => "1;33",
        SagaStatus::Failed | SagaStatus::Stalled => "1;31",
        SagaStatus::InProgress => "1;36",
    };
    paint(color, code, s.as_str())
}

/// A step outcome's word, coloured when `color`.
pub fn outcome_word(color: bool, o: StepOutcome) -> String {
    let (word, code) = match o {
        StepOutcome::Handled => ("handled", "32"),
        StepOutcome::Retried => ("retried", "33"),
        StepOutcome::DeadLettered => ("dead-lettered", "31"),
        StepOutcome::Skipped => ("skipped", "2"),
        StepOutcome::Duplicate => ("duplicate", "2"),
    };
    paint(color, code, word)
}

fn ms(v: i64) -> String {
    if v.abs() >= 10_000 {
        format!("{:.1} s", v as f64 / 1000.0)
    } else {
        format!("{v} ms")
    }
}

/// The terminal view of a trace: status and reason, start and end, what is pending or
/// behind, the causal tree (each event under its cause, with its handlers' outcomes and
/// durations) and the timeline. `color` adds ANSI colours (for a terminal).
pub fn render(t: &SagaTrace, color: bool) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "saga {}  {}\n",
        paint(color, "1", &t.correlation_id.to_string()),
        status_word(color, t.status)
    ));
    out.push_str(&format!("  {}\n", t.reason));
    if let Some(s) = t.started_at {
        out.push_str(&format!("  started   {}\n", s.to_rfc3339()));
        if let Some(e) = t.ended_at {
            out.push_str(&format!(
                "  ended     {} ({} after the start)\n",
                e.to_rfc3339(),
                ms((e - s).num_milliseconds())
            ));
        }
    }
    out.push_str(&format!(
        "  {} events, {} steps\n",
        t.events.len(),
        t.steps.len()
    ));
    for p in &t.pending {
        out.push_str(&format!(
            "  {} {} has not handled {} ({}) for {}\n",
            if p.stalled {
                paint(color, "1;31", "BEHIND:")
            } else {
                paint(color, "36", "pending:")
            },
            paint(color, "1", &p.service),
            p.event_type,
            p.event_id,
            ms(p.waiting_ms)
        ));
    }
    out.push_str(&format!("\n{}\n", paint(color, "1", "causal tree")));
    fn walk(t: &SagaTrace, n: &TreeNode, prefix: &str, last: bool, color: bool, out: &mut String) {
        let handled: Vec<String> = t
            .event(&n.event_id)
            .map(|e| {
                let mut seen: Vec<String> = Vec::new();
                for h in &e.handled_by {
                    let word = match h.outcome {
                        StepOutcome::Handled => paint(color, "32", "✓"),
                        StepOutcome::Retried => paint(color, "33", "↻"),
                        StepOutcome::DeadLettered => paint(color, "31", "✗"),
                        StepOutcome::Skipped => paint(color, "2", "-"),
                        StepOutcome::Duplicate => paint(color, "2", "="),
                    };
                    seen.push(format!("{} {word} {}", h.service, ms(h.duration_ms)));
                }
                seen
            })
            .unwrap_or_default();
        let ends = t
            .event(&n.event_id)
            .and_then(|e| e.ends_saga)
            .map(|o| format!("  [ends the saga: {}]", SagaStatus::from(o)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{prefix}{} {}  from {}{}{}\n",
            if last { "└─" } else { "├─" },
            paint(color, "1", &n.event_type),
            n.emitted_by,
            if handled.is_empty() {
                String::new()
            } else {
                format!("  → {}", handled.join(", "))
            },
            ends
        ));
        let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        for (i, c) in n.children.iter().enumerate() {
            walk(t, c, &child_prefix, i + 1 == n.children.len(), color, out);
        }
    }
    for (i, n) in t.tree.iter().enumerate() {
        walk(t, n, "", i + 1 == t.tree.len(), color, &mut out);
    }
    out.push_str(&format!("\n{}\n", paint(color, "1", "timeline")));
    for e in &t.timeline {
        let gap = if e.gap_ms > 0 {
            paint(color, "2", &format!("(+{})", ms(e.gap_ms)))
        } else {
            String::new()
        };
        let what = match e.kind {
            TimelineKind::Emitted => format!("{} emitted {}", e.service, e.event_type),
            TimelineKind::Step => format!(
                "{} {} {} in {}{}",
                paint(color, "1", &e.service),
                e.outcome
                    .map(|o| outcome_word(color, o))
                    .unwrap_or_default(),
                e.event_type,
                ms(e.duration_ms),
                e.error
                    .as_deref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            ),
        };
        out.push_str(&format!(
            "  {:>10}  {:<12} {what}\n",
            format!("+{:.3}s", e.offset_ms as f64 / 1000.0),
            gap
        ));
    }
    out
}

/// One line of a saga list: correlation ID, status, start, steps and the reason.
pub fn summary_line(s: &SagaSummary, color: bool) -> String {
    format!(
        "{}  {:<11}  {}  {:>3} steps  {}",
        s.correlation_id,
        status_word(color, s.status),
        s.started_at
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| "-".into()),
        s.steps,
        s.reason
    )
}
