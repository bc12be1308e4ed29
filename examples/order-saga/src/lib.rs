//! A newcomer's own choreography, as the README's "Your own choreography" walks through it: an
//! order saga of two services, `orders` and `payments`, in one process on the embedded cluster.
//!
//! ```text
//! orders ──OrderPlaced──▶ payments ──PaymentAccepted──▶ orders ──OrderConfirmed   (completed)
//!                                  └─PaymentDeclined──▶ orders ──OrderCancelled   (failed)
//! ```
//!
//! Each event is defined once, on its Rust type (`#[derive(Event)]` and schemars'
//! `JsonSchema`); [`schemas`] lists them, and the catalogue, the services' validation and
//! `schemas/*.json` (for the CLI and other languages) all come from there.

use std::sync::Arc;

use choreograph::schema::Schemas;
use choreograph::{Catalogue, Context, Event, HandlerError, KafkaConfig, Service, ServiceError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A customer placed an order: the event that starts a saga.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(type = "shop.order.placed.v1", topic = "shop.orders", producer = "orders", consumers = ["payments"])]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub order_id: String,
    pub cents: u64,
    /// ISO 4217 code; payments takes EUR and USD only.
    pub currency: String,
}

/// The payment went through.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(type = "shop.payment.accepted.v1", topic = "shop.payments", producer = "payments", consumers = ["orders"])]
#[serde(deny_unknown_fields)]
pub struct PaymentAccepted {
    pub order_id: String,
    pub cents: u64,
}

/// The payment was refused (over the limit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(type = "shop.payment.declined.v1", topic = "shop.payments", producer = "payments", consumers = ["orders"])]
#[serde(deny_unknown_fields)]
pub struct PaymentDeclined {
    pub order_id: String,
    pub reason: String,
}

/// The order is confirmed: the saga completed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(
    type = "shop.order.confirmed.v1",
    topic = "shop.orders",
    producer = "orders",
    ends_saga = "completed"
)]
#[serde(deny_unknown_fields)]
pub struct OrderConfirmed {
    pub order_id: String,
}

/// The order is cancelled: the saga failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(
    type = "shop.order.cancelled.v1",
    topic = "shop.orders",
    producer = "orders",
    ends_saga = "failed"
)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

/// Every event of the choreography.
pub fn schemas() -> Schemas {
    Schemas::new()
        .event::<OrderPlaced>()
        .event::<PaymentAccepted>()
        .event::<PaymentDeclined>()
        .event::<OrderConfirmed>()
        .event::<OrderCancelled>()
}

/// The catalogue, built from the types (no files needed).
pub fn catalogue() -> Arc<Catalogue> {
    Arc::new(
        schemas()
            .catalogue()
            .expect("the event types make a valid catalogue"),
    )
}

/// Orders over this many cents are declined.
pub const LIMIT_CENTS: u64 = 100_000;

/// payments: charges an order, declines it over [`LIMIT_CENTS`]; a currency it does not take
/// is a permanent error (the order is dead-lettered, for someone to look at).
pub async fn charge(ctx: Context, order: OrderPlaced) -> Result<choreograph::Emit, HandlerError> {
    if !["EUR", "USD"].contains(&order.currency.as_str()) {
        return Err(HandlerError::permanent(format!(
            "currency `{}` is not supported",
            order.currency
        )));
    }
    if order.cents > LIMIT_CENTS {
        return Ok(choreograph::Emit::one(PaymentDeclined {
            order_id: order.order_id,
            reason: format!("{} cents is over the limit", order.cents),
        }));
    }
    // A retry (attempt 2 and later) would be the place to check the charge did not go through.
    let _ = ctx.attempt();
    Ok(choreograph::Emit::one(PaymentAccepted {
        order_id: order.order_id,
        cents: order.cents,
    }))
}

/// orders: confirms a paid order.
pub async fn confirm(_ctx: Context, paid: PaymentAccepted) -> Result<OrderConfirmed, HandlerError> {
    Ok(OrderConfirmed {
        order_id: paid.order_id,
    })
}

/// orders: cancels a declined order.
pub async fn cancel(
    _ctx: Context,
    declined: PaymentDeclined,
) -> Result<OrderCancelled, HandlerError> {
    Ok(OrderCancelled {
        order_id: declined.order_id,
        reason: declined.reason,
    })
}

/// The orders service.
pub fn orders(config: &KafkaConfig) -> Result<Service<()>, ServiceError> {
    Service::builder("orders")
        .catalogue(catalogue())
        .handle(confirm)
        .handle(cancel)
        .build(config)
}

/// The payments service.
pub fn payments(config: &KafkaConfig) -> Result<Service<()>, ServiceError> {
    Service::builder("payments")
        .catalogue(catalogue())
        .handle(charge)
        .build(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreograph::CorrelationId;

    #[test]
    fn schemas_are_current() {
        schemas()
            .check_or_update_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas"))
            .unwrap();
    }

    #[tokio::test]
    async fn charges_declines_and_refuses() {
        let order = |cents, currency: &str| OrderPlaced {
            order_id: "o-1".into(),
            cents,
            currency: currency.into(),
        };
        let emitted = |e: choreograph::Emit| e.into_outgoing().unwrap()[0].event_type;
        let ctx = Context::for_test_event("payments", &order(500, "EUR"), None);
        assert_eq!(
            emitted(charge(ctx, order(500, "EUR")).await.unwrap()),
            PaymentAccepted::TYPE
        );
        let ctx =
            Context::for_test_in_saga("payments", &order(1, "EUR"), CorrelationId::new(), None)
                .with_attempt(2);
        assert_eq!(ctx.attempt(), 2);
        assert_eq!(
            emitted(charge(ctx, order(LIMIT_CENTS + 1, "EUR")).await.unwrap()),
            PaymentDeclined::TYPE
        );
        let ctx = Context::for_test_event("payments", &order(5, "XTS"), None);
        let err = charge(ctx, order(5, "XTS")).await.unwrap_err();
        assert!(err.to_string().contains("XTS"), "{err}");
    }
}
