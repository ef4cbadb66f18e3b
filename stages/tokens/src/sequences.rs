//! The *sequences* artifact: packed training rows in Parquet.
//!
//! A sequences directory holds shards `part-00000.parquet`, `part-00001.parquet`,
//! … (in row order) with one non-null column
//! `input_ids: FixedSizeList<UInt16 | UInt32>[seq_length]` (items non-null;
//! UInt16 when the vocabulary has at most 65,536 ids), compressed with zstd,
//! a new shard starting once a shard reaches about `shard_bytes` on disk;
//! plus `summary.json` ([`crate::pack::PackSummary`]) and the `tokenizer.json`
//! the rows were made with.
//!
//! [`read_sequences`] streams the rows back in stored order as
//! [`SequenceBatch`]es of `u32` ids.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, FixedSizeListArray, UInt16Array, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::pack::PackSummary;

/// Name of the single column of a sequences shard.
pub const INPUT_IDS_COLUMN: &str = "input_ids";
/// Default on-disk size after which a shard is closed (256 MiB).
pub const DEFAULT_SHARD_BYTES: u64 = 256 * 1024 * 1024;
/// Rows per Parquet row group (8 Mi tokens at seq_length 128), so a reader
/// streams a shard with bounded memory.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per record batch handed to the Parquet writer and per batch yielded
/// by [`SequenceReader`].
pub const BATCH_ROWS: usize = 8 * 1024;
/// Largest vocabulary whose ids fit the UInt16 column type.
pub const MAX_U16_VOCAB: usize = 1 << 16;

/// Element type of the `input_ids` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdType {
    /// UInt16: vocabularies of at most 65,536 ids.
    U16,
    /// UInt32: larger vocabularies.
    U32,
}

impl IdType {
    /// The narrowest type that holds every id of a vocabulary of this size.
    pub fn for_vocab(vocab_size: usize) -> IdType {
        if vocab_size <= MAX_U16_VOCAB {
            IdType::U16
        } else {
            IdType::U32
        }
    }

    /// Bytes per id.
    pub fn width(self) -> usize {
        match self {
            IdType::U16 => 2,
            IdType::U32 => 4,
        }
    }

    /// Largest id the type holds.
    pub fn max_id(self) -> u32 {
        match self {
            IdType::U16 => u16::MAX as u32,
            IdType::U32 => u32::MAX,
        }
    }

    fn arrow(self) -> DataType {
        match self {
            IdType::U16 => DataType::UInt16,
            IdType::U32 => DataType::UInt32,
        }
    }
}

