//! The masked-language-modelling collator of the reference (vectors README, fact 7).
//!
//! Per row of `S` tokens, `n = round(rate * S)` positions are drawn uniformly without
//! replacement (special tokens are not excluded). In the drawn order, the first `round(0.8 n)`
//! become `[MASK]`, the next `round(0.9 n) - round(0.8 n)` a uniformly random id in
//! `[0, tokenizer_vocab)`, and the rest keep their token. Labels hold the original id at the `n`
//! positions and [`IGNORE_INDEX`] elsewhere.
//!
//! Each row's randomness comes from its own ChaCha8 stream, keyed by the seed and selected by
//! the row's position in the training stream (`pass * rows + index`, see [`crate::passes`]).
//! The masking of a row is therefore a pure function of `(seed, position, tokens)`: it does not
//! depend on the micro-batch size, on which thread masks it, or on whether the run was
//! interrupted and resumed; and a row read again in a later pass gets fresh masks, as the
//! reference's collator draws new ones every time it sees a row.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Label of positions the MLM loss ignores (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// How many positions of a row of `seq_len` tokens are masked, replaced and kept:
/// `(selected, mask, random)`; the kept ones are `selected - mask - random`.
///
/// Rounding is half away from zero (Python's `round` on these values never meets an exact
/// half for the rates used in practice, and `0.8 * 32 = 25.6`, `0.9 * 32 = 28.8`).
pub fn mask_counts(seq_len: usize, rate: f64) -> (usize, usize, usize) {
    let n = ((rate * seq_len as f64).round() as usize).min(seq_len);
    let to_mask = (0.8 * n as f64).round() as usize;
    let to_random = (0.9 * n as f64).round() as usize - to_mask;
    (n, to_mask, to_random)
}

/// One masked micro-batch, ready for [`cram_model::MlmModel::forward_loss_at`].
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedBatch {
    /// Rows in the batch.
    pub rows: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Model input ids `[rows * seq_len]`, row-major, with the masking applied.
    pub input_ids: Vec<i64>,
    /// Labels `[rows * seq_len]`: the original id at selected positions, [`IGNORE_INDEX`]
    /// elsewhere.
    pub labels: Vec<i64>,
    /// Flat indices `b * seq_len + s` of the selected positions, ascending.
    pub positions: Vec<i64>,
    /// The original ids at [`MaskedBatch::positions`].
    pub targets: Vec<i64>,
}

/// The MLM masking rule with its vocabulary facts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlmCollator {
    /// Fraction of each row's positions that are selected (0.25 in `bert-o4`).
    pub rate: f64,
    /// Id of the `[MASK]` token.
    pub mask_id: u32,
    /// Random replacement ids are drawn from `[0, random_vocab)` (the tokenizer's length).
    pub random_vocab: u32,
    /// Seed of the per-row random streams.
    pub seed: u64,
}

