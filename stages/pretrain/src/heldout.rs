//! The held-out MLM loss: the loss on the `pack` stage's held-out rows
//! (`heldout/` in the sequences directory, documents never trained on), with
//! masks drawn once from a seed of their own, so that every evaluation of
//! every run on the same data scores the same positions. Under a ramped
//! batch the training loss is noisy; this is the number to compare runs by.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use cram_model::MlmModel;

use crate::collator::{MaskedBatch, MlmCollator};
use crate::data::{Sequences, read_all_rows};
use crate::error::PretrainError;

/// The subdirectory of a sequences directory with the held-out rows.
pub const HELDOUT_DIR: &str = "heldout";

/// The held-out rows, masked once, in evaluation batches.
#[derive(Debug, Clone)]
pub struct Heldout {
    batches: Vec<MaskedBatch>,
    /// Rows held out.
    pub rows: usize,
}

impl Heldout {
    /// Reads `sequences_dir/heldout` (`None` when the input has none) and masks its rows with
    /// `collator`'s rule and the seed `mask_seed`, in batches of `batch_rows`.
    pub fn open(
        sequences_dir: &Path,
        collator: &MlmCollator,
        mask_seed: u64,
        batch_rows: usize,
    ) -> Result<Option<Heldout>, PretrainError> {
        let dir = sequences_dir.join(HELDOUT_DIR);
        if !dir.is_dir() {
            return Ok(None);
        }
        let seqs = Sequences::open(&dir)?;
        let s = seqs.seq_len;
        let ids = read_all_rows(&seqs)?;
        let rows = ids.len() / s.max(1);
        if rows == 0 {
            return Ok(None);
        }
        let rule = MlmCollator {
            seed: mask_seed,
            ..*collator
        };
        let batch_rows = batch_rows.max(1);
        let batches = ids
            .chunks(batch_rows * s)
            .enumerate()
            .map(|(i, chunk)| rule.mask(chunk, s, (i * batch_rows) as u64))
            .collect();
        Ok(Some(Heldout { batches, rows }))
    }

    /// The mean MLM loss of `model` over every selected held-out position, without autodiff
    /// and without dropout.
    pub fn loss(&self, model: &MlmModel, device: &Device) -> f64 {
        let eval = model.valid();
        let (mut sum, mut count) = (0f64, 0usize);
        for b in &self.batches {
            if b.positions.is_empty() {
                continue;
            }
            let ids = Tensor::<2, Int>::from_data(
                TensorData::new(b.input_ids.clone(), [b.rows, b.seq_len]),
                device,
            );
            let loss = eval
                .forward_loss_at(ids, &b.positions, &b.targets, device)
                .loss;
            let value = loss.into_data().iter::<f32>().next().unwrap_or(f32::NAN) as f64;
            sum += value * b.positions.len() as f64;
            count += b.positions.len();
        }
        if count == 0 {
            f64::NAN
        } else {
            sum / count as f64
        }
    }
}
