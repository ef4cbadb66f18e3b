//! Reading the stages' outputs into the figures the report shows.
//!
//! Everything is read tolerantly: a missing file or key becomes `None` (shown
//! as "n/a"), a value of an unexpected type is ignored. Only a file that exists
//! but is not valid JSON is an error, since it means a damaged cache entry.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::ReportError;
use crate::records::StageRecord;

/// Kinds that only prepare data: their time is free under the rules.
pub const PREPROCESSING_KINDS: &[&str] = &[
    "download",
    "synthetic",
    "filter",
    "dedup",
    "tokenizer",
    "pack",
    "synthetic-glue",
    "command",
];

/// Built-in kinds that never load pretrained weights.
pub const FROM_SCRATCH_KINDS: &[&str] = &[
    "download",
    "synthetic",
    "filter",
    "dedup",
    "tokenizer",
    "pack",
    "pretrain",
    "glue",
    "glue-task",
    "synthetic-glue",
    "report",
];

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json(path: &Path) -> Result<Option<Value>, ReportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReportError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| ReportError::Json {
            path: path.to_path_buf(),
            line: source.line(),
            source,
        })
}

/// A number at `key` of a JSON object (integers and floats alike).
pub fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// A string at `key` of a JSON object.
pub fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// A stage's summary: `summary.json` in its output directory, or failing that
/// the `metrics` of its manifest; with the run's timings (the manifest's
/// `metrics.timings`, kept out of the hashed output) added at the top level
/// where the summary has no such key. Summaries written before the timings
/// moved out carry them at the top level themselves.
pub fn stage_summary(record: &StageRecord) -> Result<Value, ReportError> {
    let from_file = read_json(&record.out_dir.join("summary.json"))?;
    let metrics = record.manifest.get("metrics").filter(|m| m.is_object());
    let mut summary = from_file
        .filter(Value::is_object)
        .or_else(|| metrics.cloned())
        .unwrap_or(Value::Object(Default::default()));
    if let (Value::Object(map), Some(Value::Object(timings))) = (
        &mut summary,
        metrics.and_then(|m| m.get("timings")).cloned(),
    ) {
        for (k, v) in timings {
            map.entry(k).or_insert(v);
        }
    }
    Ok(summary)
}

/// Reads a pretraining run's `timeline.jsonl` (its run directory's per-step
/// timings) into `points` by step. A missing file leaves them as they are.
pub fn merge_timeline(points: &mut [MetricPoint], path: &Path) -> Result<(), ReportError> {
    let timeline = read_metrics(path)?;
    let by_step: BTreeMap<u64, &MetricPoint> = timeline
        .iter()
        .filter_map(|t| Some((t.step? as u64, t)))
        .collect();
    for p in points.iter_mut() {
        let Some(t) = p.step.and_then(|s| by_step.get(&(s as u64))) else {
            continue;
        };
        p.elapsed_seconds = p.elapsed_seconds.or(t.elapsed_seconds);
        p.tokens_per_second = p.tokens_per_second.or(t.tokens_per_second);
    }
    Ok(())
}

/// The manifest's `wall_seconds` of a record.
pub fn manifest_seconds(record: &StageRecord) -> Option<f64> {
    num(&record.manifest, "wall_seconds")
}

