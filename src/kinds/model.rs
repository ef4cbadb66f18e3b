//! Adapters for the model stages: `pretrain` (cram-pretrain), `glue` and
//! `synthetic-glue` (cram-glue).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use anyhow::{Context, Result};
use cram_glue::{GlueParams, SyntheticGlueParams};
use cram_pretrain::PretrainParams;
use serde_json::{Value, json};

use super::simple::{Simple, summary, summary_with_timings};
use crate::exec::cached_unit;
use crate::registry::{
    Artifact, InputSlot, Kind, ParamError, Params, StageContext, parse_typed, plain_params, to_json,
};

/// `pretrain`: masked-language-model pretraining on a wall-clock budget.
pub struct Pretrain;

impl Kind for Pretrain {
    fn runs_alone(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "pretrain"
    }
    fn about(&self) -> &'static str {
        "Pretrains a BERT-style encoder from scratch with MLM under a wall-clock (or step) budget; resumes after a crash; writes a cram-ref-v1 safetensors checkpoint."
    }
    fn code_version(&self) -> u32 {
        cram_pretrain::CODE_VERSION
    }
    fn uses_seed(&self, _params: &Params) -> bool {
        true
    }
    fn output(&self) -> Artifact {
        Artifact::Checkpoint
    }
    fn inputs(&self) -> &'static [InputSlot] {
        &[InputSlot {
            role: "packed sequences",
            accepts: &[Artifact::Sequences],
            required: true,
        }]
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(PretrainParams)
    }
    fn params(&self, table: toml::Value) -> Result<Params, ParamError> {
        let typed: PretrainParams = parse_typed(table)?;
        // The key and `cram show` see the architecture with the preset
        // expanded, so `arch = "tiny"` and the same fields spelled out are
        // one and the same run.
        let resolved = typed.resolve().map_err(|e| ParamError {
            path: Vec::new(),
            message: e.to_string(),
        })?;
        Ok(Params {
            raw: to_json(&typed),
            resolved: to_json(&resolved),
        })
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<Value> {
        let p: PretrainParams = ctx.typed()?;
        let seqs = ctx.require_input(Artifact::Sequences)?;
        // Ctrl-C stops the run after its current step, with a checkpoint to resume from.
        let graceful = crate::interrupt::Graceful::new();
        let control = cram_pretrain::RunControl {
            interrupt: Some(graceful.flag()),
            ..Default::default()
        };
        let s = cram_pretrain::run_pretrain_with(
            &p,
            &seqs.dir,
            ctx.seed,
            ctx.work_dir,
            ctx.out_dir,
            ctx.progress,
            &control,
        )?;
        // The per-step timings go to the run directory, the totals to the
        // manifest: neither is part of the hashed checkpoint.
        cram_pretrain::write_timeline(&ctx.run_dir.join(TIMELINE_FILE), &s.timings.timeline)?;
        write_pretrain_events(ctx.run_dir, &s)?;
        summary_with_timings(&s, &s.timings)
    }
}

/// TensorBoard scalars of a pretraining run: loss, held-out loss, learning
/// rate, batch size, throughput and gradient norm per logged step.
fn write_pretrain_events(
    run_dir: &std::path::Path,
    s: &cram_pretrain::PretrainSummary,
) -> Result<()> {
    use crate::tensorboard::{Scalar, now, write_scalars};
    let start = now() - s.timings.wall_seconds;
    let mut scalars = Vec::new();
    for line in &s.log {
        let at = |tag: &str, value: f64| Scalar {
            tag: tag.to_string(),
            step: line.step as i64,
            wall_time: start + line.elapsed_seconds,
            value,
        };
        scalars.push(at("train/loss", line.loss));
        scalars.push(at("train/lr", line.lr));
        scalars.push(at("train/batch_size", line.batch_size as f64));
        scalars.push(at("train/tokens_per_second", line.tokens_per_second));
        if let Some(g) = line.grad_norm {
            scalars.push(at("train/grad_norm", g));
        }
        if let Some(h) = line.heldout_loss {
            scalars.push(at("heldout/loss", h));
        }
    }
    write_scalars(run_dir, &scalars)?;
    Ok(())
}

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

