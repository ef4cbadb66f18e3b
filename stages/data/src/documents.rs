//! The *documents* artifact: the format every text stage reads and writes.
//!
//! A documents directory holds Parquet shards `part-00000.parquet`,
//! `part-00001.parquet`, … (five-digit, zero-padded, in document order) with
//! exactly one column, `text: Utf8` (non-null), compressed with zstd. A new
//! shard starts once a shard holds about [`DEFAULT_SHARD_BYTES`] bytes of text
//! (configurable with [`DocumentWriter::with_shard_bytes`]); row groups hold at
//! most [`ROW_GROUP_ROWS`] rows (fewer when the documents are large), so that
//! readers can stream a shard with bounded memory.
//!
//! An empty corpus (zero documents) is written as **one valid, empty shard**
//! `part-00000.parquet` (schema, no rows): downstream stages then read "zero
//! documents" instead of failing on a missing file, and [`list_shards`] only
//! fails on directories that are not documents directories at all.
//!
//! ```no_run
//! use cram_data::documents::{DocumentWriter, read_documents, count_documents};
//! # fn main() -> Result<(), cram_data::documents::DocumentsError> {
//! let dir = std::path::Path::new("out");
//! let mut writer = DocumentWriter::create(dir)?;
//! writer.push("The first document.")?;
//! writer.push("The second one.")?;
//! let written = writer.finish()?;
//! assert_eq!(written.documents, 2);
//! assert_eq!(count_documents(dir)?, 2);
//! for batch in read_documents(dir)? {
//!     for text in batch? { println!("{text}"); }
//! }
//! # Ok(()) }
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, LargeStringArray, StringArray, StringBuilder, StringViewArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::{Deserialize, Serialize};

mod range;
pub use range::{read_document_range, shard_range};

/// Name of the single column of a documents shard.
pub const TEXT_COLUMN: &str = "text";
/// Default number of text bytes after which a shard is closed (128 MiB).
pub const DEFAULT_SHARD_BYTES: u64 = 128 * 1024 * 1024;
/// Maximum number of rows in one Parquet row group of a shard.
pub const ROW_GROUP_ROWS: usize = 32 * 1024;
/// Number of documents per batch yielded by [`read_documents`] (and buffered
/// by the writer before handing a record batch to Parquet).
pub const BATCH_DOCUMENTS: usize = 8 * 1024;
/// A row group is also closed once it holds this many bytes of text, so a
/// corpus of huge documents does not build huge row groups in memory.
const ROW_GROUP_BYTES: u64 = 32 * 1024 * 1024;
/// zstd level of the shards: a good ratio at a speed far above tokenisation.
const ZSTD_LEVEL: i32 = 3;

/// Errors of reading or writing a documents directory.
#[derive(Debug, thiserror::Error)]
pub enum DocumentsError {
    /// A file or directory could not be read, created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory at fault.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet library failed on a file (corrupt or not Parquet).
    #[error(
        "{path}: Parquet error: {source} (is it a documents shard written by cram? delete the cache entry to regenerate it)"
    )]
    Parquet {
        /// The shard at fault.
        path: PathBuf,
        /// The underlying Parquet error.
        #[source]
        source: ParquetError,
    },
    /// The Arrow library failed on a batch of a file.
    #[error("{path}: Arrow error: {source}")]
    Arrow {
        /// The shard at fault.
        path: PathBuf,
        /// The underlying Arrow error.
        #[source]
        source: ArrowError,
    },
    /// A directory that should hold documents holds no `part-*.parquet` file.
    #[error(
        "{dir}: no documents shards (part-*.parquet) found; is this the output of a documents stage?"
    )]
    NoShards {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A shard has no column of the expected name.
    #[error(
        "{path}: no column {column:?} (columns: {available}); documents shards have one column `text`"
    )]
    MissingColumn {
        /// The shard at fault.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The columns the file has, comma-separated.
        available: String,
    },
    /// The text column has a type other than a string type.
    #[error("{path}: column {column:?} has type {found}, expected a UTF-8 string column")]
    WrongType {
        /// The shard at fault.
        path: PathBuf,
        /// The column at fault.
        column: String,
        /// The type found.
        found: String,
    },
    /// A row of the text column is null.
    #[error("{path}: row {row}: column {column:?} is null; documents must be non-null strings")]
    NullText {
        /// The shard at fault.
        path: PathBuf,
        /// The column at fault.
        column: String,
        /// Row index within the file (0-based).
        row: u64,
    },
}

