//! The stage's inputs: the packed-sequences Parquet shards and the tokenizer facts, and the
//! reader thread that streams masked micro-batches ahead of the training step.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow::array::{Array, FixedSizeListArray, UInt16Array, UInt32Array};
use arrow::datatypes::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::collator::{MaskedBatch, MlmCollator};
use crate::error::PretrainError;

/// Name of the token column of a sequences shard.
pub const INPUT_IDS: &str = "input_ids";

/// What the stage needs from `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerInfo {
    /// The tokenizer's length (`len(tokenizer)` in Hugging Face terms): one past the largest id
    /// of its vocabulary and added tokens.
    pub vocab_size: usize,
    /// Id of `[MASK]`.
    pub mask_id: u32,
}

/// Reads the vocabulary size and the `[MASK]` id from a Hugging Face `tokenizer.json`.
///
/// Only two facts of the file are needed, both plainly in its JSON (`model.vocab`, a map of
/// token to id for WordPiece/BPE or a list for Unigram, and `added_tokens`), so it is read with
/// `serde_json` rather than by loading the whole tokenizer pipeline.
pub fn read_tokenizer(path: &Path) -> Result<TokenizerInfo, PretrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| PretrainError::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PretrainError::json(path, e))?;
    let bad = |reason: String| PretrainError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let mut size = 0usize;
    let mut mask = None;
    match json.pointer("/model/vocab") {
        Some(serde_json::Value::Object(map)) => {
            for (token, id) in map {
                let id = id
                    .as_u64()
                    .ok_or_else(|| bad(format!("vocab id of {token:?} is not an integer")))?;
                size = size.max(id as usize + 1);
                if token == "[MASK]" {
                    mask = Some(id as u32);
                }
            }
        }
        Some(serde_json::Value::Array(list)) => {
            size = list.len();
            for (i, entry) in list.iter().enumerate() {
                if entry.get(0).and_then(|t| t.as_str()) == Some("[MASK]") {
                    mask = Some(i as u32);
                }
            }
        }
        _ => return Err(bad("no model.vocab".into())),
    }
    if let Some(serde_json::Value::Array(added)) = json.get("added_tokens") {
        for t in added {
            let (Some(id), Some(content)) = (
                t.get("id").and_then(|v| v.as_u64()),
                t.get("content").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            size = size.max(id as usize + 1);
            if content == "[MASK]" {
                mask = Some(id as u32);
            }
        }
    }
    let mask_id = mask.ok_or_else(|| bad("the tokenizer has no [MASK] token".into()))?;
    Ok(TokenizerInfo {
        vocab_size: size,
        mask_id,
    })
}

/// One Parquet shard of packed sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: u64,
}

/// The packed-sequences input: its shards in order and the row length.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequences {
    /// The directory.
    pub dir: PathBuf,
    /// `part-*.parquet`, sorted by name (the packed order).
    pub shards: Vec<Shard>,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows in all shards.
    pub total_rows: u64,
}

