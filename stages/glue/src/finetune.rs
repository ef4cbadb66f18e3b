//! Fine-tuning one GLUE task and scoring it on its dev split(s).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use burn::module::Module;
use cram_model::{ClassificationModel, ModelConfig};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Example, SplitData, load_split};
use crate::encode::{GlueTokenizer, pad_batch, pad_multiple};
use crate::error::{GlueError, Result, io_err};
use crate::metrics::{Predictions, score};
use crate::params::{GlueParams, TaskHyperparameters};
use crate::predict::{majority_predictor, predict};
use crate::schedule::CosineSchedule;
use crate::step::Trainer;
use crate::task::GlueTask;

/// File names of a checkpoint directory (the pretrain stage's output).
pub const MODEL_FILE: &str = "model.safetensors";
/// The architecture beside the weights.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer beside the weights.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The result of fine-tuning one task (`summary.json` of its output directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task.
    pub task: GlueTask,
    /// Dev metrics after the last epoch, fractions in [0, 1] (correlations in [-1, 1]); MNLI's
    /// carry a `_matched` / `_mismatched` suffix.
    pub metrics: BTreeMap<String, f64>,
    /// The same metrics of a majority-class predictor (the training split's most frequent
    /// class; STS-B: the training mean, whose correlations are 0).
    pub majority_baseline: BTreeMap<String, f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Optimizer updates made.
    pub steps: usize,
    /// Training examples used.
    pub train_examples: usize,
    /// Training examples cut to `max_length`.
    pub train_truncated: usize,
    /// Dev examples scored (all dev splits together).
    pub dev_examples: usize,
    /// Dev examples per split.
    pub dev_splits: BTreeMap<String, usize>,
    /// Mean training loss of the last epoch.
    pub final_train_loss: f64,
    /// The hyperparameters used.
    pub hyperparameters: TaskHyperparameters,
    /// Per-task overrides in use (outside the Cramming rules when non-empty).
    pub overrides: Vec<String>,
    /// Whether a quick-run knob (train/dev subset, fewer than 5 epochs) was in use.
    pub quick_run: bool,
    /// The device trained on, as burn prints it.
    pub device: String,
    /// The precision of the matrix products (`fp32`, `bf16`).
    #[serde(default = "fp32")]
    pub precision: String,
    /// The seed of the head initialisation, data order and dropout.
    pub seed: u64,
    /// Number of scalar parameters of the classification model.
    pub num_params: usize,
    /// The run's timings: not in `summary.json`, whose bytes depend only on
    /// the inputs, the parameters and the seed (the engine records them in
    /// the task's manifest).
    #[serde(skip)]
    pub timings: TaskTimings,
}

/// How long a task's fine-tuning took (see [`TaskSummary::timings`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTimings {
    /// Wall-clock seconds of fine-tuning and scoring (not counted in the
    /// pretraining budget).
    pub seconds: f64,
    /// Seconds of each epoch (training and scoring).
    pub epoch_seconds: Vec<f64>,
}

/// One line of `epochs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// Learning rate of the epoch's last update.
    pub last_lr: f64,
    /// Dev metrics after the epoch.
    pub dev: BTreeMap<String, f64>,
}