/// Errors of reading or writing a sequences directory.
#[derive(Debug, thiserror::Error)]
pub enum SequencesError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Parquet failed on a file.
    #[error(
        "{path}: Parquet error: {source} (is it a sequences shard written by cram's pack kind?)"
    )]
    Parquet {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow failed on a batch of a file.
    #[error("{path}: Arrow error: {source}")]
    Arrow {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A shard does not have the documented schema.
    #[error(
        "{path}: {message}; expected one column `input_ids: fixed_size_list<uint16|uint32>[seq_length]`"
    )]
    Schema {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The directory holds no shard.
    #[error("{dir}: no sequences shards (part-*.parquet); is this the output of a pack stage?")]
    NoShards {
        /// The directory searched.
        dir: PathBuf,
    },
    /// `summary.json` is missing or malformed.
    #[error("{path}: {message}")]
    Summary {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The Arrow schema of a sequences shard.
pub fn sequences_schema(seq_length: usize, id_type: IdType) -> SchemaRef {
    let item = Arc::new(Field::new("item", id_type.arrow(), false));
    Arc::new(Schema::new(vec![Field::new(
        INPUT_IDS_COLUMN,
        DataType::FixedSizeList(item, seq_length as i32),
        false,
    )]))
}

/// Writes rows of ids into zstd Parquet shards of about `shard_bytes`.
pub struct ShardWriter {
    out_dir: PathBuf,
    seq_length: usize,
    id_type: IdType,
    shard_bytes: u64,
    schema: SchemaRef,
    props: WriterProperties,
    current: Option<(PathBuf, ArrowWriter<File>)>,
    pending: Vec<u32>,
    batch_rows: usize,
    rows: u64,
    shards: Vec<String>,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("out_dir", &self.out_dir)
            .field("seq_length", &self.seq_length)
            .field("rows", &self.rows)
            .finish()
    }
}

impl ShardWriter {
    /// Starts writing shards into `out_dir` (which must exist).
    pub fn new(
        out_dir: &Path,
        seq_length: usize,
        id_type: IdType,
        shard_bytes: u64,
    ) -> ShardWriter {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid zstd level"),
            ))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        ShardWriter {
            out_dir: out_dir.to_path_buf(),
            seq_length,
            id_type,
            shard_bytes: shard_bytes.max(1),
            schema: sequences_schema(seq_length, id_type),
            props,
            current: None,
            pending: Vec::with_capacity(BATCH_ROWS * seq_length),
            // Small shards (tests) flush smaller batches so the size check
            // after each batch can close them on time.
            batch_rows: (shard_bytes / (seq_length * id_type.width()) as u64)
                .clamp(1, BATCH_ROWS as u64) as usize,
            rows: 0,
            shards: Vec::new(),
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends one row (`seq_length` ids, each at most the type's maximum;
    /// the caller checks ids against the type).
    pub fn push(&mut self, row: &[u32]) -> Result<(), SequencesError> {
        debug_assert_eq!(row.len(), self.seq_length);
        self.pending.extend_from_slice(row);
        self.rows += 1;
        if self.pending.len() >= self.batch_rows * self.seq_length {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), SequencesError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let name = format!("part-{:05}.parquet", self.shards.len());
            let path = self.out_dir.join(&name);
            let file = File::create(&path).map_err(|source| SequencesError::Io {
                path: path.clone(),
                source,
            })?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
                .map_err(|source| SequencesError::Parquet {
                    path: path.clone(),
                    source,
                })?;
            self.shards.push(name);
            self.current = Some((path, writer));
        }
        let values: ArrayRef = match self.id_type {
            IdType::U16 => Arc::new(UInt16Array::from_iter_values(
                self.pending.iter().map(|&v| v as u16),
            )),
            IdType::U32 => Arc::new(UInt32Array::from_iter_values(self.pending.iter().copied())),
        };
        self.pending.clear();
        let item = Arc::new(Field::new("item", self.id_type.arrow(), false));
        let (path, writer) = self.current.as_mut().expect("opened above");
        let list = FixedSizeListArray::try_new(item, self.seq_length as i32, values, None)
            .map_err(|source| SequencesError::Arrow {
                path: path.clone(),
                source,
            })?;
        let batch =
            RecordBatch::try_new(self.schema.clone(), vec![Arc::new(list)]).map_err(|source| {
                SequencesError::Arrow {
                    path: path.clone(),
                    source,
                }
            })?;
        writer
            .write(&batch)
            .map_err(|source| SequencesError::Parquet {
                path: path.clone(),
                source,
            })?;
        if (writer.bytes_written() + writer.in_progress_size()) as u64 >= self.shard_bytes {
            self.close_shard()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<(), SequencesError> {
        if let Some((path, writer)) = self.current.take() {
            writer
                .close()
                .map_err(|source| SequencesError::Parquet { path, source })?;
        }
        Ok(())
    }

    /// Flushes and closes the last shard; with zero rows, one valid empty
    /// shard is written. Returns the shard file names in order.
    pub fn finish(mut self) -> Result<Vec<String>, SequencesError> {
        self.flush_batch()?;
        self.close_shard()?;
        if self.shards.is_empty() {
            let name = "part-00000.parquet".to_string();
            let path = self.out_dir.join(&name);
            let file = File::create(&path).map_err(|source| SequencesError::Io {
                path: path.clone(),
                source,
            })?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
                .map_err(|source| SequencesError::Parquet {
                    path: path.clone(),
                    source,
                })?;
            writer
                .close()
                .map_err(|source| SequencesError::Parquet { path, source })?;
            self.shards.push(name);
        }
        Ok(self.shards)
    }
}

/// Lists the shards of a sequences directory in order.
pub fn list_sequence_shards(dir: &Path) -> Result<Vec<PathBuf>, SequencesError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SequencesError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut shards = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SequencesError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("part-") && name.ends_with(".parquet") {
            shards.push(entry.path());
        }
    }
    if shards.is_empty() {
        return Err(SequencesError::NoShards {
            dir: dir.to_path_buf(),
        });
    }
    shards.sort();
    Ok(shards)
}

/// Reads `summary.json` of a sequences directory.
pub fn read_sequences_summary(dir: &Path) -> Result<PackSummary, SequencesError> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|source| SequencesError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| SequencesError::Summary {
        path,
        message: format!("not a pack summary: {e}"),
    })
}

/// A batch of rows read back from a sequences directory: `ids` holds
/// `num_rows() × seq_length` ids, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceBatch {
    /// Ids per row.
    pub seq_length: usize,
    /// The ids, row after row.
    pub ids: Vec<u32>,
}

impl SequenceBatch {
    /// Number of rows in the batch.
    pub fn num_rows(&self) -> usize {
        self.ids.len().checked_div(self.seq_length).unwrap_or(0)
    }

    /// The rows, each a slice of `seq_length` ids.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, u32> {
        self.ids.chunks_exact(self.seq_length.max(1))
    }

    /// The rows as owned vectors.
    pub fn into_rows(self) -> Vec<Vec<u32>> {
        self.rows().map(<[u32]>::to_vec).collect()
    }
}

