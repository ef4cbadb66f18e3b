//! The report of a parameter sweep: one row per combination with the
//! parameters that vary, GLUE per task and the average, the held-out and
//! final losses, tokens and wall time, and the loss curves overlaid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::ReportError;
use crate::doc::{Block, Cell, Document, Section, t};
use crate::fmt;
use crate::plots::multi_line_svg;

/// One combination of a sweep and what it gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SweepRow {
    /// The combination's overrides, `(STAGE.KEY, VALUE)`, in grid order.
    pub params: Vec<(String, String)>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// GLUE task → its headline metric (fraction; CoLA Matthews, STS-B Pearson,
    /// MRPC/QQP F1, MNLI matched accuracy, others accuracy).
    pub glue: BTreeMap<String, f64>,
    /// The GLUE average (fraction).
    pub glue_average: Option<f64>,
    /// Held-out loss after pretraining.
    pub heldout_loss: Option<f64>,
    /// Last training loss.
    pub final_loss: Option<f64>,
    /// Tokens trained on.
    pub tokens: Option<f64>,
    /// Scalar parameters of the pretrained model.
    pub parameters: Option<f64>,
    /// Training wall clock in seconds.
    pub wall_seconds: Option<f64>,
    /// The training loss against tokens seen.
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

impl SweepRow {
    /// `KEY=VALUE, ...` of the combination.
    pub fn label(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the sweep report wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepSummary {
    /// Combinations run.
    pub combinations: usize,
    /// Combinations that failed.
    pub failed: usize,
    /// The rows.
    pub rows: Vec<SweepRow>,
}

/// The headline metric of a GLUE task in a `glue` summary's `tasks` entry.
pub fn headline_metric(task: &str, metrics: &BTreeMap<String, f64>) -> Option<f64> {
    let key = match task {
        "cola" => "matthews",
        "stsb" => "pearson",
        "mrpc" | "qqp" => "f1",
        "mnli" => "accuracy_matched",
        _ => "accuracy",
    };
    metrics.get(key).copied()
}

/// Writes `report.md`, `report.html`, `plots/loss.svg` and `summary.json`
/// of a sweep into `out_dir`.
pub fn write_sweep_report(
    title: &str,
    rows: &[SweepRow],
    out_dir: &Path,
    plot_size: (u32, u32),
) -> Result<SweepSummary, ReportError> {
    let keys: Vec<String> = rows
        .first()
        .map(|r| r.params.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let tasks: BTreeSet<&String> = rows.iter().flat_map(|r| r.glue.keys()).collect();
    let mut header = vec!["#".to_string()];
    header.extend(keys.iter().cloned());
    header.extend(tasks.iter().map(|t| t.to_string()));
    header.extend(
        [
            "GLUE avg",
            "Held-out loss",
            "Final loss",
            "Tokens",
            "Wall clock",
        ]
        .map(String::from),
    );
    let opt = |x: Option<f64>, f: fn(f64) -> String| fmt::opt(x, f);
    let table: Vec<Vec<Cell>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut row = vec![Cell::num((i + 1).to_string())];
            row.extend(r.params.iter().map(|(_, v)| Cell::code(v)));
            if let Some(e) = &r.error {
                row.push(Cell::text(format!("failed: {e}")));
                return row;
            }
            for task in &tasks {
                row.push(Cell::num(opt(r.glue.get(*task).copied(), fmt::score)));
            }
            row.push(Cell::num(opt(r.glue_average, fmt::score)));
            row.push(Cell::num(opt(r.heldout_loss, fmt::number)));
            row.push(Cell::num(opt(r.final_loss, fmt::number)));
            row.push(Cell::num(opt(r.tokens, fmt::int)));
            row.push(Cell::num(opt(r.wall_seconds, fmt::duration)));
            row
        })
        .collect();
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    let series: Vec<(String, Vec<(f64, f64)>)> = rows
        .iter()
        .filter(|r| !r.curve.is_empty())
        .map(|r| (r.label(), r.curve.clone()))
        .collect();
    let mut curve_blocks = Vec::new();
    let mut files = Vec::new();
    if series.is_empty() {
        curve_blocks.push(Block::Para(vec![t("No combination logged a loss curve.")]));
    } else {
        let svg = multi_line_svg(
            "Training loss against tokens seen",
            "tokens",
            "MLM loss",
            &series,
            plot_size,
        )?;
        files.push(("plots/loss.svg".to_string(), svg.clone()));
        curve_blocks.push(Block::Plot {
            title: "Training loss against tokens seen, one line per combination".into(),
            svg,
            file: "plots/loss.svg".into(),
        });
    }
    // The scaling view across runs: each run's last loss (held-out where
    // measured) against its compute, C = 6 × parameters × tokens.
    let finals: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.error.is_none())
        .filter_map(|r| {
            let c = 6.0 * r.parameters? * r.tokens?;
            Some((c, r.heldout_loss.or(r.final_loss)?))
        })
        .collect();
    let scaling = match crate::scaling::fit_power_law(&finals) {
        Some(law) => format!(
            "Across the runs, last loss (held-out where measured) ≈ {} · C^−{:.4} with C = 6 × parameters × tokens (R² {:.3} over {} runs).",
            fmt::number(law.a),
            law.b,
            law.r2,
            law.points
        ),
        None => format!(
            "A power-law fit of loss against compute across the runs needs three runs with distinct compute ({} here).",
            finals.len()
        ),
    };
    curve_blocks.push(Block::Para(vec![t(scaling)]));
    let doc = Document {
        title: title.to_string(),
        lead: vec![t(format!(
            "{} combinations of {}{}. Stages whose parameters and inputs are the same across combinations ran once and were reused from the cache. GLUE scores ×100 (each task's headline metric); compare pretraining by the held-out loss.",
            rows.len(),
            if keys.is_empty() {
                "no parameter".to_string()
            } else {
                keys.join(" × ")
            },
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        ))],
        sections: vec![
            Section {
                id: "results",
                title: "Results".into(),
                blocks: vec![Block::Table {
                    header,
                    rows: table,
                }],
            },
            Section {
                id: "curves",
                title: "Loss curves".into(),
                blocks: curve_blocks,
            },
        ],
    };
    let write = |name: &str, text: &str| crate::write_file(out_dir, name, text);
    for (name, svg) in &files {
        write(name, svg)?;
    }
    write("report.md", &doc.to_markdown())?;
    write("report.html", &doc.to_html())?;
    let summary = SweepSummary {
        combinations: rows.len(),
        failed,
        rows: rows.to_vec(),
    };
    write(
        "summary.json",
        &(serde_json::to_string_pretty(&summary).expect("the summary serialises") + "\n"),
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_combination_and_the_curves_overlaid() {
        let tmp = tempfile::tempdir().unwrap();
        let row = |lr: &str, loss: f64| SweepRow {
            params: vec![("pretrain.lr".into(), lr.into())],
            glue: BTreeMap::from([("rte".to_string(), 0.55)]),
            glue_average: Some(0.55),
            heldout_loss: Some(loss),
            final_loss: Some(loss + 0.1),
            tokens: Some(1000.0),
            parameters: Some(10.0),
            wall_seconds: Some(12.0),
            curve: vec![(0.0, 6.0), (1000.0, loss)],
            ..Default::default()
        };
        let failed = SweepRow {
            params: vec![("pretrain.lr".into(), "1".into())],
            error: Some("the loss became NaN".into()),
            ..Default::default()
        };
        let rows = [row("1e-3", 4.0), row("5e-4", 4.5), failed];
        let s = write_sweep_report("Sweep", &rows, tmp.path(), (640, 320)).unwrap();
        assert_eq!((s.combinations, s.failed), (3, 1));
        let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
        assert!(
            md.contains("3 combinations of pretrain.lr, 1 failed"),
            "{md}"
        );
        assert!(md.contains("`5e-4`") && md.contains("4.500"), "{md}");
        assert!(md.contains("failed: the loss became NaN"), "{md}");
        let svg = std::fs::read_to_string(tmp.path().join("plots/loss.svg")).unwrap();
        assert!(svg.contains("pretrain.lr=1e-3") && svg.contains("pretrain.lr=5e-4"));
        assert!(tmp.path().join("report.html").is_file());
        assert!(md.contains("needs three runs"), "{md}");
        // Three runs whose compute differs: the fit across them.
        let grow = |tokens: f64| SweepRow {
            tokens: Some(tokens),
            heldout_loss: Some(9.0 * (60.0 * tokens).powf(-0.1)),
            ..row("1e-3", 0.0)
        };
        let rows = [grow(1e3), grow(1e4), grow(1e5)];
        write_sweep_report("Sweep", &rows, tmp.path(), (640, 320)).unwrap();
        let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
        assert!(
            md.contains("· C^−0.1000") && md.contains("over 3 runs"),
            "{md}"
        );
    }
}
