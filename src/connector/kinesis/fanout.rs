//! Enhanced fan-out (an option of the source, `enhanced_fan_out = true`): the source
//! registers a stream consumer under its application name (RegisterStreamConsumer, or
//! DescribeStreamConsumer when it exists) and reads each owned shard with SubscribeToShard
//! instead of GetRecords. A subscription lasts at most five minutes; the reader then
//! subscribes again after the continuation sequence number. Each event's records become one
//! batch, exactly as in polling, so checkpoints and the parent-before-child rule are shared.
//!
//! Tested against a mocked SDK only (the event stream included): kinesalite does not
//! implement these operations, and this has not been run against the live service.

use std::time::Duration;

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};

use super::client::{error_code, is_throttling};
use super::config::StartPosition;
use super::shards::shard_number;
use super::source::{behind_gauge, decode_all, ReaderCtx, ReaderMsg};
use super::KinesisError;

fn api(operation: &'static str, stream: &str, message: String) -> KinesisError {
    KinesisError::Api {
        operation,
        stream: stream.to_string(),
        message,
    }
}

/// The consumer's ARN, registering it when needed and waiting until it is ACTIVE.
pub(super) async fn register_consumer(ctx: &ReaderCtx) -> Result<String, KinesisError> {
    let stream = &ctx.config.stream;
    let name = &ctx.config.application;
    let summary = ctx
        .client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| api("DescribeStreamSummary", stream, error_code(&e)))?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .ok_or_else(|| api("DescribeStreamSummary", stream, "no stream summary".into()))?;
    match ctx
        .client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(out) => {
            if let Some(c) = out.consumer() {
                if *c.consumer_status() == ConsumerStatus::Active {
                    return Ok(c.consumer_arn().to_string());
                }
            }
        }
        Err(e) => {
            let code = error_code(&e);
            if code != "ResourceInUseException" {
                return Err(api("RegisterStreamConsumer", stream, code));
            }
        }
    }
    // Registered now or before: wait until it is ACTIVE (it takes seconds on AWS).
    for attempt in 0..120u32 {
        let out = ctx
            .client
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(|e| api("DescribeStreamConsumer", stream, error_code(&e)))?;
        if let Some(c) = out.consumer_description() {
            if *c.consumer_status() == ConsumerStatus::Active {
                return Ok(c.consumer_arn().to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(
            500.min(50 * (u64::from(attempt) + 1)),
        ))
        .await;
    }
    Err(api(
        "DescribeStreamConsumer",
        stream,
        format!("consumer `{name}` never became ACTIVE"),
    ))
}

fn starting_position(
    ctx: &ReaderCtx,
    after: Option<&str>,
) -> Result<StartingPosition, KinesisError> {
    let b = StartingPosition::builder();
    let b = match (after, ctx.config.start_position) {
        (Some(seq), _) => b
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(seq),
        (None, StartPosition::TrimHorizon) => b.r#type(ShardIteratorType::TrimHorizon),
        (None, StartPosition::Latest) => b.r#type(ShardIteratorType::Latest),
        (None, StartPosition::AtTimestamp) => {
            b.r#type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(
                    ctx.config.start_timestamp_ms.unwrap_or(0),
                ))
        }
    };
    b.build()
        .map_err(|e| api("SubscribeToShard", &ctx.config.stream, e.to_string()))
}

/// Reads one shard through SubscribeToShard until it ends or the reader is cancelled.
pub(super) async fn read_shard_fan_out(
    ctx: ReaderCtx,
    consumer_arn: String,
    shard: String,
    mut after: Option<String>,
) {
    let lane = shard_number(&shard)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let gauge = behind_gauge().with_label_values(&[&ctx.metrics.component, &shard]);
    let mut failures = 0u32;
    loop {
        if ctx.cancel.is_cancelled() {
            return;
        }
        let position = match starting_position(&ctx, after.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                crate::warn_limited!(component = %ctx.metrics.component, shard, error = %e, "cannot subscribe");
                return;
            }
        };
        let subscribed = ctx
            .client
            .subscribe_to_shard()
            .consumer_arn(&consumer_arn)
            .shard_id(&shard)
            .starting_position(position)
            .send()
            .await;
        let mut events = match subscribed {
            Ok(out) => out.event_stream,
            Err(e) => {
                let code = error_code(&e);
                // ResourceInUse: the previous subscription of this shard is still open.
                let slow = is_throttling(&code) || code == "ResourceInUseException";
                ctx.metrics.error(if slow {
                    "subscribe_to_shard_throttled"
                } else {
                    "subscribe_to_shard"
                });
                if !slow {
                    crate::warn_limited!(component = %ctx.metrics.component, shard, error = %code, "SubscribeToShard failed; backing off");
                }
                if !ctx.pause(ctx.retry_wait(failures)).await {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        loop {
            // Watermark alignment: a shard far ahead stops taking events (the stream's flow
            // control holds the rest) until the others catch up.
            if !ctx.wait_unpaused(lane).await {
                return;
            }
            let next = tokio::select! {
                _ = ctx.cancel.cancelled() => return,
                e = events.recv() => e,
            };
            match next {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev))) => {
                    failures = 0;
                    gauge.set(ev.millis_behind_latest());
                    let caught_up = ev.millis_behind_latest() == 0;
                    let records = ev.records();
                    if records.is_empty() && caught_up && !ctx.send(ReaderMsg::AtEnd { lane }).await
                    {
                        return;
                    }
                    if let Some(last) = records.last() {
                        let last_sequence = last.sequence_number().to_string();
                        let decoded = decode_all(
                            records,
                            ctx.config.record,
                            ctx.config.encoding,
                            &ctx.config.decode_limits(),
                            &ctx.metrics,
                            &shard,
                        );
                        let msg = ReaderMsg::Records {
                            shard: shard.clone(),
                            lane,
                            records: decoded,
                            last_sequence,
                            at_end: caught_up,
                        };
                        if !ctx.send(msg).await {
                            return;
                        }
                    }
                    let continuation = ev.continuation_sequence_number();
                    if continuation.is_empty() || !ev.child_shards().is_empty() {
                        // Closed and read to its end: the children take over.
                        let _ = ctx.send(ReaderMsg::End { shard }).await;
                        return;
                    }
                    after = Some(continuation.to_string());
                }
                Ok(Some(_)) => {}
                // The subscription's five minutes are up: subscribe again after `after`.
                Ok(None) => break,
                Err(e) => {
                    ctx.metrics.error("subscribe_to_shard_stream");
                    crate::warn_limited!(component = %ctx.metrics.component, shard, error = %e, "fan-out event stream failed; subscribing again");
                    if !ctx.pause(ctx.retry_wait(failures)).await {
                        return;
                    }
                    failures = failures.saturating_add(1);
                    break;
                }
            }
        }
    }
}