/// Streams the rows of a sequences directory in stored order (see
/// [`read_sequences`]).
pub struct SequenceReader {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, ParquetRecordBatchReader)>,
    seq_length: usize,
    batch_rows: usize,
}

impl std::fmt::Debug for SequenceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceReader")
            .field("seq_length", &self.seq_length)
            .finish()
    }
}

/// Opens a streaming reader over every row of a sequences directory, in
/// stored order, in batches of [`BATCH_ROWS`] rows (memory: one batch plus
/// one row group's decoding buffers).
pub fn read_sequences(dir: &Path) -> Result<SequenceReader, SequencesError> {
    let files = list_sequence_shards(dir)?;
    let seq_length = shard_seq_length(&files[0])?;
    Ok(SequenceReader {
        files: files.into_iter(),
        current: None,
        seq_length,
        batch_rows: BATCH_ROWS,
    })
}

fn shard_seq_length(path: &Path) -> Result<usize, SequencesError> {
    let file = File::open(path).map_err(|source| SequencesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
        SequencesError::Parquet {
            path: path.to_path_buf(),
            source,
        }
    })?;
    check_schema(path, builder.schema())
}

fn check_schema(path: &Path, schema: &Schema) -> Result<usize, SequencesError> {
    let bad = |message: String| SequencesError::Schema {
        path: path.to_path_buf(),
        message,
    };
    let field = schema
        .field_with_name(INPUT_IDS_COLUMN)
        .map_err(|_| bad(format!("no column {INPUT_IDS_COLUMN:?}")))?;
    match field.data_type() {
        DataType::FixedSizeList(item, n)
            if matches!(item.data_type(), DataType::UInt16 | DataType::UInt32) =>
        {
            Ok(*n as usize)
        }
        other => Err(bad(format!("column {INPUT_IDS_COLUMN:?} has type {other}"))),
    }
}

impl SequenceReader {
    /// Ids per row.
    pub fn seq_length(&self) -> usize {
        self.seq_length
    }

    /// Sets the number of rows per yielded batch (at least 1).
    pub fn with_batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    fn open(&self, path: PathBuf) -> Result<(PathBuf, ParquetRecordBatchReader), SequencesError> {
        let file = File::open(&path).map_err(|source| SequencesError::Io {
            path: path.clone(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
            SequencesError::Parquet {
                path: path.clone(),
                source,
            }
        })?;
        let n = check_schema(&path, builder.schema())?;
        if n != self.seq_length {
            return Err(SequencesError::Schema {
                path,
                message: format!("rows of {n} ids, the first shard has {}", self.seq_length),
            });
        }
        let reader = builder
            .with_batch_size(self.batch_rows)
            .build()
            .map_err(|source| SequencesError::Parquet {
                path: path.clone(),
                source,
            })?;
        Ok((path, reader))
    }
}

fn batch_ids(path: &Path, batch: &RecordBatch) -> Result<Vec<u32>, SequencesError> {
    let bad = |message: &str| SequencesError::Schema {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    let list = batch
        .column(0)
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| bad("column is not a fixed-size list"))?;
    if list.null_count() > 0 {
        return Err(bad("null rows"));
    }
    // Slicing offsets: a batch may start inside the values buffer.
    let start = list.offset() * list.value_length() as usize;
    let len = list.len() * list.value_length() as usize;
    let values = list.values();
    if values.null_count() > 0 {
        return Err(bad("null ids"));
    }
    if let Some(v) = values.as_any().downcast_ref::<UInt16Array>() {
        Ok(v.values()[start..start + len]
            .iter()
            .map(|&x| x as u32)
            .collect())
    } else if let Some(v) = values.as_any().downcast_ref::<UInt32Array>() {
        Ok(v.values()[start..start + len].to_vec())
    } else {
        Err(bad("ids are neither uint16 nor uint32"))
    }
}

impl Iterator for SequenceReader {
    type Item = Result<SequenceBatch, SequencesError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let path = self.files.next()?;
                match self.open(path) {
                    Ok(open) => self.current = Some(open),
                    Err(e) => return Some(Err(e)),
                }
            }
            let (path, reader) = self.current.as_mut().expect("opened above");
            match reader.next() {
                None => self.current = None,
                Some(Err(source)) => {
                    let path = path.clone();
                    self.current = None;
                    return Some(Err(SequencesError::Arrow { path, source }));
                }
                Some(Ok(batch)) if batch.num_rows() == 0 => {}
                Some(Ok(batch)) => {
                    let ids = batch_ids(path, &batch);
                    return Some(ids.map(|ids| SequenceBatch {
                        seq_length: self.seq_length,
                        ids,
                    }));
                }
            }
        }
    }
}
