//! `cram diff A B`: what differs between two runs.
//!
//! A side is a pipeline file (with its own `--set` overrides), a lock file
//! (`FILE.lock`) or a cache key (a prefix of at least 8 hex digits is
//! enough). Each becomes a map from stage name to what is known of it: the
//! kind, the resolved parameters, and where the stage is cached, its key,
//! output hash and manifest. The diff lists the parameters that differ, the
//! stages whose results differ, and the numbers of the stages' metrics side
//! by side with their deltas (GLUE per task, losses, tokens, wall time).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::lockfile::LockFile;
use crate::pipeline::{self, Override};
use crate::plan::{self, State};
use crate::store::{Manifest, Store};

/// What one side knows of one stage.
#[derive(Debug, Clone)]
pub struct SideStage {
    /// The stage kind.
    pub kind: String,
    /// Resolved parameters.
    pub params: Value,
    /// Cache key, when known.
    pub key: Option<String>,
    /// Output hash, when the stage is cached (or pinned by a lock).
    pub output_hash: Option<String>,
    /// The cache entry's manifest, when it is in the cache.
    pub manifest: Option<Manifest>,
}

/// One side of a diff.
#[derive(Debug, Clone)]
pub struct Side {
    /// How the side was given.
    pub label: String,
    /// Stage name → what is known.
    pub stages: BTreeMap<String, SideStage>,
}

impl Side {
    /// Reads a side from `spec`: a lock file, a pipeline file (with `set`
    /// overrides) or a cache key.
    pub fn read(spec: &str, set: &[String], store: &Store) -> Result<Side> {
        let path = Path::new(spec);
        if path.is_file() && spec.ends_with(".lock") {
            if !set.is_empty() {
                bail!("{spec}: --set applies to pipeline files, not to lock files");
            }
            return Side::from_lock(spec, store);
        }
        if path.is_file() {
            return Side::from_pipeline(spec, set, store);
        }
        if spec.len() >= 8 && spec.chars().all(|c| c.is_ascii_hexdigit()) {
            if !set.is_empty() {
                bail!("{spec}: --set applies to pipeline files, not to cache keys");
            }
            return Side::from_key(spec, store);
        }
        bail!(
            "{spec} is neither a file nor a cache key: give a pipeline file, a lock file (FILE.lock) or a key (8 or more hex digits)"
        )
    }

    fn from_lock(spec: &str, store: &Store) -> Result<Side> {
        let lock = LockFile::read(Path::new(spec))?;
        let stages = lock
            .stages
            .into_iter()
            .map(|(name, e)| {
                let manifest = store.get(&e.key).map(|x| x.manifest);
                (
                    name,
                    SideStage {
                        kind: e.kind,
                        params: e.params,
                        key: Some(e.key),
                        output_hash: Some(e.output_hash),
                        manifest,
                    },
                )
            })
            .collect();
        Ok(Side {
            label: spec.to_string(),
            stages,
        })
    }

    fn from_pipeline(spec: &str, set: &[String], store: &Store) -> Result<Side> {
        let overrides = set
            .iter()
            .map(|s| Override::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let p = pipeline::load(Path::new(spec), &overrides)?;
        let lock = LockFile::read(&p.meta.lock_file)?;
        let statuses = plan::status(&p, store, &lock, &HashSet::new(), None);
        let mut stages = BTreeMap::new();
        for (stage, st) in p.stages.iter().zip(statuses) {
            let entry = match st.state {
                State::Cached { entry } => Some(*entry),
                State::Stale { .. } => None,
            };
            stages.insert(
                stage.name.clone(),
                SideStage {
                    kind: stage.kind.name().to_string(),
                    params: stage.params.resolved.clone(),
                    key: entry.as_ref().map(|e| e.manifest.key.clone()),
                    output_hash: entry.as_ref().map(|e| e.manifest.output_hash.clone()),
                    manifest: entry.map(|e| e.manifest),
                },
            );
        }
        let label = if set.is_empty() {
            spec.to_string()
        } else {
            format!("{spec} --set {}", set.join(" --set "))
        };
        Ok(Side { label, stages })
    }

    fn from_key(spec: &str, store: &Store) -> Result<Side> {
        let matches: Vec<_> = store
            .entries()?
            .into_iter()
            .filter(|e| e.manifest.key.starts_with(spec))
            .collect();
        let entry = match matches.len() {
            1 => matches.into_iter().next().expect("one match"),
            0 => bail!(
                "no cache entry has a key starting with {spec} (cache {})",
                store.root().display()
            ),
            n => bail!("{n} cache entries have keys starting with {spec}: give more digits"),
        };
        let m = entry.manifest;
        let mut stages = BTreeMap::new();
        stages.insert(
            m.stage.clone(),
            SideStage {
                kind: m.kind.clone(),
                params: m.params.clone(),
                key: Some(m.key.clone()),
                output_hash: Some(m.output_hash.clone()),
                manifest: Some(m),
            },
        );
        Ok(Side {
            label: format!("entry {spec}"),
            stages,
        })
    }
}

/// A number of a stage's metrics on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Stage name.
    pub stage: String,
    /// Path inside the metrics (`final_loss`, `tasks.rte.metrics.accuracy`).
    pub name: String,
    /// Side A's value.
    pub a: Option<f64>,
    /// Side B's value.
    pub b: Option<f64>,
}

