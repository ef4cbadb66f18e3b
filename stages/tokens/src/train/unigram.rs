//! Unigram training made a function of its input.
//!
//! The EM itself is the library's (`UnigramTrainer::do_train`: suffix-array
//! seeds, EM with the Bayesian M-step, pruning by likelihood loss), given
//! what it needs to be repeatable:
//!
//! * the words in one fixed order (sorted, from [`WordCounts`]);
//! * one worker thread: the E-step cuts the words into as many chunks as
//!   the pool has threads and adds the chunks' floating-point sums, so the
//!   last bits of every score would follow the thread count;
//! * a fixed order where the library's last step follows a hash set: the
//!   characters no piece covers get the scores just above the lowest one in
//!   the set's iteration order, and equal scores keep insertion order.
//!   [`canonical_pieces`] gives those scores to the characters by code point
//!   and orders equal scores by piece.
//!
//! The price is speed: the EM runs on one core.

use rustc_hash::FxHashSet;
use tokenizers::AddedToken;
use tokenizers::models::unigram::{Unigram, UnigramTrainerBuilder};

use super::words::WordCounts;

/// The step the library adds per character without a piece of its own.
const PENALTY_STEP: f64 = 0.0001;

/// Trains a Unigram model of `vocab_size` pieces (the special tokens first,
/// `unk` among them) on `words`.
pub fn train(
    words: &WordCounts,
    vocab_size: usize,
    special_tokens: &[String],
    unk: &str,
) -> Result<Unigram, String> {
    let trainer = UnigramTrainerBuilder::default()
        .vocab_size(vocab_size as u32)
        .special_tokens(
            special_tokens
                .iter()
                .map(|t| AddedToken::from(t.clone(), true))
                .collect(),
        )
        .unk_token(Some(unk.to_string()))
        .show_progress(false)
        .build()
        .map_err(|e| e.to_string())?;
    let sentences: Vec<(String, u32)> = words
        .words
        .iter()
        .map(|(w, n)| (w.clone(), (*n).min(u64::from(u32::MAX)) as u32))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| e.to_string())?;
    let mut model = Unigram::default();
    pool.install(|| trainer.do_train(sentences, &mut model))
        .map_err(|e| e.to_string())?;
    let pieces: Vec<(String, f64)> = model.iter().cloned().collect();
    let canonical = canonical_pieces(pieces, special_tokens.len());
    let unk_id = canonical
        .iter()
        .position(|(p, _)| p == unk)
        .ok_or_else(|| format!("the trained Unigram model has no {unk} piece"))?;
    Unigram::from(canonical, Some(unk_id), model.byte_fallback()).map_err(|e| e.to_string())
}

/// The library's final pieces in an order that does not depend on hash-set
/// iteration (see the module docs): the first `specials` pieces stay, the
/// others are sorted by score (descending) and then by piece, after the
/// characters that got the library's penalty scores have them back by
/// code point.
pub fn canonical_pieces(mut pieces: Vec<(String, f64)>, specials: usize) -> Vec<(String, f64)> {
    let specials = specials.min(pieces.len());
    let rest = &mut pieces[specials..];
    let lowest = rest.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    if lowest.is_finite() {
        // The scores the library hands out: lowest + 0, + 1e-4, + 2e-4, ...
        // accumulated as it accumulates them.
        let singles = rest.iter().filter(|p| p.0.chars().count() == 1).count();
        let mut penalties: FxHashSet<u64> = FxHashSet::default();
        let mut step = 0.0f64;
        for _ in 0..singles {
            penalties.insert((lowest + step).to_bits());
            step += PENALTY_STEP;
        }
        let mut chars: Vec<usize> = (0..rest.len())
            .filter(|&i| rest[i].0.chars().count() == 1 && penalties.contains(&rest[i].1.to_bits()))
            .collect();
        let mut scores: Vec<f64> = chars.iter().map(|&i| rest[i].1).collect();
        scores.sort_unstable_by(f64::total_cmp);
        chars.sort_unstable_by(|&a, &b| rest[a].0.cmp(&rest[b].0));
        for (i, score) in chars.into_iter().zip(scores) {
            rest[i].1 = score;
        }
    }
    rest.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_scores_go_to_characters_by_code_point() {
        let low = -12.5f64;
        let pieces = vec![
            ("[UNK]".to_string(), 0.0),
            ("the".to_string(), -2.0),
            ("q".to_string(), low + PENALTY_STEP),
            ("x".to_string(), low),
            ("ab".to_string(), -3.0),
            ("cd".to_string(), -3.0),
        ];
        let got = canonical_pieces(pieces, 1);
        assert_eq!(
            got,
            [
                ("[UNK]".to_string(), 0.0),
                ("the".to_string(), -2.0),
                ("ab".to_string(), -3.0),
                ("cd".to_string(), -3.0),
                ("x".to_string(), low + PENALTY_STEP),
                ("q".to_string(), low),
            ]
        );
    }

    #[test]
    fn unigram_training_is_repeatable() {
        let text = "the cat sat on the mat and the dog sat on the log while a bird sang";
        let words = WordCounts::from_pairs(
            text.split(' ')
                .cycle()
                .take(400)
                .enumerate()
                .map(|(i, w)| (format!("{w}{}", i % 7), 1)),
        );
        let specials = vec!["[PAD]".to_string(), "[UNK]".to_string()];
        let a = train(&words, 60, &specials, "[UNK]").unwrap();
        let b = train(&words, 60, &specials, "[UNK]").unwrap();
        let pa: Vec<_> = a.iter().cloned().collect();
        let pb: Vec<_> = b.iter().cloned().collect();
        assert_eq!(pa, pb);
        assert!(pa.len() > 20, "{pa:?}");
        assert_eq!(pa[1].0, "[UNK]");
    }
}
