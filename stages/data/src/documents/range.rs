//! A contiguous range of a documents directory's documents, for stages that
//! run in shards: only the row groups that hold the range are decoded, so
//! each of N shards reads about 1/N of the corpus (not everything before
//! its range as well).

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};

use super::{
    BATCH_DOCUMENTS, DocumentBatches, DocumentsError, FilePart, FileSlice, StringColumnBatches,
    TEXT_COLUMN, list_shards,
};

/// The documents shard `shard` of `shards` covers, of `documents` in all:
/// contiguous ranges in document order that together cover every document
/// once (the last shards may be empty when there are fewer documents than
/// shards).
pub fn shard_range(documents: u64, shard: usize, shards: usize) -> Range<u64> {
    let (s, n) = (shard as u64, shards.max(1) as u64);
    (documents * s / n)..(documents * (s + 1) / n)
}

/// Streams the documents with indices in `range` (0-based, in directory
/// order) in batches of about [`BATCH_DOCUMENTS`], decoding only the row
/// groups that hold them. A range past the end stops at the last document.
pub fn read_document_range(
    dir: &Path,
    range: Range<u64>,
) -> Result<DocumentBatches, DocumentsError> {
    let mut parts = Vec::new();
    let mut offset = 0u64;
    for path in list_shards(dir)? {
        if offset >= range.end {
            break;
        }
        let file = File::open(&path).map_err(|e| DocumentsError::io(&path, e))?;
        let reader =
            SerializedFileReader::new(file).map_err(|e| DocumentsError::parquet(&path, e))?;
        let meta = reader.metadata();
        let rows = meta.file_metadata().num_rows() as u64;
        let (lo, hi) = (range.start.max(offset), range.end.min(offset + rows));
        if lo < hi {
            let (lo, hi) = (lo - offset, hi - offset);
            let (mut row_groups, mut first_row, mut start) = (Vec::new(), None, 0u64);
            for (i, group) in meta.row_groups().iter().enumerate() {
                let n = group.num_rows() as u64;
                if start < hi && start + n > lo {
                    first_row.get_or_insert(start);
                    row_groups.push(i);
                }
                start += n;
            }
            let first_row = first_row.unwrap_or(0);
            parts.push(FilePart {
                path,
                slice: Some(FileSlice {
                    row_groups,
                    first_row,
                    skip: lo - first_row,
                    take: hi - lo,
                }),
            });
        }
        offset += rows;
    }
    Ok(StringColumnBatches::from_parts(
        parts,
        TEXT_COLUMN,
        BATCH_DOCUMENTS,
    ))
}
