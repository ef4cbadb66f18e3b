//! The `tokenizer` stage kind: trains a WordPiece (default), BPE or Unigram
//! tokenizer on a documents directory and saves it as a Hugging Face
//! `tokenizer.json`.
//!
//! Training is a function of the documents, the parameters and the seed:
//! [`crate::train`] counts words and learns the vocabulary in a fixed order
//! (the `tokenizers` trainers do not: hash-map order decides their ties), so
//! the saved file is the same bytes on every run and machine.
//!
//! The normalisation of the reference (`_get_sane_normalizers` of
//! JonasGeiping/cramming) is baked into the saved tokenizer, so every later
//! encode (ours, Python's `tokenizers`, `transformers`) applies it:
//! ` `` ` and `''` → `"`, then NFD (with `strip_accents`) or NFKC, lowercase,
//! strip accents, runs of two or more spaces → one space, and (with
//! `force_english_keyboard`) deletion of every non-ASCII character.
//!
//! Special tokens sit at fixed ids, [`SPECIAL_TOKENS`] in order:
//! `[PAD]` = 0, `[UNK]` = 1, `[CLS]` = 2, `[SEP]` = 3, `[MASK]` = 4 (the
//! reference builds its special-token list from a Python `set`, whose order
//! changes between runs; ours does not). The post-processor adds
//! `[CLS] $A [SEP]` for single sequences and `[CLS] $A [SEP] $B:1 [SEP]:1`
//! for pairs (fine-tuning inputs); packing encodes without special tokens.
//! Padding and truncation are left unset in the saved file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::ModelWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::models::unigram::Unigram;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFD, NFKC, Replace, Sequence, StripAccents};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer, TokenizerBuilder,
};

/// Bumped whenever a change to the code changes the bytes the `tokenizer`
/// kind writes.
pub const CODE_VERSION: u32 = 2;

/// File name of the tokenizer inside a tokenizer (and sequences) directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The special tokens, in id order: `[PAD]` = 0, `[UNK]` = 1, `[CLS]` = 2,
/// `[SEP]` = 3, `[MASK]` = 4.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// The subword model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerModel {
    /// WordPiece with `##` continuation prefix and the `Whitespace`
    /// pre-tokenizer (`\w+|[^\w\s]+`), as the reference's `WordPiece`.
    Wordpiece,
    /// Byte-level BPE (`ByteLevel` pre-tokenizer with a prefix space,
    /// `min_frequency` 2), as the reference's `BPE`.
    Bpe,
    /// Unigram language model with the `Whitespace` pre-tokenizer, as the
    /// reference's `Unigram`.
    Unigram,
}

impl TokenizerModel {
    /// The model's name as the parameter spells it.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerModel::Wordpiece => "wordpiece",
            TokenizerModel::Bpe => "bpe",
            TokenizerModel::Unigram => "unigram",
        }
    }
}

/// Parameters of the `tokenizer` stage kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerParams {
    /// Subword model: `wordpiece` (reference default), `bpe` or `unigram`.
    pub model: TokenizerModel,
    /// Exact vocabulary size, special tokens included (2^15 = 32768 in the
    /// reference). Training that ends with any other size is an error.
    pub vocab_size: usize,
    /// Lowercase the text (reference: `force_lowercase`).
    pub lowercase: bool,
    /// Decompose with NFD and strip combining accents; without it the text
    /// is composed with NFKC instead (reference: `strip_accents`).
    pub strip_accents: bool,
    /// Delete every non-ASCII character after the other steps (reference:
    /// `force_english_keyboard`).
    pub force_english_keyboard: bool,
    /// Train on a seeded random sample of at most this many documents
    /// (all documents, less the held-back sample, when unset).
    pub max_documents: Option<u64>,
    /// Documents held back from training (seeded, at most a tenth of the
    /// corpus) on which the summary measures the UNK rate and the mean
    /// number of tokens per word.
    pub eval_documents: u64,
    /// Minimum pair frequency for a merge (WordPiece and BPE; the reference
    /// uses the library's default 0 for WordPiece and 2 for BPE). Unset:
    /// those defaults.
    pub min_frequency: Option<u64>,
    /// Keep at most this many distinct characters in the initial alphabet
    /// (WordPiece and BPE; the others become `[UNK]`). Unset: keep all, as
    /// the reference; a corpus with more distinct characters than the
    /// vocabulary then fails with a clear error.
    pub limit_alphabet: Option<usize>,
}