/// The differences between two sides.
#[derive(Debug, Clone, Default)]
pub struct Diff {
    /// (stage, parameter, A's value, B's value) for parameters that differ.
    pub params: Vec<(String, String, String, String)>,
    /// (stage, what) for stages whose results differ or that one side lacks.
    pub stages: Vec<(String, String)>,
    /// Stages whose output is the same on both sides.
    pub same: Vec<String>,
    /// Numbers of the metrics, side by side.
    pub metrics: Vec<MetricRow>,
}

/// Subtrees of a summary that are not results (or too long to compare).
const SKIPPED: &[&str] = &[
    "hyperparameters",
    "special_ids",
    "trial_metrics",
    "metrics_min",
    "metrics_max",
    "files",
    "shards",
    "dev_splits",
];

/// The headline numbers, shown even when equal.
const HEADLINES: &[&str] = &[
    "final_loss",
    "steps",
    "tokens",
    "epochs",
    "timings.wall_seconds",
    "tokens_per_second",
    "budget_seconds",
    "budget_steps",
    "glue_average",
    "eval_unk_rate",
    "rows",
];

fn numbers(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if SKIPPED.contains(&k.as_str()) {
                    continue;
                }
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                numbers(&p, x, out);
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        _ => {}
    }
}

/// The numbers of a manifest's metrics, with tokens per second worked out
/// for pretraining runs.
fn metric_numbers(m: &Manifest) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    numbers("", &m.metrics, &mut out);
    if let (Some(t), Some(w)) = (out.get("tokens"), out.get("timings.wall_seconds"))
        && m.kind == "pretrain"
        && *w > 0.0
    {
        let tps = t / w;
        out.insert("tokens_per_second".into(), tps);
    }
    out
}

/// Compares two sides.
pub fn diff(a: &Side, b: &Side) -> Diff {
    let mut d = Diff::default();
    let names: BTreeSet<&String> = a.stages.keys().chain(b.stages.keys()).collect();
    for name in names {
        let (sa, sb) = (a.stages.get(name), b.stages.get(name));
        let (Some(sa), Some(sb)) = (sa, sb) else {
            let which = if sa.is_some() { "A" } else { "B" };
            d.stages.push((name.clone(), format!("only in {which}")));
            continue;
        };
        if sa.kind != sb.kind {
            d.stages
                .push((name.clone(), format!("kind {} vs {}", sa.kind, sb.kind)));
            continue;
        }
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        crate::commands::flatten("", &sa.params, &mut pa);
        crate::commands::flatten("", &sb.params, &mut pb);
        let pa: BTreeMap<String, String> = pa.into_iter().collect();
        let pb: BTreeMap<String, String> = pb.into_iter().collect();
        for k in pa.keys().chain(pb.keys()).collect::<BTreeSet<_>>() {
            let (x, y) = (pa.get(k), pb.get(k));
            if x != y {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
                d.params.push((name.clone(), k.clone(), show(x), show(y)));
            }
        }
        match (&sa.output_hash, &sb.output_hash) {
            (Some(x), Some(y)) if x == y => d.same.push(name.clone()),
            (Some(x), Some(y)) => d.stages.push((
                name.clone(),
                format!(
                    "output {} vs {}",
                    &x[..12.min(x.len())],
                    &y[..12.min(y.len())]
                ),
            )),
            (x, y) => d.stages.push((
                name.clone(),
                format!(
                    "{} vs {}",
                    if x.is_some() { "cached" } else { "not cached" },
                    if y.is_some() { "cached" } else { "not cached" }
                ),
            )),
        }
        let (Some(ma), Some(mb)) = (&sa.manifest, &sb.manifest) else {
            continue;
        };
        let (na, nb) = (metric_numbers(ma), metric_numbers(mb));
        for k in na.keys().chain(nb.keys()).collect::<BTreeSet<_>>() {
            let (x, y) = (na.get(k).copied(), nb.get(k).copied());
            if x != y || HEADLINES.contains(&k.as_str()) {
                d.metrics.push(MetricRow {
                    stage: name.clone(),
                    name: k.clone(),
                    a: x,
                    b: y,
                });
            }
        }
    }
    d
}

/// A number with about four significant digits where it matters: integers
/// as they are, small values in exponent form.
fn fmt_number(v: f64, signed: bool) -> String {
    let sign = if signed && v >= 0.0 { "+" } else { "" };
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{sign}{}", v as i64)
    } else if v.abs() >= 1000.0 {
        format!("{sign}{v:.1}")
    } else if v.abs() >= 0.01 {
        format!("{sign}{v:.4}")
    } else {
        format!("{sign}{v:.3e}")
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |v| fmt_number(v, false))
}

