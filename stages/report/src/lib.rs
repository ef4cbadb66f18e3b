//! The `report` stage of cram: what a researcher reads at the end of a run.
//!
//! [`run_report`] reads every ancestor stage's outputs ([`StageRecord`]s, in
//! topological order) and writes into the output directory:
//!
//! * `report.md`: GitHub-flavoured Markdown, linking the plots under `plots/`;
//! * `report.html`: one self-contained page (inline CSS and SVG plots, no
//!   scripts, no network), whose markup is also well-formed XHTML;
//! * `plots/*.svg`: the plots as files;
//! * `summary.json`: the [`ReportSummary`].
//!
//! The report holds the GLUE dev table in the paper's layout beside the
//! paper's crammed BERT rows, the pretraining curves (loss against tokens and
//! wall time, the learning rate and batch size actually applied), each
//! preprocessing stage's figures, the budget account (free preprocessing
//! apart from the budgeted pretraining and the uncounted fine-tuning), the
//! device and machine, what is needed to reproduce the run, and a rules check
//! (each rule PASS, WARN or FAIL with the reason).
//!
//! Stage outputs are read tolerantly: a missing file or key shows as "n/a".

mod build;
mod data;
mod doc;
mod fmt;
mod notes;
mod plots;
mod records;
mod rules;
mod scaling;
pub mod sweep;

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use records::{MachineInfo, PipelineInfo, StageRecord};
pub use rules::{RuleCheck, RuleStatus};

/// Bumped whenever a change to the code changes the bytes this kind writes.
pub const CODE_VERSION: u32 = 3;

/// Parameters of the `report` stage kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReportParams {
    /// Title of the report; empty for "Cramming report: <pipeline name>".
    pub title: String,
    /// Show the paper's reference rows (crammed BERT v1 on C4 and v2 on the
    /// Pile, both 24 h on one A6000) beside this run's GLUE scores.
    pub reference_rows: bool,
    /// Show the majority-class baseline of each GLUE dev set below the scores.
    pub majority_baseline: bool,
    /// Width of each plot in pixels.
    pub plot_width: u32,
    /// Height of each plot in pixels.
    pub plot_height: u32,
    /// At most this many points per plotted series (longer training logs are
    /// thinned evenly, keeping the last point).
    pub max_plot_points: usize,
    /// Warn when a pretraining run read its data more than this many times
    /// (4 by default: Muennighoff et al. 2023 found up to about 4 passes
    /// nearly as good as fresh data, and less with every pass after).
    pub repeat_warning_epochs: f64,
}

impl Default for ReportParams {
    fn default() -> Self {
        ReportParams {
            title: String::new(),
            reference_rows: true,
            majority_baseline: true,
            plot_width: 960,
            plot_height: 400,
            max_plot_points: 2000,
            repeat_warning_epochs: 4.0,
        }
    }
}

/// What the report stage returns (and writes as `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReportSummary {
    /// Title of the report.
    pub title: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Files written, relative to the output directory.
    pub files: Vec<String>,
    /// Ids of the report's sections, in order.
    pub sections: Vec<String>,
    /// This run's GLUE average on the paper's scale (0–100), if any.
    pub glue_average: Option<f64>,
    /// GLUE tasks with results.
    pub glue_tasks: Vec<String>,
    /// The pretraining stage the curves show, if any.
    pub pretrain_stage: Option<String>,
    /// Its final training loss.
    pub final_loss: Option<f64>,
    /// Its held-out loss after the last step (fixed masks), if it measured one.
    #[serde(default)]
    pub heldout_loss: Option<f64>,
    /// The exponent `b` of its loss curve's power-law fit `L = a · C^(−b)` against compute.
    #[serde(default)]
    pub scaling_exponent: Option<f64>,
    /// The rules check, one line per rule.
    pub rules: Vec<RuleCheck>,
    /// Whether no rule failed (the scores can be set beside the paper's).
    pub comparable_to_paper: bool,
    /// Warnings about how pretraining used its budget and data (an
    /// unfinished schedule, data repeated too often).
    pub warnings: Vec<String>,
    /// Ancestor stages the report read.
    pub stages: usize,
}

