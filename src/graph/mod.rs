//! placeholder: graph