impl Default for TokenizerParams {
    fn default() -> Self {
        TokenizerParams {
            model: TokenizerModel::Wordpiece,
            vocab_size: 32768,
            lowercase: true,
            strip_accents: true,
            force_english_keyboard: true,
            max_documents: None,
            eval_documents: 1000,
            min_frequency: None,
            limit_alphabet: None,
        }
    }
}

/// Ids of the special tokens of a tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    /// Id of `[PAD]`.
    pub pad: u32,
    /// Id of `[UNK]`.
    pub unk: u32,
    /// Id of `[CLS]`.
    pub cls: u32,
    /// Id of `[SEP]`.
    pub sep: u32,
    /// Id of `[MASK]`.
    pub mask: u32,
}

/// What the `tokenizer` kind did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerSummary {
    /// The subword model trained.
    pub model: TokenizerModel,
    /// Vocabulary size of the saved tokenizer (special tokens included).
    pub vocab_size: usize,
    /// Documents the tokenizer was trained on.
    pub training_documents: u64,
    /// UTF-8 bytes of those documents (before normalisation).
    pub training_bytes: u64,
    /// Documents in the input directory.
    pub input_documents: u64,
    /// Documents held back for the evaluation below.
    pub eval_documents: u64,
    /// Fraction of `[UNK]` among the tokens of the held-back documents.
    pub eval_unk_rate: f64,
    /// Tokens per whitespace-separated word of the held-back documents
    /// (before normalisation).
    pub eval_tokens_per_word: f64,
    /// Ids of the special tokens.
    pub special_ids: SpecialIds,
    /// How long it took: not in `summary.json`, whose bytes depend only on
    /// the documents, the parameters and the seed (the engine records the
    /// timings in the manifest).
    #[serde(skip)]
    pub timings: TokenizerTimings,
}

/// How long the `tokenizer` kind took (see [`TokenizerSummary::timings`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenizerTimings {
    /// Wall-clock seconds of training (counting words and learning the
    /// vocabulary).
    pub train_seconds: f64,
    /// Wall-clock seconds of the whole stage.
    pub seconds: f64,
}

/// Errors of the `tokenizer` kind and of loading a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The documents input could not be read.
    #[error("reading documents: {0}")]
    Documents(#[from] cram_data::documents::DocumentsError),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The parameters cannot work.
    #[error("invalid tokenizer parameters: {0}")]
    Params(String),
    /// The `tokenizers` library failed.
    #[error("{context}: {message}")]
    Library {
        /// What was being done.
        context: String,
        /// The library's message.
        message: String,
    },
    /// Training ended with another vocabulary size than asked for.
    #[error(
        "trained {model:?} vocabulary has {got} tokens, {wanted} were asked for ({hint}); \
         train on more documents (max_documents: {max_documents:?}, {documents} used) or lower vocab_size"
    )]
    VocabSize {
        /// The model trained.
        model: TokenizerModel,
        /// The size asked for.
        wanted: usize,
        /// The size obtained.
        got: usize,
        /// What went wrong.
        hint: String,
        /// The `max_documents` parameter.
        max_documents: Option<u64>,
        /// Documents trained on.
        documents: u64,
    },
    /// A tokenizer misses a special token or has it elsewhere.
    #[error("{path}: {message}; tokenizers for cram are made by its `tokenizer` kind")]
    Special {
        /// The tokenizer file at fault (or `<in memory>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn library(context: impl Into<String>, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Library {
        context: context.into(),
        message: e.to_string(),
    }
}

