//! geo placeholder
