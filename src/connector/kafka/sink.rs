//! The Kafka sink: encodes each record (JSON or protobuf), keys it (vehicle or segment id),
//! and hands it to an idempotent librdkafka producer. A batch's acknowledgement tokens are
//! released when the delivery report of its last record arrives, and failed if any of its
//! records could not be delivered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::config::KafkaSinkConfig;
use super::security::create_client;
use super::KafkaError as Error;
use crate::record::{Encoding, WireRecord};
use crate::runtime::{Acks, BoxError, Input, Records, Sink};
use crate::telemetry::metrics::{metrics, ComponentMetrics};

/// One batch in flight: each of its records holds a clone; the last delivery report drops
/// it, which releases (or fails) the batch's tokens.
struct InFlight {
    acks: Acks,
    failed: AtomicBool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.failed.load(Ordering::Acquire) {
            self.acks.fail();
        }
    }
}

/// Delivery reports, counted; the first failure is kept so the sink can stop with it.
struct SinkContext {
    metrics: Arc<ComponentMetrics>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<InFlight>) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                batch.failed.store(true, Ordering::Release);
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.error("delivery_failed");
                crate::warn_limited!(component = %self.metrics.component, error = %e, "Kafka delivery failed");
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

pub(super) struct KafkaSink {
    component: String,
    config: KafkaSinkConfig,
}

impl KafkaSinkConfig {
    /// Builds the sink; the producer connects lazily, so this does no network I/O.
    pub fn build(&self, component: &str) -> Result<Box<dyn Sink>, Error> {
        let mut problems = crate::config::Problems::new();
        self.validate("sink", &mut problems);
        if !problems.is_empty() {
            let text: Vec<String> = problems.into_vec().iter().map(|p| p.to_string()).collect();
            return Err(Error::InvalidConfig(text.join("; ")));
        }
        Ok(Box::new(KafkaSink {
            component: component.to_string(),
            config: self.clone(),
        }))
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn run(self: Box<Self>, input: Input) -> Result<(), BoxError> {
        let KafkaSink { component, config } = *self;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("kafka-sink-{component}"))
            .spawn(move || {
                let _ = tx.send(produce_all(input, &component, &config));
            })
            .map_err(|e| Error::Thread(e.to_string()))?;
        rx.await
            .map_err(|_| Error::Thread("the Kafka sink thread panicked".into()))??;
        Ok(())
    }
}

/// The sink's loop, on its own thread: librdkafka's enqueue never blocks, and a full local
/// queue is waited out by polling for delivery reports.
fn produce_all(mut input: Input, component: &str, config: &KafkaSinkConfig) -> Result<(), Error> {
    let component_metrics = metrics().component(component);
    let context = SinkContext {
        metrics: component_metrics.clone(),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    };
    let producer: ThreadedProducer<SinkContext> =
        create_client(&config.client_config(), "creating the producer", |c| {
            c.create_with_context(context)
        })?;
    let mut scratch = Vec::new();
    while let Some(batch) = input.blocking_next() {
        if let Some(e) = first_error(&producer) {
            batch.acks.fail();
            return Err(Error::Delivery {
                topic: config.topic.clone(),
                message: e,
            });
        }
        let in_flight = Arc::new(InFlight {
            acks: batch.acks,
            failed: AtomicBool::new(false),
        });
        let encoding = config.encoding;
        let topic = config.topic.as_str();
        let mut send = |key: Vec<u8>, payload: &[u8]| {
            enqueue(
                &producer,
                topic,
                &key,
                payload,
                &in_flight,
                &component_metrics,
            )
        };
        match &batch.records {
            Records::Probes(v) => each(v, encoding, &mut scratch, &mut send)?,
            Records::MatchedPoints(v) => each(v, encoding, &mut scratch, &mut send)?,
            Records::Observations(v) => each(v, encoding, &mut scratch, &mut send)?,
            Records::Speeds(v) => each(v, encoding, &mut scratch, &mut send)?,
        }
        // Dropping this handle leaves the records' clones: the last delivery report acks.
        drop(in_flight);
    }
    let flushed = producer.flush(Duration::from_millis(config.flush_timeout_ms));
    if let Some(e) = first_error(&producer) {
        return Err(Error::Delivery {
            topic: config.topic.clone(),
            message: e,
        });
    }
    flushed.map_err(|e| Error::Client {
        what: "flushing outstanding records at the end of input",
        source: e,
    })?;
    let ctx = producer.context();
    tracing::debug!(
        component,
        delivered = ctx.delivered.load(Ordering::Relaxed),
        failed = ctx.failed.load(Ordering::Relaxed),
        "Kafka sink finished"
    );
    Ok(())
}

fn first_error(producer: &ThreadedProducer<SinkContext>) -> Option<String> {
    producer
        .context()
        .first_error
        .lock()
        .ok()
        .and_then(|e| e.clone())
}

fn each<T: WireRecord + Clone>(
    rows: &[T],
    encoding: Encoding,
    scratch: &mut Vec<u8>,
    send: &mut impl FnMut(Vec<u8>, &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    for row in rows {
        scratch.clear();
        match encoding {
            // Serialising these plain structs cannot fail (no maps with non-string keys).
            Encoding::Json => serde_json::to_writer(&mut *scratch, row).unwrap_or_default(),
            Encoding::Protobuf => scratch.extend_from_slice(&row.encode(Encoding::Protobuf)),
        }
        send(row.key(), scratch)?;
    }
    Ok(())
}

/// Enqueues one record, waiting while the local queue is full. A record librdkafka refuses
/// for itself (too large) is counted and dropped; anything else stops the sink.
fn enqueue(
    producer: &ThreadedProducer<SinkContext>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    in_flight: &Arc<InFlight>,
    component_metrics: &ComponentMetrics,
) -> Result<(), Error> {
    let mut record = BaseRecord::with_opaque_to(topic, in_flight.clone())
        .key(key)
        .payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                component_metrics.dropped("too_large", 1);
                crate::warn_limited!(
                    component = %component_metrics.component,
                    bytes = payload.len(),
                    "dropped a record larger than the producer's message.max.bytes"
                );
                return Ok(());
            }
            Err((e, _)) => {
                in_flight.failed.store(true, Ordering::Release);
                return Err(Error::Client {
                    what: "enqueueing a record",
                    source: e,
                });
            }
        }
    }
}
