//! The points service: grants the welcome points an enrolment promises, within a per-user daily
//! budget. No saga state: the decision depends on the event alone.

use std::sync::Arc;

use choreograph::{Context, Emit, HandlerError, KafkaConfig, Service, State};
use registration_events::*;

/// Business rules, from the environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `POINTS_DAILY_BUDGET`: the most points one user may be granted per day (default 500).
    pub daily_budget: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self { daily_budget: 500 }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        let mut s = Self::default();
        if let Ok(v) = std::env::var("POINTS_DAILY_BUDGET") {
            s.daily_budget = v
                .trim()
                .parse()
                .map_err(|_| format!("POINTS_DAILY_BUDGET={v}: not a whole number"))?;
        }
        Ok(s)
    }
}

pub async fn on_newcomer_enrolled(
    State(settings): State<Arc<Settings>>,
    _ctx: Context,
    e: NewcomerEnrolled,
) -> Result<Emit, HandlerError> {
    if e.welcome_points > settings.daily_budget {
        return Ok(Emit::one(PointsGrantRejected {
            user_id: e.user_id,
            points: e.welcome_points,
            reason: format!(
                "{} welcome points exceed the daily budget of {} per user",
                e.welcome_points, settings.daily_budget
            ),
        }));
    }
    Ok(Emit::one(PointsGranted {
        user_id: e.user_id,
        points: e.welcome_points,
    }))
}

/// The points service, ready to run.
pub fn service(
    config: &KafkaConfig,
    settings: Settings,
) -> Result<Service<Arc<Settings>>, choreograph::ServiceError> {
    Service::with_state("points", Arc::new(settings))
        .catalogue(registration_events::catalogue())
        .handle(on_newcomer_enrolled)
        .build(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreograph::Event;

    #[tokio::test]
    async fn grants_within_the_budget_and_refuses_beyond() {
        let s = Arc::new(Settings::default());
        for (points, expected) in [
            (300, PointsGranted::TYPE),
            (500, PointsGranted::TYPE),
            (1000, PointsGrantRejected::TYPE),
        ] {
            let e = NewcomerEnrolled {
                user_id: "u".into(),
                activity: "a".into(),
                welcome_points: points,
            };
            let ctx = Context::for_test_event("points", &e, None);
            let out = on_newcomer_enrolled(State(s.clone()), ctx, e)
                .await
                .unwrap()
                .into_outgoing()
                .unwrap();
            assert_eq!(out[0].event_type, expected, "{points} points");
        }
    }
}