impl DocumentsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    fn parquet(path: &Path, source: ParquetError) -> Self {
        Self::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }
    fn arrow(path: &Path, source: ArrowError) -> Self {
        Self::Arrow {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What a [`DocumentWriter`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenDocuments {
    /// Number of documents (rows) written.
    pub documents: u64,
    /// Total UTF-8 bytes of text written.
    pub bytes: u64,
    /// File names of the shards, relative to the output directory, in order.
    pub shards: Vec<String>,
}

/// Writes documents into sharded Parquet files in a directory.
///
/// Call [`push`](Self::push) per document, then [`finish`](Self::finish);
/// dropping a writer without `finish` leaves an unreadable last shard.
pub struct DocumentWriter {
    out_dir: PathBuf,
    shard_bytes: u64,
    schema: SchemaRef,
    props: WriterProperties,
    current: Option<(PathBuf, ArrowWriter<File>)>,
    builder: StringBuilder,
    builder_rows: usize,
    shard_text_bytes: u64,
    row_group_text_bytes: u64,
    documents: u64,
    bytes: u64,
    shards: Vec<String>,
}

impl std::fmt::Debug for DocumentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentWriter")
            .field("out_dir", &self.out_dir)
            .field("shard_bytes", &self.shard_bytes)
            .field("documents", &self.documents)
            .field("bytes", &self.bytes)
            .field("shards", &self.shards)
            .finish()
    }
}

/// The Arrow schema of a documents shard: one non-null `text: Utf8` column.
pub fn documents_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        TEXT_COLUMN,
        DataType::Utf8,
        false,
    )]))
}

impl DocumentWriter {
    /// Starts writing documents into `out_dir` (created if missing). No file
    /// is created until the first document or [`finish`](Self::finish).
    pub fn create(out_dir: &Path) -> Result<DocumentWriter, DocumentsError> {
        std::fs::create_dir_all(out_dir).map_err(|e| DocumentsError::io(out_dir, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level"),
            ))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        Ok(DocumentWriter {
            out_dir: out_dir.to_path_buf(),
            shard_bytes: DEFAULT_SHARD_BYTES,
            schema: documents_schema(),
            props,
            current: None,
            builder: StringBuilder::new(),
            builder_rows: 0,
            shard_text_bytes: 0,
            row_group_text_bytes: 0,
            documents: 0,
            bytes: 0,
            shards: Vec::new(),
        })
    }

    /// Sets the number of text bytes after which a shard is closed (at least
    /// one document goes into every shard; 0 is treated as 1).
    pub fn with_shard_bytes(mut self, n: u64) -> Self {
        self.shard_bytes = n.max(1);
        self
    }

    /// Number of documents pushed so far.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Number of text bytes pushed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one document.
    pub fn push(&mut self, text: &str) -> Result<(), DocumentsError> {
        self.builder.append_value(text);
        self.builder_rows += 1;
        let n = text.len() as u64;
        self.documents += 1;
        self.bytes += n;
        self.shard_text_bytes += n;
        self.row_group_text_bytes += n;
        if self.builder_rows >= BATCH_DOCUMENTS || self.row_group_text_bytes >= ROW_GROUP_BYTES {
            self.flush_batch()?;
        }
        if self.shard_text_bytes >= self.shard_bytes {
            self.close_shard()?;
        }
        Ok(())
    }

