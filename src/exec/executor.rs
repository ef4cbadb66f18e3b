//! The executor seam: where a stage's work runs. The engine keys a stage,
//! looks in the caches, stages its entry, and commits it; an executor only
//! fills the staged output directory and returns the stage's metrics. The
//! local executor runs the stage in this process; the Slurm executor
//! ([`super::slurm`]) runs it as an array job on a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::Stage;
use crate::registry::StageContext;

/// One stage's build, as handed to an executor.
pub struct Build<'a> {
    /// The stage.
    pub stage: &'a Stage,
    /// Where it writes, what it reads (for an in-process build).
    pub ctx: &'a StageContext<'a>,
    /// What another process needs to rebuild `ctx` (for a build elsewhere).
    pub task: &'a TaskSpec,
}

/// Where stages run.
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Its name in messages (`local`, `slurm`).
    fn name(&self) -> &'static str;

    /// Builds the stage: fills `build.ctx.out_dir` (and its run directory)
    /// and returns the metrics. A failure leaves nothing committed.
    fn build(&self, build: &Build<'_>) -> Result<Value>;
}

/// Runs every stage in this process, with the run's thread pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Executor for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn build(&self, build: &Build<'_>) -> Result<Value> {
        run_in_process(build.stage, build.ctx)
    }
}

/// Runs a stage's kind here, turning a panic into an error.
pub fn run_in_process(stage: &Stage, ctx: &StageContext<'_>) -> Result<Value> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.kind.run(ctx))).unwrap_or_else(
        |panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("the stage panicked: {msg}"))
        },
    )
}

/// The format tag of [`TaskSpec`] files.
pub const TASK_FORMAT: &str = "cram-task-v1";

/// Everything a process on another host needs to build a stage as this one
/// would: the pipeline (file and overrides, pinned by their hash), the
/// stage, its key, the shared cache, its resolved identity and the keys of
/// its inputs and finished ancestors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Always [`TASK_FORMAT`].
    pub format: String,
    /// The pipeline file, absolute.
    pub pipeline_file: PathBuf,
    /// The `--set` overrides, as given.
    pub overrides: Vec<String>,
    /// The pipeline's file hash (a task refuses a pipeline edited since).
    pub file_hash: String,
    /// The stage name.
    pub stage: String,
    /// The stage's cache key.
    pub key: String,
    /// The cache root, absolute (shared by every host).
    pub cache: PathBuf,
    /// The stage's resolved identity (not recomputed: a download's source
    /// is resolved once, on the submitting host).
    pub identity: Option<Value>,
    /// The keys of the finished stages it may read: its inputs and, for
    /// kinds that want them, every ancestor.
    pub entries: BTreeMap<String, String>,
    /// Into how many shards the stage is split (`None`: one task builds
    /// the whole stage).
    #[serde(default)]
    pub shards: Option<usize>,
}

impl TaskSpec {
    /// Writes the spec to `path` atomically (a temporary file renamed).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec_pretty(self)?)
    }

    /// Reads a spec written by [`TaskSpec::write`].
    pub fn read(path: &Path) -> Result<TaskSpec> {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read the task spec {}", path.display()))?;
        let spec: TaskSpec = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a task spec", path.display()))?;
        if spec.format != TASK_FORMAT {
            bail!(
                "{}: task spec format {:?}, this cram reads {TASK_FORMAT}",
                path.display(),
                spec.format
            );
        }
        Ok(spec)
    }
}

/// Writes `bytes` to `path` by renaming a fully written sibling into place,
/// so that a reader on any host sees the old file, or none, or the new one
/// (renames are atomic on NFS too; `flock` is not relied on across hosts).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().context("a file path has a directory")?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