/// The resolved parameters of a record (`params` of its manifest).
pub fn manifest_params(record: &StageRecord) -> Value {
    record
        .manifest
        .get("params")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Names of a record's direct inputs, from the manifest's `inputs` map; `None`
/// when the manifest does not say.
pub fn manifest_inputs(record: &StageRecord) -> Option<Vec<String>> {
    let inputs = record.manifest.get("inputs")?;
    match inputs {
        Value::Object(map) => Some(map.keys().cloned().collect()),
        Value::Array(list) => Some(
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// One line of a pretraining run's `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricPoint {
    /// Optimizer step.
    pub step: Option<f64>,
    /// Seconds since training started.
    pub elapsed_seconds: Option<f64>,
    /// Tokens seen so far.
    pub tokens: Option<f64>,
    /// Training loss.
    pub loss: Option<f64>,
    /// Learning rate applied.
    pub lr: Option<f64>,
    /// Batch size (sequences per optimizer step) applied.
    pub batch_size: Option<f64>,
    /// Throughput.
    pub tokens_per_second: Option<f64>,
    /// The held-out loss, on the steps it was evaluated.
    pub heldout_loss: Option<f64>,
}

/// Reads `metrics.jsonl`; an empty list when the file does not exist.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricPoint>, ReportError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ReportError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut points = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| ReportError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|source| ReportError::Json {
            path: path.to_path_buf(),
            line: index + 1,
            source,
        })?;
        points.push(MetricPoint {
            step: num(&v, "step"),
            elapsed_seconds: num(&v, "elapsed_seconds"),
            tokens: num(&v, "tokens"),
            loss: num(&v, "loss"),
            lr: num(&v, "lr"),
            batch_size: num(&v, "batch_size"),
            tokens_per_second: num(&v, "tokens_per_second"),
            heldout_loss: num(&v, "heldout_loss"),
        });
    }
    Ok(points)
}

/// A pretraining stage's figures.
#[derive(Debug, Clone)]
pub struct Pretrain {
    /// Stage name.
    pub name: String,
    /// `summary.json` (or the manifest's metrics).
    pub summary: Value,
    /// The resolved parameters.
    pub params: Value,
    /// The `metrics.jsonl` lines.
    pub points: Vec<MetricPoint>,
    /// The manifest's wall time of the whole stage.
    pub stage_seconds: Option<f64>,
}

impl Pretrain {
    /// Reads a `pretrain` record's outputs.
    pub fn read(record: &StageRecord) -> Result<Pretrain, ReportError> {
        let mut points = read_metrics(&record.out_dir.join("metrics.jsonl"))?;
        merge_timeline(&mut points, &record.run_dir.join("timeline.jsonl"))?;
        Ok(Pretrain {
            name: record.name.clone(),
            summary: stage_summary(record)?,
            params: manifest_params(record),
            points,
            stage_seconds: manifest_seconds(record),
        })
    }

    /// The wall-clock budget in seconds (`None` when training ran by steps).
    pub fn budget_seconds(&self) -> Option<f64> {
        num(&self.summary, "budget_seconds")
    }

    /// The training wall clock in seconds (summary, else the last metrics
    /// line, else the stage's manifest time).
    pub fn wall_seconds(&self) -> Option<f64> {
        num(&self.summary, "wall_seconds")
            .or_else(|| self.points.iter().rev().find_map(|p| p.elapsed_seconds))
            .or(self.stage_seconds)
    }
}

/// One GLUE task's results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GlueTask {
    /// Metric name → value in [0, 1] (Matthews and correlations in [−1, 1]).
    pub metrics: BTreeMap<String, f64>,
    /// Epochs fine-tuned.
    pub epochs: Option<f64>,
    /// Training examples used.
    pub train_examples: Option<f64>,
    /// Dev examples scored.
    pub dev_examples: Option<f64>,
    /// Fine-tuning seconds.
    pub seconds: Option<f64>,
    /// Per-task hyperparameter overrides (empty when the global set was used).
    pub overrides: Value,
    /// Majority-class baseline, metric name → value.
    pub majority_baseline: BTreeMap<String, f64>,
    /// Fine-tunings behind the metrics (their median); `None` in summaries from before
    /// trials existed (one).
    pub trials: Option<f64>,
    /// Per metric, the smallest value over the trials.
    pub metrics_min: BTreeMap<String, f64>,
    /// Per metric, the largest value over the trials.
    pub metrics_max: BTreeMap<String, f64>,
}

