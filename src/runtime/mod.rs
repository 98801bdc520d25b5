//! placeholder: runtime
