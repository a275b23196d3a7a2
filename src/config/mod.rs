//! `gateway.yaml`: loading, `${VAR}` expansion, validation.

pub mod model;

pub use model::*;
