//! The Kinesis sink: encodes each record (JSON or protobuf) with its key as partition key,
//! gathers PutRecords requests of at most `batch_max_records` records and `batch_max_bytes`
//! bytes, and sends one when full or when its oldest record has waited `flush_interval_ms`.
//! A response may report success with failed entries inside: exactly those entries are
//! sent again, with exponential backoff and jitter, up to `max_attempts` attempts. A batch's
//! acknowledgement tokens are released once the request holding its last record is fully
//! written, and failed if the sink gives up.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use prometheus::{IntCounterVec, Opts};

use super::client::{backoff, build_client, error_code};
use super::config::{validated, KinesisSinkConfig, MAX_RECORD_BYTES};
use super::KinesisError;
use crate::record::{Encoding, WireRecord};
use crate::runtime::{Acks, BoxError, Input, Records, Sink};
use crate::telemetry::metrics::{metrics, register_collector, ComponentMetrics};

/// The longest partition key Kinesis accepts, in characters.
const MAX_PARTITION_KEY_CHARS: usize = 256;

fn retried_counter() -> &'static IntCounterVec {
    static C: OnceLock<IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        register_collector(
            IntCounterVec::new(
                Opts::new(
                    "pipeline_kinesis_put_retried_records_total",
                    "PutRecords entries sent again after the service reported them failed.",
                ),
                &["component"],
            )
            .expect("valid metric definition"),
        )
    })
}

pub(super) struct KinesisSink {
    component: String,
    config: KinesisSinkConfig,
    client: Option<Client>,
}

impl KinesisSinkConfig {
    /// Builds the sink; the client (and its credentials) is created when the sink runs.
    pub fn build(&self, component: &str) -> Result<Box<dyn Sink>, KinesisError> {
        self.build_around(component, None)
    }

    /// Builds the sink around a given client (a mocked one in tests; `region` and
    /// `endpoint` are then the client's business).
    pub fn build_with_client(
        &self,
        component: &str,
        client: Client,
    ) -> Result<Box<dyn Sink>, KinesisError> {
        self.build_around(component, Some(client))
    }

    fn build_around(
        &self,
        component: &str,
        client: Option<Client>,
    ) -> Result<Box<dyn Sink>, KinesisError> {
        validated(|p| self.validate("sink", p))?;
        Ok(Box::new(KinesisSink {
            component: component.to_string(),
            config: self.clone(),
            client,
        }))
    }
}

#[async_trait]
impl Sink for KinesisSink {
    async fn run(self: Box<Self>, mut input: Input) -> Result<(), BoxError> {
        let KinesisSink {
            component,
            config,
            client,
        } = *self;
        let client = match client {
            Some(c) => c,
            None => build_client(&config.region, config.endpoint.as_deref()).await,
        };
        let m = metrics().component(&component);
        m.dropped("too_large", 0);
        let mut w = Writer {
            client,
            retried: retried_counter().with_label_values(&[&component]),
            config,
            metrics: m,
            entries: Vec::new(),
            bytes: 0,
            acks: Acks::none(),
            scratch: Vec::new(),
        };
        let flush_every = Duration::from_millis(w.config.flush_interval_ms);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                Some(d) => tokio::select! {
                    b = input.next() => Some(b),
                    _ = tokio::time::sleep_until(d) => None,
                },
                None => Some(input.next().await),
            };
            match next {
                Some(Some(batch)) => {
                    w.add(batch.records, batch.acks).await?;
                    if w.entries.is_empty() {
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + flush_every);
                    }
                }
                Some(None) => {
                    w.flush().await?;
                    return Ok(());
                }
                None => {
                    w.flush().await?;
                    deadline = None;
                }
            }
        }
    }
}

/// The request being gathered, and the tokens of the batches whose last record is in it.
struct Writer {
    client: Client,
    config: KinesisSinkConfig,
    metrics: Arc<ComponentMetrics>,
    retried: prometheus::IntCounter,
    entries: Vec<PutRecordsRequestEntry>,
    bytes: usize,
    acks: Acks,
    scratch: Vec<u8>,
}

/// A sink stopped before its gathered request was written (cancelled at the shutdown time
/// limit, or failed): the batches waiting in it were not written, so their tokens fail and
/// the source does not move past them.
impl Drop for Writer {
    fn drop(&mut self) {
        self.acks.fail();
    }
}

/// A partition key Kinesis accepts: the record key as text, cut to 256 characters, or "-"
/// for an empty key.
fn partition_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    if text.is_empty() {
        return "-".to_string();
    }
    text.chars().take(MAX_PARTITION_KEY_CHARS).collect()
}

fn encode_into<T: WireRecord + Clone>(row: &T, encoding: Encoding, out: &mut Vec<u8>) {
    out.clear();
    match encoding {
        // Serialising these plain structs cannot fail (no maps with non-string keys).
        Encoding::Json => serde_json::to_writer(&mut *out, row).unwrap_or_default(),
        Encoding::Protobuf => out.extend_from_slice(&row.encode(Encoding::Protobuf)),
    }
}

