//! The benchmarked choreographies: their events, topics and services, shared by the harness,
//! the driver and the Rust implementations (the Go peer in `bench/watermill/` mirrors them).
//!
//! Topic names below are unprefixed; every measured configuration runs on topics of its own
//! (`<prefix><name>`), created fresh by the harness.

use choreograph::Event;
use serde::{Deserialize, Serialize};

// --- registration (5 hops: start, fan-out to two services, join, terminal) ---------------

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
}
impl Event for UserRegistered {
    const TYPE: &'static str = "registration.user.registered.v1";
    const TOPIC: &'static str = "registration.user";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewcomerEnrolled {
    pub user_id: String,
    pub email: String,
}
impl Event for NewcomerEnrolled {
    const TYPE: &'static str = "activity.newcomer.enrolled.v1";
    const TOPIC: &'static str = "activity.newcomer";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CouponIssued {
    pub user_id: String,
    pub coupon_code: String,
}
impl Event for CouponIssued {
    const TYPE: &'static str = "coupon.coupon.issued.v1";
    const TOPIC: &'static str = "coupon.issued";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointsGranted {
    pub user_id: String,
    pub points: u32,
}
impl Event for PointsGranted {
    const TYPE: &'static str = "points.points.granted.v1";
    const TOPIC: &'static str = "points.granted";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WelcomePackageCompleted {
    pub user_id: String,
    pub coupon_code: String,
    pub points: u32,
}
impl Event for WelcomePackageCompleted {
    const TYPE: &'static str = "activity.welcome-package.completed.v1";
    const TOPIC: &'static str = "activity.welcome";
}

/// Points every newcomer gets.
pub const WELCOME_POINTS: u32 = 100;

/// The coupon code for a user (deterministic, so every implementation writes the same bytes).
pub fn coupon_code(user_id: &str) -> String {
    format!("WELCOME-{user_id}")
}

// --- chain (3 hops: A → svc1 → B → svc2 → C) -----------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainStarted {
    pub user_id: String,
    pub step: u32,
}
impl Event for ChainStarted {
    const TYPE: &'static str = "bench.chain.started.v1";
    const TOPIC: &'static str = "chain.a";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainContinued {
    pub user_id: String,
    pub step: u32,
}
impl Event for ChainContinued {
    const TYPE: &'static str = "bench.chain.continued.v1";
    const TOPIC: &'static str = "chain.b";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainFinished {
    pub user_id: String,
    pub step: u32,
}
impl Event for ChainFinished {
    const TYPE: &'static str = "bench.chain.finished.v1";
    const TOPIC: &'static str = "chain.c";
}

// --- workloads ------------------------------------------------------------------------------

/// A choreography shape to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// UserRegistered → activity → NewcomerEnrolled → coupon + points → join in activity →
    /// WelcomePackageCompleted (5 hops).
    Registration,
    /// ChainStarted → svc1 → ChainContinued → svc2 → ChainFinished (3 hops).
    Chain,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Registration => "registration",
            Workload::Chain => "chain",
        }
    }

    /// Every topic of the workload (unprefixed).
    pub fn topics(self) -> &'static [&'static str] {
        match self {
            Workload::Registration => &[
                UserRegistered::TOPIC,
                NewcomerEnrolled::TOPIC,
                CouponIssued::TOPIC,
                PointsGranted::TOPIC,
                WelcomePackageCompleted::TOPIC,
            ],
            Workload::Chain => &[
                ChainStarted::TOPIC,
                ChainContinued::TOPIC,
                ChainFinished::TOPIC,
            ],
        }
    }

    /// The service processes, one OS process each.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Workload::Registration => &[Role::Activity, Role::Coupon, Role::Points],
            Workload::Chain => &[Role::Svc1, Role::Svc2],
        }
    }

    /// Events the services handle per saga (each one input of one service).
    pub fn inputs_per_saga(self) -> u64 {
        match self {
            // activity: registered, coupon issued, points granted; coupon and points: enrolled.
            Workload::Registration => 5,
            Workload::Chain => 2,
        }
    }

    /// Topic and type of the start event.
    pub fn start(self) -> (&'static str, &'static str) {
        match self {
            Workload::Registration => (UserRegistered::TOPIC, UserRegistered::TYPE),
            Workload::Chain => (ChainStarted::TOPIC, ChainStarted::TYPE),
        }
    }

    /// Topic and type of the terminal event.
    pub fn terminal(self) -> (&'static str, &'static str) {
        match self {
            Workload::Registration => (
                WelcomePackageCompleted::TOPIC,
                WelcomePackageCompleted::TYPE,
            ),
            Workload::Chain => (ChainFinished::TOPIC, ChainFinished::TYPE),
        }
    }

    /// Whether a terminal event's data is what the choreography must produce (the join
    /// carried both halves; the chain ran every step).
    pub fn terminal_is_valid(self, data: &[u8]) -> bool {
        match self {
            Workload::Registration => serde_json::from_slice::<WelcomePackageCompleted>(data)
                .is_ok_and(|w| {
                    w.points == WELCOME_POINTS && w.coupon_code == coupon_code(&w.user_id)
                }),
            Workload::Chain => {
                serde_json::from_slice::<ChainFinished>(data).is_ok_and(|f| f.step == 3)
            }
        }
    }

    /// The JSON data of saga number `i`'s start event.
    pub fn start_data(self, i: usize) -> Vec<u8> {
        let user_id = format!("u-{i}");
        let json = match self {
            Workload::Registration => serde_json::to_vec(&UserRegistered {
                email: format!("{user_id}@example.com"),
                user_id,
            }),
            Workload::Chain => serde_json::to_vec(&ChainStarted { user_id, step: 1 }),
        };
        json.expect("serializing a plain struct cannot fail")
    }
}

