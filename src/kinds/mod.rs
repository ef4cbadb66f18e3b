//! Adapters between the engine and the stage libraries, one module per
//! stage crate. Each adapter maps a kind name to its parameter type, code
//! version and run function; [`ALL`] is the registry's list.

use crate::registry::Kind;

pub mod clean;
pub mod command;
pub mod data;
pub mod glue;
pub mod model;
pub mod report;
pub mod simple;
pub mod tokens;

/// Every kind, in pipeline order, as `cram kinds` lists them.
pub static ALL: &[&dyn Kind] = &[
    &data::Download,
    &data::SYNTHETIC,
    &clean::FILTER,
    &clean::DEDUP,
    &tokens::TOKENIZER,
    &tokens::PACK,
    &model::Pretrain,
    &glue::SYNTHETIC_GLUE,
    &glue::Glue,
    &report::Report,
    &command::CommandKind,
];