/// Loads a `tokenizer.json` written by this crate (or any Hugging Face
/// tokenizer file).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, TokenizerError> {
    if !path.is_file() {
        return Err(TokenizerError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found"),
        });
    }
    Tokenizer::from_file(path)
        .map_err(|e| library(format!("{}: loading tokenizer", path.display()), e))
}

/// Looks up the ids of `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` and `[MASK]`; fails
/// if one is missing.
pub fn special_ids(tokenizer: &Tokenizer) -> Result<SpecialIds, TokenizerError> {
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| TokenizerError::Special {
                path: PathBuf::from("<in memory>"),
                message: format!("the tokenizer has no {token} token"),
            })
    };
    Ok(SpecialIds {
        pad: id(SPECIAL_TOKENS[0])?,
        unk: id(SPECIAL_TOKENS[1])?,
        cls: id(SPECIAL_TOKENS[2])?,
        sep: id(SPECIAL_TOKENS[3])?,
        mask: id(SPECIAL_TOKENS[4])?,
    })
}

/// The normaliser of the reference for these parameters.
pub fn normalizer(params: &TokenizerParams) -> Result<NormalizerWrapper, TokenizerError> {
    let replace =
        |pattern: ReplacePattern, content: &str| -> Result<NormalizerWrapper, TokenizerError> {
            Ok(Replace::new(pattern, content)
                .map_err(|e| library("building the normaliser", e))?
                .into())
        };
    let mut steps: Vec<NormalizerWrapper> = vec![
        replace(ReplacePattern::String("``".into()), "\"")?,
        replace(ReplacePattern::String("''".into()), "\"")?,
    ];
    if params.strip_accents {
        steps.push(NFD.into());
    } else {
        steps.push(NFKC.into());
    }
    if params.lowercase {
        steps.push(Lowercase.into());
    }
    if params.strip_accents {
        steps.push(StripAccents.into());
    }
    steps.push(replace(ReplacePattern::Regex(" {2,}".into()), " ")?);
    if params.force_english_keyboard {
        steps.push(replace(ReplacePattern::Regex(r"[^\x00-\x7F]+".into()), "")?);
    }
    Ok(Sequence::new(steps).into())
}

fn special_added_tokens() -> Vec<AddedToken> {
    SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect()
}

/// Builds the untrained tokenizer for `params`: the normaliser, the
/// pre-tokenizer and the decoder, around an empty model of the right kind.
fn untrained(params: &TokenizerParams) -> Result<Tokenizer, TokenizerError> {
    let unk = SPECIAL_TOKENS[1].to_string();
    let (model, pre, decoder): (ModelWrapper, PreTokenizerWrapper, Option<DecoderWrapper>) =
        match params.model {
            TokenizerModel::Wordpiece => (
                WordPiece::builder()
                    .unk_token(unk)
                    .build()
                    .map_err(|e| library("building the WordPiece model", e))?
                    .into(),
                Whitespace.into(),
                Some(WordPieceDecoder::new(crate::train::CONTINUATION.into(), true).into()),
            ),
            TokenizerModel::Bpe => (
                BPE::builder()
                    .unk_token(unk)
                    .build()
                    .map_err(|e| library("building the BPE model", e))?
                    .into(),
                ByteLevel::default().add_prefix_space(true).into(),
                Some(ByteLevelDecoder::default().into()),
            ),
            // No decoder, as the reference: decoding joins tokens with
            // spaces.
            TokenizerModel::Unigram => (Unigram::default().into(), Whitespace.into(), None),
        };
    let tokenizer: tokenizers::TokenizerImpl<_, _, _, PostProcessorWrapper, _> =
        TokenizerBuilder::new()
            .with_model(model)
            .with_normalizer(Some(normalizer(params)?))
            .with_pre_tokenizer(Some(pre))
            .with_decoder(decoder)
            .build()
            .map_err(|e| library("assembling the tokenizer", e))?;
    Ok(Tokenizer::from(tokenizer))
}

