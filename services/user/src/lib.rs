//! The user service: registers users (starting a registration saga) and ends each saga for the
//! user, keeping the registration's status (per-saga state).
//!
//! - [`register`] publishes `UserRegistered`: a new saga.
//! - `WelcomePackageCompleted` → `UserWelcomed` (the saga completed).
//! - `EnrollmentRejected` → `RegistrationRejected` (failed).
//! - `WelcomePackageFailed` → `RegistrationFlagged` (compensated).
//!
//! Exactly one ending per saga: the status is kept, and later arrivals change nothing.

use choreograph::{
    Context, Emit, HandlerError, KafkaConfig, PublishError, Published, Publisher, Service,
};
use registration_events::*;
use serde::{Deserialize, Serialize};

/// A registration's status, as the user service keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Welcomed,
    Rejected,
    Flagged,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub status: Option<Status>,
}

/// Registers a user: publishes `UserRegistered`, starting a saga (its correlation ID is in the
/// receipt).
pub async fn register(
    publisher: &Publisher,
    registration: &UserRegistered,
) -> Result<Published, PublishError> {
    publisher.start_saga(registration).await
}

fn finish(ctx: &Context, status: Status, emit: Emit) -> Result<Emit, HandlerError> {
    let mut r: Registration = ctx.saga_state()?.unwrap_or_default();
    if r.status.is_some() {
        return Ok(Emit::none());
    }
    r.status = Some(status);
    ctx.set_saga_state(&r)?;
    Ok(emit)
}

pub async fn on_package_completed(
    ctx: Context,
    e: WelcomePackageCompleted,
) -> Result<Emit, HandlerError> {
    let emit = Emit::one(UserWelcomed {
        user_id: e.user_id,
        coupon_code: e.coupon_code,
        points: e.points,
    });
    finish(&ctx, Status::Welcomed, emit)
}

pub async fn on_enrollment_rejected(
    ctx: Context,
    e: EnrollmentRejected,
) -> Result<Emit, HandlerError> {
    let emit = Emit::one(RegistrationRejected {
        user_id: e.user_id,
        reason: e.reason,
    });
    finish(&ctx, Status::Rejected, emit)
}

pub async fn on_package_failed(
    ctx: Context,
    e: WelcomePackageFailed,
) -> Result<Emit, HandlerError> {
    let emit = Emit::one(RegistrationFlagged {
        user_id: e.user_id,
        reason: e.reason,
    });
    finish(&ctx, Status::Flagged, emit)
}

/// The user service, ready to run.
pub fn service(config: &KafkaConfig) -> Result<Service<()>, choreograph::ServiceError> {
    Service::builder("user")
        .catalogue(registration_events::catalogue())
        .keep_saga_state()
        .handle(on_package_completed)
        .handle(on_enrollment_rejected)
        .handle(on_package_failed)
        .build(config)
}

/// A publisher for registrations, validating against the catalogue.
pub fn publisher(config: &KafkaConfig) -> Result<Publisher, PublishError> {
    Ok(Publisher::new(config, "/services/user")?.with_catalogue(registration_events::catalogue()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreograph::Event;

    #[tokio::test]
    async fn ends_each_saga_once() {
        let done = WelcomePackageCompleted {
            user_id: "u".into(),
            coupon_code: "C".into(),
            points: 100,
        };
        let ctx = Context::for_test_event("user", &done, None);
        let out = on_package_completed(ctx.clone(), done.clone())
            .await
            .unwrap()
            .into_outgoing()
            .unwrap();
        assert_eq!(out[0].event_type, UserWelcomed::TYPE);
        assert_eq!(
            ctx.saga_state::<Registration>().unwrap().unwrap().status,
            Some(Status::Welcomed)
        );
        let again = Context::for_test_event("user", &done, ctx.saga_state_json());
        assert!(on_package_completed(again, done)
            .await
            .unwrap()
            .into_outgoing()
            .unwrap()
            .is_empty());

        let rejected = EnrollmentRejected {
            user_id: "u".into(),
            reason: "domain".into(),
        };
        let ctx = Context::for_test_event("user", &rejected, None);
        let out = on_enrollment_rejected(ctx, rejected)
            .await
            .unwrap()
            .into_outgoing()
            .unwrap();
        assert_eq!(out[0].event_type, RegistrationRejected::TYPE);

        let failed = WelcomePackageFailed {
            user_id: "u".into(),
            reason: "points".into(),
        };
        let ctx = Context::for_test_event("user", &failed, None);
        let out = on_package_failed(ctx, failed)
            .await
            .unwrap()
            .into_outgoing()
            .unwrap();
        assert_eq!(out[0].event_type, RegistrationFlagged::TYPE);
    }
}
