//! `cram sweep FILE --grid STAGE.KEY=V1,V2 [--grid ...]`: runs every
//! combination of the grid as an ordinary `cram run` of the pipeline with
//! those overrides, on one cache, so that every stage whose key is the same
//! across combinations (the preprocessing, usually) runs once and is reused.
//! Each combination keeps its own lock file in the sweep's folder; a sweep
//! that stops can be run again and only what is missing runs. The sweep
//! report compares the combinations side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cram_report::sweep::{SweepRow, SweepSummary, headline_metric, write_sweep_report};
use serde_json::Value;

use crate::exec::{self, Outcome, RunOptions};
use crate::pipeline::{self, Override, Pipeline};
use crate::store::{Entry, Store};
use crate::ui::Ui;

/// One axis of the grid: a parameter and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axis {
    /// `STAGE.KEY` (dotted further for nested tables).
    pub key: String,
    /// The values, as `--set` would read them (TOML, or bare text).
    pub values: Vec<String>,
}

/// Parses `STAGE.KEY=V1,V2,...`.
pub fn parse_axis(spec: &str) -> Result<Axis> {
    let Some((key, values)) = spec.split_once('=') else {
        bail!("--grid {spec:?}: expected STAGE.KEY=V1,V2,... (e.g. pretrain.lr=1e-3,5e-4)");
    };
    let key = key.trim();
    if !key.contains('.') {
        bail!("--grid {spec:?}: the key must name a stage and a parameter, STAGE.KEY");
    }
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        bail!("--grid {spec:?}: give at least one value after `=`");
    }
    Ok(Axis {
        key: key.to_string(),
        values,
    })
}

/// Every combination of the axes, the first axis varying slowest.
pub fn combinations(axes: &[Axis]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push((axis.key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    out
}

/// What `cram sweep` was asked.
#[derive(Debug, Clone)]
pub struct SweepArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// `--set` overrides shared by every combination.
    pub set: Vec<String>,
    /// The `--grid` axes.
    pub grid: Vec<String>,
    /// Stages at once within a combination.
    pub jobs: usize,
    /// The sweep's folder (default: `FILE` without `.toml`, plus `.sweep`).
    pub out: Option<PathBuf>,
}

/// The sweep's folder for `file` when none is given.
pub fn default_out(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned());
    file.with_file_name(format!("{stem}.sweep"))
}

/// Runs the sweep; returns the report's summary and the folder it is in.
pub fn run(args: &SweepArgs, store: &Store, ui: &Ui) -> Result<(SweepSummary, PathBuf)> {
    let axes: Vec<Axis> = args
        .grid
        .iter()
        .map(|g| parse_axis(g))
        .collect::<Result<_>>()?;
    if axes.is_empty() {
        bail!("cram sweep needs at least one --grid STAGE.KEY=V1,V2");
    }
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.file));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Load every combination first: a bad value fails the sweep before
    // anything runs.
    let combos = combinations(&axes);
    let mut pipelines = Vec::with_capacity(combos.len());
    for (i, combo) in combos.iter().enumerate() {
        let sets: Vec<String> = args
            .set
            .iter()
            .cloned()
            .chain(combo.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let overrides = sets
            .iter()
            .map(|s| Override::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut p = pipeline::load(&args.file, &overrides).map_err(anyhow::Error::from)?;
        p.meta.lock_file = out.join(format!("combination-{:02}.lock", i + 1));
        pipelines.push(p);
    }
    let mut rows = Vec::with_capacity(combos.len());
    for (i, (combo, p)) in combos.iter().zip(&pipelines).enumerate() {
        let label = combo
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        ui.line(&format!(
            "cram sweep: combination {}/{}: {label}",
            i + 1,
            combos.len()
        ));
        let opts = RunOptions {
            jobs: args.jobs,
            ..Default::default()
        };
        let report = exec::run(p, store, &opts, ui)?;
        rows.push(row(p, combo, &report.outcomes));
        if crate::interrupt::requested() {
            bail!("interrupted: run the sweep again to finish it (done stages stay cached)");
        }
    }
    let title = format!("Sweep of {}", p_name(&pipelines));
    let summary = write_sweep_report(&title, &rows, &out, (960, 400))?;
    Ok((summary, out))
}

fn p_name(pipelines: &[Pipeline]) -> String {
    pipelines
        .first()
        .map_or_else(String::new, |p| p.meta.name.clone())
}

/// The sweep report's row of one combination, from its run's outcomes.
fn row(p: &Pipeline, combo: &[(String, String)], outcomes: &[(String, Outcome)]) -> SweepRow {
    let mut r = SweepRow {
        params: combo.to_vec(),
        ..Default::default()
    };
    let entries: BTreeMap<&str, &Entry> = outcomes
        .iter()
        .filter_map(|(n, o)| match o {
            Outcome::Ran(e) | Outcome::Cached(e) | Outcome::Pulled(e) => Some((n.as_str(), &**e)),
            _ => None,
        })
        .collect();
    if let Some((name, Outcome::Failed(err, _))) = outcomes
        .iter()
        .find(|(_, o)| matches!(o, Outcome::Failed(..)))
    {
        r.error = Some(format!("{name}: {err}"));
    }
    let of_kind = |kind: &str| {
        p.stages
            .iter()
            .filter(|s| s.kind.name() == kind)
            .find_map(|s| entries.get(s.name.as_str()).copied())
    };
    if let Some(e) = of_kind("pretrain") {
        let m = &e.manifest.metrics;
        r.heldout_loss = m["heldout_loss"].as_f64();
        r.final_loss = m["final_loss"].as_f64();
        r.tokens = m["tokens"].as_f64();
        r.parameters = m["parameters"].as_f64();
        r.wall_seconds = m["timings"]["wall_seconds"].as_f64();
        if let Ok(text) = std::fs::read_to_string(e.out_dir().join("metrics.jsonl")) {
            r.curve = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|l| Some((l["tokens"].as_f64()?, l["loss"].as_f64()?)))
                .collect();
        }
    }
    if let Some(e) = of_kind("glue") {
        let m = &e.manifest.metrics;
        r.glue_average = m["glue_average"].as_f64();
        if let Some(tasks) = m["tasks"].as_object() {
            for (task, entry) in tasks {
                let metrics: BTreeMap<String, f64> = entry["metrics"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(v) = headline_metric(task, &metrics) {
                    r.glue.insert(task.clone(), v);
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_and_combine_first_slowest() {
        let a = parse_axis("pretrain.lr=1e-3, 5e-4").unwrap();
        assert_eq!(a.key, "pretrain.lr");
        assert_eq!(a.values, ["1e-3", "5e-4"]);
        let b = parse_axis("pretrain.model.num_layers=1,2").unwrap();
        let c = combinations(&[a, b]);
        assert_eq!(c.len(), 4);
        assert_eq!(
            c[1],
            [
                ("pretrain.lr".to_string(), "1e-3".to_string()),
                ("pretrain.model.num_layers".to_string(), "2".to_string())
            ]
        );
        for bad in ["pretrain.lr", "lr=1", "pretrain.lr="] {
            assert!(parse_axis(bad).is_err(), "{bad}");
        }
        assert_eq!(
            default_out(Path::new("pipelines/sanity.toml")),
            Path::new("pipelines/sanity.sweep")
        );
    }
}
