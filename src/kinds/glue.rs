//! The adapters of cram-glue's kinds: `glue` (each task, and each trial of
//! it, a cached unit of its own; units fine-tune side by side within `-j`)
//! and `synthetic-glue`.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use cram_glue::{GlueParams, GlueTask, SyntheticGlueParams};
use serde_json::{Value, json};

use super::simple::{Simple, summary, summary_with_timings};
use crate::exec::cached_unit;
use crate::registry::{
    Artifact, InputSlot, Kind, ParamError, Params, StageContext, plain_params, to_json,
};
use crate::store::Entry;

/// TensorBoard scalars of a GLUE task: the training loss and every dev
/// metric per epoch (from its `epochs.jsonl`).
fn write_task_events(
    out: &std::path::Path,
    run_dir: &std::path::Path,
    s: &cram_glue::TaskSummary,
) -> Result<()> {
    use crate::tensorboard::{Scalar, now, write_scalars};
    let path = out.join("epochs.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut wall = now() - s.timings.seconds;
    let mut scalars = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        wall += s.timings.epoch_seconds.get(i).copied().unwrap_or(0.0);
        let epoch = v["epoch"].as_i64().unwrap_or(i as i64 + 1);
        let mut push = |tag: String, value: f64| {
            scalars.push(Scalar {
                tag,
                step: epoch,
                wall_time: wall,
                value,
            })
        };
        if let Some(l) = v["train_loss"].as_f64() {
            push("train/loss".into(), l);
        }
        if let Some(dev) = v["dev"].as_object() {
            for (name, value) in dev {
                if let Some(x) = value.as_f64() {
                    push(format!("dev/{name}"), x);
                }
            }
        }
    }
    write_scalars(run_dir, &scalars)?;
    Ok(())
}

/// The unit name of trial `trial` of a GLUE task: the task's name for the
/// first, `TASK@K` for the others.
pub fn trial_unit_name(task: &str, trial: usize) -> String {
    if trial == 0 {
        task.to_string()
    } else {
        format!("{task}@{trial}")
    }
}

/// `glue`: fine-tune and score on GLUE, each task cached on its own.
pub struct Glue;

/// The kind name of one task's cached unit.
const TASK_UNIT: &str = "glue-task";

impl Kind for Glue {
    fn name(&self) -> &'static str {
        "glue"
    }
    fn about(&self) -> &'static str {
        "Fine-tunes the checkpoint on each GLUE task with one set of hyperparameters (GLUE_sane) and scores the dev sets; each task is cached on its own."
    }
    fn code_version(&self) -> u32 {
        cram_glue::CODE_VERSION
    }
    fn uses_seed(&self, _params: &Params) -> bool {
        true
    }
    fn output(&self) -> Artifact {
        Artifact::GlueResults
    }
    fn inputs(&self) -> &'static [InputSlot] {
        &[
            InputSlot {
                role: "pretrained checkpoint",
                accepts: &[Artifact::Checkpoint],
                required: true,
            },
            InputSlot {
                role: "GLUE data in the hub's layout",
                accepts: &[Artifact::Files],
                required: true,
            },
        ]
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(GlueParams)
    }
    fn params(&self, table: toml::Value) -> Result<Params, ParamError> {
        let p = plain_params::<GlueParams>(table)?;
        let typed: GlueParams = serde_json::from_value(p.raw.clone()).map_err(|e| ParamError {
            path: Vec::new(),
            message: e.to_string(),
        })?;
        typed.validate().map_err(|e| ParamError {
            path: Vec::new(),
            message: e.to_string(),
        })?;
        Ok(p)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<Value> {
        let p: GlueParams = ctx.typed()?;
        let ckpt = ctx.require_input(Artifact::Checkpoint)?;
        let data = ctx.require_input(Artifact::Files)?;
        let units = plan_units(ctx, &p, &ckpt.output_hash, &data.dir)?;
        let entries = run_units(ctx, &p, &units, |unit, out, run| {
            let s = cram_glue::run_task(
                &p,
                unit.task,
                &ckpt.dir,
                &data.dir,
                unit.seed,
                out,
                ctx.progress,
            )?;
            write_task_events(out, run, &s)?;
            summary_with_timings(&s, &s.timings)
        })?;
        let mut task_dirs: Vec<(GlueTask, Vec<std::path::PathBuf>)> = Vec::new();
        let mut task_seconds: BTreeMap<String, f64> = BTreeMap::new();
        for (unit, entry) in units.iter().zip(&entries) {
            let seconds = entry.manifest.metrics["timings"]["seconds"]
                .as_f64()
                .unwrap_or(entry.manifest.wall_seconds);
            *task_seconds
                .entry(unit.task.name().to_string())
                .or_default() += seconds;
            match task_dirs.last_mut() {
                Some((task, dirs)) if *task == unit.task => dirs.push(entry.out_dir()),
                _ => task_dirs.push((unit.task, vec![entry.out_dir()])),
            }
        }
        ctx.progress.set_prefix(ctx.stage.to_string());
        let s = cram_glue::aggregate_trials(&p, &task_dirs, ctx.out_dir)?;
        // Fine-tuning times from the tasks' manifests (a cached task keeps
        // the time of the run that made it). Tasks that ran side by side
        // count each its own time: the sum is compute, not wall clock.
        let timings = json!({
            "fine_tune_seconds": task_seconds.values().sum::<f64>(),
            "task_seconds": task_seconds,
        });
        summary_with_timings(&s, &timings)
    }
}