    fn open_shard(&mut self) -> Result<(), DocumentsError> {
        let name = format!("part-{:05}.parquet", self.shards.len());
        let path = self.out_dir.join(&name);
        let file = File::create(&path).map_err(|e| DocumentsError::io(&path, e))?;
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
            .map_err(|e| DocumentsError::parquet(&path, e))?;
        self.shards.push(name);
        self.current = Some((path, writer));
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), DocumentsError> {
        if self.builder_rows == 0 {
            return Ok(());
        }
        if self.current.is_none() {
            self.open_shard()?;
        }
        let array: ArrayRef = Arc::new(self.builder.finish());
        self.builder_rows = 0;
        let (path, writer) = self.current.as_mut().expect("shard opened above");
        let batch = RecordBatch::try_new(self.schema.clone(), vec![array])
            .map_err(|e| DocumentsError::arrow(path, e))?;
        writer
            .write(&batch)
            .map_err(|e| DocumentsError::parquet(path, e))?;
        if self.row_group_text_bytes >= ROW_GROUP_BYTES {
            writer
                .flush()
                .map_err(|e| DocumentsError::parquet(path, e))?;
            self.row_group_text_bytes = 0;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<(), DocumentsError> {
        self.flush_batch()?;
        if let Some((path, writer)) = self.current.take() {
            writer
                .close()
                .map_err(|e| DocumentsError::parquet(&path, e))?;
        }
        self.shard_text_bytes = 0;
        self.row_group_text_bytes = 0;
        Ok(())
    }

    /// Flushes and closes the last shard. With zero documents, one empty
    /// shard `part-00000.parquet` is written (see the module docs).
    pub fn finish(mut self) -> Result<WrittenDocuments, DocumentsError> {
        self.close_shard()?;
        if self.shards.is_empty() {
            self.open_shard()?;
            self.close_shard()?;
        }
        Ok(WrittenDocuments {
            documents: self.documents,
            bytes: self.bytes,
            shards: std::mem::take(&mut self.shards),
        })
    }
}

/// Lists the shards `part-*.parquet` of a documents directory, sorted by name.
/// Fails naming the directory if it cannot be read or holds no shard.
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>, DocumentsError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DocumentsError::io(dir, e))?;
    let mut shards = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DocumentsError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("part-") && name.ends_with(".parquet") {
            shards.push(entry.path());
        }
    }
    if shards.is_empty() {
        return Err(DocumentsError::NoShards {
            dir: dir.to_path_buf(),
        });
    }
    shards.sort();
    Ok(shards)
}

/// Counts the documents of a directory from the shards' Parquet metadata
/// (reads no text).
pub fn count_documents(dir: &Path) -> Result<u64, DocumentsError> {
    let mut total = 0u64;
    for path in list_shards(dir)? {
        let file = File::open(&path).map_err(|e| DocumentsError::io(&path, e))?;
        let reader =
            SerializedFileReader::new(file).map_err(|e| DocumentsError::parquet(&path, e))?;
        total += reader.metadata().file_metadata().num_rows() as u64;
    }
    Ok(total)
}

/// Opens a streaming reader over every document of a directory, in shard
/// order, yielding batches of about [`BATCH_DOCUMENTS`] documents. Memory is
/// bounded by one batch plus one row group's decoding buffers.
pub fn read_documents(dir: &Path) -> Result<DocumentBatches, DocumentsError> {
    let shards = list_shards(dir)?;
    Ok(StringColumnBatches::new(
        shards,
        TEXT_COLUMN,
        BATCH_DOCUMENTS,
    ))
}

/// Streaming iterator over the documents of a directory (see
/// [`read_documents`]); also used to read one string column of arbitrary
/// Parquet files (see [`StringColumnBatches`]).
pub type DocumentBatches = StringColumnBatches;

/// Iterator over batches of one non-null string column of a list of Parquet
/// files, in file order.
pub struct StringColumnBatches {
    files: std::vec::IntoIter<FilePart>,
    current: Option<OpenColumn>,
    column: String,
    batch_size: usize,
}

impl std::fmt::Debug for StringColumnBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StringColumnBatches")
            .field("column", &self.column)
            .finish()
    }
}

/// One file to read: whole, or the rows of a range (see
/// [`read_document_range`]).
struct FilePart {
    path: PathBuf,
    slice: Option<FileSlice>,
}

/// The rows of one file a range covers: the row groups that hold them, the
/// rows of those groups to skip first, then the rows to read.
struct FileSlice {
    row_groups: Vec<usize>,
    /// Index in the file of the first row of `row_groups[0]`.
    first_row: u64,
    skip: u64,
    take: u64,
}

struct OpenColumn {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    row: u64,
}

