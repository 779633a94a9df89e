//! Runbooks: the model, loading from YAML, validation, and the compiled plan.

pub mod load;
pub mod model;
pub mod node;
pub mod plan;
pub mod source;
pub mod validate;

pub use model::*;
