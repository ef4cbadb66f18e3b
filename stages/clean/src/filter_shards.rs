//! The `filter` stage split into shards, for an executor that spreads them
//! over machines (a Slurm array): [`prepare_filter_shards`] once (it trains
//! the `remove_trash` tokenizer, if one is trained), [`run_filter_shard`]
//! for each contiguous range of documents, anywhere, then
//! [`merge_filter_shards`] in shard order.
//!
//! The merged output is the one-pass [`crate::run_filter`]'s, byte for byte:
//! every document gets the same verdict (the same tokenizer, saved and
//! loaded), and the kept ones reach one writer in the same order.

use std::path::{Path, PathBuf};

/// The documents a shard covers (re-exported from `cram_data`).
pub use cram_data::documents::shard_range;
use cram_data::documents::{DocumentWriter, count_documents, read_document_range, read_documents};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::filter::{
    FilterError, FilterParams, FilterSummary, TRASH_TOKENIZER_FILE, Tally, TrashTokenizer,
    check_params, filter_batches, trash_tokenizer,
};

/// What [`prepare_filter_shards`] leaves for the shards and the merge.
const PREPARED_FILE: &str = "prepared.json";
/// A shard's counts, beside its documents.
const TALLY_FILE: &str = "tally.json";

#[derive(Debug, Serialize, Deserialize)]
struct Prepared {
    /// "input", "self" or none (as [`FilterSummary::trash_tokenizer`]).
    trash_tokenizer: Option<String>,
    trash_training_documents: u64,
    documents: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilterError + '_ {
    move |source| FilterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, FilterError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| FilterError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FilterError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| FilterError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(path, text).map_err(io(path))
}

/// Prepares the shards of a filter run into the empty directory
/// `prepared_dir`: checks the parameters, counts the documents, and trains
/// (and saves there) the `remove_trash` tokenizer if one is trained.
pub fn prepare_filter_shards(
    params: &FilterParams,
    documents_dir: &Path,
    tokenizer_json: Option<&Path>,
    seed: u64,
    prepared_dir: &Path,
    progress: &ProgressBar,
) -> Result<(), FilterError> {
    check_params(params)?;
    let documents = count_documents(documents_dir)?;
    let (trash, trained) = trash_tokenizer(
        params,
        documents_dir,
        tokenizer_json,
        seed,
        prepared_dir,
        progress,
    )?;
    let prepared = Prepared {
        trash_tokenizer: trash.map(|(_, source)| source.to_string()),
        trash_training_documents: trained,
        documents,
    };
    write_json(&prepared_dir.join(PREPARED_FILE), &prepared)
}

/// Filters shard `shard` of `shards` (a contiguous range of the input's
/// documents) into the empty directory `shard_dir`.
#[allow(clippy::too_many_arguments)]
pub fn run_filter_shard(
    params: &FilterParams,
    documents_dir: &Path,
    tokenizer_json: Option<&Path>,
    prepared_dir: &Path,
    shard: usize,
    shards: usize,
    shard_dir: &Path,
    progress: &ProgressBar,
) -> Result<(), FilterError> {
    let prepared: Prepared = read_json(&prepared_dir.join(PREPARED_FILE))?;
    let trash = match prepared.trash_tokenizer.as_deref() {
        Some("self") => Some(TrashTokenizer::load(
            &prepared_dir.join(TRASH_TOKENIZER_FILE),
            1,
        )?),
        Some(_) => {
            let path = tokenizer_json.ok_or_else(|| {
                FilterError::InvalidParams(
                    "the shards were prepared with a tokenizer input that this shard lacks".into(),
                )
            })?;
            Some(TrashTokenizer::load(path, 0)?)
        }
        None => None,
    };
    let range = shard_range(prepared.documents, shard, shards);
    progress.set_length(range.end - range.start);
    let first = range.start;
    let batches = read_document_range(documents_dir, range)?;
    let mut writer = DocumentWriter::create(shard_dir)?;
    let mut tally = Tally::default();
    filter_batches(
        params,
        trash.as_ref(),
        batches,
        first,
        &mut writer,
        &mut tally,
        progress,
    )?;
    writer.finish()?;
    write_json(&shard_dir.join(TALLY_FILE), &tally)
}

/// Merges the shards (in order) into `out_dir`, as the one-pass filter
/// would have written it, with its `summary.json`.
pub fn merge_filter_shards(
    prepared_dir: &Path,
    shard_dirs: &[PathBuf],
    out_dir: &Path,
    progress: &ProgressBar,
) -> Result<FilterSummary, FilterError> {
    let started = std::time::Instant::now();
    let prepared: Prepared = read_json(&prepared_dir.join(PREPARED_FILE))?;
    if prepared.trash_tokenizer.as_deref() == Some("self") {
        let (from, to) = (
            prepared_dir.join(TRASH_TOKENIZER_FILE),
            out_dir.join(TRASH_TOKENIZER_FILE),
        );
        std::fs::copy(&from, &to).map_err(io(&from))?;
    }
    progress.set_message("merging the shards");
    let mut writer = DocumentWriter::create(out_dir)?;
    let mut tally = Tally::default();
    for dir in shard_dirs {
        tally.add(&read_json(&dir.join(TALLY_FILE))?);
        for batch in read_documents(dir)? {
            for text in batch? {
                writer.push(&text)?;
            }
        }
    }
    let written = writer.finish()?;
    let summary = FilterSummary {
        documents_in: tally.documents_in,
        bytes_in: tally.bytes_in,
        documents_out: written.documents,
        bytes_out: written.bytes,
        documents_changed: tally.documents_changed,
        dropped: tally.dropped,
        trash_tokenizer: prepared.trash_tokenizer,
        trash_training_documents: prepared.trash_training_documents,
        shards: written.shards,
        seconds: started.elapsed().as_secs_f64(),
    };
    crate::write_summary(out_dir, &summary)
        .map_err(|(path, source)| FilterError::Io { path, source })?;
    Ok(summary)
}