impl StringColumnBatches {
    /// Streams the string column `column` of the Parquet `files`, in order,
    /// in batches of `batch_size` rows. Types Utf8, LargeUtf8 and Utf8View
    /// are accepted; a null value is an error naming the file and row.
    pub fn new(files: Vec<PathBuf>, column: &str, batch_size: usize) -> Self {
        let parts = files
            .into_iter()
            .map(|path| FilePart { path, slice: None })
            .collect();
        Self::from_parts(parts, column, batch_size)
    }

    fn from_parts(parts: Vec<FilePart>, column: &str, batch_size: usize) -> Self {
        StringColumnBatches {
            files: parts.into_iter(),
            current: None,
            column: column.to_string(),
            batch_size: batch_size.max(1),
        }
    }

    fn open(&self, part: FilePart) -> Result<OpenColumn, DocumentsError> {
        let FilePart { path, slice } = part;
        let file = File::open(&path).map_err(|e| DocumentsError::io(&path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| DocumentsError::parquet(&path, e))?;
        let schema = builder.schema().clone();
        let Some((index, field)) = schema.column_with_name(&self.column) else {
            let available = schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(DocumentsError::MissingColumn {
                path,
                column: self.column.clone(),
                available,
            });
        };
        if !matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(DocumentsError::WrongType {
                path,
                column: self.column.clone(),
                found: field.data_type().to_string(),
            });
        }
        // The Arrow field index equals the root index of the Parquet schema
        // for the top-level, non-nested columns we accept.
        let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
        let mut builder = builder
            .with_projection(mask)
            .with_batch_size(self.batch_size);
        let mut row = 0;
        if let Some(slice) = slice {
            use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
            row = slice.first_row + slice.skip;
            builder = builder
                .with_row_groups(slice.row_groups)
                .with_row_selection(RowSelection::from(vec![
                    RowSelector::skip(slice.skip as usize),
                    RowSelector::select(slice.take as usize),
                ]));
        }
        let reader = builder
            .build()
            .map_err(|e| DocumentsError::parquet(&path, e))?;
        Ok(OpenColumn { path, reader, row })
    }
}

/// Copies the values of a string array into owned strings, failing on nulls.
fn collect_strings(
    array: &dyn Array,
    path: &Path,
    column: &str,
    first_row: u64,
) -> Result<Vec<String>, DocumentsError> {
    fn take<'a>(
        len: usize,
        is_null: impl Fn(usize) -> bool,
        value: impl Fn(usize) -> &'a str,
        path: &Path,
        column: &str,
        first_row: u64,
    ) -> Result<Vec<String>, DocumentsError> {
        (0..len)
            .map(|i| {
                if is_null(i) {
                    Err(DocumentsError::NullText {
                        path: path.to_path_buf(),
                        column: column.to_string(),
                        row: first_row + i as u64,
                    })
                } else {
                    Ok(value(i).to_string())
                }
            })
            .collect()
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        take(
            a.len(),
            |i| a.is_null(i),
            |i| a.value(i),
            path,
            column,
            first_row,
        )
    } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        take(
            a.len(),
            |i| a.is_null(i),
            |i| a.value(i),
            path,
            column,
            first_row,
        )
    } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
        take(
            a.len(),
            |i| a.is_null(i),
            |i| a.value(i),
            path,
            column,
            first_row,
        )
    } else {
        Err(DocumentsError::WrongType {
            path: path.to_path_buf(),
            column: column.to_string(),
            found: array.data_type().to_string(),
        })
    }
}

impl Iterator for StringColumnBatches {
    type Item = Result<Vec<String>, DocumentsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let part = self.files.next()?;
                match self.open(part) {
                    Ok(open) => self.current = Some(open),
                    Err(e) => return Some(Err(e)),
                }
            }
            let open = self.current.as_mut().expect("opened above");
            match open.reader.next() {
                None => {
                    self.current = None;
                    continue;
                }
                Some(Err(e)) => {
                    let path = open.path.clone();
                    self.current = None;
                    return Some(Err(DocumentsError::arrow(&path, e)));
                }
                Some(Ok(batch)) => {
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    let first_row = open.row;
                    open.row += batch.num_rows() as u64;
                    let result = collect_strings(
                        batch.column(0).as_ref(),
                        &open.path,
                        &self.column,
                        first_row,
                    );
                    if result.is_err() {
                        self.current = None;
                    }
                    return Some(result);
                }
            }
        }
    }
}