impl Diff {
    /// The diff as text: a section each for parameters, stages and metrics.
    pub fn render(&self, a: &Side, b: &Side) -> String {
        let mut s = format!("A: {}\nB: {}\n", a.label, b.label);
        s.push_str("\nparameters that differ:\n");
        if self.params.is_empty() {
            s.push_str("  (none)\n");
        }
        for (stage, k, x, y) in &self.params {
            s.push_str(&format!("  {stage}.{k}: {x} → {y}\n"));
        }
        s.push_str("\nstages:\n");
        if !self.same.is_empty() {
            s.push_str(&format!("  same output: {}\n", self.same.join(", ")));
        }
        for (stage, what) in &self.stages {
            s.push_str(&format!("  {stage}: {what}\n"));
        }
        s.push_str("\nmetrics (A, B, B − A):\n");
        if self.metrics.is_empty() {
            s.push_str("  (no stage is cached on both sides)\n");
        }
        let width = self
            .metrics
            .iter()
            .map(|m| m.stage.len() + m.name.len() + 1)
            .max()
            .unwrap_or(0);
        for m in &self.metrics {
            let delta = match (m.a, m.b) {
                (Some(x), Some(y)) if x == y => "=".to_string(),
                (Some(x), Some(y)) => {
                    let d = y - x;
                    let rel = if x != 0.0 {
                        format!(" ({:+.1} %)", 100.0 * d / x.abs())
                    } else {
                        String::new()
                    };
                    format!("{}{rel}", fmt_number(d, true))
                }
                _ => String::new(),
            };
            s.push_str(&format!(
                "  {:<width$}  {:>14}  {:>14}  {delta}\n",
                format!("{}.{}", m.stage, m.name),
                num(m.a),
                num(m.b),
            ));
        }
        s
    }
}

/// Runs `cram diff`: reads both sides and renders the comparison.
pub fn run(a: &str, b: &str, set_a: &[String], set_b: &[String], store: &Store) -> Result<String> {
    let sa = Side::read(a, set_a, store).with_context(|| format!("reading side A ({a})"))?;
    let sb = Side::read(b, set_b, store).with_context(|| format!("reading side B ({b})"))?;
    Ok(diff(&sa, &sb).render(&sa, &sb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn side(label: &str, lr: f64, loss: f64, hash: &str) -> Side {
        let manifest: Manifest = serde_json::from_value(json!({
            "format": "cram-manifest-v1", "stage": "pretrain", "kind": "pretrain",
            "key": "k", "code_version": 1, "tool_version": "0", "params": {"lr": lr},
            "seed": 0, "inputs": {}, "output_hash": hash, "files": [],
            "started_at": "", "finished_at": "", "wall_seconds": 1.0,
            "metrics": {"final_loss": loss, "tokens": 1000, "timings": {"wall_seconds": 2.0}},
        }))
        .unwrap();
        let mut stages = BTreeMap::new();
        stages.insert(
            "pretrain".to_string(),
            SideStage {
                kind: "pretrain".into(),
                params: json!({"lr": lr}),
                key: Some("k".into()),
                output_hash: Some(hash.into()),
                manifest: Some(manifest),
            },
        );
        Side {
            label: label.into(),
            stages,
        }
    }

    #[test]
    fn parameters_outputs_and_metrics_with_deltas() {
        let a = side("a", 1e-3, 4.0, "aaaaaaaaaaaaaaaa");
        let b = side("b", 5e-4, 3.0, "bbbbbbbbbbbbbbbb");
        let d = diff(&a, &b);
        assert_eq!(d.params.len(), 1);
        assert_eq!(d.params[0].1, "lr");
        assert_eq!(d.stages[0].0, "pretrain");
        let loss = d.metrics.iter().find(|m| m.name == "final_loss").unwrap();
        assert_eq!((loss.a, loss.b), (Some(4.0), Some(3.0)));
        let tps = d
            .metrics
            .iter()
            .find(|m| m.name == "tokens_per_second")
            .unwrap();
        assert_eq!(tps.a, Some(500.0), "tokens over the wall clock");
        let text = d.render(&a, &b);
        assert!(text.contains("pretrain.lr: 0.001 → 0.0005"), "{text}");
        assert!(text.contains("-1 (-25.0 %)"), "{text}");
        assert_eq!(fmt_number(0.00012345, false), "1.234e-4");
        assert_eq!(fmt_number(-0.5, true), "-0.5000");
        assert_eq!(fmt_number(2.5, true), "+2.5000");
        let same = diff(&a, &a);
        assert!(same.params.is_empty() && same.stages.is_empty());
        assert_eq!(same.same, ["pretrain"]);
    }
}