/// The `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B:1 [SEP]:1` post-processor.
fn post_processor(ids: &SpecialIds) -> Result<TemplateProcessing, TokenizerError> {
    TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .map_err(|e| library("building the post-processor", e))?
        .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
        .map_err(|e| library("building the post-processor", e))?
        .special_tokens(vec![("[CLS]", ids.cls), ("[SEP]", ids.sep)])
        .build()
        .map_err(|e| library("building the post-processor", e))
}

/// Checks the vocabulary: exactly `wanted` ids, contiguous from 0, and the
/// special tokens at their fixed ids.
fn check_vocab(
    tokenizer: &Tokenizer,
    params: &TokenizerParams,
    documents: u64,
) -> Result<SpecialIds, TokenizerError> {
    let vocab = tokenizer.get_vocab(true);
    let got = vocab.len();
    let max_id = vocab.values().copied().max().map_or(0, |m| m as usize + 1);
    let fail = |hint: String| TokenizerError::VocabSize {
        model: params.model,
        wanted: params.vocab_size,
        got,
        hint,
        max_documents: params.max_documents,
        documents,
    };
    if max_id != got {
        return Err(fail(format!(
            "ids are not contiguous: the largest id is {} (the trainer produced duplicate tokens)",
            max_id.saturating_sub(1)
        )));
    }
    if got < params.vocab_size {
        return Err(fail(
            "the training corpus ran out of merges/pieces before reaching the size".into(),
        ));
    }
    if got > params.vocab_size {
        return Err(fail(
            "the initial alphabet alone exceeds the size: set limit_alphabet or raise vocab_size"
                .into(),
        ));
    }
    let ids = special_ids(tokenizer)?;
    let found = [ids.pad, ids.unk, ids.cls, ids.sep, ids.mask];
    for (want, (got, name)) in found.iter().zip(SPECIAL_TOKENS).enumerate() {
        if *got as usize != want {
            return Err(TokenizerError::Special {
                path: PathBuf::from("<trained>"),
                message: format!("{name} has id {got}, expected {want}"),
            });
        }
    }
    Ok(ids)
}

/// Which documents train and which are held back.
struct Split {
    /// Sorted indices of the held-back documents.
    eval: Vec<u64>,
    /// Sorted indices of the training documents; `None`: all the others.
    train: Option<Vec<u64>>,
}

impl Split {
    fn new(total: u64, params: &TokenizerParams, seed: u64) -> Split {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x746f_6b65_6e69_7a65);
        let n_eval = params.eval_documents.min(total / 10);
        let n_train = params
            .max_documents
            .map_or(total - n_eval, |m| m.min(total - n_eval));
        let n_pick = if params.max_documents.is_some() {
            n_eval + n_train
        } else {
            n_eval
        };
        // `index::sample` draws distinct indices with memory in the amount
        // drawn, not in the corpus size.
        let picked = rand::seq::index::sample(&mut rng, total as usize, n_pick as usize).into_vec();
        let mut eval: Vec<u64> = picked[..n_eval as usize]
            .iter()
            .map(|&i| i as u64)
            .collect();
        eval.sort_unstable();
        let train = params.max_documents.map(|_| {
            let mut t: Vec<u64> = picked[n_eval as usize..]
                .iter()
                .map(|&i| i as u64)
                .collect();
            t.sort_unstable();
            t
        });
        Split { eval, train }
    }

    fn is_eval(&self, i: u64) -> bool {
        self.eval.binary_search(&i).is_ok()
    }

    fn is_train(&self, i: u64) -> bool {
        match &self.train {
            Some(t) => t.binary_search(&i).is_ok(),
            None => !self.is_eval(i),
        }
    }
}

/// Checks the parameters no corpus can make right (the engine calls it when a pipeline loads,
/// so a bad value is reported before anything runs).
pub fn check_params(params: &TokenizerParams) -> Result<(), TokenizerError> {
    if params.vocab_size <= SPECIAL_TOKENS.len() {
        return Err(TokenizerError::Params(format!(
            "vocab_size = {} leaves no room beside the {} special tokens",
            params.vocab_size,
            SPECIAL_TOKENS.len()
        )));
    }
    if params.vocab_size > u32::MAX as usize {
        return Err(TokenizerError::Params(format!(
            "vocab_size = {} exceeds u32",
            params.vocab_size
        )));
    }
    Ok(())
}

