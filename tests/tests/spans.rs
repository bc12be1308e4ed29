//! Every handled event runs inside a `tracing` span carrying the saga's context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreograph::{testkit, Context, Event, HandlerError, Publisher, Service};
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl Event for Ping {
    const TYPE: &'static str = "test.spans.ping.v1";
    const TOPIC: &'static str = "spans.ping";
}

type Spans = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// Records the fields of every `handle` span.
struct Capture(Spans);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "handle" {
            let mut fields = HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

static INSIDE: Mutex<Vec<bool>> = Mutex::new(Vec::new());

async fn on_ping(_ctx: Context, _e: Ping) -> Result<(), HandlerError> {
    let inside = tracing::Span::current()
        .metadata()
        .map(|m| m.name() == "handle")
        .unwrap_or(false);
    INSIDE.lock().unwrap().push(inside);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn handlers_run_in_a_span_with_the_saga_context() {
    let spans: Spans = Arc::default();
    let subscriber = tracing_subscriber::registry().with(Capture(spans.clone()));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let config = testkit::isolated_config();
    let publisher = Publisher::new(&config, "/services/test").unwrap();
    let first = publisher.start_saga(&Ping { n: 1 }).await.unwrap();
    let mut follow =
        choreograph::event::to_cloud_event(&Ping { n: 2 }, "/services/test", first.correlation_id)
            .unwrap();
    follow.causation_id = Some(first.event_id.clone());
    publisher
        .publish_cloud_event(&config.topic(Ping::TOPIC), &follow)
        .await
        .unwrap();

    let service = Service::builder("traced")
        .handle(on_ping)
        .build(&config)
        .unwrap();
    let stop = service.shutdown_handle();
    let task = tokio::spawn(service.run_until(std::future::pending()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while INSIDE.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.shutdown();
    task.await.unwrap().unwrap();

    assert_eq!(
        *INSIDE.lock().unwrap(),
        [true, true],
        "the handler ran inside the span"
    );
    let spans = spans.lock().unwrap();
    assert_eq!(spans.len(), 2);
    for s in spans.iter() {
        assert_eq!(s["service"], "traced");
        assert_eq!(s["event_type"], Ping::TYPE);
        assert_eq!(s["correlation_id"], first.correlation_id.to_string());
    }
    assert_eq!(
        spans[0]["causation_id"], "",
        "a saga's first event has no cause"
    );
    assert_eq!(spans[1]["causation_id"], first.event_id);
    assert_eq!(spans[1]["event_id"], follow.id);
}