/// The run-directory file of a pretraining run's per-step timings.
pub const TIMELINE_FILE: &str = "timeline.jsonl";

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
        let typed: GlueParams = serde_json::from_value(p.raw.clone()).expect("round trip");
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
        let mut task_dirs = Vec::new();
        let mut task_seconds: BTreeMap<String, f64> = BTreeMap::new();
        let n = p.tasks.len();
        for (i, task) in p.tasks.iter().copied().enumerate() {
            ctx.progress
                .set_prefix(format!("{} [{}/{n} {}]", ctx.stage, i + 1, task.name()));
            // A task's key: its own hyperparameters, the checkpoint's content
            // and the content of the files it reads, nothing else; adding a
            // task or changing another task's data leaves it cached.
            let files = cram_glue::task_files(&data.dir, task)?;
            let mut data_hashes = BTreeMap::new();
            for f in &files {
                let rel = f.strip_prefix(&data.dir).unwrap_or(f).display().to_string();
                data_hashes.insert(
                    rel,
                    crate::hashing::hash_file(f)
                        .with_context(|| format!("hashing {}", f.display()))?,
                );
            }
            let mut global = to_json(&p);
            if let Value::Object(m) = &mut global {
                m.remove("tasks");
                m.remove("overrides");
                m.remove("trials");
            }
            let mut dirs = Vec::with_capacity(p.trials);
            let mut seconds = 0.0;
            for trial in 0..p.trials {
                // Trial 0 is keyed as a single run always was, so adding
                // trials keeps the fine-tuning done; trial k has seed + k.
                let seed = ctx.seed.wrapping_add(trial as u64);
                let mut material = json!({
                    "task": task.name(),
                    "params": global,
                    "task_hyperparameters": to_json(&p.for_task(task)?),
                    "seed": seed,
                    "checkpoint": ckpt.output_hash,
                    "data": data_hashes,
                });
                if trial > 0 {
                    material["trial"] = json!(trial);
                }
                let unit = trial_unit_name(task.name(), trial);
                if p.trials > 1 {
                    ctx.progress.set_prefix(format!(
                        "{} [{}/{n} {} trial {}/{}]",
                        ctx.stage,
                        i + 1,
                        task.name(),
                        trial + 1,
                        p.trials
                    ));
                }
                let entry = cached_unit(
                    ctx,
                    &unit,
                    TASK_UNIT,
                    cram_glue::CODE_VERSION,
                    material,
                    |out, run| {
                        let s = cram_glue::run_task(
                            &p,
                            task,
                            &ckpt.dir,
                            &data.dir,
                            seed,
                            out,
                            ctx.progress,
                        )?;
                        write_task_events(out, run, &s)?;
                        summary_with_timings(&s, &s.timings)
                    },
                )?;
                seconds += entry.manifest.metrics["timings"]["seconds"]
                    .as_f64()
                    .unwrap_or(entry.manifest.wall_seconds);
                dirs.push(entry.out_dir());
            }
            task_seconds.insert(task.name().to_string(), seconds);
            task_dirs.push((task, dirs));
        }
        ctx.progress.set_prefix(ctx.stage.to_string());
        let s = cram_glue::aggregate_trials(&p, &task_dirs, ctx.out_dir)?;
        // Fine-tuning times from the tasks' manifests (a cached task keeps
        // the time of the run that made it).
        let timings = json!({
            "fine_tune_seconds": task_seconds.values().sum::<f64>(),
            "task_seconds": task_seconds,
        });
        summary_with_timings(&s, &timings)
    }
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
    params: PhantomData,
};

fn run_synthetic_glue(ctx: &StageContext<'_>, p: &SyntheticGlueParams) -> Result<Value> {
    summary(&cram_glue::write_synthetic_glue(p, ctx.seed, ctx.out_dir)?)
}
