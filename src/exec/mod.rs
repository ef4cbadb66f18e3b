//! Running a pipeline: stale stages in dependency order, independent ones in
//! parallel, each built (by the run's [`Executor`]: here, or on a Slurm
//! cluster) into a temporary directory and committed to the cache only when
//! complete.

mod build;
mod executor;
pub mod slurm;
pub mod task;
mod units;

pub use executor::{Build, Executor, Local, TaskSpec, run_in_process, write_atomic};
pub use units::cached_unit;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use crate::lockfile::{LockEntry, LockFile};
use crate::pipeline::{Pipeline, Stage};
use crate::registry::{AncestorRecord, InputDir};
use crate::remote::Remote;
use crate::store::{Entry, Store};
use crate::ui::{Ui, Verbosity, describe_bar};
use build::{Job, run_stage};

/// What `cram run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only this stage and its ancestors.
    pub until: Option<String>,
    /// Rerun these stages even if cached.
    pub force: HashSet<String>,
    /// How many stages may run at once.
    pub jobs: usize,
    /// Hold every stage to the lock file (as `cargo --locked`): a stage
    /// whose key or output hash differs from its lock entry fails, and the
    /// lock file is not written.
    pub locked: bool,
    /// The shared cache: a stage missing here is pulled from it, when it
    /// has the stage's key, instead of being built.
    pub remote: Option<Arc<Remote>>,
    /// Push every stage's entry to [`RunOptions::remote`] once it is built
    /// or found.
    pub push: bool,
    /// Where stages are built (`None`: here, by [`Local`]).
    pub executor: Option<Arc<dyn Executor>>,
}

impl RunOptions {
    /// The executor that builds stale stages.
    pub fn executor(&self) -> &dyn Executor {
        self.executor.as_deref().unwrap_or(&Local)
    }
}

/// How one stage ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Found in the cache.
    Cached(Box<Entry>),
    /// Pulled from the shared cache.
    Pulled(Box<Entry>),
    /// Ran and was stored.
    Ran(Box<Entry>),
    /// Failed; the error and the kept log.
    Failed(String, Option<PathBuf>),
    /// Not run because an input failed.
    Skipped(String),
}

/// The result of a run, by stage name.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Outcomes in the order stages finished.
    pub outcomes: Vec<(String, Outcome)>,
}

impl RunReport {
    /// Names of the stages that ran.
    pub fn ran(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Ran(_)))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Whether any stage failed.
    pub fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(..) | Outcome::Skipped(_)))
    }
}

