//! The "choreograph" implementation: the services written with the framework, the way a user
//! would write them (typed events, plain async handlers, `Service::builder(...).handle(...)`),
//! at-least-once (the framework's default) or exactly-once (`Delivery::ExactlyOnce` with a
//! stable instance ID per process, so the transactional.id is `<group>.<instance>`). One
//! process per service; every other option is the framework's default.
//!
//! The registration join is kept in process memory keyed by correlation ID (the framework's
//! durable per-saga state is not there yet); every implementation joins the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use choreograph::runtime::{Delivery, Service, ServiceOptions};
use choreograph::{Context, CorrelationId, HandlerError, KafkaConfig, State};

use crate::model::*;
use crate::ServiceArgs;

/// What the activity service knows of a saga's join so far.
#[derive(Default)]
struct Partial {
    coupon_code: Option<String>,
    points: Option<u32>,
}

type Joins = Arc<Mutex<HashMap<CorrelationId, Partial>>>;

async fn enrol(_ctx: Context, e: UserRegistered) -> Result<NewcomerEnrolled, HandlerError> {
    Ok(NewcomerEnrolled {
        user_id: e.user_id,
        email: e.email,
    })
}

async fn issue_coupon(_ctx: Context, e: NewcomerEnrolled) -> Result<CouponIssued, HandlerError> {
    Ok(CouponIssued {
        coupon_code: coupon_code(&e.user_id),
        user_id: e.user_id,
    })
}

async fn grant_points(_ctx: Context, e: NewcomerEnrolled) -> Result<PointsGranted, HandlerError> {
    Ok(PointsGranted {
        user_id: e.user_id,
        points: WELCOME_POINTS,
    })
}

/// Records one half of the join; the saga completes when both halves are in.
fn join(
    joins: &Joins,
    saga: CorrelationId,
    user_id: String,
    update: impl FnOnce(&mut Partial),
) -> Option<WelcomePackageCompleted> {
    let mut map = joins.lock().unwrap_or_else(|e| e.into_inner());
    let partial = map.entry(saga).or_default();
    update(partial);
    if partial.coupon_code.is_some() && partial.points.is_some() {
        let done = map.remove(&saga)?;
        Some(WelcomePackageCompleted {
            user_id,
            coupon_code: done.coupon_code?,
            points: done.points?,
        })
    } else {
        None
    }
}

async fn on_coupon(
    State(joins): State<Joins>,
    ctx: Context,
    e: CouponIssued,
) -> Result<Option<WelcomePackageCompleted>, HandlerError> {
    Ok(join(&joins, ctx.correlation_id(), e.user_id, |p| {
        p.coupon_code = Some(e.coupon_code)
    }))
}

async fn on_points(
    State(joins): State<Joins>,
    ctx: Context,
    e: PointsGranted,
) -> Result<Option<WelcomePackageCompleted>, HandlerError> {
    Ok(join(&joins, ctx.correlation_id(), e.user_id, |p| {
        p.points = Some(e.points)
    }))
}

async fn step_one(_ctx: Context, e: ChainStarted) -> Result<ChainContinued, HandlerError> {
    Ok(ChainContinued {
        user_id: e.user_id,
        step: e.step + 1,
    })
}

async fn step_two(_ctx: Context, e: ChainContinued) -> Result<ChainFinished, HandlerError> {
    Ok(ChainFinished {
        user_id: e.user_id,
        step: e.step + 1,
    })
}

/// Runs one service (`choreograph` or `choreograph-bare`) until SIGINT/SIGTERM.
pub(crate) fn run(args: &ServiceArgs) -> anyhow::Result<()> {
    let ServiceArgs {
        implementation,
        role,
        ref brokers,
        ref prefix,
        mode,
        ref instance_id,
        ref properties,
        max_in_flight,
    } = *args;
    let bare = implementation == Implementation::ChoreographBare;
    // The configuration a service binary reads from its environment (`CHOREOGRAPH_KAFKA_<NAME>`
    // librdkafka properties, ...), inherited from the harness: for what-if runs of the framework
    // alone (`-X` sets a property for the raw services too).
    let mut config = KafkaConfig::from_env_with(Some(brokers))?;
    config.topic_prefix = prefix.to_owned();
    for (k, v) in properties {
        config.set(k, v);
    }
    let defaults = ServiceOptions::default();
    let mut options = ServiceOptions {
        group_id: Some(format!("{prefix}{}", role.name())),
        instance_id: Some(instance_id.to_owned()),
        delivery: match mode {
            Mode::AtLeastOnce => Delivery::AtLeastOnce,
            Mode::ExactlyOnce => Delivery::ExactlyOnce,
        },
        max_in_flight_per_partition: max_in_flight.unwrap_or(defaults.max_in_flight_per_partition),
        ..defaults
    };
    // The deployment settings a service binary reads (`CHOREOGRAPH_SAGA_LOG=off`,
    // `CHOREOGRAPH_IDEMPOTENCY_WINDOW_SECS=0`, ...), inherited from the harness: for what-if runs.
    options.apply_env().map_err(anyhow::Error::msg)?;
    if bare {
        // `choreograph-bare`: the runtime without the saga log and the handled markers.
        options.saga_log = false;
        options.idempotency = None;
    }
    // What `#[tokio::main]` builds: the multi-threaded runtime, one worker per core.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let result = match role {
            Role::Activity => {
                Service::with_state(role.name(), Joins::default())
                    .options(options)
                    .handle(enrol)
                    .handle(on_coupon)
                    .handle(on_points)
                    .build(&config)?
                    .run()
                    .await
            }
            Role::Coupon => {
                Service::builder(role.name())
                    .options(options)
                    .handle(issue_coupon)
                    .build(&config)?
                    .run()
                    .await
            }
            Role::Points => {
                Service::builder(role.name())
                    .options(options)
                    .handle(grant_points)
                    .build(&config)?
                    .run()
                    .await
            }
            Role::Svc1 => {
                Service::builder(role.name())
                    .options(options)
                    .handle(step_one)
                    .build(&config)?
                    .run()
                    .await
            }
            Role::Svc2 => {
                Service::builder(role.name())
                    .options(options)
                    .handle(step_two)
                    .build(&config)?
                    .run()
                    .await
            }
        };
        result.with_context(|| format!("service {}", role.name()))
    })
}
