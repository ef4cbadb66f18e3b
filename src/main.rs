//! The `cram` binary: parses the command line and reports errors.

use std::process::ExitCode;

use clap::Parser;
use cram::cli::Cli;
use cram::commands::{EXIT_STAGE_FAILED, EXIT_USAGE, dispatch};
use cram::diag::PipelineError;

/// Training allocates and frees tensors of many megabytes every step; glibc's malloc hands
/// those back to the kernel each time, and the page faults of taking them back were a large part
/// of a CPU step (docs/performance.md); mimalloc keeps them for reuse (see
/// `cram_pretrain::alloc`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cram_pretrain::alloc::retain_freed_memory();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => match err.downcast::<PipelineError>() {
            Ok(diag) => {
                eprintln!("{:?}", miette::Report::new(diag));
                ExitCode::from(EXIT_USAGE)
            }
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(EXIT_STAGE_FAILED)
            }
        },
    }
}
