//! placeholder: stage
