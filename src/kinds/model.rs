//! The adapter of the `pretrain` kind (cram-pretrain).

use anyhow::Result;
use cram_pretrain::PretrainParams;
use serde_json::Value;

use super::simple::summary_with_timings;
use crate::registry::{
    Artifact, InputSlot, Kind, ParamError, Params, StageContext, parse_typed, to_json,
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
    fn preflight(&self, params: &Params) -> Result<()> {
        // Only `gpu` is checked here: `auto` may take the CPU (and says so when it starts), and
        // an explicit device is checked when the stage opens it.
        let p: PretrainParams = serde_json::from_value(params.raw.clone())?;
        let specs = if p.devices.is_empty() {
            vec![p.device]
        } else {
            p.devices
        };
        for spec in specs
            .iter()
            .filter(|s| s.trim().eq_ignore_ascii_case("gpu"))
        {
            cram_model::choose_device(spec)?;
        }
        Ok(())
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

/// The run-directory file of a pretraining run's per-step timings.
pub const TIMELINE_FILE: &str = "timeline.jsonl";