impl GlueTask {
    /// Reads a task entry (the aggregate's `tasks.X` or a task's summary).
    pub fn from_value(v: &Value) -> GlueTask {
        GlueTask {
            metrics: number_map(v.get("metrics")),
            epochs: num(v, "epochs"),
            train_examples: num(v, "train_examples"),
            dev_examples: num(v, "dev_examples"),
            seconds: num(v, "seconds"),
            overrides: v.get("overrides").cloned().unwrap_or(Value::Null),
            majority_baseline: number_map(v.get("majority_baseline")),
            trials: num(v, "trials"),
            metrics_min: number_map(v.get("metrics_min")),
            metrics_max: number_map(v.get("metrics_max")),
        }
    }

    /// Fine-tunings behind the metrics (1 where the summary does not say).
    pub fn trial_count(&self) -> usize {
        self.trials.map_or(1, |t| t.max(1.0) as usize)
    }

    /// Whether the task used per-task overrides of the global hyperparameters.
    pub fn has_overrides(&self) -> bool {
        match &self.overrides {
            Value::Null => false,
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => !s.is_empty(),
            Value::Bool(b) => *b,
            Value::Number(_) => true,
        }
    }
}

/// The numeric entries of a JSON object.
fn number_map(v: Option<&Value>) -> BTreeMap<String, f64> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                .collect()
        })
        .unwrap_or_default()
}