impl Sequences {
    /// Lists the shards of `dir` and checks their `input_ids` column.
    pub fn open(dir: &Path) -> Result<Self, PretrainError> {
        let entries = std::fs::read_dir(dir).map_err(|e| PretrainError::io(dir, e))?;
        let mut paths = Vec::new();
        for e in entries {
            let e = e.map_err(|e| PretrainError::io(dir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("part-") && name.ends_with(".parquet") {
                paths.push(e.path());
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(PretrainError::Data {
                path: dir.to_path_buf(),
                reason: "no part-*.parquet shards".into(),
            });
        }
        let mut shards = Vec::with_capacity(paths.len());
        let mut seq_len = None;
        for path in paths {
            let (rows, len) = shard_layout(&path)?;
            match seq_len {
                None => seq_len = Some(len),
                Some(l) if l != len => {
                    return Err(PretrainError::Data {
                        path,
                        reason: format!("rows of {len} tokens, earlier shards have {l}"),
                    });
                }
                _ => {}
            }
            shards.push(Shard { path, rows });
        }
        let total_rows = shards.iter().map(|s| s.rows).sum();
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            seq_len: seq_len.unwrap_or(0),
            total_rows,
        })
    }
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, PretrainError> {
    let file = File::open(path).map_err(|e| PretrainError::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| PretrainError::Data {
        path: path.to_path_buf(),
        reason: format!("not a readable Parquet file: {e}"),
    })
}

/// `(rows, seq_len)` of a shard, checking that `input_ids` is a fixed-size list of u16/u32.
fn shard_layout(path: &Path) -> Result<(u64, usize), PretrainError> {
    let builder = open_builder(path)?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let field = builder
        .schema()
        .field_with_name(INPUT_IDS)
        .map_err(|_| PretrainError::Data {
            path: path.to_path_buf(),
            reason: format!("no `{INPUT_IDS}` column"),
        })?;
    match field.data_type() {
        DataType::FixedSizeList(inner, len)
            if matches!(inner.data_type(), DataType::UInt16 | DataType::UInt32) && *len > 0 =>
        {
            Ok((rows, *len as usize))
        }
        other => Err(PretrainError::Data {
            path: path.to_path_buf(),
            reason: format!(
                "`{INPUT_IDS}` is {other}, expected fixed_size_list<uint16 or uint32>[seq_length]"
            ),
        }),
    }
}

/// A masked micro-batch and where it came from.
#[derive(Debug, Clone)]
pub struct MicroBatch {
    /// Global index of its first row in the packed order.
    pub first_row: u64,
    /// The masked tokens and labels.
    pub batch: MaskedBatch,
}

/// The reader thread: reads rows from `start_row` on, in the packed order, masks them in
/// micro-batches and sends them through a bounded channel (`capacity` micro-batches ahead).
/// The channel ends after the last full micro-batch (a final partial one is not sent) or after
/// the first error.
pub struct Reader {
    rx: Option<Receiver<Result<MicroBatch, PretrainError>>>,
    handle: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts the thread.
    pub fn spawn(
        seqs: &Sequences,
        start_row: u64,
        micro_batch: usize,
        collator: MlmCollator,
        capacity: usize,
    ) -> Result<Self, PretrainError> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let shards = seqs.shards.clone();
        let seq_len = seqs.seq_len;
        let handle = std::thread::Builder::new()
            .name("cram-pretrain-reader".into())
            .spawn(move || {
                if let Err(e) = read_loop(&shards, seq_len, start_row, micro_batch, collator, &tx) {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| PretrainError::io(&seqs.dir, e))?;
        Ok(Self {
            rx: Some(rx),
            handle: Some(handle),
        })
    }

    /// The next micro-batch, `None` once the data is exhausted.
    pub fn next_batch(&self) -> Option<Result<MicroBatch, PretrainError>> {
        self.rx.as_ref()?.recv().ok()
    }

    /// Stops the thread (it may be blocked sending ahead) and waits for it; reports a panic.
    pub fn join(mut self) -> Result<(), PretrainError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), PretrainError> {
        // Dropping the receiver makes a pending send fail, which ends the thread.
        self.rx.take();
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| PretrainError::ReaderPanicked),
            None => Ok(()),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Returns `Ok` when the data ran out or the receiver hung up.
fn read_loop(
    shards: &[Shard],
    seq_len: usize,
    start_row: u64,
    micro_batch: usize,
    collator: MlmCollator,
    tx: &SyncSender<Result<MicroBatch, PretrainError>>,
) -> Result<(), PretrainError> {
    let want = micro_batch * seq_len;
    let mut pending: Vec<u32> = Vec::with_capacity(want);
    let mut next_row = start_row;
    let mut shard_start = 0u64;
    for shard in shards {
        let shard_end = shard_start + shard.rows;
        if shard_end <= start_row {
            shard_start = shard_end;
            continue;
        }
        let offset = start_row.saturating_sub(shard_start) as usize;
        shard_start = shard_end;
        let builder = open_builder(&shard.path)?;
        let root = builder
            .schema()
            .index_of(INPUT_IDS)
            .map_err(|e| PretrainError::Data {
                path: shard.path.clone(),
                reason: e.to_string(),
            })?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [root]);
        let reader = builder
            .with_projection(mask)
            .with_offset(offset)
            .with_batch_size(micro_batch.max(1024))
            .build()
            .map_err(|e| PretrainError::Data {
                path: shard.path.clone(),
                reason: e.to_string(),
            })?;
        for batch in reader {
            let batch = batch.map_err(|e| PretrainError::Data {
                path: shard.path.clone(),
                reason: e.to_string(),
            })?;
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<FixedSizeListArray>()
                .ok_or_else(|| PretrainError::Data {
                    path: shard.path.clone(),
                    reason: format!("`{INPUT_IDS}` is not a fixed-size list"),
                })?;
            if col.null_count() > 0 {
                return Err(PretrainError::Data {
                    path: shard.path.clone(),
                    reason: format!("`{INPUT_IDS}` has null rows"),
                });
            }
            let values = col.values();
            let start = col.offset() * seq_len;
            let n = col.len() * seq_len;
            let mut tokens: Vec<u32> = Vec::with_capacity(n);
            if let Some(a) = values.as_any().downcast_ref::<UInt16Array>() {
                tokens.extend(a.values()[start..start + n].iter().map(|&t| t as u32));
            } else if let Some(a) = values.as_any().downcast_ref::<UInt32Array>() {
                tokens.extend_from_slice(&a.values()[start..start + n]);
            } else {
                return Err(PretrainError::Data {
                    path: shard.path.clone(),
                    reason: format!("`{INPUT_IDS}` values are {}", values.data_type()),
                });
            }
            let mut rest: &[u32] = &tokens;
            while !rest.is_empty() {
                let take = (want - pending.len()).min(rest.len());
                pending.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if pending.len() == want {
                    let first_row = next_row;
                    let batch = collator.mask(&pending, seq_len, first_row);
                    next_row += micro_batch as u64;
                    pending.clear();
                    if tx.send(Ok(MicroBatch { first_row, batch })).is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}
