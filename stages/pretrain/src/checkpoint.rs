//! Resumable training checkpoints in the stage's work directory.
//!
//! A checkpoint is the directory `WORK/checkpoint/` holding `model.safetensors` (cram-model's
//! contract), `optimizer.safetensors` (AdamW moments by contract name), `metrics.jsonl` (the
//! lines logged so far) and `state.json` ([`TrainState`]). It is written into a fresh
//! `checkpoint.tmp/`, then swapped in by renames (`checkpoint` → `checkpoint.old`,
//! `checkpoint.tmp` → `checkpoint`, remove `checkpoint.old`), so a crash at any moment leaves
//! either the previous or the new checkpoint complete; [`find`] falls back to `checkpoint.old`
//! when the crash fell between the two renames.
//!
//! The MLM masking draws each row's randomness from a stream selected by the row's position in
//! the training stream (see [`crate::collator`]), and each pass's order is a pure function of the
//! seed and the pass (see [`crate::passes`]), so the stream position `position` is the whole
//! random state of the data pipeline. Dropout (off by default) draws from the backend's generator, which is not
//! saved: with `dropout = true` a resumed run is a valid continuation but not bit-identical.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::PretrainError;
use crate::params::MetricsLine;

/// Format tag of `state.json`.
pub const STATE_FORMAT: &str = "cram-pretrain-state-v2";

/// The training loop's counters and position, saved in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// [`STATE_FORMAT`].
    pub format: String,
    /// What the run was started with (resolved params, seed, input facts); a checkpoint is
    /// only resumed by a run with the same fingerprint.
    pub fingerprint: serde_json::Value,
    /// Optimizer steps completed.
    pub step: u64,
    /// Micro-batches completed.
    pub micro_steps: u64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Sequences trained on.
    pub sequences: u64,
    /// Stream position of the next row to read: `pass * rows + index within the pass` (the data
    /// position and the masking RNG's state).
    pub position: u64,
    /// Budget seconds spent.
    #[serde(with = "crate::exact_float::exact_f64")]
    pub elapsed_seconds: f64,
    /// Loss of the first step.
    #[serde(with = "crate::exact_float::exact_opt_f64", default)]
    pub initial_loss: Option<f64>,
    /// Loss of the last step.
    #[serde(with = "crate::exact_float::exact_opt_f64", default)]
    pub last_loss: Option<f64>,
    /// Learning rate of the last step.
    #[serde(with = "crate::exact_float::exact_opt_f64", default)]
    pub last_lr: Option<f64>,
    /// Exponentially smoothed loss shown by the progress bar.
    #[serde(with = "crate::exact_float::exact_opt_f64", default)]
    pub smoothed_loss: Option<f64>,
}

impl TrainState {
    /// The state of a run that has not taken a step.
    pub fn fresh(fingerprint: serde_json::Value) -> Self {
        Self {
            format: STATE_FORMAT.into(),
            fingerprint,
            step: 0,
            micro_steps: 0,
            tokens: 0,
            sequences: 0,
            position: 0,
            elapsed_seconds: 0.0,
            initial_loss: None,
            last_loss: None,
            last_lr: None,
            smoothed_loss: None,
        }
    }
}

/// File names inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer state file.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Counters file.
pub const STATE_FILE: &str = "state.json";
/// Metrics logged so far.
pub const METRICS_FILE: &str = "metrics.jsonl";

const CURRENT: &str = "checkpoint";
const OLD: &str = "checkpoint.old";
const TMP: &str = "checkpoint.tmp";

/// A complete checkpoint directory found in the work directory.
#[derive(Debug, Clone)]
pub struct Found {
    /// The directory.
    pub dir: PathBuf,
    /// Its `state.json`.
    pub state: TrainState,
    /// Its metrics lines.
    pub metrics: Vec<MetricsLine>,
}

/// The checkpoint in `work_dir`, if any. A checkpoint with another fingerprint is reported as
/// `Ok(None)` (it belongs to other params and is ignored, then overwritten).
pub fn find(
    work_dir: &Path,
    fingerprint: &serde_json::Value,
) -> Result<Option<Found>, PretrainError> {
    for name in [CURRENT, OLD] {
        let dir = work_dir.join(name);
        let state_path = dir.join(STATE_FILE);
        if !state_path.is_file()
            || !dir.join(MODEL_FILE).is_file()
            || !dir.join(OPTIMIZER_FILE).is_file()
        {
            continue;
        }
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| PretrainError::io(&state_path, e))?;
        let state: TrainState =
            serde_json::from_str(&text).map_err(|e| PretrainError::json(&state_path, e))?;
        if state.format != STATE_FORMAT || &state.fingerprint != fingerprint {
            return Ok(None);
        }
        let metrics = read_metrics(&dir.join(METRICS_FILE))?;
        return Ok(Some(Found {
            dir,
            state,
            metrics,
        }));
    }
    Ok(None)
}

fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>, PretrainError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| PretrainError::io(path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| PretrainError::json(path, e)))
        .collect()
}

/// Writes `metrics` as JSON lines.
pub fn write_metrics(path: &Path, metrics: &[MetricsLine]) -> Result<(), PretrainError> {
    let mut text = String::new();
    for m in metrics {
        text.push_str(&serde_json::to_string(m).map_err(|e| PretrainError::json(path, e))?);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| PretrainError::io(path, e))
}

/// Writes a checkpoint atomically: `fill` writes the model and optimizer files into the
/// directory it is given, then the state and metrics are added and the directory swapped in.
pub fn save(
    work_dir: &Path,
    state: &TrainState,
    metrics: &[MetricsLine],
    fill: impl FnOnce(&Path) -> Result<(), PretrainError>,
) -> Result<PathBuf, PretrainError> {
    std::fs::create_dir_all(work_dir).map_err(|e| PretrainError::io(work_dir, e))?;
    let tmp = work_dir.join(TMP);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| PretrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| PretrainError::io(&tmp, e))?;
    fill(&tmp)?;
    write_metrics(&tmp.join(METRICS_FILE), metrics)?;
    let state_path = tmp.join(STATE_FILE);
    let json =
        serde_json::to_string_pretty(state).map_err(|e| PretrainError::json(&state_path, e))?;
    std::fs::write(&state_path, json).map_err(|e| PretrainError::io(&state_path, e))?;
    let current = work_dir.join(CURRENT);
    let old = work_dir.join(OLD);
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| PretrainError::io(&old, e))?;
    }
    if current.exists() {
        std::fs::rename(&current, &old).map_err(|e| PretrainError::io(&current, e))?;
    }
    std::fs::rename(&tmp, &current).map_err(|e| PretrainError::io(&tmp, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| PretrainError::io(&old, e))?;
    }
    Ok(current)
}

/// Removes every checkpoint directory of `work_dir` (after a finished run).
pub fn clear(work_dir: &Path) -> Result<(), PretrainError> {
    for name in [CURRENT, OLD, TMP] {
        let dir = work_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| PretrainError::io(&dir, e))?;
        }
    }
    Ok(())
}