/// Runs the pipeline (or the part `--until` selects).
pub fn run(pipeline: &Pipeline, store: &Store, opts: &RunOptions, ui: &Ui) -> Result<RunReport> {
    let _store_lock = store.lock_store(false)?;
    let selected: Vec<usize> = match &opts.until {
        Some(name) => pipeline.with_ancestors(name),
        None => (0..pipeline.stages.len()).collect(),
    };
    let mut lock = LockFile::read(&pipeline.meta.lock_file)?;
    if opts.locked && !pipeline.meta.lock_file.is_file() {
        anyhow::bail!(
            "--locked: there is no lock file {} to hold the run to (run once without --locked to write it)",
            pipeline.meta.lock_file.display()
        );
    }
    let pinned = lock.clone();
    let jobs = opts.jobs.max(1);

    let mut done: HashMap<String, Entry> = HashMap::new();
    let mut failed: HashSet<String> = HashSet::new();
    let mut pending: Vec<usize> = selected.clone();
    let mut running: HashMap<String, (indicatif::ProgressBar, Instant)> = HashMap::new();
    let mut report = RunReport::default();
    let (tx, rx) = mpsc::channel::<(String, Outcome)>();

    std::thread::scope(|scope| -> Result<()> {
        loop {
            // Skip stages whose inputs failed.
            let mut i = 0;
            while i < pending.len() {
                let stage = &pipeline.stages[pending[i]];
                if let Some(bad) = stage.inputs.iter().find(|n| failed.contains(*n)) {
                    let msg = format!("input {bad} failed");
                    ui.line(&format!("  skipped {}: {msg}", stage.name));
                    failed.insert(stage.name.clone());
                    report
                        .outcomes
                        .push((stage.name.clone(), Outcome::Skipped(msg)));
                    pending.remove(i);
                } else {
                    i += 1;
                }
            }
            // After a Ctrl-C nothing new starts.
            if crate::interrupt::requested() {
                for i in pending.drain(..) {
                    let name = pipeline.stages[i].name.clone();
                    ui.line(&format!("  skipped {name}: interrupted"));
                    failed.insert(name.clone());
                    report
                        .outcomes
                        .push((name, Outcome::Skipped("interrupted".into())));
                }
            }
            // Start what is ready. A stage that runs alone (pretraining: its
            // wall clock is the budget) waits for the running ones to finish,
            // and nothing starts beside it.
            let alone = |name: &String| pipeline.stage(name).is_some_and(|s| s.kind.runs_alone());
            let mut i = 0;
            while i < pending.len() && running.len() < jobs && !running.keys().any(alone) {
                let stage = &pipeline.stages[pending[i]];
                if stage.inputs.iter().all(|n| done.contains_key(n)) {
                    if stage.kind.runs_alone() && !running.is_empty() {
                        break;
                    }
                    pending.remove(i);
                    let inputs: Vec<Entry> = stage.inputs.iter().map(|n| done[n].clone()).collect();
                    let ancestors = if stage.kind.wants_ancestors() {
                        ancestor_records(pipeline, store, stage, &done)
                    } else {
                        Vec::new()
                    };
                    let bar = ui.stage_bar(&stage.name);
                    running.insert(stage.name.clone(), (bar.clone(), Instant::now()));
                    let tx = tx.clone();
                    let job = Job {
                        pipeline,
                        store,
                        stage,
                        inputs,
                        ancestors,
                        forced: opts.force.contains(&stage.name),
                        bar,
                        ui,
                    };
                    scope.spawn(move || {
                        let outcome = run_stage(&job, opts);
                        let _ = tx.send((stage.name.clone(), outcome));
                    });
                } else {
                    i += 1;
                }
            }
            if running.is_empty() {
                break;
            }
            // Wait for a stage to finish, printing progress now and then
            // where there are no live bars.
            let (name, outcome) = loop {
                match rx.recv_timeout(Duration::from_secs(30)) {
                    Ok(msg) => break msg,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if !ui.is_live() && ui.verbosity() != Verbosity::Quiet {
                            for (name, (bar, _)) in &running {
                                ui.line(&format!("  ...     {name}: {}", describe_bar(bar)));
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        anyhow::bail!("a stage thread ended without reporting")
                    }
                }
            };
            let (bar, started) = running.remove(&name).expect("running stage");
            ui.finish_bar(&bar);
            let stage = pipeline.stage(&name).expect("known stage");
            let outcome = match outcome {
                Outcome::Cached(entry) | Outcome::Ran(entry) | Outcome::Pulled(entry)
                    if opts.locked && check_locked(&name, &entry, &pinned).is_err() =>
                {
                    let message = check_locked(&name, &entry, &pinned).unwrap_err();
                    Outcome::Failed(message, None)
                }
                other => other,
            };
            let pin = if opts.locked { ", as locked" } else { "" };
            match &outcome {
                Outcome::Cached(entry) => {
                    ui.line(&format!("  cached  {name}{pin}"));
                    if !opts.locked {
                        record_lock(&mut lock, stage, entry);
                        lock.write(&pipeline.meta.lock_file)?;
                    }
                    done.insert(name.clone(), (**entry).clone());
                }
                Outcome::Pulled(entry) => {
                    let from = opts.remote.as_ref().map_or("", |r| r.address());
                    ui.line(&format!("  pulled  {name} from {from}{pin}"));
                    if !opts.locked {
                        record_lock(&mut lock, stage, entry);
                        lock.write(&pipeline.meta.lock_file)?;
                    }
                    done.insert(name.clone(), (**entry).clone());
                }
                Outcome::Ran(entry) => {
                    ui.line(&format!(
                        "  ran     {name} ({:.1} s){pin}",
                        started.elapsed().as_secs_f64()
                    ));
                    if !opts.locked {
                        record_lock(&mut lock, stage, entry);
                        lock.write(&pipeline.meta.lock_file)?;
                    }
                    done.insert(name.clone(), (**entry).clone());
                }
                Outcome::Failed(err, log) => {
                    ui.error(&format!("  FAILED  {name}: {err}"));
                    if let Some(log) = log {
                        ui.error(&format!("          log: {}", log.display()));
                    }
                    failed.insert(name.clone());
                }
                Outcome::Skipped(_) => {
                    failed.insert(name.clone());
                }
            }
            report.outcomes.push((name, outcome));
        }
        Ok(())
    })?;

    if opts.until.is_none() && !report.failed() && !opts.locked {
        // Forget stages the pipeline no longer has.
        let names: HashSet<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        lock.stages.retain(|k, _| names.contains(k.as_str()));
        lock.write(&pipeline.meta.lock_file)?;
    }
    Ok(report)
}

/// Whether `entry`, the result of stage `name`, is what the lock pins: the
/// same key and the same output hash. The error names the stage and both
/// values.
pub fn check_locked(name: &str, entry: &Entry, lock: &LockFile) -> Result<(), String> {
    let m = &entry.manifest;
    match lock.stages.get(name) {
        None => Err(format!(
            "--locked: stage {name} is not in the lock file (run without --locked to record it)"
        )),
        Some(l) if l.key != m.key => Err(format!(
            "--locked: stage {name} has key {} but the lock has {} (its parameters, code version, \
             seed or inputs changed; `cram status` says which; run without --locked to update the lock)",
            m.key, l.key
        )),
        Some(l) if l.output_hash != m.output_hash => Err(format!(
            "--locked: stage {name} (key {}) made output {} but the lock pins {}: the same inputs \
             gave other bytes (`cram reproduce FILE {name}` reruns it and lists the files that differ)",
            m.key, m.output_hash, l.output_hash
        )),
        Some(_) => Ok(()),
    }
}

fn record_lock(lock: &mut LockFile, stage: &Stage, entry: &Entry) {
    let m = &entry.manifest;
    lock.format = crate::lockfile::LOCK_FORMAT.into();
    lock.stages.insert(
        stage.name.clone(),
        LockEntry {
            kind: m.kind.clone(),
            key: m.key.clone(),
            output_hash: m.output_hash.clone(),
            code_version: m.code_version,
            params: m.params.clone(),
            seed: m.seed,
            identity: m.identity.clone(),
            inputs: m.inputs.clone(),
        },
    );
}

/// What a stage is told of its direct inputs (`inputs`: their entries, in
/// the order the stage lists them).
pub(crate) fn input_dirs(pipeline: &Pipeline, stage: &Stage, inputs: &[Entry]) -> Vec<InputDir> {
    stage
        .inputs
        .iter()
        .zip(inputs)
        .map(|(n, e)| {
            let up = pipeline.stage(n).expect("validated input");
            InputDir {
                stage: n.clone(),
                kind: up.kind.name().to_string(),
                artifact: up.kind.output_for(&up.params),
                dir: e.out_dir(),
                output_hash: e.manifest.output_hash.clone(),
            }
        })
        .collect()
}

/// Every finished ancestor of `stage` (and their cached sub-units), in
/// pipeline order.
pub(crate) fn ancestor_records(
    pipeline: &Pipeline,
    store: &Store,
    stage: &Stage,
    done: &HashMap<String, Entry>,
) -> Vec<AncestorRecord> {
    let wanted = pipeline.with_ancestors(&stage.name);
    let mut out = Vec::new();
    for i in wanted {
        let s = &pipeline.stages[i];
        let Some(entry) = done.get(&s.name) else {
            continue;
        };
        for unit in &entry.manifest.units {
            if let Some(u) = store.get(&unit.key) {
                out.push(AncestorRecord {
                    name: unit.name.clone(),
                    kind: unit.kind.clone(),
                    out_dir: u.out_dir(),
                    run_dir: u.run_dir(),
                    manifest: serde_json::to_value(&u.manifest).unwrap_or(Value::Null),
                });
            }
        }
        out.push(AncestorRecord {
            name: s.name.clone(),
            kind: s.kind.name().to_string(),
            out_dir: entry.out_dir(),
            run_dir: entry.run_dir(),
            manifest: serde_json::to_value(&entry.manifest).unwrap_or(Value::Null),
        });
    }
    out
}

/// The default of `-j`: the number of cores this process may use.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
