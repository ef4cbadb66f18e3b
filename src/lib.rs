//! The cram engine: pipeline files, the content-addressed cache, the DAG
//! runner and the command line. Stage implementations live in the crates
//! under `stages/`; [`kinds`] adapts them to the engine through the
//! [`registry`].

// Pipeline errors carry their source text for compiler-style reports; they
// are returned once per invocation, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod bench;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod diff;
pub mod exec;
pub mod export;
pub mod hashing;
pub mod hub_server;
pub mod interrupt;
pub mod kinds;
pub mod lockfile;
pub mod loop_commands;
pub mod pipeline;
pub mod plan;
pub mod registry;
pub mod remote;
pub mod reproduce;
pub mod run_command;
pub mod store;
pub mod sweep;
pub mod tensorboard;
pub mod ui;
