//! Stages: synchronous batch transforms (the clean stage; later assign and aggregate).
