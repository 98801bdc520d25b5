//! placeholder: connector