impl Writer {
    async fn add(&mut self, records: Records, acks: Acks) -> Result<(), KinesisError> {
        let result = match &records {
            Records::Probes(v) => self.add_rows(v).await,
            Records::MatchedPoints(v) => self.add_rows(v).await,
            Records::Observations(v) => self.add_rows(v).await,
            Records::Speeds(v) => self.add_rows(v).await,
        };
        match result {
            Ok(()) => {
                self.acks.extend(acks);
                Ok(())
            }
            Err(e) => {
                acks.fail();
                Err(e)
            }
        }
    }

    async fn add_rows<T: WireRecord + Clone>(&mut self, rows: &[T]) -> Result<(), KinesisError> {
        for row in rows {
            encode_into(row, self.config.encoding, &mut self.scratch);
            let key = partition_key(&row.key());
            let size = self.scratch.len() + key.len();
            if size > MAX_RECORD_BYTES {
                self.metrics.dropped("too_large", 1);
                self.metrics.error("record_too_large");
                crate::warn_limited!(
                    component = %self.metrics.component,
                    bytes = size,
                    limit_bytes = MAX_RECORD_BYTES,
                    "rejected a record larger than Kinesis accepts (1 MiB with its partition key)"
                );
                continue;
            }
            if self.entries.len() >= self.config.batch_max_records
                || self.bytes + size > self.config.batch_max_bytes
            {
                self.flush().await?;
            }
            let entry = PutRecordsRequestEntry::builder()
                .data(Blob::new(self.scratch.clone()))
                .partition_key(key)
                .build()
                .map_err(|e| KinesisError::Api {
                    operation: "PutRecords",
                    stream: self.config.stream.clone(),
                    message: e.to_string(),
                })?;
            self.entries.push(entry);
            self.bytes += size;
        }
        Ok(())
    }

    /// Sends the gathered request; releases its tokens once everything is written, fails
    /// them when the sink gives up.
    async fn flush(&mut self) -> Result<(), KinesisError> {
        let entries = std::mem::take(&mut self.entries);
        self.bytes = 0;
        let acks = std::mem::take(&mut self.acks);
        if entries.is_empty() {
            acks.ack();
            return Ok(());
        }
        match put_all(
            &self.client,
            &self.config,
            &self.metrics,
            &self.retried,
            entries,
        )
        .await
        {
            Ok(()) => {
                acks.ack();
                Ok(())
            }
            Err(e) => {
                acks.fail();
                Err(e)
            }
        }
    }
}

/// Errors that no retry can cure.
fn is_fatal(code: &str) -> bool {
    matches!(
        code,
        "ResourceNotFoundException"
            | "InvalidArgumentException"
            | "AccessDeniedException"
            | "ValidationException"
            | "UnrecognizedClientException"
            | "ConstructionFailure"
    )
}

/// Writes `entries`, retrying exactly the entries the service reports as failed.
pub(super) async fn put_all(
    client: &Client,
    config: &KinesisSinkConfig,
    metrics: &ComponentMetrics,
    retried: &prometheus::IntCounter,
    entries: Vec<PutRecordsRequestEntry>,
) -> Result<(), KinesisError> {
    let mut pending = entries;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let sent = client
            .put_records()
            .stream_name(&config.stream)
            .set_records(Some(pending.clone()))
            .send()
            .await;
        let last_error = match sent {
            Ok(out) => {
                if out.failed_record_count().unwrap_or(0) == 0 {
                    return Ok(());
                }
                let results = out.records();
                let mut first = None;
                let failed: Vec<PutRecordsRequestEntry> = if results.len() == pending.len() {
                    pending
                        .into_iter()
                        .zip(results)
                        .filter_map(|(entry, result)| {
                            let code = result.error_code()?;
                            first.get_or_insert_with(|| {
                                format!("{code}: {}", result.error_message().unwrap_or(""))
                            });
                            Some(entry)
                        })
                        .collect()
                } else {
                    // A response that does not line up with the request: send all again.
                    first = Some(format!(
                        "{} results for {} entries",
                        results.len(),
                        pending.len()
                    ));
                    pending
                };
                if failed.is_empty() {
                    return Ok(());
                }
                metrics.error("put_records_partial_failure");
                retried.inc_by(failed.len() as u64);
                pending = failed;
                first.unwrap_or_default()
            }
            Err(e) => {
                let code = error_code(&e);
                metrics.error("put_records");
                if is_fatal(&code) {
                    return Err(KinesisError::Api {
                        operation: "PutRecords",
                        stream: config.stream.clone(),
                        message: code,
                    });
                }
                code
            }
        };
        if attempts >= config.max_attempts {
            return Err(KinesisError::PutFailed {
                stream: config.stream.clone(),
                failed: pending.len(),
                attempts,
                last_error,
            });
        }
        crate::warn_limited!(
            component = %metrics.component,
            retrying = pending.len(),
            attempt = attempts,
            error = %last_error,
            "PutRecords: retrying failed entries"
        );
        tokio::time::sleep(backoff(
            attempts - 1,
            config.retry_base_ms,
            config.retry_max_ms,
        ))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_partition_keys_are_cut_to_256_characters() {
        assert_eq!(partition_key(b""), "-");
        assert_eq!(partition_key(b"veh-1"), "veh-1");
        assert_eq!(partition_key(&[b'x'; 300]).len(), 256);
    }
}
