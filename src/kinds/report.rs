//! Adapter for `cram-report`: the `report` kind.

use anyhow::{Context, Result};
use cram_report::{MachineInfo, PipelineInfo, ReportParams, StageRecord};
use serde_json::Value;

use super::simple::summary;
use crate::lockfile::LockFile;
use crate::registry::{Artifact, InputSlot, Kind, ParamError, Params, StageContext, plain_params};

/// `report`: Markdown and HTML report of the whole run.
pub struct Report;

impl Kind for Report {
    fn name(&self) -> &'static str {
        "report"
    }
    fn about(&self) -> &'static str {
        "Writes report.md and a self-contained report.html into the entry's run/ folder (they show timings, so they sit outside the hashed output, which keeps the scores): GLUE table beside the paper's, loss curves, schedules, preprocessing figures, the budget account and a rules check."
    }
    fn code_version(&self) -> u32 {
        cram_report::CODE_VERSION
    }
    fn uses_seed(&self, _params: &Params) -> bool {
        false
    }
    fn output(&self) -> Artifact {
        Artifact::Report
    }
    fn inputs(&self) -> &'static [InputSlot] {
        &[
            InputSlot {
                role: "pretrained checkpoint",
                accepts: &[Artifact::Checkpoint],
                required: false,
            },
            InputSlot {
                role: "GLUE results",
                accepts: &[Artifact::GlueResults],
                required: false,
            },
        ]
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(ReportParams)
    }
    fn params(&self, table: toml::Value) -> Result<Params, ParamError> {
        plain_params::<ReportParams>(table)
    }
    fn wants_ancestors(&self) -> bool {
        true
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<Value> {
        let p: ReportParams = ctx.typed()?;
        let lock = LockFile::read(&ctx.pipeline.lock_file)?;
        let names: std::collections::HashSet<&str> =
            ctx.ancestors.iter().map(|a| a.name.as_str()).collect();
        let lock_entries: serde_json::Map<String, Value> = lock
            .stages
            .iter()
            .filter(|(name, _)| names.contains(name.as_str()))
            .map(|(name, e)| {
                (
                    name.clone(),
                    serde_json::json!({ "kind": e.kind, "key": e.key, "output_hash": e.output_hash }),
                )
            })
            .collect();
        let info = PipelineInfo {
            name: ctx.pipeline.name.clone(),
            file: ctx.pipeline.file.display().to_string(),
            file_blake3: ctx.pipeline.file_hash.clone(),
            seed: ctx.pipeline.seed,
            lock: Value::Object(lock_entries),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            machine: MachineInfo::detect(),
        };
        let records: Vec<StageRecord> = ctx
            .ancestors
            .iter()
            .map(|a| StageRecord {
                name: a.name.clone(),
                kind: a.kind.clone(),
                out_dir: a.out_dir.clone(),
                run_dir: a.run_dir.clone(),
                manifest: a.manifest.clone(),
            })
            .collect();
        // The documents show timings and the machine: they go to the run
        // directory. The hashed output is the part the inputs determine.
        let s = cram_report::run_report(&p, &info, &records, ctx.run_dir, ctx.progress)?;
        let path = ctx.out_dir.join("summary.json");
        let text = serde_json::to_string_pretty(&s.outputs())? + "\n";
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        ctx.progress.println(format!(
            "report: {}",
            ctx.run_dir.join("report.html").display()
        ));
        summary(&s)
    }
}