/// Fine-tunes the checkpoint in `checkpoint_dir` (`model.safetensors`, `tokenizer.json`) on
/// `task` from `data_dir` (hub layout) and writes into `out_dir`: `metrics.json`,
/// `epochs.jsonl`, the dev predictions (`predictions.parquet`; MNLI
/// `predictions_matched.parquet` and `predictions_mismatched.parquet`: columns `idx`,
/// `prediction` (class id int64, STS-B float32 score), `label`), the fine-tuned
/// `model.safetensors` (contract `cram-ref-v1`, kind `classification`), `config.json`,
/// `tokenizer.json` and `summary.json`.
pub fn run_task(
    params: &GlueParams,
    task: GlueTask,
    checkpoint_dir: &Path,
    data_dir: &Path,
    seed: u64,
    out_dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<TaskSummary> {
    let start = Instant::now();
    params.validate()?;
    let h = params.for_task(task)?;
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    progress.set_message(format!("{task}: loading data"));

    // Data.
    let mut train = load_split(data_dir, task, task.train_split())?;
    if train.examples.is_empty() {
        return Err(GlueError::Training {
            task: task.name().into(),
            reason: format!("{} has no rows", train.path.display()),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ task_salt(task));
    if let Some(max) = params.max_train_examples
        && train.examples.len() > max
    {
        let mut keep = rand::seq::index::sample(&mut rng, train.examples.len(), max).into_vec();
        keep.sort_unstable();
        train.examples = keep
            .into_iter()
            .map(|i| train.examples[i].clone())
            .collect();
    }
    let mut devs: Vec<SplitData> = Vec::new();
    for split in task.dev_splits() {
        let mut d = load_split(data_dir, task, split)?;
        if let Some(max) = params.max_dev_examples {
            d.examples.truncate(max);
        }
        devs.push(d);
    }

    // Tokenizer and model.
    let tokenizer_path = checkpoint_dir.join(TOKENIZER_FILE);
    let tokenizer = GlueTokenizer::from_file(&tokenizer_path, h.max_length)?;
    let model_path = checkpoint_dir.join(MODEL_FILE);
    let device = cram_model::select_device(&params.device)?;
    let precision = params.precision.resolve(&device)?;
    let train_device = device.clone().autodiff();
    let (mut model, config) = ClassificationModel::from_mlm_checkpoint(
        &model_path,
        task.num_labels(),
        seed,
        &train_device,
    )?;
    check_compatible(
        &config,
        &tokenizer,
        &tokenizer_path,
        &model_path,
        h.max_length,
    )?;
    if !h.dropout {
        // Switch every dropout off and keep gradients on.
        model = model.freeze().set_require_grad(true);
    }
    let mut model = model
        .with_precision(precision)
        .with_attention_kernel(params.attention);
    let num_params = model.num_params();

    progress.set_message(format!("{task}: tokenizing"));
    let encoded = tokenizer.encode(&train.examples)?;
    let (train_ids, train_truncated) = (encoded.ids, encoded.truncated);
    let dev_ids: Vec<Vec<Vec<u32>>> = devs
        .iter()
        .map(|d| tokenizer.encode(&d.examples).map(|e| e.ids))
        .collect::<Result<_>>()?;

    // Schedule and optimizer (cram-train's AdamW, PyTorch's arithmetic: bias-corrected
    // moments, ε added to the square root of the corrected second moment, decoupled decay).
    let batches_per_epoch = train.examples.len().div_ceil(h.batch_size);
    let total_steps = batches_per_epoch * h.epochs;
    let schedule = CosineSchedule::new(h.lr, h.warmup_fraction, total_steps);
    let mut trainer = Trainer::new(&h, params.cpu_shards, seed, &train_device);

    // Tasks side by side share the stage's bar: each adds its updates to its length.
    progress.inc_length(total_steps as u64);
    let epochs_path = out_dir.join("epochs.jsonl");
    let mut epochs_file = std::fs::File::create(&epochs_path).map_err(io_err(&epochs_path))?;
    let mut step = 0usize;
    let mut final_train_loss = f64::NAN;
    let mut final_preds: Vec<Predictions> = Vec::new();
    let mut order: Vec<usize> = (0..train.examples.len()).collect();
    let mut epoch_seconds = Vec::with_capacity(h.epochs);
    for epoch in 1..=h.epochs {
        let epoch_start = Instant::now();
        progress.set_message(format!("{task} epoch {epoch}/{}", h.epochs));
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0f64;
        let mut loss_count = 0usize;
        let mut last_lr = 0.0;
        for rows in order.chunks(h.batch_size) {
            let batch = pad_batch(&train_ids, rows, tokenizer.pad_id(), pad_multiple(&device));
            last_lr = schedule.lr(step);
            let (next, value) = trainer.step(model, task, &batch, rows, &train.examples, last_lr);
            model = next;
            if !value.is_finite() {
                return Err(GlueError::Training {
                    task: task.name().into(),
                    reason: format!(
                        "the training loss became {value} at update {step} (epoch {epoch}); lower `lr`"
                    ),
                });
            }
            loss_sum += value * rows.len() as f64;
            loss_count += rows.len();
            step += 1;
            progress.inc(1);
        }
        final_train_loss = loss_sum / loss_count.max(1) as f64;

        progress.set_message(format!("{task} epoch {epoch}/{}: scoring dev", h.epochs));
        let eval_model = model.valid();
        let mut dev_metrics = BTreeMap::new();
        final_preds.clear();
        for (d, ids) in devs.iter().zip(&dev_ids) {
            let preds = predict(
                &eval_model,
                task,
                ids,
                tokenizer.pad_id(),
                params.eval_batch_size,
                &device,
                &d.examples,
            );
            for (name, value) in score(task, &preds) {
                dev_metrics.insert(metric_key(task, &d.split, &name), value);
            }
            final_preds.push(preds);
        }
        let record = EpochRecord {
            epoch,
            train_loss: final_train_loss,
            last_lr,
            dev: dev_metrics,
        };
        epoch_seconds.push(epoch_start.elapsed().as_secs_f64());
        let line = serde_json::to_string(&record).expect("epoch record serialises");
        writeln!(epochs_file, "{line}").map_err(io_err(&epochs_path))?;
        progress.println(format!(
            "{task} epoch {epoch}/{}: train loss {:.4}, {}",
            h.epochs,
            record.train_loss,
            format_metrics(&record.dev)
        ));
    }

    // Outputs.
    progress.set_message(format!("{task}: writing results"));
    let mut metrics = BTreeMap::new();
    let mut majority_baseline = BTreeMap::new();
    let mut dev_splits = BTreeMap::new();
    let majority = majority_predictor(task, &train.examples);
    for (d, preds) in devs.iter().zip(&final_preds) {
        for (name, value) in score(task, preds) {
            metrics.insert(metric_key(task, &d.split, &name), value);
        }
        for (name, value) in score(task, &majority.predict(&d.examples)) {
            majority_baseline.insert(metric_key(task, &d.split, &name), value);
        }
        dev_splits.insert(d.split.clone(), d.examples.len());
        let file = match task.split_suffix(&d.split) {
            Some(suffix) => format!("predictions_{suffix}.parquet"),
            None => "predictions.parquet".to_string(),
        };
        write_predictions(&out_dir.join(file), &d.examples, preds)?;
    }
    let eval_model = model.valid();
    cram_model::save_classification(&eval_model, &config, &out_dir.join(MODEL_FILE))?;
    cram_model::write_config_json(&config, &out_dir.join(CONFIG_FILE))?;
    std::fs::copy(&tokenizer_path, out_dir.join(TOKENIZER_FILE))
        .map_err(io_err(&tokenizer_path))?;
    write_json(
        &out_dir.join("metrics.json"),
        &serde_json::json!({
            "task": task,
            "metrics": metrics,
            "majority_baseline": majority_baseline,
        }),
    )?;

    let quick_run = params.max_train_examples.is_some()
        || params.max_dev_examples.is_some()
        || h.epochs < crate::params::MAX_RULE_EPOCHS;
    let summary = TaskSummary {
        task,
        metrics,
        majority_baseline,
        epochs: h.epochs,
        steps: step,
        train_examples: train.examples.len(),
        train_truncated,
        dev_examples: dev_splits.values().sum(),
        dev_splits,
        final_train_loss,
        overrides: h.overrides.clone(),
        hyperparameters: h,
        quick_run,
        device: format!("{device:?}"),
        precision: precision.name().into(),
        seed,
        num_params,
        timings: TaskTimings {
            seconds: start.elapsed().as_secs_f64(),
            epoch_seconds,
        },
    };
    write_json(&out_dir.join("summary.json"), &summary)?;
    progress.set_message(format!(
        "{task}: done ({})",
        format_metrics(&summary.metrics)
    ));
    Ok(summary)
}

/// A per-task constant mixed into the seed, so tasks draw different data orders.
fn task_salt(task: GlueTask) -> u64 {
    let i = GlueTask::ALL.iter().position(|t| *t == task).unwrap_or(0) as u64;
    (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The metric's key in the summaries: MNLI's get the split suffix (`accuracy_matched`).
pub fn metric_key(task: GlueTask, split: &str, metric: &str) -> String {
    match task.split_suffix(split) {
        Some(suffix) => format!("{metric}_{suffix}"),
        None => metric.to_string(),
    }
}

fn format_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {:.2}", v * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_compatible(
    config: &ModelConfig,
    tokenizer: &GlueTokenizer,
    tokenizer_path: &Path,
    model_path: &Path,
    max_length: usize,
) -> Result<()> {
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(GlueError::Tokenizer {
            path: tokenizer_path.to_path_buf(),
            reason: format!(
                "{} tokens, but the model {} has only {} embedding rows; use the pipeline's own tokenizer",
                tokenizer.vocab_size(),
                model_path.display(),
                config.vocab_size
            ),
        });
    }
    if tokenizer.pad_id() as usize != config.pad_token_id {
        return Err(GlueError::Tokenizer {
            path: tokenizer_path.to_path_buf(),
            reason: format!(
                "[PAD] has id {}, but the model {} pads with id {}",
                tokenizer.pad_id(),
                model_path.display(),
                config.pad_token_id
            ),
        });
    }
    if max_length > config.max_seq_length {
        return Err(GlueError::Params(format!(
            "max_length = {max_length} exceeds the model's max_seq_length = {} ({})",
            config.max_seq_length,
            model_path.display()
        )));
    }
    Ok(())
}

fn write_predictions(path: &Path, examples: &[Example], preds: &Predictions) -> Result<()> {
    let idx: ArrayRef = Arc::new(Int64Array::from_iter_values(examples.iter().map(|e| e.idx)));
    let (pred, label, ty): (ArrayRef, ArrayRef, DataType) = match preds {
        Predictions::Classes { predicted, gold } => (
            Arc::new(Int64Array::from_iter_values(
                predicted.iter().map(|&p| p as i64),
            )),
            Arc::new(Int64Array::from_iter_values(gold.iter().map(|&g| g as i64))),
            DataType::Int64,
        ),
        Predictions::Scores { predicted, gold } => (
            Arc::new(Float32Array::from_iter_values(
                predicted.iter().map(|&p| p as f32),
            )),
            Arc::new(Float32Array::from_iter_values(
                gold.iter().map(|&g| g as f32),
            )),
            DataType::Float32,
        ),
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("idx", DataType::Int64, false),
        Field::new("prediction", ty.clone(), false),
        Field::new("label", ty, false),
    ]));
    let batch = RecordBatch::try_new(schema, vec![idx, pred, label]).map_err(|source| {
        GlueError::Arrow {
            path: path.to_path_buf(),
            source,
        }
    })?;
    crate::synthetic::write_parquet(path, batch)
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value).expect("summaries serialise to JSON");
    std::fs::write(path, json + "\n").map_err(io_err(path))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| GlueError::Json {
        path: PathBuf::from(path),
        source,
    })
}

/// The precision of task summaries written before the parameter existed.
fn fp32() -> String {
    "fp32".into()
}
