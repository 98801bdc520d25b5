//! Building the SDK client: region and endpoint from config, credentials from the standard
//! AWS chain (environment, profile, web identity, container, instance metadata), HTTPS
//! through rustls with ring. Credentials are never logged by this code.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// Connecting to the endpoint gives up after this long…
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// …and a response that sends nothing for this long is abandoned (the call fails and is
/// retried with backoff), so a hung connection cannot stall a shard or the sink. Fan-out
/// event streams send an event at least every 5 s, well within it.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A Kinesis client for `region`, talking to `endpoint` when set (an emulator).
pub(super) async fn build_client(region: &str, endpoint: Option<&str>) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .build(),
        )
        .http_client(http);
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// Exponential backoff with full jitter: a uniform wait in [0, min(max, base · 2^failures)],
/// never below 1 ms.
pub(super) fn backoff(failures: u32, base_ms: u64, max_ms: u64) -> std::time::Duration {
    use rand::Rng;
    let cap = base_ms
        .saturating_mul(1u64 << failures.min(20))
        .min(max_ms)
        .max(1);
    std::time::Duration::from_millis(rand::rng().random_range(1..=cap))
}

/// The service's error code of an SDK error, or a short description of what failed
/// (dispatch, timeout, response); never contains credentials.
pub(super) fn error_code<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>) -> String
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
{
    use aws_sdk_kinesis::error::SdkError;
    match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("Unknown").to_string(),
        SdkError::TimeoutError(_) => "Timeout".to_string(),
        SdkError::DispatchFailure(_) => "DispatchFailure".to_string(),
        SdkError::ResponseError(_) => "ResponseError".to_string(),
        SdkError::ConstructionFailure(_) => "ConstructionFailure".to_string(),
        _ => "Unknown".to_string(),
    }
}

/// Whether an error code means "slow down": the caller backs off and tries again.
pub(super) fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "KMSThrottlingException"
            | "ThrottlingException"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_backoff_stays_within_its_cap() {
        for failures in 0..40 {
            let d = backoff(failures, 100, 5_000);
            assert!(d.as_millis() >= 1 && d.as_millis() <= 5_000);
        }
        assert!(backoff(0, 100, 5_000).as_millis() <= 100);
    }
}
