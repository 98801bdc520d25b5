//! Configuration: serde structs with `deny_unknown_fields`, layered loading (defaults, then
//! a TOML file, then `PIPELINE__SECTION__KEY` environment variables) and pure validation
//! that reports every problem at once, each with where its value came from.

mod problems;

pub use problems::{Problem, Problems};