/// A service of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Activity,
    Coupon,
    Points,
    Svc1,
    Svc2,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Activity => "activity",
            Role::Coupon => "coupon",
            Role::Points => "points",
            Role::Svc1 => "svc1",
            Role::Svc2 => "svc2",
        }
    }
}

/// An implementation of the choreographies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Implementation {
    /// Services written with the Choreograph framework (either delivery mode).
    Choreograph,
    /// The same services with the saga log and the handled markers off (`saga_log: false`,
    /// `idempotency: None`): the runtime alone, to show what those two features cost.
    #[serde(rename = "choreograph-bare")]
    ChoreographBare,
    /// The same directly on rdkafka: hand-written consume → produce → commit loops (either mode).
    Raw,
    /// Raw's at-least-once loop that also writes the framework's saga-log steps and handled
    /// markers (same formats, same batching): what the client's limit is for the durable work
    /// the framework does by default. At-least-once only.
    #[serde(rename = "raw-logged")]
    RawLogged,
    /// Go, Watermill router + watermill-kafka (Sarama); at-least-once only.
    Watermill,
}

impl Implementation {
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Choreograph => "choreograph",
            Implementation::ChoreographBare => "choreograph-bare",
            Implementation::Raw => "raw",
            Implementation::RawLogged => "raw-logged",
            Implementation::Watermill => "watermill",
        }
    }
}

/// A delivery guarantee, measured as its own row.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Inputs committed after their outputs were acknowledged (redelivery possible).
    #[default]
    AtLeastOnce,
    /// Outputs and input offsets in one Kafka transaction per commit interval; consumers
    /// read `read_committed`.
    ExactlyOnce,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::AtLeastOnce => "at-least-once",
            Mode::ExactlyOnce => "exactly-once",
        }
    }

    /// Short form for topic prefixes and file names.
    pub fn short(self) -> &'static str {
        match self {
            Mode::AtLeastOnce => "alo",
            Mode::ExactlyOnce => "eos",
        }
    }
}

impl Implementation {
    /// Why this implementation has no row in `mode`, if it has none.
    pub fn unavailable(self, mode: Mode) -> Option<&'static str> {
        match (self, mode) {
            (Implementation::Watermill, Mode::ExactlyOnce) => Some(
                "not available: Watermill's Kafka Pub/Sub (watermill-kafka on Sarama) has no transactions",
            ),
            (Implementation::RawLogged, Mode::ExactlyOnce) => Some(
                "not measured: raw-logged (raw plus the saga log and handled markers) is an at-least-once baseline",
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn implementation_names_agree_in_cli_json_and_reports() {
        for i in Implementation::value_variants() {
            let cli = i.to_possible_value().unwrap();
            assert_eq!(cli.get_name(), i.name());
            assert_eq!(
                serde_json::to_string(i).unwrap(),
                format!("\"{}\"", i.name())
            );
        }
    }
}
