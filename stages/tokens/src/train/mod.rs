//! Deterministic tokenizer training: the same documents, parameters and
//! seed give the same `tokenizer.json`, byte for byte, whatever the thread
//! count or the machine.
//!
//! * [`words`] counts the pre-tokenized words in parallel (integer sums,
//!   sorted at the end).
//! * [`merges`] learns BPE and WordPiece vocabularies with every id in a
//!   fixed order.
//! * [`unigram`] runs the library's Unigram EM on one thread over sorted
//!   words and puts its ties in a fixed order.

pub mod merges;
pub mod unigram;
pub mod words;

use tokenizers::models::ModelWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

pub use merges::{Learned, MergeConfig};
pub use words::{WordCounter, WordCounts};

use crate::tokenizer::{SPECIAL_TOKENS, TokenizerModel, TokenizerParams};

/// The WordPiece continuation prefix.
pub const CONTINUATION: &str = "##";

/// Trains the model `params` ask for on `words`. `progress` gets the
/// vocabulary size as it grows (merge models only).
pub fn train_model(
    params: &TokenizerParams,
    words: &WordCounts,
    progress: impl FnMut(usize),
) -> Result<ModelWrapper, String> {
    let specials: Vec<String> = SPECIAL_TOKENS.iter().map(|t| t.to_string()).collect();
    let unk = SPECIAL_TOKENS[1].to_string();
    match params.model {
        TokenizerModel::Wordpiece => {
            let cfg = MergeConfig {
                vocab_size: params.vocab_size,
                min_frequency: params.min_frequency.unwrap_or(0),
                limit_alphabet: params.limit_alphabet,
                initial_alphabet: Vec::new(),
                continuing_subword_prefix: Some(CONTINUATION.into()),
                special_tokens: specials,
            };
            Ok(wordpiece(words, &cfg, &unk, progress)?.into())
        }
        TokenizerModel::Bpe => {
            let cfg = MergeConfig {
                vocab_size: params.vocab_size,
                min_frequency: params.min_frequency.unwrap_or(2),
                limit_alphabet: params.limit_alphabet,
                initial_alphabet: ByteLevel::alphabet().into_iter().collect(),
                continuing_subword_prefix: None,
                special_tokens: specials,
            };
            let learned = merges::learn(words, &cfg, progress);
            let merges: Vec<(String, String)> = learned
                .merges
                .iter()
                .map(|&(a, b)| {
                    (
                        learned.vocab[a as usize].clone(),
                        learned.vocab[b as usize].clone(),
                    )
                })
                .collect();
            let vocab = vocab_map(&learned);
            let model = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .unk_token(unk)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(model.into())
        }
        TokenizerModel::Unigram => {
            Ok(unigram::train(words, params.vocab_size, &specials, &unk)?.into())
        }
    }
}

/// Learns a WordPiece vocabulary on `words` (`cfg` should have the `##`
/// continuation prefix) and builds the model with `unk` as its unknown
/// token.
pub fn wordpiece(
    words: &WordCounts,
    cfg: &MergeConfig,
    unk: &str,
    progress: impl FnMut(usize),
) -> Result<WordPiece, String> {
    let learned = merges::learn(words, cfg, progress);
    WordPiece::builder()
        .vocab(vocab_map(&learned))
        .unk_token(unk.to_string())
        .continuing_subword_prefix(
            cfg.continuing_subword_prefix
                .clone()
                .unwrap_or_else(|| CONTINUATION.into()),
        )
        .build()
        .map_err(|e| e.to_string())
}

fn vocab_map(learned: &Learned) -> ahash::AHashMap<String, u32> {
    learned
        .vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}