/// Trains a tokenizer on the documents of `documents_dir` and writes
/// `tokenizer.json` and `summary.json` into `out_dir`.
pub fn run_tokenizer(
    params: &TokenizerParams,
    documents_dir: &Path,
    seed: u64,
    out_dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<TokenizerSummary, TokenizerError> {
    let start = Instant::now();
    check_params(params)?;
    let total = cram_data::documents::count_documents(documents_dir)?;
    if total == 0 {
        return Err(TokenizerError::Params(format!(
            "{}: no documents to train a tokenizer on",
            documents_dir.display()
        )));
    }
    let split = Split::new(total, params, seed);
    progress.set_length(total);
    progress.set_position(0);
    progress.set_message("training tokenizer");

    let mut tokenizer = untrained(params)?;

    // Count the words of the training documents, a batch at a time; the
    // held-back ones are kept aside (at most `eval_documents` of them).
    let train_start = Instant::now();
    let mut training_documents = 0u64;
    let mut training_bytes = 0u64;
    let mut eval_texts: Vec<String> = Vec::with_capacity(split.eval.len());
    let mut counter = crate::train::WordCounter::new(&tokenizer);
    let mut index = 0u64;
    progress.set_message("counting words");
    for batch in cram_data::documents::read_documents(documents_dir)? {
        let mut texts = Vec::new();
        for text in batch? {
            let i = index;
            index += 1;
            if split.is_eval(i) {
                eval_texts.push(text);
            } else if split.is_train(i) {
                training_documents += 1;
                training_bytes += text.len() as u64;
                texts.push(text);
            }
        }
        counter
            .add(&texts)
            .map_err(|e| library("splitting the training documents into words", e))?;
        progress.set_position(index);
    }
    let words = counter.finish();

    // Learn the vocabulary.
    progress.set_message(format!("learning {} vocabulary", params.model.name()));
    progress.set_length(params.vocab_size as u64);
    progress.set_position(0);
    let model = crate::train::train_model(params, &words, |n| progress.set_position(n as u64))
        .map_err(|e| library(format!("training the {:?} tokenizer", params.model), e))?;
    tokenizer.with_model(model);
    tokenizer.add_special_tokens(&special_added_tokens());
    let train_seconds = train_start.elapsed().as_secs_f64();

    let ids = check_vocab(&tokenizer, params, training_documents)?;
    tokenizer.with_post_processor(Some(post_processor(&ids)?));

    // Held-back evaluation: UNK rate and tokens per word.
    progress.set_message("evaluating tokenizer");
    let (mut tokens, mut unks, mut words) = (0u64, 0u64, 0u64);
    for text in &eval_texts {
        let enc = tokenizer
            .encode_fast(text.as_str(), false)
            .map_err(|e| library("encoding a held-back document", e))?;
        tokens += enc.get_ids().len() as u64;
        unks += enc.get_ids().iter().filter(|&&i| i == ids.unk).count() as u64;
        words += text.split_whitespace().count() as u64;
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };

    let path = out_dir.join(TOKENIZER_FILE);
    tokenizer
        .save(&path, true)
        .map_err(|e| library(format!("{}: saving the tokenizer", path.display()), e))?;
    let summary = TokenizerSummary {
        model: params.model,
        vocab_size: tokenizer.get_vocab_size(true),
        training_documents,
        training_bytes,
        input_documents: total,
        eval_documents: eval_texts.len() as u64,
        eval_unk_rate: ratio(unks, tokens),
        eval_tokens_per_word: ratio(tokens, words),
        special_ids: ids,
        timings: TokenizerTimings {
            train_seconds,
            seconds: start.elapsed().as_secs_f64(),
        },
    };
    crate::write_summary(out_dir, &summary)
        .map_err(|(path, source)| TokenizerError::Io { path, source })?;
    progress.set_message("tokenizer done");
    Ok(summary)
}
