//! Runbooks: the model, loading from YAML, validation, and the compiled plan.

pub mod catalog;
pub mod find;
pub mod load;
pub mod model;
pub mod node;
pub mod params;
pub mod plan;
pub mod source;
pub mod validate;

pub use model::*;
