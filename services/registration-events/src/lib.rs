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
//! Each type is defined once: `#[derive(Event)]` places it in the choreography (type, topic,
//! producer, consumers, saga end) and schemars describes its data. [`schemas()`] lists them all;
//! `schemas/<type>.json` holds the documents they generate, and the test in this crate fails
//! when the Rust types and the files differ (`CHOREOGRAPH_UPDATE_SCHEMAS=1 cargo test -p
//! registration-events` rewrites the files from the types).

use std::sync::Arc;

use choreograph::{Catalogue, Event, Schemas};
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

/// A user signed up: the domain event that starts a registration saga.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.user.registered.v1", topic = topics::USER,
        producer = "user", consumers = ["activity"])]
pub struct UserRegistered {
    pub user_id: String,
    #[schemars(email)]
    pub email: String,
    pub display_name: String,
    pub plan: Plan,
}

/// The newcomer joined the new-user activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.activity.newcomer-enrolled.v1", topic = topics::ACTIVITY,
        producer = "activity", consumers = ["coupon", "points"])]
pub struct NewcomerEnrolled {
    pub user_id: String,
    pub activity: String,
    /// Points the activity promises the newcomer.
    pub welcome_points: u32,
}

/// The activity refused the newcomer (e.g. a disposable e-mail domain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.activity.enrollment-rejected.v1", topic = topics::ACTIVITY,
        producer = "activity", consumers = ["user"])]
pub struct EnrollmentRejected {
    pub user_id: String,
    pub reason: String,
}

/// A welcome coupon was issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.coupon.issued.v1", topic = topics::COUPON,
        producer = "coupon", consumers = ["activity"])]
pub struct CouponIssued {
    pub user_id: String,
    pub coupon_code: String,
    pub value_cents: u32,
}

/// A welcome coupon was revoked (compensation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.coupon.revoked.v1", topic = topics::COUPON,
        producer = "coupon", consumers = ["activity"])]
pub struct CouponRevoked {
    pub user_id: String,
    pub coupon_code: String,
    pub reason: String,
}

/// Welcome points were granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.points.granted.v1", topic = topics::POINTS,
        producer = "points", consumers = ["activity"])]
pub struct PointsGranted {
    pub user_id: String,
    pub points: u32,
}

/// Welcome points were refused (the budget does not cover them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.points.grant-rejected.v1", topic = topics::POINTS,
        producer = "points", consumers = ["activity", "coupon"])]
pub struct PointsGrantRejected {
    pub user_id: String,
    pub points: u32,
    pub reason: String,
}

/// Coupon and points both arrived: the welcome package is complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.activity.welcome-package-completed.v1", topic = topics::ACTIVITY,
        producer = "activity", consumers = ["user"])]
pub struct WelcomePackageCompleted {
    pub user_id: String,
    pub coupon_code: String,
    pub points: u32,
}

/// The welcome package failed; what was granted was compensated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.activity.welcome-package-failed.v1", topic = topics::ACTIVITY,
        producer = "activity", consumers = ["user"])]
pub struct WelcomePackageFailed {
    pub user_id: String,
    pub reason: String,
}

/// The saga ended well: the user got the welcome package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.user.welcomed.v1", topic = topics::USER,
        producer = "user", ends_saga = "completed")]
pub struct UserWelcomed {
    pub user_id: String,
    pub coupon_code: String,
    pub points: u32,
}

/// The saga ended in a refusal: the enrolment was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.user.rejected.v1", topic = topics::USER,
        producer = "user", ends_saga = "failed")]
pub struct RegistrationRejected {
    pub user_id: String,
    pub reason: String,
}

/// The saga ended after compensation: the registration is flagged for follow-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(deny_unknown_fields)]
#[event(type = "registration.user.flagged.v1", topic = topics::USER,
        producer = "user", ends_saga = "compensated")]
pub struct RegistrationFlagged {
    pub user_id: String,
    pub reason: String,
}

/// Every event type of the choreography, whose documents are the files in `schemas/`.
pub fn schemas() -> Schemas {
    Schemas::new()
        .event::<UserRegistered>()
        .event::<NewcomerEnrolled>()
        .event::<EnrollmentRejected>()
        .event::<CouponIssued>()
        .event::<CouponRevoked>()
        .event::<PointsGranted>()
        .event::<PointsGrantRejected>()
        .event::<WelcomePackageCompleted>()
        .event::<WelcomePackageFailed>()
        .event::<UserWelcomed>()
        .event::<RegistrationRejected>()
        .event::<RegistrationFlagged>()
}

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

    /// The Rust types and `schemas/` cannot drift: this fails on any difference, and on a file
    /// no type produces (`CHOREOGRAPH_UPDATE_SCHEMAS=1` rewrites the files from the types).
    #[test]
    fn schemas_match_the_rust_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        schemas().check_or_update_dir(&dir).unwrap();
        // Then the files are exactly the types' documents; SCHEMA_FILES embeds each of them.
        let listed: Vec<&str> = SCHEMA_FILES.iter().map(|(name, _)| *name).collect();
        let generated: Vec<String> = schemas().documents().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            SCHEMA_FILES.len(),
            schemas().len(),
            "SCHEMA_FILES lists every schema"
        );
        assert_eq!(
            listed, generated,
            "SCHEMA_FILES lists every schema, in order"
        );
    }

    /// The catalogue generated in process and the one embedded from `schemas/` agree.
    #[test]
    fn the_generated_catalogue_is_the_embedded_one() {
        let generated = schemas().catalogue().unwrap();
        let embedded = catalogue();
        let placements = |c: &Catalogue| {
            c.entries()
                .map(|e| (e.placement.clone(), e.document.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(placements(&generated), placements(&embedded));
        assert_eq!(generated.entries().count(), 12);
        for (name, _) in SCHEMA_FILES {
            let event_type = name.strip_suffix(".json").unwrap();
            assert!(generated.get(event_type).is_some(), "{name}");
        }
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
