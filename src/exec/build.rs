//! Bringing one stage up to date: its key, the local and the shared cache,
//! and otherwise a build by the run's executor into a staged entry that is
//! committed only when complete.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};

use super::executor::{Build, TASK_FORMAT, TaskSpec};
use super::{Outcome, RunOptions, input_dirs};
use crate::pipeline::{Pipeline, Stage};
use crate::plan::KeyMaterial;
use crate::registry::{AncestorRecord, StageContext};
use crate::remote::{Pushed, Remote};
use crate::store::{Entry, InputRecord, MANIFEST_FORMAT, Manifest, Store, UnitRef, now_rfc3339};
use crate::ui::Ui;

/// One stage to bring up to date, with what it needs.
pub(super) struct Job<'a> {
    pub pipeline: &'a Pipeline,
    pub store: &'a Store,
    pub stage: &'a Stage,
    /// Its inputs' entries, in the order the stage lists them.
    pub inputs: Vec<Entry>,
    pub ancestors: Vec<AncestorRecord>,
    pub forced: bool,
    pub bar: indicatif::ProgressBar,
    pub ui: &'a Ui,
}

/// Brings `job`'s stage up to date (and pushes it where asked).
pub(super) fn run_stage(job: &Job<'_>, opts: &RunOptions) -> Outcome {
    let outcome = match try_run_stage(job, opts) {
        Ok(o) => o,
        Err(StageError { error, log }) => return Outcome::Failed(format!("{error:#}"), log),
    };
    if opts.push
        && let Some(remote) = &opts.remote
        && let Outcome::Cached(entry) | Outcome::Ran(entry) = &outcome
    {
        job.bar
            .set_message(format!("pushing to {}", remote.address()));
        match remote.push(job.store, entry, &job.bar) {
            Ok(Pushed::Uploaded(bytes)) => job.ui.line(&format!(
                "  pushed  {} ({:.1} MB) to {}",
                job.stage.name,
                bytes as f64 / 1e6,
                remote.address()
            )),
            Ok(Pushed::AlreadyThere) => {}
            Err(e) => {
                return Outcome::Failed(
                    format!("built, but cannot push it to {}: {e:#}", remote.address()),
                    None,
                );
            }
        }
    }
    outcome
}

struct StageError {
    error: anyhow::Error,
    log: Option<PathBuf>,
}

impl From<anyhow::Error> for StageError {
    fn from(error: anyhow::Error) -> Self {
        StageError { error, log: None }
    }
}

