//! Turning GLUE examples into token ids with the pipeline's `tokenizer.json`, and batches.

use std::path::{Path, PathBuf};

use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::data::Example;
use crate::error::{GlueError, Result};

/// The classifier token every input starts with.
pub const CLS: &str = "[CLS]";
/// The separator after each text.
pub const SEP: &str = "[SEP]";
/// The padding token.
pub const PAD: &str = "[PAD]";

/// A `tokenizer.json` set up for GLUE inputs: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`,
/// cut longest-first to `max_length` tokens (special tokens included), no padding.
#[derive(Debug, Clone)]
pub struct GlueTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    pad_id: u32,
    cls_id: u32,
    max_length: usize,
}

impl GlueTokenizer {
    /// Loads `path`. The tokenizer must know `[CLS]`, `[SEP]` and `[PAD]`; when it has no
    /// post-processor, the BERT template above is installed (so both kinds of `tokenizer.json`
    /// give the same inputs).
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let err = |reason: String| GlueError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| err(format!("the vocabulary has no {token} token")))
        };
        let (cls_id, sep_id, pad_id) = (id(CLS)?, id(SEP)?, id(PAD)?);
        if tokenizer.get_post_processor().is_none() {
            tokenizer.with_post_processor(Some(BertProcessing::new(
                (SEP.to_string(), sep_id),
                (CLS.to_string(), cls_id),
            )));
        }
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        // The post-processor must frame inputs as BERT does; a byte-level or other template
        // would silently feed the classifier a different first token.
        let probe = tokenizer
            .encode(("a", "b"), true)
            .map_err(|e| err(e.to_string()))?;
        let ids = probe.get_ids();
        if ids.first() != Some(&cls_id) || ids.iter().filter(|&&t| t == sep_id).count() != 2 {
            return Err(err(format!(
                "its post-processor does not give `[CLS] a [SEP] b [SEP]` (a probe pair encodes to {ids:?}); \
                 build the tokenizer with the BERT template"
            )));
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            tokenizer,
            path: path.to_path_buf(),
            pad_id,
            cls_id,
            max_length,
        })
    }

    /// The id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of `[CLS]`.
    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }

    /// The longest encoding produced.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The number of tokens in the vocabulary (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Encodes every example (in parallel): the ids of each, and how many were cut.
    pub fn encode(&self, examples: &[Example]) -> Result<Encoded> {
        let inputs: Vec<EncodeInput<'_>> = examples
            .iter()
            .map(|e| match &e.text_b {
                Some(b) => EncodeInput::Dual(e.text_a.as_str().into(), b.as_str().into()),
                None => EncodeInput::Single(e.text_a.as_str().into()),
            })
            .collect();
        let encodings =
            self.tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| GlueError::Tokenizer {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
        let truncated = encodings
            .iter()
            .filter(|e| !e.get_overflowing().is_empty())
            .count();
        Ok(Encoded {
            ids: encodings
                .into_iter()
                .map(|e| e.get_ids().to_vec())
                .collect(),
            truncated,
        })
    }
}

/// Token ids of a list of examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The ids of each example, `[CLS]` first.
    pub ids: Vec<Vec<u32>>,
    /// How many examples were cut to the length limit.
    pub truncated: usize,
}

/// A padded batch on the host: `ids` and `mask` are `[batch, seq]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Token ids, `[PAD]` after each sequence's end.
    pub ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<i64>,
    /// Rows.
    pub batch: usize,
    /// Columns: the longest sequence of the batch.
    pub seq: usize,
}

/// How far a batch's columns are rounded up on a GPU: every distinct shape is a kernel to
/// compile and a matrix product to autotune, so batches padded to the longest row alone would
/// make a new shape at almost every step; multiples of 16 make at most 8 below 128 (and suit
/// tensor cores). On the CPU backend, whose kernels take any shape as it comes, batches are
/// padded to their longest row only.
pub const DEVICE_PAD_MULTIPLE: usize = 16;

/// The column rounding for batches on `device` (see [`DEVICE_PAD_MULTIPLE`]).
pub fn pad_multiple(device: &burn::tensor::Device) -> usize {
    if cram_model::is_host(device) {
        1
    } else {
        DEVICE_PAD_MULTIPLE
    }
}

/// Pads the sequences `rows` (indices into `encoded`) to the longest of them, rounded up to a
/// multiple of `multiple` (the padding is masked: the result changes only by rounding).
pub fn pad_batch(encoded: &[Vec<u32>], rows: &[usize], pad_id: u32, multiple: usize) -> HostBatch {
    let longest = rows
        .iter()
        .map(|&r| encoded[r].len())
        .max()
        .unwrap_or(0)
        .max(1);
    let seq = longest.div_ceil(multiple.max(1)) * multiple.max(1);
    let mut ids = vec![pad_id as i64; rows.len() * seq];
    let mut mask = vec![0i64; rows.len() * seq];
    for (i, &r) in rows.iter().enumerate() {
        for (j, &t) in encoded[r].iter().enumerate() {
            ids[i * seq + j] = t as i64;
            mask[i * seq + j] = 1;
        }
    }
    HostBatch {
        ids,
        mask,
        batch: rows.len(),
        seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_the_longest_row() {
        let encoded = vec![vec![2, 7, 3], vec![2, 8, 9, 10, 3], vec![2, 3]];
        let b = pad_batch(&encoded, &[2, 0], 0, 1);
        assert_eq!((b.batch, b.seq), (2, 3));
        assert_eq!(b.ids, [2, 3, 0, 2, 7, 3]);
        assert_eq!(b.mask, [1, 1, 0, 1, 1, 1]);
        let b = pad_batch(&encoded, &[2, 0], 0, 4);
        assert_eq!((b.batch, b.seq), (2, 4), "rounded up to a multiple of 4");
        assert_eq!(b.ids, [2, 3, 0, 0, 2, 7, 3, 0]);
        assert_eq!(b.mask, [1, 1, 0, 0, 1, 1, 1, 0]);
    }
}
