//! Token stages of `cram`.
//!
//! * [`tokenizer`]: the `tokenizer` kind trains a WordPiece / BPE / Unigram
//!   tokenizer on a documents directory ([`run_tokenizer`]) and writes a
//!   Hugging Face `tokenizer.json` with fixed special-token ids
//!   (`[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4);
//!   [`load_tokenizer`] and [`special_ids`] serve the other stages.
//! * [`pack`]: the `pack` kind (stage `tokenize` in the recipes) encodes the
//!   documents, appends `[SEP]` to each, concatenates and cuts the stream
//!   into rows of `seq_length` ids, orders them and writes Parquet shards
//!   ([`run_pack`]).
//! * [`train`]: deterministic word counting and vocabulary learning, used
//!   by the `tokenizer` kind.
//! * [`sequences`]: the packed-rows format and its streaming reader
//!   ([`read_sequences`], [`read_sequences_summary`]) for the pretrain stage.

pub mod fast;
pub mod heldout;
pub mod pack;
pub mod pack_shards;
mod packer;
mod row_order;
pub mod sequences;
pub mod tokenizer;
pub mod train;

pub use pack::{PackError, PackParams, PackSummary, RowOrdering, run_pack};
pub use sequences::{
    IdType, SequenceBatch, SequenceReader, SequencesError, read_sequences, read_sequences_summary,
};
pub use tokenizer::{
    SpecialIds, TokenizerError, TokenizerModel, TokenizerParams, TokenizerSummary, load_tokenizer,
    run_tokenizer, special_ids,
};

/// Writes `summary` as pretty JSON to `out_dir/summary.json`.
pub(crate) fn write_summary<T: serde::Serialize>(
    out_dir: &std::path::Path,
    summary: &T,
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    let path = out_dir.join("summary.json");
    let text = serde_json::to_string_pretty(summary)
        .map_err(|e| (path.clone(), std::io::Error::other(e)))?;
    std::fs::write(&path, text + "\n").map_err(|e| (path, e))
}
