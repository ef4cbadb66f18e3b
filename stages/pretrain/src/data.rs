//! The stage's inputs: the packed-sequences Parquet shards and the tokenizer facts, and the
//! reader thread that streams masked micro-batches ahead of the training step, pass after pass
//! over the rows (see [`crate::passes`] for the order).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow::array::{Array, FixedSizeListArray, RecordBatch, UInt16Array, UInt32Array};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::collator::{MaskedBatch, MlmCollator};
use crate::error::PretrainError;
use crate::passes::{Block, window_permutation, windows};

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
    /// Rows of each of its row groups, in order.
    pub row_groups: Vec<u64>,
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
    /// The shards' row groups in the packed order, the units a reshuffled pass reorders.
    pub fn blocks(&self) -> Vec<Block> {
        let mut out = Vec::new();
        let mut first_row = 0;
        for (shard, s) in self.shards.iter().enumerate() {
            for (row_group, &rows) in s.row_groups.iter().enumerate() {
                if rows > 0 {
                    out.push(Block {
                        shard,
                        row_group,
                        first_row,
                        rows,
                    });
                }
                first_row += rows;
            }
        }
        out
    }

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
            let (row_groups, len) = shard_layout(&path)?;
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
            let rows = row_groups.iter().sum();
            shards.push(Shard {
                path,
                rows,
                row_groups,
            });
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

/// `(rows per row group, seq_len)` of a shard, checking that `input_ids` is a fixed-size list
/// of u16/u32.
fn shard_layout(path: &Path) -> Result<(Vec<u64>, usize), PretrainError> {
    let builder = open_builder(path)?;
    let rows = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect();
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
    /// Stream position of its first row: `pass * rows + index within the pass` (see
    /// [`crate::passes`]). Its rows hold the consecutive positions from there on.
    pub position: u64,
    /// The masked tokens and labels.
    pub batch: MaskedBatch,
}

/// Which part of the endless stream of rows (see [`crate::passes`]) a [`Reader`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpan {
    /// Seed of the reshuffled passes' orders (the pipeline seed).
    pub order_seed: u64,
    /// Stream position of the first row to read.
    pub start: u64,
    /// Stream position the reader stops before (`None`: it never runs out). Only whole
    /// micro-batches are sent, so a micro-batch that would cross it is not.
    pub end: Option<u64>,
}

/// The reader thread: reads the stream of rows from `span.start` on, masks them in
/// micro-batches and sends them through a bounded channel (`capacity` micro-batches ahead).
/// The channel ends at `span.end` (after the last whole micro-batch before it) or after the
/// first error; without an end it only ends at once, when the corpus holds fewer rows than one
/// micro-batch.
pub struct Reader {
    rx: Option<Receiver<Result<MicroBatch, PretrainError>>>,
    handle: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts the thread.
    pub fn spawn(
        seqs: &Sequences,
        span: StreamSpan,
        micro_batch: usize,
        collator: MlmCollator,
        capacity: usize,
    ) -> Result<Self, PretrainError> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let thread_seqs = seqs.clone();
        let handle = std::thread::Builder::new()
            .name("cram-pretrain-reader".into())
            .spawn(move || {
                let mut out = Emitter {
                    tx: &tx,
                    collator,
                    seq_len: thread_seqs.seq_len,
                    micro_batch: micro_batch.max(1),
                    next: span.start,
                    end: span.end,
                    pending: Vec::new(),
                };
                if let Err(e) = read_stream(&thread_seqs, span, &mut out) {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| PretrainError::io(&seqs.dir, e))?;
        Ok(Self {
            rx: Some(rx),
            handle: Some(handle),
        })
    }

    /// The next micro-batch, `None` once the stream has ended.
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

/// Whether the reader goes on after a chunk of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The span ended or the receiver hung up.
    Stop,
}

/// Cuts the stream of rows into masked micro-batches and sends them.
struct Emitter<'a> {
    tx: &'a SyncSender<Result<MicroBatch, PretrainError>>,
    collator: MlmCollator,
    seq_len: usize,
    micro_batch: usize,
    /// Stream position of the first pending row.
    next: u64,
    end: Option<u64>,
    pending: Vec<u32>,
}