/// One fine-tuning: a task's trial, its seed and what its key is made of.
struct Unit {
    task: GlueTask,
    seed: u64,
    /// `cola`, `cola@1`, ...
    name: String,
    material: Value,
}

/// Every (task, trial) unit of the stage, in the order the tasks are listed.
/// A unit's key: its own hyperparameters, the checkpoint's content and the
/// content of the files it reads, nothing else; adding a task or changing
/// another task's data leaves it cached, and so does how many run at once.
fn plan_units(
    ctx: &StageContext<'_>,
    p: &GlueParams,
    checkpoint_hash: &str,
    data_dir: &Path,
) -> Result<Vec<Unit>> {
    let mut global = to_json(p);
    if let Value::Object(m) = &mut global {
        for field in ["tasks", "overrides", "trials", "parallel_tasks"] {
            m.remove(field);
        }
    }
    let mut units = Vec::new();
    for task in p.tasks.iter().copied() {
        let mut data_hashes = BTreeMap::new();
        for f in &cram_glue::task_files(data_dir, task)? {
            let rel = f.strip_prefix(data_dir).unwrap_or(f).display().to_string();
            data_hashes.insert(
                rel,
                crate::hashing::hash_file(f).with_context(|| format!("hashing {}", f.display()))?,
            );
        }
        for trial in 0..p.trials {
            // Trial 0 is keyed as a single run always was, so adding trials
            // keeps the fine-tuning done; trial k has seed + k.
            let seed = ctx.seed.wrapping_add(trial as u64);
            let mut material = json!({
                "task": task.name(),
                "params": global,
                "task_hyperparameters": to_json(&p.for_task(task)?),
                "seed": seed,
                "checkpoint": checkpoint_hash,
                "data": data_hashes,
            });
            if trial > 0 {
                material["trial"] = json!(trial);
            }
            units.push(Unit {
                task,
                seed,
                name: trial_unit_name(task.name(), trial),
                material,
            });
        }
    }
    Ok(units)
}

/// Runs (or takes from the cache) every unit, at most `-j` (and
/// `parallel_tasks`) at once, and returns their entries in unit order. The
/// units share the stage's progress bar (each adds its updates to its
/// length) and the rayon pool. After a failure no new unit starts; the
/// first failed unit, in order, is the error.
fn run_units(
    ctx: &StageContext<'_>,
    p: &GlueParams,
    units: &[Unit],
    body: impl Fn(&Unit, &Path, &Path) -> Result<Value> + Sync,
) -> Result<Vec<Entry>> {
    let n = units.len();
    let width = ctx
        .jobs
        .min(p.parallel_tasks.unwrap_or(usize::MAX))
        .clamp(1, n.max(1));
    ctx.progress.set_length(0);
    ctx.progress.set_position(0);
    ctx.progress.reset_eta();
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<Entry>>>> = Mutex::new((0..n).map(|_| None).collect());
    let prefix = |done: usize| {
        let running = if width > 1 {
            format!(", {width} at a time")
        } else {
            String::new()
        };
        ctx.progress
            .set_prefix(format!("{} [{done}/{n} done{running}]", ctx.stage));
    };
    prefix(0);
    let worker = || {
        while !failed.load(Ordering::SeqCst) {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(unit) = units.get(i) else { break };
            let entry = cached_unit(
                ctx,
                &unit.name,
                TASK_UNIT,
                cram_glue::CODE_VERSION,
                unit.material.clone(),
                |out, run| body(unit, out, run),
            )
            .with_context(|| format!("GLUE unit {}", unit.name));
            if entry.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            results.lock().expect("results lock")[i] = Some(entry);
            prefix(finished.fetch_add(1, Ordering::SeqCst) + 1);
        }
    };
    if width == 1 {
        worker();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..width {
                scope.spawn(worker);
            }
        });
    }
    // Units record themselves as they finish; the manifest lists them in
    // unit order, whatever order they finished in.
    let order: BTreeMap<String, usize> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("{}.{}", ctx.stage, u.name), i))
        .collect();
    ctx.units
        .lock()
        .expect("units lock")
        .sort_by_key(|r| order.get(&r.name).copied().unwrap_or(usize::MAX));
    let mut entries = Vec::with_capacity(n);
    for (unit, r) in units
        .iter()
        .zip(results.into_inner().expect("results lock"))
    {
        match r {
            Some(r) => entries.push(r?),
            None => anyhow::bail!(
                "GLUE unit {} did not start: an earlier unit failed",
                unit.name
            ),
        }
    }
    Ok(entries)
}

/// `synthetic-glue`: small learnable tasks in GLUE's schema (offline runs).
pub static SYNTHETIC_GLUE: Simple<SyntheticGlueParams> = Simple {
    name: "synthetic-glue",
    about: "Writes small, learnable synthetic tasks in the GLUE hub schema and layout (offline sanity runs).",
    code_version: cram_glue::SYNTHETIC_CODE_VERSION,
    uses_seed: true,
    output: Artifact::Files,
    inputs: &[],
    run: run_synthetic_glue,
    shards: None,
    check: None,
    params: PhantomData,
};

fn run_synthetic_glue(ctx: &StageContext<'_>, p: &SyntheticGlueParams) -> Result<Value> {
    summary(&cram_glue::write_synthetic_glue(p, ctx.seed, ctx.out_dir)?)
}
