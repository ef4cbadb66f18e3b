//! Gathering the per-task results into the GLUE summary and averages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{GlueError, Result};
use crate::finetune::{TaskSummary, read_json, write_json};
use crate::params::GlueParams;
use crate::task::GlueTask;

/// One task's entry in [`GlueSummary::tasks`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// Dev metrics after the last epoch (fractions): CoLA `matthews`; STS-B `pearson`,
    /// `spearman`; MRPC/QQP `f1`, `accuracy`; MNLI `accuracy_matched`, `accuracy_mismatched`;
    /// others `accuracy`. With several trials, the median of each metric over them.
    pub metrics: BTreeMap<String, f64>,
    /// Fine-tunings the metrics summarise (seeds `seed` … `seed + trials - 1`).
    #[serde(default = "one")]
    pub trials: usize,
    /// The smallest value of each metric over the trials (equal to `metrics` for one).
    #[serde(default)]
    pub metrics_min: BTreeMap<String, f64>,
    /// The largest value of each metric over the trials.
    #[serde(default)]
    pub metrics_max: BTreeMap<String, f64>,
    /// Each trial's metrics, in seed order.
    #[serde(default)]
    pub trial_metrics: Vec<BTreeMap<String, f64>>,
    /// Epochs trained.
    pub epochs: usize,
    /// Training examples used.
    pub train_examples: usize,
    /// Dev examples scored.
    pub dev_examples: usize,
    /// Per-task overrides in use (outside the rules when non-empty).
    pub overrides: Vec<String>,
    /// The same metrics of the majority-class predictor.
    pub majority_baseline: BTreeMap<String, f64>,
}

/// The `glue` stage's summary (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlueSummary {
    /// Per task name.
    pub tasks: BTreeMap<String, TaskEntry>,
    /// Mean of the reference's nine numbers (MNLI-m, MNLI-mm, QQP F1, QNLI, SST-2, CoLA MCC,
    /// STS-B Pearson, MRPC F1, RTE) over those present; `None` when none is.
    pub glue_average: Option<f64>,
    /// Which of the nine numbers were present (`mnli_m`, `mnli_mm`, `qqp`, `qnli`, `sst2`,
    /// `cola`, `stsb`, `mrpc`, `rte`); fewer than nine means the average is partial.
    pub glue_average_tasks: Vec<String>,
    /// The same mean with accuracy instead of F1 for MRPC and QQP.
    pub glue_average_acc: Option<f64>,
    /// `glue_average` of the majority-class baselines, over the same numbers.
    pub majority_glue_average: Option<f64>,
    /// Whether a quick-run knob (train/dev subset, fewer than 5 epochs) was used: the scores
    /// are then not comparable to the paper's.
    pub quick_run: bool,
    /// Why the run is outside the Cramming fine-tuning rules (empty when within them).
    pub outside_rules: Vec<String>,
    /// Fine-tunings per task behind each metric (their median is reported).
    #[serde(default = "one")]
    pub trials: usize,
    /// The parameters of the stage.
    pub hyperparameters: GlueParams,
}

/// The nine numbers of the reference's GLUE average: (name, task, metric, metric with
/// accuracy for MRPC/QQP).
pub const AVERAGE_COMPONENTS: [(&str, GlueTask, &str, &str); 9] = [
    (
        "mnli_m",
        GlueTask::Mnli,
        "accuracy_matched",
        "accuracy_matched",
    ),
    (
        "mnli_mm",
        GlueTask::Mnli,
        "accuracy_mismatched",
        "accuracy_mismatched",
    ),
    ("qqp", GlueTask::Qqp, "f1", "accuracy"),
    ("qnli", GlueTask::Qnli, "accuracy", "accuracy"),
    ("sst2", GlueTask::Sst2, "accuracy", "accuracy"),
    ("cola", GlueTask::Cola, "matthews", "matthews"),
    ("stsb", GlueTask::Stsb, "pearson", "pearson"),
    ("mrpc", GlueTask::Mrpc, "f1", "accuracy"),
    ("rte", GlueTask::Rte, "accuracy", "accuracy"),
];

/// Summaries written before trials existed had one.
fn one() -> usize {
    1
}