impl Emitter<'_> {
    /// Takes whole rows (`tokens.len()` a multiple of `seq_len`).
    fn push(&mut self, mut tokens: &[u32]) -> Flow {
        let want = self.micro_batch * self.seq_len;
        while !tokens.is_empty() {
            if self
                .end
                .is_some_and(|end| self.next + self.micro_batch as u64 > end)
            {
                return Flow::Stop;
            }
            let take = (want - self.pending.len()).min(tokens.len());
            self.pending.extend_from_slice(&tokens[..take]);
            tokens = &tokens[take..];
            if self.pending.len() == want {
                let position = self.next;
                let batch = self.collator.mask(&self.pending, self.seq_len, position);
                self.next += self.micro_batch as u64;
                self.pending.clear();
                if self.tx.send(Ok(MicroBatch { position, batch })).is_err() {
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }
}

/// Reads pass after pass from `span.start` until the emitter stops.
fn read_stream(
    seqs: &Sequences,
    span: StreamSpan,
    out: &mut Emitter<'_>,
) -> Result<(), PretrainError> {
    let n = seqs.total_rows;
    if n < out.micro_batch as u64 || seqs.seq_len == 0 {
        // Fewer rows than one micro-batch: a micro-batch would hold a row twice.
        return Ok(());
    }
    let blocks = seqs.blocks();
    let mut position = span.start;
    loop {
        let (pass, offset) = (position / n, position % n);
        let flow = if pass == 0 {
            read_packed(seqs, offset, out)?
        } else {
            read_shuffled(seqs, &blocks, span.order_seed, pass, offset, out)?
        };
        if flow == Flow::Stop {
            return Ok(());
        }
        position = (pass + 1) * n;
    }
}

/// A reader of the `input_ids` column of a shard, configured by `select` (offset, row groups).
fn ids_reader(
    path: &Path,
    select: impl FnOnce(ParquetRecordBatchReaderBuilder<File>) -> ParquetRecordBatchReaderBuilder<File>,
) -> Result<ParquetRecordBatchReader, PretrainError> {
    let builder = open_builder(path)?;
    let root = builder
        .schema()
        .index_of(INPUT_IDS)
        .map_err(|e| PretrainError::Data {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [root]);
    select(
        builder
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS),
    )
    .build()
    .map_err(|e| PretrainError::Data {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Every row of `seqs`, in order, as one flat list of ids (for small inputs such as the
/// held-out rows).
pub fn read_all_rows(seqs: &Sequences) -> Result<Vec<u32>, PretrainError> {
    let mut out = Vec::with_capacity(seqs.total_rows as usize * seqs.seq_len);
    for shard in &seqs.shards {
        for batch in ids_reader(&shard.path, |b| b)? {
            append_ids(batch, &shard.path, seqs.seq_len, &mut out)?;
        }
    }
    Ok(out)
}

/// Rows decoded per Parquet read, and per chunk handed on from a reshuffled window.
const READ_BATCH_ROWS: usize = 1024;

/// Appends the token ids of one record batch of `input_ids` to `out`.
fn append_ids(
    batch: Result<RecordBatch, ArrowError>,
    path: &Path,
    seq_len: usize,
    out: &mut Vec<u32>,
) -> Result<(), PretrainError> {
    let bad = |reason: String| PretrainError::Data {
        path: path.to_path_buf(),
        reason,
    };
    let batch = batch.map_err(|e| bad(e.to_string()))?;
    let col = batch
        .column(0)
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| bad(format!("`{INPUT_IDS}` is not a fixed-size list")))?;
    if col.null_count() > 0 {
        return Err(bad(format!("`{INPUT_IDS}` has null rows")));
    }
    let values = col.values();
    let start = col.offset() * seq_len;
    let n = col.len() * seq_len;
    if let Some(a) = values.as_any().downcast_ref::<UInt16Array>() {
        out.extend(a.values()[start..start + n].iter().map(|&t| t as u32));
    } else if let Some(a) = values.as_any().downcast_ref::<UInt32Array>() {
        out.extend_from_slice(&a.values()[start..start + n]);
    } else {
        return Err(bad(format!(
            "`{INPUT_IDS}` values are {}",
            values.data_type()
        )));
    }
    Ok(())
}

/// Pass 0: the rows in the packed order from row `offset` on.
fn read_packed(
    seqs: &Sequences,
    offset: u64,
    out: &mut Emitter<'_>,
) -> Result<Flow, PretrainError> {
    let mut shard_start = 0u64;
    let mut tokens: Vec<u32> = Vec::new();
    for shard in &seqs.shards {
        let shard_end = shard_start + shard.rows;
        if shard_end <= offset {
            shard_start = shard_end;
            continue;
        }
        let skip = offset.saturating_sub(shard_start) as usize;
        shard_start = shard_end;
        for batch in ids_reader(&shard.path, |b| b.with_offset(skip))? {
            tokens.clear();
            append_ids(batch, &shard.path, seqs.seq_len, &mut tokens)?;
            if out.push(&tokens) == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
    }
    Ok(Flow::Continue)
}

/// Pass `pass >= 1`: the reshuffled order of [`crate::passes`] from its row `offset` on.
fn read_shuffled(
    seqs: &Sequences,
    blocks: &[Block],
    seed: u64,
    pass: u64,
    offset: u64,
    out: &mut Emitter<'_>,
) -> Result<Flow, PretrainError> {
    let s = seqs.seq_len;
    let mut before = 0u64;
    let chunk_len = READ_BATCH_ROWS * s;
    let mut chunk: Vec<u32> = Vec::with_capacity(chunk_len);
    for (index, window) in windows(blocks, s, seed, pass).iter().enumerate() {
        if before + window.rows <= offset {
            before += window.rows;
            continue;
        }
        let skip = offset.saturating_sub(before) as usize;
        before += window.rows;
        let mut gathered: Vec<u32> = Vec::with_capacity(window.rows as usize * s);
        for &b in &window.blocks {
            let block = blocks[b];
            let path = &seqs.shards[block.shard].path;
            let before_len = gathered.len();
            for batch in ids_reader(path, |r| r.with_row_groups(vec![block.row_group]))? {
                append_ids(batch, path, s, &mut gathered)?;
            }
            let read = (gathered.len() - before_len) / s;
            if read as u64 != block.rows {
                return Err(PretrainError::Data {
                    path: path.clone(),
                    reason: format!(
                        "row group {} holds {read} rows, its metadata promises {}",
                        block.row_group, block.rows
                    ),
                });
            }
        }
        let order = window_permutation(window.rows, seed, pass, index);
        for &r in &order[skip..] {
            let r = r as usize;
            chunk.extend_from_slice(&gathered[r * s..(r + 1) * s]);
            if chunk.len() >= chunk_len {
                if out.push(&chunk) == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            if out.push(&chunk) == Flow::Stop {
                return Ok(Flow::Stop);
            }
            chunk.clear();
        }
    }
    Ok(Flow::Continue)
}