impl ReportSummary {
    /// The part of the summary that the report's inputs determine: what the
    /// engine stores as the stage's hashed `summary.json`. The documents,
    /// the rules check and the warnings read run timings (the budget
    /// account, the wall clock), so they live beside the output, in the
    /// entry's run directory.
    pub fn outputs(&self) -> serde_json::Value {
        serde_json::json!({
            "title": self.title,
            "pipeline": self.pipeline,
            "sections": self.sections,
            "glue_average": self.glue_average,
            "glue_tasks": self.glue_tasks,
            "pretrain_stage": self.pretrain_stage,
            "final_loss": self.final_loss,
            "heldout_loss": self.heldout_loss,
            "scaling_exponent": self.scaling_exponent,
            "stages": self.stages,
        })
    }
}

/// What can go wrong while writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A stage output exists but cannot be read.
    #[error("cannot read {path}: {source}", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stage output is not valid JSON (a damaged cache entry).
    #[error("{path}:{line}: invalid JSON: {source}", path = .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The line at fault (1-based).
        line: usize,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A report file cannot be written.
    #[error("cannot write {path}: {source}", path = .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A plot cannot be drawn.
    #[error("cannot draw the plot \"{plot}\": {message}")]
    Plot {
        /// The plot's caption.
        plot: String,
        /// What the plotting library said.
        message: String,
    },
}

/// Writes `contents` to `out_dir/name`, creating the folders on the way.
pub(crate) fn write_file(out_dir: &Path, name: &str, contents: &str) -> Result<(), ReportError> {
    let path = out_dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ReportError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(&path, contents).map_err(|source| ReportError::Write { path, source })
}

/// Writes the report of a run into `out_dir` (which exists and is empty):
/// `report.md`, `report.html`, `plots/*.svg` and `summary.json`.
///
/// `records` are the report stage's ancestors in topological order (all of
/// them, including the `glue-task` sub-units); `pipeline` says what to print
/// for reproducing the run. The progress bar advances once per stage read and
/// once per file written.
pub fn run_report(
    params: &ReportParams,
    pipeline: &PipelineInfo,
    records: &[StageRecord],
    out_dir: &Path,
    progress: &ProgressBar,
) -> Result<ReportSummary, ReportError> {
    progress.set_length(records.len() as u64 + 4);
    progress.set_position(0);
    progress.set_message("reading stage outputs");
    let run = build::RunData::read(records, progress)?;
    progress.set_message("drawing plots");
    let built = build::build(params, pipeline, records, &run)?;
    progress.inc(1);

    progress.set_message("writing report");
    let write = |name: &str, contents: &str| write_file(out_dir, name, contents);
    let mut files = vec!["report.md".to_string(), "report.html".to_string()];
    for (file, svg) in &built.plot_files {
        write(file, svg)?;
        files.push(file.clone());
    }
    write("report.md", &built.document.to_markdown())?;
    progress.inc(1);
    write("report.html", &built.document.to_html())?;
    progress.inc(1);
    files.push("summary.json".to_string());

    let comparable = !built.rules.iter().any(|r| r.status == RuleStatus::Fail);
    let summary = ReportSummary {
        title: built.document.title.clone(),
        pipeline: pipeline.name.clone(),
        files,
        sections: built
            .document
            .sections
            .iter()
            .map(|s| s.id.to_string())
            .collect(),
        glue_average: built.glue_average.map(|a| a * 100.0),
        glue_tasks: run
            .glue
            .as_ref()
            .map(|g| g.tasks.keys().cloned().collect())
            .unwrap_or_default(),
        pretrain_stage: run.main_pretrain().map(|p| p.name.clone()),
        final_loss: run.main_pretrain().and_then(|p| {
            data::num(&p.summary, "final_loss")
                .or_else(|| p.points.iter().rev().find_map(|x| x.loss))
        }),
        heldout_loss: run
            .main_pretrain()
            .and_then(|p| data::num(&p.summary, "heldout_loss")),
        scaling_exponent: run
            .main_pretrain()
            .and_then(scaling::fit_run)
            .map(|(law, _)| law.b),
        rules: built.rules,
        comparable_to_paper: comparable,
        warnings: built.notes.iter().map(|n| n.text.clone()).collect(),
        stages: records.len(),
    };
    let json = serde_json::to_string_pretty(&summary).expect("the summary serializes to JSON");
    write("summary.json", &json)?;
    progress.inc(1);
    progress.set_message("report written");
    Ok(summary)
}
