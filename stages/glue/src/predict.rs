//! Inference with a fine-tuned classifier: logits and predictions over encoded examples (no
//! autodiff, in large length-sorted batches), and the majority-class baseline.

use burn::tensor::{Device, Int, Tensor, TensorData};
use cram_model::{ClassLabels, ClassificationModel};

use crate::data::{Example, Label};
use crate::encode::{HostBatch, pad_batch};
use crate::metrics::Predictions;
use crate::task::GlueTask;

/// The ids and the attention mask of a padded batch, as tensors on `device`.
pub(crate) fn batch_tensors(
    batch: &HostBatch,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let shape = [batch.batch, batch.seq];
    let ids = cram_model::traffic::upload(TensorData::new(batch.ids.clone(), shape), device);
    let mask = cram_model::traffic::upload(TensorData::new(batch.mask.clone(), shape), device);
    (ids, mask)
}

/// The labels of `rows` of `examples`: class ids, or STS-B scores.
pub(crate) fn label_tensor(
    task: GlueTask,
    examples: &[Example],
    rows: &[usize],
    device: &Device,
) -> ClassLabels {
    let n = rows.len();
    if task.is_regression() {
        let v: Vec<f32> = rows
            .iter()
            .map(|&r| examples[r].label.as_f64() as f32)
            .collect();
        ClassLabels::Scores(cram_model::traffic::upload(TensorData::new(v, [n]), device))
    } else {
        let v: Vec<i64> = rows
            .iter()
            .map(|&r| examples[r].label.as_f64() as i64)
            .collect();
        ClassLabels::Classes(cram_model::traffic::upload(TensorData::new(v, [n]), device))
    }
}

/// The model's logits for every encoded example, in input order. Batches are formed over
/// the examples sorted by length (less padding); the padding mask makes the result
/// independent of the batch composition up to floating-point rounding.
pub fn logits(
    model: &ClassificationModel,
    encoded: &[Vec<u32>],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
) -> Vec<Vec<f32>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| (encoded[i].len(), i));
    let mut out = vec![Vec::new(); encoded.len()];
    for rows in order.chunks(batch_size.max(1)) {
        let batch = pad_batch(encoded, rows, pad_id, crate::encode::pad_multiple(device));
        let (ids, mask) = batch_tensors(&batch, device);
        let logits = model.forward(ids, Some(mask));
        let [b, c] = logits.dims();
        let values: Vec<f32> = cram_model::traffic::read(logits).iter::<f32>().collect();
        debug_assert_eq!(values.len(), b * c);
        for (k, &r) in rows.iter().enumerate() {
            out[r] = values[k * c..(k + 1) * c].to_vec();
        }
    }
    out
}

/// Class ids (argmax, first maximum on ties) or STS-B scores of the model on `examples`.
#[allow(clippy::too_many_arguments)]
pub fn predict(
    model: &ClassificationModel,
    task: GlueTask,
    encoded: &[Vec<u32>],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
    examples: &[Example],
) -> Predictions {
    let rows = logits(model, encoded, pad_id, batch_size, device);
    if task.is_regression() {
        Predictions::Scores {
            predicted: rows.iter().map(|r| r[0] as f64).collect(),
            gold: examples.iter().map(|e| e.label.as_f64()).collect(),
        }
    } else {
        Predictions::Classes {
            predicted: rows
                .iter()
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                            if v > best.1 { (i, v) } else { best }
                        })
                        .0
                })
                .collect(),
            gold: examples
                .iter()
                .map(|e| match e.label {
                    Label::Class(c) => c,
                    Label::Score(s) => s as usize,
                })
                .collect(),
        }
    }
}

/// The majority-class predictor fitted on a training split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Majority {
    /// Always this class (the most frequent; the lowest id on ties).
    Class(usize),
    /// Always this score (the training mean).
    Score(f64),
}

/// Fits the majority-class (or mean-score) predictor on `train`.
pub fn majority_predictor(task: GlueTask, train: &[Example]) -> Majority {
    if task.is_regression() {
        let mean = train.iter().map(|e| e.label.as_f64()).sum::<f64>() / train.len().max(1) as f64;
        return Majority::Score(mean);
    }
    let mut counts = vec![0usize; task.num_labels()];
    for e in train {
        if let Label::Class(c) = e.label {
            counts[c] += 1;
        }
    }
    let best = counts
        .iter()
        .enumerate()
        .fold(
            (0, 0),
            |best, (i, &n)| if n > best.1 { (i, n) } else { best },
        )
        .0;
    Majority::Class(best)
}

impl Majority {
    /// Its predictions on `examples`.
    pub fn predict(&self, examples: &[Example]) -> Predictions {
        match *self {
            Majority::Class(c) => Predictions::Classes {
                predicted: vec![c; examples.len()],
                gold: examples
                    .iter()
                    .map(|e| match e.label {
                        Label::Class(c) => c,
                        Label::Score(s) => s as usize,
                    })
                    .collect(),
            },
            Majority::Score(s) => Predictions::Scores {
                predicted: vec![s; examples.len()],
                gold: examples.iter().map(|e| e.label.as_f64()).collect(),
            },
        }
    }
}