/// Canonical task name: lowercase without `-`/`_` (`SST-2` → `sst2`).
pub fn task_key(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The GLUE results of a run.
#[derive(Debug, Clone, Default)]
pub struct Glue {
    /// Name of the aggregate stage (or of the first task record's stage).
    pub name: String,
    /// Task (canonical name) → results.
    pub tasks: BTreeMap<String, GlueTask>,
    /// GLUE average as the stage computed it.
    pub average: Option<f64>,
    /// The accuracy-style average, as the stage computed it.
    pub average_acc: Option<f64>,
    /// Whether quick-run limits were used.
    pub quick_run: bool,
    /// Why the run is outside the paper's rules, per the stage.
    pub outside_rules: Vec<String>,
    /// Total fine-tuning seconds.
    pub fine_tune_seconds: Option<f64>,
    /// The global fine-tuning hyperparameters.
    pub hyperparameters: Value,
    /// Manifest wall time of the aggregate stage.
    pub stage_seconds: Option<f64>,
}

impl Glue {
    /// Collects the GLUE results from the `glue` aggregate record (the last one
    /// if there are several) and the `glue-task` records. Tasks missing from
    /// the aggregate are read from their own records. `None` when there is no
    /// GLUE record at all.
    pub fn read(records: &[StageRecord]) -> Result<Option<Glue>, ReportError> {
        let aggregate = records.iter().rev().find(|r| r.kind == "glue");
        let task_records: Vec<&StageRecord> = records
            .iter()
            .filter(|r| r.kind == "glue-task")
            .filter(|r| aggregate.is_none_or(|a| r.name.starts_with(&format!("{}.", a.name))))
            .collect();
        if aggregate.is_none() && task_records.is_empty() {
            return Ok(None);
        }
        let mut glue = Glue::default();
        if let Some(agg) = aggregate {
            let s = stage_summary(agg)?;
            glue.name = agg.name.clone();
            glue.stage_seconds = manifest_seconds(agg);
            if let Some(tasks) = s.get("tasks").and_then(Value::as_object) {
                for (name, entry) in tasks {
                    let mut task = GlueTask::from_value(entry);
                    task.seconds = task.seconds.or_else(|| {
                        s.get("task_seconds")
                            .and_then(|t| t.get(name))
                            .and_then(Value::as_f64)
                    });
                    glue.tasks.insert(task_key(name), task);
                }
            }
            glue.average = num(&s, "glue_average");
            glue.average_acc = num(&s, "glue_average_acc");
            glue.quick_run = s.get("quick_run").and_then(Value::as_bool).unwrap_or(false);
            glue.outside_rules = s
                .get("outside_rules")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            glue.fine_tune_seconds = num(&s, "fine_tune_seconds");
            glue.hyperparameters = s.get("hyperparameters").cloned().unwrap_or(Value::Null);
        } else if let Some(first) = task_records.first() {
            glue.name = first
                .name
                .split_once('.')
                .map_or(first.name.as_str(), |(stage, _)| stage)
                .to_string();
        }
        for record in task_records {
            let unit = record
                .name
                .rsplit_once('.')
                .map_or(record.name.as_str(), |(_, t)| t);
            // Further trials of a task (`TASK@K`) are summarised by the
            // aggregate; on their own only the first trial stands for it.
            if unit.contains('@') {
                continue;
            }
            let task = task_key(unit);
            if glue.tasks.contains_key(&task) {
                continue;
            }
            let summary = stage_summary(record)?;
            let mut entry = GlueTask::from_value(&summary);
            if entry.metrics.is_empty() {
                entry.metrics =
                    number_map(read_json(&record.out_dir.join("metrics.json"))?.as_ref());
            }
            if entry.seconds.is_none() {
                entry.seconds = manifest_seconds(record);
            }
            glue.tasks.insert(task, entry);
        }
        if glue.fine_tune_seconds.is_none() {
            let secs: Vec<f64> = glue.tasks.values().filter_map(|t| t.seconds).collect();
            if !secs.is_empty() {
                glue.fine_tune_seconds = Some(secs.iter().sum());
            }
        }
        Ok(Some(glue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(dir: &Path, name: &str, kind: &str, metrics: Value) -> StageRecord {
        let out_dir = dir.join(name).join("out");
        let run_dir = dir.join(name).join("run");
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::create_dir_all(&run_dir).unwrap();
        StageRecord {
            name: name.into(),
            kind: kind.into(),
            out_dir,
            run_dir,
            manifest: json!({ "wall_seconds": 99.0, "metrics": metrics }),
        }
    }

    #[test]
    fn timings_come_from_the_manifest_and_the_run_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let r = record(
            tmp.path(),
            "pretrain",
            "pretrain",
            json!({ "steps": 8, "timings": { "wall_seconds": 12.5, "peak_memory_bytes": 1024 } }),
        );
        std::fs::write(
            r.out_dir.join("summary.json"),
            json!({ "steps": 8, "final_loss": 2.0 }).to_string(),
        )
        .unwrap();
        std::fs::write(
            r.out_dir.join("metrics.jsonl"),
            "{\"step\":4,\"loss\":3.0}\n{\"step\":8,\"loss\":2.0}\n",
        )
        .unwrap();
        std::fs::write(
            r.run_dir.join("timeline.jsonl"),
            "{\"step\":4,\"elapsed_seconds\":6.0,\"tokens_per_second\":100.0}\n\
             {\"step\":8,\"elapsed_seconds\":12.5,\"tokens_per_second\":110.0}\n",
        )
        .unwrap();
        let p = Pretrain::read(&r).unwrap();
        assert_eq!(p.wall_seconds(), Some(12.5));
        assert_eq!(num(&p.summary, "peak_memory_bytes"), Some(1024.0));
        assert_eq!(
            num(&p.summary, "final_loss"),
            Some(2.0),
            "the file's fields stay"
        );
        let elapsed: Vec<Option<f64>> = p.points.iter().map(|x| x.elapsed_seconds).collect();
        assert_eq!(elapsed, [Some(6.0), Some(12.5)]);
        assert_eq!(p.points[1].tokens_per_second, Some(110.0));
    }

    #[test]
    fn glue_task_seconds_come_from_the_aggregate_timings() {
        let tmp = tempfile::tempdir().unwrap();
        let agg = record(
            tmp.path(),
            "glue",
            "glue",
            json!({ "timings": { "fine_tune_seconds": 30.0, "task_seconds": { "rte": 30.0 } } }),
        );
        std::fs::write(
            agg.out_dir.join("summary.json"),
            json!({ "tasks": { "rte": { "metrics": { "accuracy": 0.5 }, "epochs": 1 } } })
                .to_string(),
        )
        .unwrap();
        let glue = Glue::read(&[agg]).unwrap().unwrap();
        assert_eq!(glue.fine_tune_seconds, Some(30.0));
        assert_eq!(glue.tasks["rte"].seconds, Some(30.0));
    }
}