/// The median of `values` (the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Per metric name: the median, the minimum and the maximum over `trials`.
fn summarise(
    trials: &[BTreeMap<String, f64>],
) -> (
    BTreeMap<String, f64>,
    BTreeMap<String, f64>,
    BTreeMap<String, f64>,
) {
    let names: std::collections::BTreeSet<&String> = trials.iter().flat_map(|t| t.keys()).collect();
    let (mut mid, mut lo, mut hi) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for name in names {
        let values: Vec<f64> = trials.iter().filter_map(|t| t.get(name).copied()).collect();
        if let Some(m) = median(&values) {
            mid.insert(name.clone(), m);
            lo.insert(
                name.clone(),
                values.iter().copied().fold(f64::INFINITY, f64::min),
            );
            hi.insert(
                name.clone(),
                values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
        }
    }
    (mid, lo, hi)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Reads `summary.json` of every task directory (outputs of [`crate::run_task`], one trial
/// per task) and writes the stage's `summary.json` into `out_dir`.
pub fn aggregate(
    params: &GlueParams,
    task_dirs: &[(GlueTask, PathBuf)],
    out_dir: &Path,
) -> Result<GlueSummary> {
    let trials: Vec<(GlueTask, Vec<PathBuf>)> = task_dirs
        .iter()
        .map(|(t, d)| (*t, vec![d.clone()]))
        .collect();
    aggregate_trials(params, &trials, out_dir)
}

/// [`aggregate`] over several trials per task (their directories in seed order): each
/// task's metrics are the medians over its trials, and the GLUE averages are taken over
/// those medians.
pub fn aggregate_trials(
    params: &GlueParams,
    task_dirs: &[(GlueTask, Vec<PathBuf>)],
    out_dir: &Path,
) -> Result<GlueSummary> {
    let mut summaries: BTreeMap<GlueTask, TaskSummary> = BTreeMap::new();
    let mut per_trial: BTreeMap<GlueTask, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    for (task, dirs) in task_dirs {
        for dir in dirs {
            let path = dir.join("summary.json");
            let summary: TaskSummary = read_json(&path)?;
            if summary.task != *task {
                return Err(GlueError::Params(format!(
                    "{} holds the results of task {}, not {task}",
                    path.display(),
                    summary.task
                )));
            }
            per_trial
                .entry(*task)
                .or_default()
                .push(summary.metrics.clone());
            summaries.entry(*task).or_insert(summary);
        }
    }
    let mut spread = BTreeMap::new();
    for (task, trials) in &per_trial {
        let (mid, lo, hi) = summarise(trials);
        if let Some(s) = summaries.get_mut(task) {
            s.metrics = mid;
        }
        spread.insert(*task, (lo, hi));
    }
    let mut glue = Vec::new();
    let mut glue_acc = Vec::new();
    let mut majority = Vec::new();
    let mut present = Vec::new();
    for (name, task, metric, metric_acc) in AVERAGE_COMPONENTS {
        let Some(s) = summaries.get(&task) else {
            continue;
        };
        let (Some(v), Some(v_acc)) = (s.metrics.get(metric), s.metrics.get(metric_acc)) else {
            continue;
        };
        glue.push(*v);
        glue_acc.push(*v_acc);
        majority.push(s.majority_baseline.get(metric).copied().unwrap_or(0.0));
        present.push(name.to_string());
    }
    let mut outside_rules = params.outside_rules();
    for s in summaries.values() {
        if !s.overrides.is_empty() {
            let reason = format!(
                "{}: per-task hyperparameters ({}) break the one-setting-for-all-tasks rule",
                s.task,
                s.overrides.join(", ")
            );
            if !outside_rules.contains(&reason) {
                outside_rules.push(reason);
            }
        }
        if s.epochs > crate::params::MAX_RULE_EPOCHS
            && !outside_rules.iter().any(|r| r.contains("epochs"))
        {
            outside_rules.push(format!(
                "{}: trained {} epochs (at most 5 allowed)",
                s.task, s.epochs
            ));
        }
    }
    let summary = GlueSummary {
        tasks: summaries
            .values()
            .map(|s| {
                (
                    s.task.name().to_string(),
                    TaskEntry {
                        metrics: s.metrics.clone(),
                        trials: per_trial.get(&s.task).map_or(1, Vec::len),
                        metrics_min: spread.get(&s.task).map(|x| x.0.clone()).unwrap_or_default(),
                        metrics_max: spread.get(&s.task).map(|x| x.1.clone()).unwrap_or_default(),
                        trial_metrics: per_trial.get(&s.task).cloned().unwrap_or_default(),
                        epochs: s.epochs,
                        train_examples: s.train_examples,
                        dev_examples: s.dev_examples,
                        overrides: s.overrides.clone(),
                        majority_baseline: s.majority_baseline.clone(),
                    },
                )
            })
            .collect(),
        glue_average: mean(&glue),
        glue_average_tasks: present,
        glue_average_acc: mean(&glue_acc),
        majority_glue_average: mean(&majority),
        quick_run: params.quick_run() || summaries.values().any(|s| s.quick_run),
        outside_rules,
        trials: per_trial.values().map(Vec::len).max().unwrap_or(1),
        hyperparameters: params.clone(),
    };
    std::fs::create_dir_all(out_dir).map_err(crate::error::io_err(out_dir))?;
    write_json(&out_dir.join("summary.json"), &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::TaskOverrides;

    fn fake_summary(params: &GlueParams, task: GlueTask, metrics: &[(&str, f64)]) -> TaskSummary {
        let h = params.for_task(task).unwrap();
        TaskSummary {
            task,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            majority_baseline: metrics.iter().map(|(k, _)| (k.to_string(), 0.5)).collect(),
            epochs: h.epochs,
            steps: 10,
            train_examples: 100,
            train_truncated: 0,
            dev_examples: 20,
            dev_splits: BTreeMap::from([("validation".to_string(), 20)]),
            final_train_loss: 0.3,
            overrides: h.overrides.clone(),
            hyperparameters: h,
            quick_run: false,
            device: "cpu".into(),
            precision: "fp32".into(),
            seed: 0,
            num_params: 1,
            timings: Default::default(),
        }
    }

    #[test]
    fn averages_the_nine_reference_numbers() {
        let mut params = GlueParams::default();
        params.overrides.insert(
            "rte".into(),
            TaskOverrides {
                lr: Some(1e-4),
                ..Default::default()
            },
        );
        let tmp = tempfile::tempdir().unwrap();
        let table: [(GlueTask, &[(&str, f64)]); 8] = [
            (
                GlueTask::Mnli,
                &[("accuracy_matched", 0.80), ("accuracy_mismatched", 0.82)],
            ),
            (GlueTask::Qqp, &[("f1", 0.86), ("accuracy", 0.90)]),
            (GlueTask::Qnli, &[("accuracy", 0.88)]),
            (GlueTask::Sst2, &[("accuracy", 0.91)]),
            (GlueTask::Cola, &[("matthews", 0.40)]),
            (GlueTask::Stsb, &[("pearson", 0.84), ("spearman", 0.83)]),
            (GlueTask::Mrpc, &[("f1", 0.87), ("accuracy", 0.81)]),
            (GlueTask::Rte, &[("accuracy", 0.55)]),
        ];
        let mut dirs = Vec::new();
        for (task, metrics) in table {
            let dir = tmp.path().join(task.name());
            std::fs::create_dir_all(&dir).unwrap();
            write_json(
                &dir.join("summary.json"),
                &fake_summary(&params, task, metrics),
            )
            .unwrap();
            dirs.push((task, dir));
        }
        let out = tmp.path().join("out");
        let s = aggregate(&params, &dirs, &out).unwrap();
        let nine = [0.80, 0.82, 0.86, 0.88, 0.91, 0.40, 0.84, 0.87, 0.55];
        let nine_acc = [0.80, 0.82, 0.90, 0.88, 0.91, 0.40, 0.84, 0.81, 0.55];
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} != {b}");
        close(s.glue_average.unwrap(), nine.iter().sum::<f64>() / 9.0);
        close(
            s.glue_average_acc.unwrap(),
            nine_acc.iter().sum::<f64>() / 9.0,
        );
        close(s.majority_glue_average.unwrap(), 0.5);
        assert_eq!(s.glue_average_tasks.len(), 9);
        assert_eq!(s.tasks.len(), 8);
        assert!(!s.quick_run);
        assert_eq!(s.outside_rules.len(), 1, "{:?}", s.outside_rules);
        assert!(s.outside_rules[0].starts_with("rte: per-task"));
        assert_eq!(s.tasks["rte"].overrides, ["lr = 0.0001"]);
        let written: GlueSummary = read_json(&out.join("summary.json")).unwrap();
        assert_eq!(written, s);
    }

    #[test]
    fn every_parameter_has_help_text() {
        let schema = serde_json::to_value(schemars::schema_for!(GlueParams)).unwrap();
        let props = schema["properties"].as_object().unwrap();
        assert!(props.len() >= 16);
        for (name, p) in props {
            assert!(
                p["description"].is_string(),
                "GlueParams.{name} has no doc comment"
            );
        }
        let schema =
            serde_json::to_value(schemars::schema_for!(crate::SyntheticGlueParams)).unwrap();
        for (name, p) in schema["properties"].as_object().unwrap() {
            assert!(
                p["description"].is_string(),
                "SyntheticGlueParams.{name} has no doc comment"
            );
        }
    }

    #[test]
    fn trials_give_the_median_and_the_spread() {
        let params = GlueParams {
            tasks: vec![GlueTask::Rte],
            trials: 3,
            ..GlueParams::default()
        };
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = [0.5, 0.7, 0.6]
            .iter()
            .enumerate()
            .map(|(i, acc)| {
                let dir = tmp.path().join(format!("rte{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                let summary = fake_summary(&params, GlueTask::Rte, &[("accuracy", *acc)]);
                write_json(&dir.join("summary.json"), &summary).unwrap();
                dir
            })
            .collect();
        let s =
            aggregate_trials(&params, &[(GlueTask::Rte, dirs)], &tmp.path().join("out")).unwrap();
        let rte = &s.tasks["rte"];
        assert_eq!(rte.trials, 3);
        assert_eq!(s.trials, 3);
        assert_eq!(rte.metrics["accuracy"], 0.6);
        assert_eq!(rte.metrics_min["accuracy"], 0.5);
        assert_eq!(rte.metrics_max["accuracy"], 0.7);
        assert_eq!(rte.trial_metrics.len(), 3);
        assert_eq!(s.glue_average, Some(0.6), "the average is over the medians");
        assert_eq!(median(&[1.0, 4.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
