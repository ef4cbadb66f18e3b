//! The held-out rows of the `pack` kind: whole documents set aside before
//! packing, packed into rows of their own (`heldout/part-*.parquet`), so
//! that pretraining can measure its loss on text it never trains on.
//!
//! A document is held out when a seeded hash of its index falls under a
//! rate chosen so that the wanted rows fill up within about the first third
//! of the corpus; once they are full, every later document trains. Whole
//! documents (not rows) are held out, so no text is shared between the two
//! sets.

use std::path::{Path, PathBuf};

use crate::pack::PackError;
use crate::sequences::{IdType, ShardWriter};

/// The subdirectory of a sequences directory that holds the held-out rows.
pub const HELDOUT_DIR: &str = "heldout";

/// At most this fraction of the estimated rows is held out.
const MAX_FRACTION: u64 = 20;

/// Picks and packs the held-out documents.
pub struct HeldoutPicker {
    dir: PathBuf,
    writer: ShardWriter,
    seq_length: usize,
    target: u64,
    threshold: u64,
    seed: u64,
    pending: Vec<u32>,
    documents: u64,
    tokens: u64,
}

/// What was held out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heldout {
    /// Rows written to `heldout/`.
    pub rows: u64,
    /// Documents they were packed from.
    pub documents: u64,
    /// Tokens of those documents (with their `[SEP]`s).
    pub tokens: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: a fixed, well-spread hash of the index.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl HeldoutPicker {
    /// A picker that wants `rows` rows (at most a twentieth of
    /// `estimated_rows`, the corpus's rows as estimated from its size),
    /// writing into `out_dir/heldout/`.
    pub fn new(
        out_dir: &Path,
        rows: u64,
        estimated_rows: u64,
        seq_length: usize,
        dtype: IdType,
        seed: u64,
    ) -> Result<HeldoutPicker, PackError> {
        let dir = out_dir.join(HELDOUT_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| PackError::Io {
            path: dir.clone(),
            source,
        })?;
        let target = rows.min(estimated_rows / MAX_FRACTION);
        // Three times the needed share of documents: full within about the
        // first third of the corpus, even if the estimate is high.
        let rate = if estimated_rows == 0 {
            0.0
        } else {
            (3.0 * target as f64 / estimated_rows as f64).min(1.0)
        };
        Ok(HeldoutPicker {
            writer: ShardWriter::new(&dir, seq_length, dtype, u64::MAX),
            dir,
            seq_length,
            target,
            threshold: (rate * u64::MAX as f64) as u64,
            seed: mix(seed ^ 0x0068_656c_646f_7574),
            pending: Vec::new(),
            documents: 0,
            tokens: 0,
        })
    }

    /// Whether document `index` (in corpus order) is held out.
    pub fn takes(&self, index: u64) -> bool {
        self.writer.rows() < self.target && mix(self.seed ^ index) < self.threshold
    }

    /// Packs a held-out document (its ids with the trailing `[SEP]`).
    pub fn push(&mut self, document: &[u32]) -> Result<(), PackError> {
        self.documents += 1;
        self.tokens += document.len() as u64;
        self.pending.extend_from_slice(document);
        let s = self.seq_length;
        let full = self.pending.len() / s * s;
        for row in self.pending[..full].chunks_exact(s) {
            if self.writer.rows() < self.target {
                self.writer.push(row)?;
            }
        }
        self.pending.drain(..full);
        Ok(())
    }

    /// Closes the held-out shard; a picker that held nothing out leaves no
    /// directory behind.
    pub fn finish(self) -> Result<Heldout, PackError> {
        let rows = self.writer.rows();
        if rows == 0 {
            drop(self.writer);
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            self.writer.finish()?;
        }
        Ok(Heldout {
            rows,
            documents: self.documents,
            tokens: self.tokens,
        })
    }
}
