//! Adapters between the engine and the stage libraries, one module per kind.

use crate::registry::Kind;

pub mod command;

/// Every kind, in the order `cram kinds` lists them.
pub static ALL: &[&dyn Kind] = &[&command::CommandKind];
