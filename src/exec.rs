//! Running a pipeline: stale stages in dependency order, independent ones in
//! parallel, each built into a temporary directory and committed to the
//! cache only when complete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::hashing::hash_json;
use crate::lockfile::{LockEntry, LockFile};
use crate::pipeline::{Pipeline, Stage};
use crate::plan::KeyMaterial;
use crate::registry::{AncestorRecord, InputDir, StageContext};
use crate::store::{Entry, InputRecord, MANIFEST_FORMAT, Manifest, Store, UnitRef, now_rfc3339};
use crate::ui::{Ui, Verbosity, describe_bar};

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
}

/// How one stage ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Found in the cache.
    Cached(Box<Entry>),
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
                    let forced = opts.force.contains(&stage.name);
                    scope.spawn(move || {
                        let outcome = run_stage(
                            pipeline, store, stage, &inputs, &ancestors, forced, &bar, ui,
                        );
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
                Outcome::Cached(entry) | Outcome::Ran(entry)
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

#[allow(clippy::too_many_arguments)]
fn run_stage(
    pipeline: &Pipeline,
    store: &Store,
    stage: &Stage,
    inputs: &[Entry],
    ancestors: &[AncestorRecord],
    forced: bool,
    bar: &indicatif::ProgressBar,
    ui: &Ui,
) -> Outcome {
    match try_run_stage(pipeline, store, stage, inputs, ancestors, forced, bar, ui) {
        Ok(o) => o,
        Err(StageError { error, log }) => Outcome::Failed(format!("{error:#}"), log),
    }
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

#[allow(clippy::too_many_arguments)]
fn try_run_stage(
    pipeline: &Pipeline,
    store: &Store,
    stage: &Stage,
    inputs: &[Entry],
    ancestors: &[AncestorRecord],
    forced: bool,
    bar: &indicatif::ProgressBar,
    ui: &Ui,
) -> Result<Outcome, StageError> {
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
    };
    bar.set_message("");
    let started_at = now_rfc3339();
    let t0 = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.kind.run(&ctx)))
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("the stage panicked: {msg}"))
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

/// Runs (or reuses) a sub-unit of a stage that is cached on its own, such
/// as one GLUE task: its key is made of `kind`, `code_version` and
/// `material`; `body` fills the output directory (and may write run facts
/// into the run directory it is given second) and returns metrics.
pub fn cached_unit(
    ctx: &StageContext<'_>,
    unit: &str,
    kind: &str,
    code_version: u32,
    material: Value,
    body: impl FnOnce(&std::path::Path, &std::path::Path) -> Result<Value>,
) -> Result<Entry> {
    let key = hash_json(&json!({
        "unit_kind": kind,
        "code_version": code_version,
        "material": material,
    }));
    let name = format!("{}.{unit}", ctx.stage);
    let record = |entry: &Entry| {
        ctx.units.lock().expect("units lock").push(AncestorRecord {
            name: name.clone(),
            kind: kind.to_string(),
            out_dir: entry.out_dir(),
            run_dir: entry.run_dir(),
            manifest: serde_json::to_value(&entry.manifest).unwrap_or(Value::Null),
        });
    };
    let manifest = |started_at: String| Manifest {
        format: MANIFEST_FORMAT.into(),
        stage: name.clone(),
        kind: kind.into(),
        key: key.clone(),
        code_version,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        params: material.clone(),
        seed: Some(ctx.seed),
        identity: None,
        inputs: BTreeMap::new(),
        output_hash: String::new(),
        files: Vec::new(),
        started_at,
        finished_at: String::new(),
        wall_seconds: 0.0,
        metrics: Value::Null,
        units: Vec::new(),
    };
    if let Some(root) = ctx.rerun_units {
        // `cram reproduce`: the unit is built afresh in scratch space.
        let entry = crate::reproduce::rerun_unit(root, unit, manifest(now_rfc3339()), body)?;
        record(&entry);
        return Ok(entry);
    }
    if let Some(entry) = ctx.store.get(&key) {
        record(&entry);
        return Ok(entry);
    }
    let _lock = ctx.store.lock_key(&key, || {})?;
    if let Some(entry) = ctx.store.get(&key) {
        record(&entry);
        return Ok(entry);
    }
    let staging = ctx.store.stage(&key)?;
    let mut manifest = manifest(now_rfc3339());
    let t0 = Instant::now();
    let out = staging.out_dir();
    match body(&out, &staging.run_dir()) {
        Ok(metrics) => {
            manifest.finished_at = now_rfc3339();
            manifest.wall_seconds = t0.elapsed().as_secs_f64();
            manifest.metrics = metrics;
            let entry = ctx.store.commit(staging, manifest, false)?;
            record(&entry);
            Ok(entry)
        }
        Err(e) => {
            ctx.store.abandon(staging, &name);
            Err(e)
        }
    }
}

/// The default of `-j`: the number of cores this process may use.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
