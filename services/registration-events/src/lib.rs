//! The events of the registration choreography.
//!
//! ```text
//!  user ──UserRegistered──▶ activity ──NewcomerEnrolled──┬──▶ coupon ──CouponIssued────┐
//!   ▲                          │                         └──▶ points ──PointsGranted───┤
//!   │                          └─EnrollmentRejected─┐        or PointsGrantRejected ──┤ (coupon
//!   │                                               │                                 │  revokes:
//!   │    ◀──WelcomePackageCompleted / Failed── activity (joins coupon + points) ◀─────┘  CouponRevoked)
//!   └─▶ UserWelcomed | RegistrationRejected | RegistrationFlagged   (the saga's end)
//! ```
//!
//! Every type here has a schema in `schemas/<type>.json`; the test in this crate fails when the
//! Rust types and the schemas differ (`UPDATE_SCHEMAS=1 cargo test -p registration-events`
//! rewrites the schemas from the types).

use std::sync::Arc;

use choreograph::{Catalogue, Event};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Topics of the choreography, one per producing service.
pub mod topics {
    pub const USER: &str = "registration.user";
    pub const ACTIVITY: &str = "registration.activity";
    pub const COUPON: &str = "registration.coupon";
    pub const POINTS: &str = "registration.points";
}

/// The plan a user signs up for; it decides the welcome points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Free,
    Pro,
    Enterprise,
}

macro_rules! event {
    ($name:ident, $type:literal, $topic:expr) => {
        impl Event for $name {
            const TYPE: &'static str = $type;
            const TOPIC: &'static str = $topic;
        }
    };
}

/// A user signed up: the domain event that starts a registration saga.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRegistered {
    pub user_id: String,
    #[schemars(email)]
    pub email: String,
    pub display_name: String,
    pub plan: Plan,
}
event!(
    UserRegistered,
    "registration.user.registered.v1",
    topics::USER
);

/// The newcomer joined the new-user activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewcomerEnrolled {
    pub user_id: String,
    pub activity: String,
    /// Points the activity promises the newcomer.
    pub welcome_points: u32,
}
event!(
    NewcomerEnrolled,
    "registration.activity.newcomer-enrolled.v1",
    topics::ACTIVITY
);

/// The activity refused the newcomer (e.g. a disposable e-mail domain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRejected {
    pub user_id: String,
    pub reason: String,
}
event!(
    EnrollmentRejected,
    "registration.activity.enrollment-rejected.v1",
    topics::ACTIVITY
);

/// A welcome coupon was issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponIssued {
    pub user_id: String,
    pub coupon_code: String,
    pub value_cents: u32,
}
event!(
    CouponIssued,
    "registration.coupon.issued.v1",
    topics::COUPON
);

/// A welcome coupon was revoked (compensation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponRevoked {
    pub user_id: String,
    pub coupon_code: String,
    pub reason: String,
}
event!(
    CouponRevoked,
    "registration.coupon.revoked.v1",
    topics::COUPON
);

/// Welcome points were granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointsGranted {
    pub user_id: String,
    pub points: u32,
}
event!(
    PointsGranted,
    "registration.points.granted.v1",
    topics::POINTS
);

/// Welcome points were refused (the budget does not cover them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointsGrantRejected {
    pub user_id: String,
    pub points: u32,
    pub reason: String,
}
event!(
    PointsGrantRejected,
    "registration.points.grant-rejected.v1",
    topics::POINTS
);

/// Coupon and points both arrived: the welcome package is complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WelcomePackageCompleted {
    pub user_id: String,
    pub coupon_code: String,
    pub points: u32,
}
event!(
    WelcomePackageCompleted,
    "registration.activity.welcome-package-completed.v1",
    topics::ACTIVITY
);

/// The welcome package failed; what was granted was compensated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WelcomePackageFailed {
    pub user_id: String,
    pub reason: String,
}
event!(
    WelcomePackageFailed,
    "registration.activity.welcome-package-failed.v1",
    topics::ACTIVITY
);

