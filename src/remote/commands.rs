//! `cram push` and `cram pull`: what they print and how they exit.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::{Pushed, Remote};
use crate::commands::{EXIT_STAGE_FAILED, out};
use crate::diag::PipelineError;
use crate::lockfile::LockFile;
use crate::pipeline::Pipeline;
use crate::plan::{self, State};
use crate::store::Store;
use crate::ui::{Ui, Verbosity};

/// The error for a command that needs a remote where none is named.
pub fn no_remote(pipeline: &Pipeline) -> PipelineError {
    PipelineError::plain("no shared cache is named").with_help(format!(
        "give --remote URL (s3://BUCKET/PREFIX, gs://..., az://..., or a directory), \
         set ${}, or add remote = \"...\" to {}",
        super::REMOTE_ENV,
        pipeline.meta.file.display()
    ))
}

fn open(pipeline: &Pipeline, flag: Option<&str>) -> Result<Remote> {
    super::resolve(flag, Some(&pipeline.meta))?.ok_or_else(|| no_remote(pipeline).into())
}

fn selected(pipeline: &Pipeline, until: Option<&str>) -> Result<Option<Vec<usize>>> {
    match until {
        Some(name) => {
            pipeline.require_stage(name, "--until")?;
            Ok(Some(pipeline.with_ancestors(name)))
        }
        None => Ok(None),
    }
}

/// `cram push FILE`: uploads every cached stage (with its sub-units) that
/// the remote lacks. Exits 1 when a selected stage is not cached here.
pub fn push(
    pipeline: &Pipeline,
    cache: &Path,
    flag: Option<&str>,
    until: Option<&str>,
    verbosity: Verbosity,
) -> Result<ExitCode> {
    let remote = open(pipeline, flag)?;
    let store = Store::open(cache)?;
    let only = selected(pipeline, until)?;
    let lock = LockFile::read(&pipeline.meta.lock_file)?;
    let ui = Ui::new(verbosity);
    let statuses = plan::status(pipeline, &store, &lock, &HashSet::new(), only.as_deref());
    let (mut pushed, mut there, mut missing, mut bytes) = (0, 0, 0, 0u64);
    for st in statuses {
        match st.state {
            State::Cached { entry } => {
                let bar = ui.bytes_bar(&st.name);
                let result = remote.push(&store, &entry, &bar);
                ui.finish_bar(&bar);
                match result? {
                    Pushed::AlreadyThere => {
                        there += 1;
                        ui.line(&format!("  there   {}", st.name));
                    }
                    Pushed::Uploaded(n) => {
                        pushed += 1;
                        bytes += n;
                        ui.line(&format!("  pushed  {} ({:.1} MB)", st.name, n as f64 / 1e6));
                    }
                }
            }
            State::Stale { reasons } => {
                missing += 1;
                ui.error(&format!(
                    "  not pushed {}: not in the local cache ({})",
                    st.name,
                    reasons.join("; ")
                ));
            }
        }
    }
    let summary = format!(
        "cram: {pushed} pushed ({:.1} MB), {there} already on {}, {missing} not cached here",
        bytes as f64 / 1e6,
        remote.address()
    );
    if missing > 0 {
        eprintln!(
            "{summary}; run `cram run {}` first",
            pipeline.meta.file.display()
        );
        Ok(ExitCode::from(EXIT_STAGE_FAILED))
    } else {
        if verbosity != Verbosity::Quiet {
            out(&summary);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `cram pull FILE`: downloads, in pipeline order, every stage the local
/// cache lacks and the remote has. Exits 1 when a remote entry was
/// unusable; stages the remote lacks are listed, not an error.
pub fn pull(
    pipeline: &Pipeline,
    cache: &Path,
    flag: Option<&str>,
    until: Option<&str>,
    verbosity: Verbosity,
) -> Result<ExitCode> {
    let remote = open(pipeline, flag)?;
    let store = Store::open(cache)?;
    let _store_lock = store.lock_store(false)?;
    let only = selected(pipeline, until)?;
    let lock = LockFile::read(&pipeline.meta.lock_file)?;
    let ui = Ui::new(verbosity);
    let (mut pulled, mut bad) = (Vec::new(), Vec::new());
    let mut fetch = |stage: &crate::pipeline::Stage, key: &str| {
        let _key_lock = store.lock_key(key, || {}).ok()?;
        let bar = ui.bytes_bar(&stage.name);
        let result = remote.pull(&store, key, &bar);
        ui.finish_bar(&bar);
        match result {
            Ok(Some(entry)) => {
                ui.line(&format!("  pulled  {}", stage.name));
                pulled.push(stage.name.clone());
                Some(entry)
            }
            Ok(None) => None,
            Err(e) => {
                ui.error(&format!("  unusable {}: {e:#}", stage.name));
                bad.push(stage.name.clone());
                None
            }
        }
    };
    let statuses = plan::status_fetching(
        pipeline,
        &store,
        &lock,
        &HashSet::new(),
        only.as_deref(),
        &mut fetch,
    );
    let mut absent = Vec::new();
    for st in &statuses {
        if matches!(st.state, State::Stale { .. }) {
            absent.push(st.name.as_str());
        }
    }
    let cached = statuses.len() - absent.len() - pulled.len();
    let summary = format!(
        "cram: {} pulled from {}, {cached} were cached; {} still to build{}",
        pulled.len(),
        remote.address(),
        absent.len(),
        if absent.is_empty() {
            String::new()
        } else {
            format!(" ({})", absent.join(", "))
        }
    );
    if bad.is_empty() {
        if verbosity != Verbosity::Quiet {
            out(&summary);
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{summary}; the remote entries of {} are damaged or incomplete and were not used",
            bad.join(", ")
        );
        Ok(ExitCode::from(EXIT_STAGE_FAILED))
    }
}
