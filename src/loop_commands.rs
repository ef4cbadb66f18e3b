//! The researcher's-loop subcommands outside `cram run`: `cram reproduce`,
//! `cram export` and `cram sweep` (their work is in [`crate::reproduce`],
//! [`crate::export`] and [`crate::sweep`]; this is what they print and how
//! they exit).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::PipelineArgs;
use crate::commands::{EXIT_STAGE_FAILED, out};
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::ui::{Ui, Verbosity};

/// `cram reproduce FILE STAGE`: exit 0 when the rerun gave the same bytes.
pub fn reproduce(
    pipeline: &Pipeline,
    cache: &Path,
    stage: &str,
    keep: bool,
    verbosity: Verbosity,
) -> Result<ExitCode> {
    pipeline.require_stage(stage, "reproduce")?;
    let store = Store::open(cache)?;
    let ui = Ui::new(verbosity);
    let r = crate::reproduce::reproduce(pipeline, &store, stage, keep, &ui)?;
    for line in r.lines() {
        out(&line);
    }
    if r.equal() {
        out(&format!("{stage}: the rerun gave the same bytes"));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{stage}: the rerun gave other bytes");
        Ok(ExitCode::from(EXIT_STAGE_FAILED))
    }
}

/// `cram export FILE STAGE DIR`: prints what was written and how to load it.
pub fn export(
    pipeline: &Pipeline,
    cache: &Path,
    stage: &str,
    dir: &Path,
    force: bool,
) -> Result<ExitCode> {
    let store = Store::open(cache)?;
    let e = crate::export::export(pipeline, &store, stage, dir, force)?;
    let auto = if e.exported.kind == "mlm" {
        "AutoModelForMaskedLM"
    } else {
        "AutoModelForSequenceClassification"
    };
    out(&format!(
        "exported {} (entry {}, {} parameters) to {}",
        e.name,
        &e.entry.manifest.key[..16],
        e.exported.parameters,
        e.dir.display()
    ));
    out(&format!("  files: {}", e.exported.files.join(", ")));
    out(&format!(
        "  load: transformers.{auto}.from_pretrained({:?}, trust_remote_code=True)",
        e.dir.display().to_string()
    ));
    Ok(ExitCode::SUCCESS)
}

/// `cram sweep FILE --grid ...`: exit 0 when every combination ran.
pub fn sweep(
    args: PipelineArgs,
    grid: Vec<String>,
    jobs: usize,
    dir: Option<PathBuf>,
    cache: &Path,
    verbosity: Verbosity,
) -> Result<ExitCode> {
    if jobs == 0 {
        return Err(crate::diag::PipelineError::plain("-j must be at least 1").into());
    }
    let store = Store::open(cache)?;
    let ui = Ui::new(verbosity);
    crate::interrupt::install();
    let (summary, folder) = crate::sweep::run(
        &crate::sweep::SweepArgs {
            file: args.file,
            set: args.set,
            grid,
            jobs,
            out: dir,
        },
        &store,
        &ui,
    )?;
    out(&format!(
        "cram sweep: {} combinations, {} failed; report {}",
        summary.combinations,
        summary.failed,
        folder.join("report.html").display()
    ));
    Ok(if summary.failed > 0 {
        ExitCode::from(EXIT_STAGE_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
