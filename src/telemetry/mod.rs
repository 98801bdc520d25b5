//! placeholder: telemetry