impl MlmCollator {
    /// Masks `rows` rows of `seq_len` tokens (`tokens.len() == rows * seq_len`) whose first row
    /// has the position `first_row` in the training stream (the rest follow it).
    pub fn mask(&self, tokens: &[u32], seq_len: usize, first_row: u64) -> MaskedBatch {
        assert!(seq_len > 0, "rows must hold at least one token");
        assert_eq!(tokens.len() % seq_len, 0, "tokens must be whole rows");
        let rows = tokens.len() / seq_len;
        let (n, to_mask, to_random) = mask_counts(seq_len, self.rate);
        let mut input_ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let mut labels = vec![IGNORE_INDEX; tokens.len()];
        let mut positions = Vec::with_capacity(rows * n);
        let mut targets = Vec::with_capacity(rows * n);
        let mut order: Vec<u32> = Vec::with_capacity(seq_len);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        for r in 0..rows {
            rng.set_stream(first_row + r as u64);
            rng.set_word_pos(0);
            order.clear();
            order.extend(0..seq_len as u32);
            let (chosen, _) = order.partial_shuffle(&mut rng, n);
            let base = r * seq_len;
            for (k, &s) in chosen.iter().enumerate() {
                let i = base + s as usize;
                labels[i] = tokens[i] as i64;
                if k < to_mask {
                    input_ids[i] = self.mask_id as i64;
                } else if k < to_mask + to_random {
                    input_ids[i] = rng.random_range(0..self.random_vocab) as i64;
                }
            }
            for (s, &label) in labels[base..base + seq_len].iter().enumerate() {
                if label != IGNORE_INDEX {
                    positions.push((base + s) as i64);
                    targets.push(label);
                }
            }
        }
        MaskedBatch {
            rows,
            seq_len,
            input_ids,
            labels,
            positions,
            targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(rows: usize, seq: usize) -> Vec<u32> {
        // Ids 10.. so that no original token equals [MASK] (= 4) by accident.
        (0..rows * seq)
            .map(|i| 10 + (i * 7919 % 991) as u32)
            .collect()
    }

    #[test]
    fn counts_of_the_reference() {
        assert_eq!(mask_counts(128, 0.25), (32, 26, 3));
        assert_eq!(mask_counts(16, 0.25), (4, 3, 1));
        assert_eq!(mask_counts(128, 0.15), (19, 15, 2));
        assert_eq!(mask_counts(10, 0.0), (0, 0, 0));
    }

    #[test]
    fn labels_exactly_at_selected_positions_and_ratios_hold() {
        let (rows, seq) = (2000, 128);
        let tokens = corpus(rows, seq);
        let c = MlmCollator {
            rate: 0.25,
            mask_id: 4,
            random_vocab: 1000,
            seed: 7,
        };
        let b = c.mask(&tokens, seq, 0);
        assert_eq!(b.rows, rows);
        assert_eq!(b.positions.len(), rows * 32);
        let (mut masked, mut replaced, mut kept) = (0usize, 0usize, 0usize);
        let mut hist = vec![0usize; seq];
        for r in 0..rows {
            let row_labels = &b.labels[r * seq..(r + 1) * seq];
            assert_eq!(
                row_labels.iter().filter(|l| **l != IGNORE_INDEX).count(),
                32
            );
            let (mut m, mut x) = (0, 0);
            for (s, h) in hist.iter_mut().enumerate() {
                let i = r * seq + s;
                if b.labels[i] == IGNORE_INDEX {
                    assert_eq!(
                        b.input_ids[i], tokens[i] as i64,
                        "unselected tokens unchanged"
                    );
                    continue;
                }
                *h += 1;
                assert_eq!(b.labels[i], tokens[i] as i64, "label is the original id");
                if b.input_ids[i] == 4 {
                    m += 1;
                } else if b.input_ids[i] != tokens[i] as i64 {
                    x += 1;
                    assert!((0..1000).contains(&b.input_ids[i]));
                }
            }
            // round(0.8n) = 26 become [MASK]; a random replacement may also draw [MASK] or
            // the original id (1 in 1000 each), so 26..=29 read as [MASK] and at most 3 as
            // other replacements.
            assert!((26..=29).contains(&m), "row {r}: {m} [MASK]");
            assert!(m + x <= 29 && x <= 3, "row {r}: {m} masked, {x} replaced");
            masked += m;
            replaced += x;
            kept += 32 - m - x;
        }
        assert!(masked <= rows * 26 + rows / 50, "{masked}");
        assert!(replaced >= rows * 3 - rows / 50, "{replaced}");
        assert_eq!(masked + replaced + kept, rows * 32);
        // Positions are uniform: each position is chosen about rows * 32 / 128 = 500 times.
        let expect = (rows * 32 / seq) as f64;
        for (s, &h) in hist.iter().enumerate() {
            assert!(
                (h as f64 - expect).abs() < 5.0 * expect.sqrt(),
                "position {s}: {h}"
            );
        }
        // positions/targets agree with labels.
        for (p, t) in b.positions.iter().zip(&b.targets) {
            assert_eq!(b.labels[*p as usize], *t);
        }
        assert!(b.positions.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn reproducible_and_independent_of_batching() {
        let seq = 64;
        let tokens = corpus(40, seq);
        let c = MlmCollator {
            rate: 0.25,
            mask_id: 4,
            random_vocab: 500,
            seed: 3,
        };
        let whole = c.mask(&tokens, seq, 100);
        let first = c.mask(&tokens[..10 * seq], seq, 100);
        let rest = c.mask(&tokens[10 * seq..], seq, 110);
        assert_eq!(&whole.input_ids[..10 * seq], &first.input_ids[..]);
        assert_eq!(&whole.input_ids[10 * seq..], &rest.input_ids[..]);
        assert_eq!(whole, c.mask(&tokens, seq, 100));
        let other = MlmCollator { seed: 4, ..c }.mask(&tokens, seq, 100);
        assert_ne!(whole.labels, other.labels, "another seed masks elsewhere");
    }
}