/// The saga ended well: the user got the welcome package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserWelcomed {
    pub user_id: String,
    pub coupon_code: String,
    pub points: u32,
}
event!(UserWelcomed, "registration.user.welcomed.v1", topics::USER);

/// The saga ended in a refusal: the enrolment was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRejected {
    pub user_id: String,
    pub reason: String,
}
event!(
    RegistrationRejected,
    "registration.user.rejected.v1",
    topics::USER
);

/// The saga ended after compensation: the registration is flagged for follow-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationFlagged {
    pub user_id: String,
    pub reason: String,
}
event!(
    RegistrationFlagged,
    "registration.user.flagged.v1",
    topics::USER
);

/// The catalogue documents, embedded at build time from `schemas/`.
pub const SCHEMA_FILES: [(&str, &str); 12] = [
    (
        "registration.user.registered.v1.json",
        include_str!("../../../schemas/registration.user.registered.v1.json"),
    ),
    (
        "registration.activity.newcomer-enrolled.v1.json",
        include_str!("../../../schemas/registration.activity.newcomer-enrolled.v1.json"),
    ),
    (
        "registration.activity.enrollment-rejected.v1.json",
        include_str!("../../../schemas/registration.activity.enrollment-rejected.v1.json"),
    ),
    (
        "registration.coupon.issued.v1.json",
        include_str!("../../../schemas/registration.coupon.issued.v1.json"),
    ),
    (
        "registration.coupon.revoked.v1.json",
        include_str!("../../../schemas/registration.coupon.revoked.v1.json"),
    ),
    (
        "registration.points.granted.v1.json",
        include_str!("../../../schemas/registration.points.granted.v1.json"),
    ),
    (
        "registration.points.grant-rejected.v1.json",
        include_str!("../../../schemas/registration.points.grant-rejected.v1.json"),
    ),
    (
        "registration.activity.welcome-package-completed.v1.json",
        include_str!("../../../schemas/registration.activity.welcome-package-completed.v1.json"),
    ),
    (
        "registration.activity.welcome-package-failed.v1.json",
        include_str!("../../../schemas/registration.activity.welcome-package-failed.v1.json"),
    ),
    (
        "registration.user.welcomed.v1.json",
        include_str!("../../../schemas/registration.user.welcomed.v1.json"),
    ),
    (
        "registration.user.rejected.v1.json",
        include_str!("../../../schemas/registration.user.rejected.v1.json"),
    ),
    (
        "registration.user.flagged.v1.json",
        include_str!("../../../schemas/registration.user.flagged.v1.json"),
    ),
];

