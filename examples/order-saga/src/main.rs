//! The order saga on the embedded cluster: two services, three orders, each traced.
//!
//! `cargo run -p order-saga` (nothing to install, no topic to create).

use std::time::{Duration, Instant};

use choreograph::embedded::EmbeddedKafka;
use choreograph::trace::{TraceOptions, Tracer};
use choreograph::{CorrelationId, Publisher};
use order_saga::OrderPlaced;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    choreograph::runtime::init_logging("warn");
    // An in-process Kafka-protocol cluster; `KafkaConfig::new("host:9092")?` for a real one.
    let kafka = EmbeddedKafka::start(1)?;
    let config = kafka.kafka_config();

    // Two services, as two processes would run them; each creates the topics it needs.
    let mut running = Vec::new();
    for service in [order_saga::orders(&config)?, order_saga::payments(&config)?] {
        let (ready, stop) = (service.ready_signal(), service.shutdown_handle());
        running.push((
            stop,
            tokio::spawn(service.run_until(std::future::pending())),
        ));
        ready.wait().await?; // joined its group, or why it could not
    }

    let publisher =
        Publisher::new(&config, "/services/orders")?.with_catalogue(order_saga::catalogue());
    let mut sagas: Vec<CorrelationId> = Vec::new();
    for (order_id, cents, currency) in [
        ("o-1", 4_200, "EUR"),
        ("o-2", 250_000, "EUR"),
        ("o-3", 900, "XTS"),
    ] {
        let order = OrderPlaced {
            order_id: order_id.into(),
            cents,
            currency: currency.into(),
        };
        sagas.push(publisher.start_saga(&order).await?.correlation_id);
    }

    // Trace each saga until it ends (o-3 ends dead-lettered: payments does not take XTS).
    let tracer = Tracer::new(&config, Some(order_saga::catalogue()))?;
    for id in sagas {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let trace = tracer.trace(&id, &TraceOptions::default());
            match trace {
                // Ended, and the steps that led there logged (the saga log is written in
                // batches, after the events).
                Ok(t)
                    if (t.status.is_final() && t.pending.is_empty())
                        || Instant::now() > deadline =>
                {
                    println!("{}", t.to_text(false));
                    break;
                }
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    for (stop, task) in running {
        stop.shutdown();
        task.await??;
    }
    Ok(())
}
