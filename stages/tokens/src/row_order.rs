//! How `pack` orders its rows with memory bounded independently of the
//! corpus (see [`crate::pack`] for the orderings): temporary spill files of
//! raw little-endian ids, the per-ordering sink the rows go to, and the
//! bucketed shuffle that drains them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::pack::{PackError, io};
use crate::sequences::{IdType, ShardWriter};

/// Temporary files of raw little-endian ids, one row after another.
pub(crate) struct Spill {
    dtype: IdType,
    files: Vec<(PathBuf, BufWriter<File>, u64)>,
    bytes: Vec<u8>,
}

impl Spill {
    pub(crate) fn new(
        dir: &Path,
        prefix: &str,
        count: usize,
        dtype: IdType,
    ) -> Result<Spill, PackError> {
        let mut files = Vec::with_capacity(count);
        for i in 0..count {
            let path = dir.join(format!("{prefix}-{i:05}.bin"));
            let file = File::create(&path).map_err(io(&path))?;
            files.push((path, BufWriter::with_capacity(1 << 16, file), 0));
        }
        Ok(Spill {
            dtype,
            files,
            bytes: Vec::new(),
        })
    }

    fn push(&mut self, bucket: usize, row: &[u32]) -> Result<(), PackError> {
        self.bytes.clear();
        match self.dtype {
            IdType::U16 => row
                .iter()
                .for_each(|&v| self.bytes.extend_from_slice(&(v as u16).to_le_bytes())),
            IdType::U32 => row
                .iter()
                .for_each(|&v| self.bytes.extend_from_slice(&v.to_le_bytes())),
        }
        let (path, file, rows) = &mut self.files[bucket];
        file.write_all(&self.bytes).map_err(io(path))?;
        *rows += 1;
        Ok(())
    }

    /// Flushes and closes the files; returns (path, rows) per bucket.
    pub(crate) fn finish(self) -> Result<Vec<(PathBuf, u64)>, PackError> {
        self.files
            .into_iter()
            .map(|(path, mut file, rows)| {
                file.flush().map_err(io(&path))?;
                Ok((path, rows))
            })
            .collect()
    }
}

/// Reads rows back from a spill file, in order.
pub(crate) struct SpillReader {
    path: PathBuf,
    reader: BufReader<File>,
    dtype: IdType,
    seq_length: usize,
    bytes: Vec<u8>,
    row: Vec<u32>,
}

impl SpillReader {
    pub(crate) fn open(
        path: &Path,
        dtype: IdType,
        seq_length: usize,
    ) -> Result<SpillReader, PackError> {
        let file = File::open(path).map_err(io(path))?;
        Ok(SpillReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            dtype,
            seq_length,
            bytes: vec![0; seq_length * dtype.width()],
            row: vec![0; seq_length],
        })
    }

    /// The next row, or `None` at the end of the file.
    pub(crate) fn next_row(&mut self) -> Result<Option<&[u32]>, PackError> {
        match self.reader.read_exact(&mut self.bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => {
                return Err(PackError::Io {
                    path: self.path.clone(),
                    source: e,
                });
            }
        }
        match self.dtype {
            IdType::U16 => {
                for (dst, src) in self.row.iter_mut().zip(self.bytes.chunks_exact(2)) {
                    *dst = u16::from_le_bytes([src[0], src[1]]) as u32;
                }
            }
            IdType::U32 => {
                for (dst, src) in self.row.iter_mut().zip(self.bytes.chunks_exact(4)) {
                    *dst = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                }
            }
        }
        debug_assert_eq!(self.row.len(), self.seq_length);
        Ok(Some(&self.row))
    }
}

/// Where finished rows go, per ordering.
pub(crate) enum Sink {
    /// `none`: straight to the shards.
    Direct,
    /// `randomized`: rows to seeded random bucket files.
    Buckets { spill: Spill, rng: Box<ChaCha8Rng> },
    /// `sentence-length-curriculum`: rows to one file per count of `"."`.
    Curriculum { spill: Spill, period: Option<u32> },
}

impl Sink {
    /// Takes one row; returns `false` once no more rows are wanted.
    pub(crate) fn push(
        &mut self,
        row: &[u32],
        writer: &mut ShardWriter,
        limit: u64,
    ) -> Result<bool, PackError> {
        match self {
            Sink::Direct => {
                if writer.rows() < limit {
                    writer.push(row)?;
                }
                Ok(writer.rows() < limit)
            }
            Sink::Buckets { spill, rng } => {
                let bucket = rng.random_range(0..spill.files.len());
                spill.push(bucket, row)?;
                Ok(true)
            }
            Sink::Curriculum { spill, period } => {
                let count = period.map_or(0, |p| row.iter().filter(|&&id| id == p).count());
                spill.push(count, row)?;
                Ok(true)
            }
        }
    }
}

/// Shuffles one bucket file into the writer (splitting it again if it is
/// over the memory budget). Returns `false` once the writer has `limit` rows.
pub(crate) fn drain_shuffled(
    path: &Path,
    rows: u64,
    ctx: &mut ShuffleContext<'_>,
    writer: &mut ShardWriter,
    depth: u32,
) -> Result<bool, PackError> {
    let row_bytes = (ctx.seq_length * ctx.dtype.width()) as u64;
    if rows * row_bytes > ctx.budget && rows > 1 && depth < 8 {
        let parts = (rows * row_bytes).div_ceil(ctx.budget).max(2) as usize;
        let mut spill = Spill::new(
            ctx.dir,
            &format!("split{depth}-{}", ctx.splits),
            parts,
            ctx.dtype,
        )?;
        ctx.splits += 1;
        let mut reader = SpillReader::open(path, ctx.dtype, ctx.seq_length)?;
        while let Some(row) = reader.next_row()? {
            let bucket = ctx.rng.random_range(0..parts);
            spill.push(bucket, row)?;
        }
        drop(reader);
        std::fs::remove_file(path).map_err(io(path))?;
        for (part, part_rows) in spill.finish()? {
            if !drain_shuffled(&part, part_rows, ctx, writer, depth + 1)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let mut reader = SpillReader::open(path, ctx.dtype, ctx.seq_length)?;
    let mut all: Vec<u32> = Vec::with_capacity(rows as usize * ctx.seq_length);
    while let Some(row) = reader.next_row()? {
        all.extend_from_slice(row);
    }
    drop(reader);
    std::fs::remove_file(path).map_err(io(path))?;
    let mut order: Vec<u32> = (0..(all.len() / ctx.seq_length) as u32).collect();
    order.shuffle(&mut ctx.rng);
    for i in order {
        if writer.rows() >= ctx.limit {
            return Ok(false);
        }
        let start = i as usize * ctx.seq_length;
        writer.push(&all[start..start + ctx.seq_length])?;
    }
    Ok(writer.rows() < ctx.limit)
}

/// What the bucketed shuffle needs while it drains buckets.
pub(crate) struct ShuffleContext<'a> {
    /// Where split buckets are written.
    pub(crate) dir: &'a Path,
    pub(crate) dtype: IdType,
    pub(crate) seq_length: usize,
    /// Bytes of packed ids one bucket may hold in memory.
    pub(crate) budget: u64,
    /// Rows wanted in all.
    pub(crate) limit: u64,
    pub(crate) rng: ChaCha8Rng,
    /// Splits made so far (names their files apart).
    pub(crate) splits: usize,
}
