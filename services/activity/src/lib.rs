//! The activity service: enrols newcomers in the new-user activity and assembles their welcome
//! package, a join of the coupon and the points (per-saga state).
//!
//! - `UserRegistered` → `NewcomerEnrolled` with the plan's welcome points, or
//!   `EnrollmentRejected` when the e-mail domain is blocked (disposable addresses).
//! - `CouponIssued`, `PointsGranted`, `PointsGrantRejected`, `CouponRevoked`, in any order and
//!   any number of times: once coupon and points are both there → `WelcomePackageCompleted`;
//!   once the points were refused and the coupon revoked → `WelcomePackageFailed`. Exactly one
//!   of the two per saga: the package remembers that it is finished.

use std::sync::Arc;

use choreograph::{Context, Emit, HandlerError, KafkaConfig, Service, State};
use registration_events::*;
use serde::{Deserialize, Serialize};

/// Business rules, from the environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `ACTIVITY_BLOCKED_DOMAINS`: comma-separated e-mail domains refused (default
    /// `mailinator.com,example.invalid`).
    pub blocked_domains: Vec<String>,
    /// `ACTIVITY_NAME`: the activity newcomers join (default `newcomer-2026`).
    pub activity: String,
    /// Welcome points per plan: free 100, pro 300, enterprise 1000.
    pub points: [u32; 3],
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            blocked_domains: vec!["mailinator.com".into(), "example.invalid".into()],
            activity: "newcomer-2026".into(),
            points: [100, 300, 1000],
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        let mut s = Self::default();
        if let Ok(v) = std::env::var("ACTIVITY_BLOCKED_DOMAINS") {
            s.blocked_domains = v
                .split(',')
                .map(|d| d.trim().to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect();
        }
        if let Ok(v) = std::env::var("ACTIVITY_NAME") {
            if v.trim().is_empty() {
                return Err("ACTIVITY_NAME must not be empty".into());
            }
            s.activity = v;
        }
        Ok(s)
    }

    pub fn welcome_points(&self, plan: Plan) -> u32 {
        match plan {
            Plan::Free => self.points[0],
            Plan::Pro => self.points[1],
            Plan::Enterprise => self.points[2],
        }
    }
}

/// The welcome package of one saga: what arrived so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub coupon_code: Option<String>,
    pub points: Option<u32>,
    pub points_refused: Option<String>,
    pub coupon_revoked: bool,
    pub finished: bool,
}

pub async fn on_user_registered(
    State(settings): State<Arc<Settings>>,
    _ctx: Context,
    e: UserRegistered,
) -> Result<Emit, HandlerError> {
    let domain = e
        .email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    if settings.blocked_domains.contains(&domain) {
        return Ok(Emit::one(EnrollmentRejected {
            user_id: e.user_id,
            reason: format!("e-mail domain `{domain}` is not accepted"),
        }));
    }
    Ok(Emit::one(NewcomerEnrolled {
        user_id: e.user_id,
        activity: settings.activity.clone(),
        welcome_points: settings.welcome_points(e.plan),
    }))
}

/// Applies one arrival to the package and emits the package's outcome once it is known.
fn settle(
    ctx: &Context,
    user_id: String,
    update: impl FnOnce(&mut Package),
) -> Result<Emit, HandlerError> {
    let mut p: Package = ctx.saga_state()?.unwrap_or_default();
    if p.finished {
        return Ok(Emit::none());
    }
    update(&mut p);
    let emit = match (
        &p.coupon_code,
        p.points,
        &p.points_refused,
        p.coupon_revoked,
    ) {
        (Some(code), Some(points), None, false) => {
            p.finished = true;
            Emit::one(WelcomePackageCompleted {
                user_id,
                coupon_code: code.clone(),
                points,
            })
        }
        (_, _, Some(reason), true) => {
            p.finished = true;
            Emit::one(WelcomePackageFailed {
                user_id,
                reason: reason.clone(),
            })
        }
        _ => Emit::none(),
    };
    ctx.set_saga_state(&p)?;
    Ok(emit)
}

pub async fn on_coupon_issued(ctx: Context, e: CouponIssued) -> Result<Emit, HandlerError> {
    settle(&ctx, e.user_id, |p| p.coupon_code = Some(e.coupon_code))
}

pub async fn on_coupon_revoked(ctx: Context, e: CouponRevoked) -> Result<Emit, HandlerError> {
    settle(&ctx, e.user_id, |p| {
        p.coupon_code.get_or_insert(e.coupon_code);
        p.coupon_revoked = true;
    })
}

pub async fn on_points_granted(ctx: Context, e: PointsGranted) -> Result<Emit, HandlerError> {
    settle(&ctx, e.user_id, |p| p.points = Some(e.points))
}

