//! W3C trace context (`traceparent`) carried on events.
//!
//! A saga is one trace: starting a saga starts a trace, and every event emitted in reaction to
//! another continues the cause's trace with a new span ID. Choreograph only carries the context;
//! exporting spans to a tracing back end is left to the application's `tracing` subscriber.

use std::fmt;
use std::str::FromStr;

/// A parsed `traceparent` header (version 00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// A `traceparent` value that does not follow the W3C format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent `{0}` (expected 00-<32 hex>-<16 hex>-<2 hex>)")]
pub struct InvalidTraceParent(pub String);

impl TraceParent {
    /// A new root context: a new trace and span, sampled.
    pub fn new_root() -> Self {
        let trace = uuid::Uuid::new_v4().as_u128();
        Self {
            trace_id: trace,
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// The context of a child span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id = (uuid::Uuid::new_v4().as_u128() & u64::MAX as u128) as u64;
        if id != 0 {
            return id;
        }
    }
}

/// Length of a version-00 `traceparent`.
pub(crate) const TRACEPARENT_LEN: usize = 55;

impl TraceParent {
    /// The `traceparent` text, written into `buf` (no allocation).
    pub(crate) fn write_into<'b>(&self, buf: &'b mut [u8; TRACEPARENT_LEN]) -> &'b str {
        use std::io::Write as _;
        let mut out = &mut buf[..];
        // 55 bytes exactly: cannot fail.
        let _ = write!(
            out,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.sampled as u8
        );
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write_into(&mut [0; TRACEPARENT_LEN]))
    }
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || InvalidTraceParent(s.to_owned());
        let parts: smallvec::SmallVec<[&str; 4]> = s.trim().split('-').collect();
        if parts.len() < 4 || parts[0].len() != 2 || parts[0] == "ff" {
            return Err(err());
        }
        fn hex(p: &str, len: usize) -> Option<&str> {
            let lower_hex = p
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            (p.len() == len && lower_hex).then_some(p)
        }
        let version = hex(parts[0], 2).ok_or_else(err)?;
        if version == "00" && parts.len() != 4 {
            return Err(err());
        }
        let trace_id =
            u128::from_str_radix(hex(parts[1], 32).ok_or_else(err)?, 16).map_err(|_| err())?;
        let span_id =
            u64::from_str_radix(hex(parts[2], 16).ok_or_else(err)?, 16).map_err(|_| err())?;
        let flags = u8::from_str_radix(hex(parts[3], 2).ok_or_else(err)?, 16).map_err(|_| err())?;
        if trace_id == 0 || span_id == 0 {
            return Err(err());
        }
        Ok(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_child() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp: TraceParent = s.parse().unwrap();
        assert_eq!(tp.to_string(), s);
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
        assert!(child
            .to_string()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        for bad in [
            "",
            "00-0-0-0",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad}");
        }
        let root = TraceParent::new_root();
        assert_eq!(root.to_string().parse::<TraceParent>().unwrap(), root);
    }
}
