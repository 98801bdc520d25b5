//! placeholder: record
