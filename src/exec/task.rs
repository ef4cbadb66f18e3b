//! The hidden `cram task SPEC INDEX` subcommand: one array task of a stage
//! the Slurm executor submitted, run on whichever host Slurm chose. It
//! rebuilds the stage's context from the spec and the shared cache, builds
//! into the plan directory, and ends by writing its marker (atomically): the
//! marker, not the scheduler, is what says the task finished.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::executor::{TaskSpec, run_in_process, write_atomic};
use super::{ancestor_records, input_dirs};
use crate::pipeline::{self, Override};
use crate::registry::{AncestorRecord, StageContext};
use crate::store::{Entry, Store, UnitRef};

/// The files of one stage's Slurm build, under its key's scratch directory
/// (so a relaunch finds the tasks that finished).
#[derive(Debug, Clone)]
pub struct PlanDirs {
    root: PathBuf,
}

impl PlanDirs {
    /// The plan directory of a stage whose scratch directory is `work_dir`,
    /// built by `tasks` tasks (another split is another plan: its markers
    /// do not count for this one).
    pub fn of_work_dir(work_dir: &Path, tasks: usize) -> PlanDirs {
        PlanDirs {
            root: work_dir.join(".slurm").join(format!("tasks-{tasks}")),
        }
    }

    /// The plan directory holding `spec` (the spec lies at its top).
    pub fn of_spec(spec: &Path) -> PlanDirs {
        PlanDirs {
            root: spec.parent().unwrap_or(Path::new(".")).to_path_buf(),
        }
    }

    /// The task spec.
    pub fn spec(&self) -> PathBuf {
        self.root.join("spec.json")
    }

    /// The batch script every array task runs.
    pub fn script(&self) -> PathBuf {
        self.root.join("job.sh")
    }

    /// Where the tasks' output goes (Slurm's `--output`).
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The stage output a whole-stage task builds.
    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    /// The run facts a whole-stage task writes.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    /// What the shards share, prepared once by the submitting host.
    pub fn prepared(&self) -> PathBuf {
        self.root.join("prepared")
    }

    /// Written once [`PlanDirs::prepared`] is complete.
    pub fn prepared_marker(&self) -> PathBuf {
        self.root.join("prepared.done")
    }

    /// The output of shard `index`.
    pub fn shard(&self, index: usize) -> PathBuf {
        self.root.join("shards").join(index.to_string())
    }

    /// The marker task `index` writes when it has finished.
    pub fn marker(&self, index: usize) -> PathBuf {
        self.root.join("done").join(format!("{index}.json"))
    }
}

/// What a finished task leaves for the submitting process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// The stage's metrics.
    pub metrics: Value,
    /// Sub-units it cached on its own.
    pub units: Vec<UnitRef>,
    /// The host it ran on.
    pub host: String,
}

/// Runs task `index` of the spec at `spec_path`.
pub fn run_task(spec_path: &Path, index: usize) -> Result<()> {
    let spec = TaskSpec::read(spec_path)?;
    let dirs = PlanDirs::of_spec(spec_path);
    let tasks = spec.shards.unwrap_or(1);
    if index >= tasks {
        bail!("task {index}: this stage is built by {tasks} task(s), numbered from 0");
    }
    let overrides = spec
        .overrides
        .iter()
        .map(|s| Override::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let pipeline = pipeline::load(&spec.pipeline_file, &overrides)?;
    if pipeline.meta.file_hash != spec.file_hash {
        bail!(
            "{} changed after stage {} was submitted: rerun `cram run`",
            spec.pipeline_file.display(),
            spec.stage
        );
    }
    let stage = pipeline.stage(&spec.stage).with_context(|| {
        format!(
            "{} has no stage {}",
            spec.pipeline_file.display(),
            spec.stage
        )
    })?;
    let store = Store::open(&spec.cache)?;
    let mut done: HashMap<String, Entry> = HashMap::new();
    for (name, key) in &spec.entries {
        let entry = store.get(key).with_context(|| {
            format!(
                "stage {name}'s entry {key} is not in the cache {} on this host: the cache must lie on a filesystem every node shares",
                spec.cache.display()
            )
        })?;
        done.insert(name.clone(), entry);
    }
    let inputs: Vec<Entry> = stage
        .inputs
        .iter()
        .map(|n| {
            done.get(n)
                .cloned()
                .with_context(|| format!("the task spec lacks input {n}"))
        })
        .collect::<Result<_>>()?;
    let ancestors = if stage.kind.wants_ancestors() {
        ancestor_records(&pipeline, &store, stage, &done)
    } else {
        Vec::new()
    };
    // A fresh attempt: nothing an earlier, killed one left counts.
    let (out, run) = match spec.shards {
        Some(_) => (dirs.shard(index), dirs.shard(index).with_extension("run")),
        None => (dirs.out(), dirs.run()),
    };
    for dir in [&out, &run] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
    }
    let log = dirs.logs().join(format!("stage-{index}.log"));
    std::fs::create_dir_all(dirs.logs())?;
    std::fs::File::create(&log)?;
    let work_dir = store.work_dir(&spec.key)?;
    let input_dirs = input_dirs(&pipeline, stage, &inputs);
    let units: Mutex<Vec<AncestorRecord>> = Mutex::new(Vec::new());
    let bar = indicatif::ProgressBar::hidden();
    let ctx = StageContext {
        stage: &stage.name,
        params: &stage.params,
        identity: spec.identity.as_ref(),
        seed: pipeline.meta.seed,
        inputs: &input_dirs,
        ancestors: &ancestors,
        out_dir: &out,
        run_dir: &run,
        work_dir: &work_dir,
        store: &store,
        pipeline: &pipeline.meta,
        progress: &bar,
        log: &log,
        units: &units,
        rerun_units: None,
        jobs: crate::exec::default_jobs(),
    };
    let host = hostname();
    println!(
        "cram task {index}: stage {} ({}), key {}, on {host}",
        stage.name,
        stage.kind.name(),
        spec.key
    );
    let metrics = match spec.shards {
        None => run_in_process(stage, &ctx)?,
        Some(n) => {
            let shards = stage.kind.shards().with_context(|| {
                format!("kind {} does not split into shards", stage.kind.name())
            })?;
            shards.run_shard(&ctx, &dirs.prepared(), index, n, &out)?;
            Value::Null
        }
    };
    let units = units
        .into_inner()
        .expect("units lock")
        .into_iter()
        .map(|r| UnitRef {
            key: r.manifest["key"].as_str().unwrap_or_default().to_string(),
            name: r.name,
            kind: r.kind,
        })
        .collect();
    let marker = Marker {
        metrics,
        units,
        host,
    };
    write_atomic(&dirs.marker(index), &serde_json::to_vec_pretty(&marker)?)?;
    println!("cram task {index}: done");
    Ok(())
}

/// This host's name (for the record of where a task ran).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