/// The registration catalogue (from the embedded `schemas/`).
pub fn catalogue() -> Arc<Catalogue> {
    // The documents are checked by this crate's tests; a broken one is a build defect.
    Arc::new(Catalogue::from_documents(SCHEMA_FILES).expect("schemas/ holds a valid catalogue"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Each type with its place in the choreography: (schema, type, topic, producer, consumers, ends-saga).
    fn expected() -> Vec<(Value, &'static str, &'static str, Value, Value, Value)> {
        fn row<E: Event + JsonSchema>(
            producer: &str,
            consumers: &[&str],
            ends: Value,
        ) -> (Value, &'static str, &'static str, Value, Value, Value) {
            (
                serde_json::to_value(schemars::schema_for!(E)).unwrap(),
                E::TYPE,
                E::TOPIC,
                json!(producer),
                json!(consumers),
                ends,
            )
        }
        vec![
            row::<UserRegistered>("user", &["activity"], Value::Null),
            row::<NewcomerEnrolled>("activity", &["coupon", "points"], Value::Null),
            row::<EnrollmentRejected>("activity", &["user"], Value::Null),
            row::<CouponIssued>("coupon", &["activity"], Value::Null),
            row::<CouponRevoked>("coupon", &["activity"], Value::Null),
            row::<PointsGranted>("points", &["activity"], Value::Null),
            row::<PointsGrantRejected>("points", &["activity", "coupon"], Value::Null),
            row::<WelcomePackageCompleted>("activity", &["user"], Value::Null),
            row::<WelcomePackageFailed>("activity", &["user"], Value::Null),
            row::<UserWelcomed>("user", &[], json!("completed")),
            row::<RegistrationRejected>("user", &[], json!("failed")),
            row::<RegistrationFlagged>("user", &[], json!("compensated")),
        ]
    }

    /// The Rust types and `schemas/` cannot drift: this fails on any difference.
    #[test]
    fn schemas_match_the_rust_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let update = std::env::var("UPDATE_SCHEMAS").is_ok();
        let mut drift = Vec::new();
        for (schema, event_type, topic, producer, consumers, ends) in expected() {
            let mut doc = schema;
            doc["x-choreograph"] = json!({
                "type": event_type, "topic": topic, "producer": producer,
                "consumers": consumers, "ends-saga": ends,
            });
            let path = dir.join(format!("{event_type}.json"));
            let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
            if update {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let on_disk: Option<Value> = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if on_disk.as_ref() != Some(&doc) {
                drift.push(format!(
                    "{}:\n  Rust says: {}\n  file says: {}",
                    path.display(),
                    doc,
                    on_disk
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "(missing or not JSON)".into())
                ));
            }
        }
        assert!(drift.is_empty(), "schemas/ and the Rust types differ (fix the type, or run `UPDATE_SCHEMAS=1 cargo test -p registration-events` to rewrite the schemas from the types):\n{}", drift.join("\n"));
        // Every file in schemas/ is a known type: no orphan contract.
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().map(|x| x == "json").unwrap_or(false))
            .count();
        assert_eq!(
            files,
            expected().len(),
            "schemas/ holds a schema no Rust type matches"
        );
        assert_eq!(SCHEMA_FILES.len(), files, "SCHEMA_FILES lists every schema");
    }

    #[test]
    fn the_catalogue_validates_events() {
        let c = catalogue();
        let ok = serde_json::to_vec(&UserRegistered {
            user_id: "u-1".into(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            plan: Plan::Pro,
        })
        .unwrap();
        c.validate(UserRegistered::TYPE, &ok).unwrap();
        let err = c
            .validate(
                UserRegistered::TYPE,
                br#"{"user_id":"u-1","email":"nope","display_name":"A","plan":"gold"}"#,
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/email") && text.contains("/plan"), "{text}");
        assert_eq!(
            c.get(UserWelcomed::TYPE).unwrap().placement.ends_saga,
            Some(choreograph::SagaOutcome::Completed)
        );
    }
}

/// Sample registrations that exercise every branch, deterministically by index.
pub mod samples {
    use super::{Plan, UserRegistered};
    use choreograph::SagaOutcome;

    /// The registration of user `i`, and how its saga must end: 7 in 10 welcomed (free or pro
    /// plan), 1 in 10 at a blocked e-mail domain (enrolment rejected: failed), 2 in 10 on the
    /// enterprise plan, whose welcome points exceed the daily budget (points refused, coupon
    /// revoked: compensated). Assumes the services' default settings.
    pub fn registration(i: u32) -> (UserRegistered, SagaOutcome) {
        let (domain, plan, outcome) = match i % 10 {
            7 => ("mailinator.com", Plan::Free, SagaOutcome::Failed),
            8 | 9 => ("example.com", Plan::Enterprise, SagaOutcome::Compensated),
            n if n % 2 == 0 => ("example.com", Plan::Free, SagaOutcome::Completed),
            _ => ("example.org", Plan::Pro, SagaOutcome::Completed),
        };
        let r = UserRegistered {
            user_id: format!("user-{i:05}"),
            email: format!("user{i}@{domain}"),
            display_name: format!("User {i}"),
            plan,
        };
        (r, outcome)
    }
}
