//! `cram run`: loads the pipeline, picks the remote and the executor, runs
//! the stale stages and prints the summary.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::RunArgs;
use crate::commands::{EXIT_STAGE_FAILED, dry_run_report, load, out};
use crate::exec::{self, Outcome, RunOptions};
use crate::lockfile::LockFile;
use crate::plan::{self, State};
use crate::store::Store;
use crate::ui::{Ui, Verbosity};

/// Runs each stale stage's [`Kind::preflight`](crate::registry::Kind::preflight), naming the
/// stage whose check fails.
fn preflight(
    pipeline: &crate::pipeline::Pipeline,
    store: &Store,
    forced: &HashSet<String>,
    until: Option<&str>,
) -> Result<()> {
    let lock = LockFile::read(&pipeline.meta.lock_file)?;
    let only = until.map(|u| pipeline.with_ancestors(u));
    for st in plan::status(pipeline, store, &lock, forced, only.as_deref()) {
        if !matches!(st.state, State::Stale { .. }) {
            continue;
        }
        let Some(stage) = pipeline.stage(&st.name) else {
            continue;
        };
        stage.kind.preflight(&stage.params).map_err(|e| {
            anyhow::anyhow!(
                "stage `{}` cannot run on this machine: {e:#} ({} [stages.{}])",
                st.name,
                pipeline.meta.file.display(),
                st.name
            )
        })?;
    }
    Ok(())
}

/// Runs `cram run` with `cache` and the global `--remote`.
pub fn run(
    run: RunArgs,
    cache: &Path,
    remote_flag: Option<&str>,
    verbosity: Verbosity,
) -> Result<ExitCode> {
    let RunArgs {
        pipeline: args,
        until,
        force,
        dry_run,
        jobs,
        locked,
        push,
        executor,
    } = run;
    let pipeline = load(&args)?;
    if let Some(u) = &until {
        pipeline.require_stage(u, "--until")?;
    }
    for f in &force {
        pipeline.require_stage(f, "--force")?;
    }
    if jobs == 0 {
        return Err(crate::diag::PipelineError::plain("-j must be at least 1").into());
    }
    let store = Store::open(cache)?;
    let forced: HashSet<String> = force.into_iter().collect();
    if dry_run {
        return dry_run_report(&pipeline, &store, &forced, until.as_deref());
    }
    let ui = Ui::new(verbosity);
    ui.line(&format!(
        "cram: pipeline `{}` ({}), cache {}",
        pipeline.meta.name,
        pipeline.meta.file.display(),
        store.root().display()
    ));
    if verbosity == Verbosity::Verbose {
        let lock = LockFile::read(&pipeline.meta.lock_file)?;
        for st in plan::status(&pipeline, &store, &lock, &forced, None) {
            if let State::Stale { reasons } = st.state {
                ui.detail(&format!("  stale   {}: {}", st.name, reasons.join("; ")));
            }
        }
    }
    let remote = crate::remote::resolve(remote_flag, Some(&pipeline.meta))?;
    if push && remote.is_none() {
        return Err(crate::remote::commands::no_remote(&pipeline).into());
    }
    if let Some(r) = &remote {
        ui.line(&format!("cram: shared cache {}", r.address()));
    }
    let slurm = match executor {
        Some(crate::cli::ExecutorName::Slurm) => true,
        Some(crate::cli::ExecutorName::Local) => false,
        None => pipeline.meta.executor.as_deref() == Some("slurm"),
    };
    let executor: Option<std::sync::Arc<dyn exec::Executor>> = if slurm {
        ui.line("cram: stages are built as Slurm array jobs");
        Some(std::sync::Arc::new(exec::slurm::Slurm::from_pipeline(
            &pipeline.meta,
        )?))
    } else {
        None
    };
    // Stages this machine will build must find what they need on it (a GPU) before any
    // stage starts. Stages a shared cache may hand over, or a Slurm node will build, check
    // where they run instead.
    if executor.is_none() && remote.is_none() {
        preflight(&pipeline, &store, &forced, until.as_deref())?;
    }
    let opts = RunOptions {
        until,
        force: forced,
        jobs,
        locked,
        remote: remote.map(std::sync::Arc::new),
        push,
        executor,
    };
    crate::interrupt::install();
    let report = exec::run(&pipeline, &store, &opts, &ui)?;
    let count = |f: fn(&Outcome) -> bool| report.outcomes.iter().filter(|(_, o)| f(o)).count();
    let ran = count(|o| matches!(o, Outcome::Ran(_)));
    let cached = count(|o| matches!(o, Outcome::Cached(_)));
    let pulled = count(|o| matches!(o, Outcome::Pulled(_)));
    let failed = count(|o| matches!(o, Outcome::Failed(..)));
    let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
    for (name, o) in &report.outcomes {
        if let Outcome::Ran(e) | Outcome::Cached(e) | Outcome::Pulled(e) = o
            && e.manifest.kind == "report"
        {
            out(&format!(
                "report ({name}): {}",
                e.run_dir().join("report.html").display()
            ));
        }
    }
    let pulled = if pulled > 0 {
        format!(", {pulled} pulled")
    } else {
        String::new()
    };
    let summary = format!(
        "cram: {ran} ran, {cached} cached{pulled}, {failed} failed, {skipped} skipped; lock file {}",
        pipeline.meta.lock_file.display()
    );
    if crate::interrupt::requested() {
        eprintln!("{summary}");
        Ok(ExitCode::from(crate::interrupt::EXIT_INTERRUPTED))
    } else if report.failed() {
        eprintln!("{summary}");
        Ok(ExitCode::from(EXIT_STAGE_FAILED))
    } else {
        if verbosity != Verbosity::Quiet {
            out(&summary);
        }
        Ok(ExitCode::SUCCESS)
    }
}