pub async fn on_points_rejected(
    ctx: Context,
    e: PointsGrantRejected,
) -> Result<Emit, HandlerError> {
    settle(&ctx, e.user_id, |p| p.points_refused = Some(e.reason))
}

/// The activity service, ready to run.
pub fn service(
    config: &KafkaConfig,
    settings: Settings,
) -> Result<Service<Arc<Settings>>, choreograph::ServiceError> {
    Service::with_state("activity", Arc::new(settings))
        .catalogue(registration_events::catalogue())
        .keep_saga_state()
        .handle(on_user_registered)
        .handle(on_coupon_issued)
        .handle(on_coupon_revoked)
        .handle(on_points_granted)
        .handle(on_points_rejected)
        .build(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreograph::Event;

    fn types(emit: Emit) -> Vec<&'static str> {
        emit.into_outgoing()
            .unwrap()
            .iter()
            .map(|o| o.event_type)
            .collect()
    }

    fn registered(email: &str, plan: Plan) -> UserRegistered {
        UserRegistered {
            user_id: "u-1".into(),
            email: email.into(),
            display_name: "Ada".into(),
            plan,
        }
    }

    #[tokio::test]
    async fn enrols_or_rejects_by_domain_and_plan() {
        let s = Arc::new(Settings::default());
        let ctx =
            Context::for_test_event("activity", &registered("ada@example.com", Plan::Pro), None);
        let out = on_user_registered(
            State(s.clone()),
            ctx,
            registered("ada@example.com", Plan::Pro),
        )
        .await
        .unwrap();
        let out = out.into_outgoing().unwrap();
        assert_eq!(out[0].event_type, NewcomerEnrolled::TYPE);
        let enrolled: NewcomerEnrolled = serde_json::from_slice(&out[0].data).unwrap();
        assert_eq!(enrolled.welcome_points, 300);

        let e = registered("bot@Mailinator.com", Plan::Free);
        let ctx = Context::for_test_event("activity", &e, None);
        assert_eq!(
            types(on_user_registered(State(s), ctx, e).await.unwrap()),
            [EnrollmentRejected::TYPE]
        );
    }

    /// Runs arrivals through the join, carrying the state from one to the next.
    async fn join(arrivals: Vec<&str>) -> Vec<&'static str> {
        let mut state = None;
        let mut emitted = Vec::new();
        for a in arrivals {
            let (ctx, out) = match a {
                "coupon" => {
                    let e = CouponIssued {
                        user_id: "u".into(),
                        coupon_code: "C".into(),
                        value_cents: 500,
                    };
                    let ctx = Context::for_test_event("activity", &e, state.clone());
                    (ctx.clone(), on_coupon_issued(ctx, e).await)
                }
                "points" => {
                    let e = PointsGranted {
                        user_id: "u".into(),
                        points: 100,
                    };
                    let ctx = Context::for_test_event("activity", &e, state.clone());
                    (ctx.clone(), on_points_granted(ctx, e).await)
                }
                "refused" => {
                    let e = PointsGrantRejected {
                        user_id: "u".into(),
                        points: 1000,
                        reason: "budget".into(),
                    };
                    let ctx = Context::for_test_event("activity", &e, state.clone());
                    (ctx.clone(), on_points_rejected(ctx, e).await)
                }
                "revoked" => {
                    let e = CouponRevoked {
                        user_id: "u".into(),
                        coupon_code: "C".into(),
                        reason: "points refused".into(),
                    };
                    let ctx = Context::for_test_event("activity", &e, state.clone());
                    (ctx.clone(), on_coupon_revoked(ctx, e).await)
                }
                other => panic!("unknown arrival {other}"),
            };
            emitted.extend(types(out.unwrap()));
            state = ctx.saga_state_json();
        }
        emitted
    }

    #[tokio::test]
    async fn the_join_completes_once_in_any_order_and_with_duplicates() {
        for order in [
            vec!["coupon", "points"],
            vec!["points", "coupon"],
            vec!["coupon", "coupon", "points", "points", "coupon"],
        ] {
            assert_eq!(
                join(order.clone()).await,
                [WelcomePackageCompleted::TYPE],
                "{order:?}"
            );
        }
    }

    #[tokio::test]
    async fn refused_points_fail_the_package_after_the_coupon_is_revoked() {
        for order in [
            vec!["coupon", "refused", "revoked"],
            vec!["refused", "revoked", "coupon"],
            vec!["refused", "coupon", "revoked", "revoked", "refused"],
        ] {
            assert_eq!(
                join(order.clone()).await,
                [WelcomePackageFailed::TYPE],
                "{order:?}"
            );
        }
        assert!(
            join(vec!["coupon", "refused"]).await.is_empty(),
            "waits for the compensation"
        );
    }
}