fn try_run_stage(job: &Job<'_>, opts: &RunOptions) -> Result<Outcome, StageError> {
    let remote: Option<&Remote> = opts.remote.as_deref();
    let Job {
        pipeline,
        store,
        stage,
        inputs,
        ancestors,
        forced,
        bar,
        ui,
    } = job;
    let (pipeline, store, stage, forced, ui) = (*pipeline, *store, *stage, *forced, *ui);
    bar.set_message("checking the cache");
    let identity = stage
        .kind
        .identity(&stage.params, &pipeline.meta, store)
        .with_context(|| format!("cannot work out the identity of stage `{}`", stage.name))?;
    let input_records: BTreeMap<String, InputRecord> = stage
        .inputs
        .iter()
        .zip(inputs)
        .map(|(n, e)| {
            (
                n.clone(),
                InputRecord {
                    key: e.manifest.key.clone(),
                    output_hash: e.manifest.output_hash.clone(),
                },
            )
        })
        .collect();
    let material = KeyMaterial::new(pipeline, stage, identity, input_records);
    let key = material.key();
    if !forced && let Some(entry) = store.get(&key) {
        return Ok(Outcome::Cached(Box::new(entry)));
    }
    let _key_lock = store.lock_key(&key, || {
        ui.line(&format!(
            "  waiting {}: another cram process is building the same stage",
            stage.name
        ))
    })?;
    if !forced && let Some(entry) = store.get(&key) {
        return Ok(Outcome::Cached(Box::new(entry)));
    }
    if !forced && let Some(remote) = remote {
        bar.set_message(format!("looking in {}", remote.address()));
        match remote.pull(store, &key, bar) {
            Ok(Some(entry)) => return Ok(Outcome::Pulled(Box::new(entry))),
            Ok(None) => {}
            Err(e) => ui.line(&format!(
                "  warning {}: the shared cache's entry is not used ({e:#}); building it here",
                stage.name
            )),
        }
        bar.set_length(0);
        bar.set_position(0);
    }
    ui.line(&format!("  running {} ({})", stage.name, stage.kind.name()));
    let staging = store.stage(&key)?;
    let log_path = staging.log_path();
    {
        let mut log = std::fs::File::create(&log_path).context("cannot create the stage log")?;
        let _ = writeln!(
            log,
            "stage {} (kind {}, code version {}), key {}\nstarted {}\nparams {}\n",
            stage.name,
            stage.kind.name(),
            stage.kind.code_version(),
            key,
            now_rfc3339(),
            serde_json::to_string_pretty(&stage.params.resolved).unwrap_or_default()
        );
    }
    let work_dir = store.work_dir(&key)?;
    let input_dirs = input_dirs(pipeline, stage, inputs);
    let units = Mutex::new(Vec::new());
    let out_dir = staging.out_dir();
    let run_dir = staging.run_dir();
    let ctx = StageContext {
        stage: &stage.name,
        params: &stage.params,
        identity: material.identity.as_ref(),
        seed: pipeline.meta.seed,
        inputs: &input_dirs,
        ancestors,
        out_dir: &out_dir,
        run_dir: &run_dir,
        work_dir: &work_dir,
        store,
        pipeline: &pipeline.meta,
        progress: bar,
        log: &log_path,
        units: &units,
        rerun_units: None,
        jobs: opts.jobs.max(1),
    };
    bar.set_message("");
    let started_at = now_rfc3339();
    let t0 = Instant::now();
    let task = task_spec(job, &key, material.identity.as_ref())?;
    let executor = opts.executor();
    let result = executor.build(&Build {
        stage,
        ctx: &ctx,
        task: &task,
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .ok();
    match result {
        Ok(metrics) => {
            if let Some(log) = log.as_mut() {
                let _ = writeln!(
                    log,
                    "\nfinished {} after {wall:.1} s\nmetrics {}",
                    now_rfc3339(),
                    serde_json::to_string_pretty(&metrics).unwrap_or_default()
                );
            }
            let units: Vec<UnitRef> = std::mem::take(&mut *units.lock().expect("units lock"))
                .into_iter()
                .map(|r: AncestorRecord| UnitRef {
                    key: r.manifest["key"].as_str().unwrap_or_default().to_string(),
                    name: r.name,
                    kind: r.kind,
                })
                .collect();
            let manifest = Manifest {
                format: MANIFEST_FORMAT.into(),
                stage: stage.name.clone(),
                kind: stage.kind.name().into(),
                key: key.clone(),
                code_version: stage.kind.code_version(),
                tool_version: env!("CARGO_PKG_VERSION").into(),
                params: stage.params.resolved.clone(),
                seed: material.seed,
                identity: material.identity.clone(),
                inputs: material.inputs.clone(),
                output_hash: String::new(),
                files: Vec::new(),
                started_at,
                finished_at: now_rfc3339(),
                wall_seconds: wall,
                metrics,
                units,
            };
            let entry = store.commit(staging, manifest, forced)?;
            store.drop_work_dir(&key);
            Ok(Outcome::Ran(Box::new(entry)))
        }
        Err(error) => {
            if let Some(log) = log.as_mut() {
                let _ = writeln!(log, "\nFAILED after {wall:.1} s: {error:#}");
            }
            let kept = store.abandon(staging, &stage.name);
            Err(StageError { error, log: kept })
        }
    }
}

/// What a build on another host needs to know of `job` (see [`TaskSpec`]).
fn task_spec(job: &Job<'_>, key: &str, identity: Option<&serde_json::Value>) -> Result<TaskSpec> {
    let meta = &job.pipeline.meta;
    let mut entries: BTreeMap<String, String> = job
        .stage
        .inputs
        .iter()
        .zip(&job.inputs)
        .map(|(n, e)| (n.clone(), e.manifest.key.clone()))
        .collect();
    for a in &job.ancestors {
        if job.pipeline.stage(&a.name).is_some()
            && let Some(k) = a.manifest["key"].as_str()
        {
            entries.insert(a.name.clone(), k.to_string());
        }
    }
    Ok(TaskSpec {
        format: TASK_FORMAT.into(),
        pipeline_file: std::path::absolute(&meta.file)?,
        overrides: meta.overrides.clone(),
        file_hash: meta.file_hash.clone(),
        stage: job.stage.name.clone(),
        key: key.to_string(),
        cache: std::path::absolute(job.store.root())?,
        identity: identity.cloned(),
        entries,
        shards: None,
    })
}
