//! The coupon service: issues the welcome coupon of an enrolment, and revokes it when the
//! points were refused (compensation). Per-saga state remembers the coupon and the refusal,
//! whichever arrives first.

use std::sync::Arc;

use choreograph::{Context, Emit, HandlerError, KafkaConfig, Service, State};
use registration_events::*;
use serde::{Deserialize, Serialize};

/// Business rules, from the environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `COUPON_VALUE_CENTS`: the welcome coupon's value (default 500).
    pub value_cents: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self { value_cents: 500 }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        let mut s = Self::default();
        if let Ok(v) = std::env::var("COUPON_VALUE_CENTS") {
            s.value_cents = v
                .trim()
                .parse()
                .map_err(|_| format!("COUPON_VALUE_CENTS={v}: not a whole number"))?;
        }
        Ok(s)
    }
}

/// What the coupon service knows of one saga.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub code: Option<String>,
    pub points_refused: Option<String>,
    pub revoked: bool,
}

fn revoke(user_id: String, code: &str, reason: &str) -> CouponRevoked {
    CouponRevoked {
        user_id,
        coupon_code: code.to_owned(),
        reason: format!("points refused: {reason}"),
    }
}

pub async fn on_newcomer_enrolled(
    State(settings): State<Arc<Settings>>,
    ctx: Context,
    e: NewcomerEnrolled,
) -> Result<Emit, HandlerError> {
    let mut c: Coupon = ctx.saga_state()?.unwrap_or_default();
    if c.code.is_some() {
        return Ok(Emit::none()); // a redelivery: the coupon exists
    }
    // Deterministic from the saga: a re-run issues the same code.
    let code = format!(
        "WELCOME-{}",
        &ctx.correlation_id().as_uuid().simple().to_string()[24..]
    )
    .to_uppercase();
    let mut emit = Emit::one(CouponIssued {
        user_id: e.user_id.clone(),
        coupon_code: code.clone(),
        value_cents: settings.value_cents,
    });
    if let Some(reason) = &c.points_refused {
        // The refusal came first: issue, then compensate at once.
        emit = emit.and(revoke(e.user_id, &code, reason));
        c.revoked = true;
    }
    c.code = Some(code);
    ctx.set_saga_state(&c)?;
    Ok(emit)
}

pub async fn on_points_rejected(
    ctx: Context,
    e: PointsGrantRejected,
) -> Result<Emit, HandlerError> {
    let mut c: Coupon = ctx.saga_state()?.unwrap_or_default();
    if c.revoked || c.points_refused.is_some() {
        return Ok(Emit::none());
    }
    c.points_refused = Some(e.reason.clone());
    let emit = match &c.code {
        Some(code) => {
            c.revoked = true;
            Emit::one(revoke(e.user_id, code, &e.reason))
        }
        None => Emit::none(), // revoked as soon as it is issued
    };
    ctx.set_saga_state(&c)?;
    Ok(emit)
}

/// The coupon service, ready to run.
pub fn service(
    config: &KafkaConfig,
    settings: Settings,
) -> Result<Service<Arc<Settings>>, choreograph::ServiceError> {
    Service::with_state("coupon", Arc::new(settings))
        .catalogue(registration_events::catalogue())
        .keep_saga_state()
        .handle(on_newcomer_enrolled)
        .handle(on_points_rejected)
        .build(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreograph::{CorrelationId, Event};

    fn enrolled() -> NewcomerEnrolled {
        NewcomerEnrolled {
            user_id: "u".into(),
            activity: "a".into(),
            welcome_points: 1000,
        }
    }
    fn refused() -> PointsGrantRejected {
        PointsGrantRejected {
            user_id: "u".into(),
            points: 1000,
            reason: "budget".into(),
        }
    }
    fn types(emit: Emit) -> Vec<&'static str> {
        emit.into_outgoing()
            .unwrap()
            .iter()
            .map(|o| o.event_type)
            .collect()
    }

    #[tokio::test]
    async fn issues_once_and_revokes_after_a_refusal_in_either_order() {
        let s = Arc::new(Settings::default());
        let saga = CorrelationId::new();
        // enrolment first
        let ctx = Context::for_test_in_saga("coupon", &enrolled(), saga, None);
        assert_eq!(
            types(
                on_newcomer_enrolled(State(s.clone()), ctx.clone(), enrolled())
                    .await
                    .unwrap()
            ),
            [CouponIssued::TYPE]
        );
        let state = ctx.saga_state_json();
        let again = Context::for_test_in_saga("coupon", &enrolled(), saga, state.clone());
        assert!(
            types(
                on_newcomer_enrolled(State(s.clone()), again, enrolled())
                    .await
                    .unwrap()
            )
            .is_empty(),
            "no second coupon"
        );
        let ctx = Context::for_test_in_saga("coupon", &refused(), saga, state);
        assert_eq!(
            types(on_points_rejected(ctx.clone(), refused()).await.unwrap()),
            [CouponRevoked::TYPE]
        );
        let again = Context::for_test_in_saga("coupon", &refused(), saga, ctx.saga_state_json());
        assert!(
            types(on_points_rejected(again, refused()).await.unwrap()).is_empty(),
            "revoked once"
        );

        // refusal first
        let saga = CorrelationId::new();
        let ctx = Context::for_test_in_saga("coupon", &refused(), saga, None);
        assert!(types(on_points_rejected(ctx.clone(), refused()).await.unwrap()).is_empty());
        let ctx = Context::for_test_in_saga("coupon", &enrolled(), saga, ctx.saga_state_json());
        assert_eq!(
            types(
                on_newcomer_enrolled(State(s), ctx, enrolled())
                    .await
                    .unwrap()
            ),
            [CouponIssued::TYPE, CouponRevoked::TYPE]
        );
    }
}
