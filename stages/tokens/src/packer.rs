//! The two halves of `pack`, shared by the one-pass run and the sharded one
//! ([`crate::pack_shards`]):
//!
//! * [`Encoder`]: the tokenizer set up for packing, which turns batches of
//!   documents into id lists (each ending in `[SEP]`), and [`encode_stream`],
//!   which feeds it from a document reader on its own thread.
//! * [`Packer`]: takes the encoded documents in document order, sets the
//!   held-out ones aside, cuts the rest into rows and orders them into the
//!   Parquet shards.
//!
//! The packer sees only documents and their indices, so encoding them in one
//! pass or in shards merged in order gives the same rows, byte for byte.

use std::path::Path;
use std::sync::mpsc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use crate::fast::FastWordPiece;
use crate::heldout::{Heldout, HeldoutPicker};
use crate::pack::{PackError, PackParams, RowOrdering, encode_documents, io};
use crate::row_order::{ShuffleContext, Sink, Spill, SpillReader, drain_shuffled};
use crate::sequences::{IdType, ShardWriter};
use crate::tokenizer::{SpecialIds, TokenizerError, load_tokenizer, special_ids};

/// The tokenizer of a pack run and what follows from it.
pub(crate) struct Encoder {
    pub(crate) tokenizer: Tokenizer,
    pub(crate) ids: SpecialIds,
    pub(crate) vocab_size: usize,
    /// Column type of the stored ids.
    pub(crate) dtype: IdType,
    /// Id of the `"."` token the curriculum counts, if the vocabulary has one.
    pub(crate) period: Option<u32>,
    /// The hand-written WordPiece encoder, when it applies and is wanted.
    pub(crate) fast: Option<FastWordPiece>,
}

impl Encoder {
    /// Loads the tokenizer at `path` with padding and truncation off.
    pub(crate) fn load(params: &PackParams, path: &Path) -> Result<Encoder, PackError> {
        let wrap = |source| PackError::Tokenizer {
            path: path.to_path_buf(),
            source,
        };
        let mut tokenizer = load_tokenizer(path).map_err(wrap)?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| {
            wrap(TokenizerError::Library {
                context: "disabling truncation".into(),
                message: e.to_string(),
            })
        })?;
        let ids = special_ids(&tokenizer).map_err(wrap)?;
        let vocab_size = tokenizer.get_vocab_size(true);
        let period = tokenizer
            .encode_fast(".", false)
            .ok()
            .and_then(|e| e.get_ids().first().copied())
            .filter(|&id| id != ids.unk);
        let fast = if params.fast_wordpiece {
            FastWordPiece::new(&tokenizer)
        } else {
            None
        };
        Ok(Encoder {
            tokenizer,
            ids,
            vocab_size,
            dtype: IdType::for_vocab(vocab_size),
            period,
            fast,
        })
    }

    /// Encodes `texts` (the first has index `first`): the id lists, each
    /// ending in `[SEP]`, and the count of `[UNK]`.
    pub(crate) fn encode(
        &self,
        texts: &[String],
        first: u64,
    ) -> Result<(Vec<Vec<u32>>, u64), PackError> {
        encode_documents(
            &self.tokenizer,
            self.fast.as_ref(),
            texts,
            self.ids.sep,
            self.ids.unk,
            self.dtype.max_id(),
            first,
        )
        .map_err(|e| match e {
            PackError::IdOverflow { document, id, .. } => PackError::IdOverflow {
                document,
                id,
                dtype: self.dtype,
                vocab_size: self.vocab_size,
            },
            other => other,
        })
    }
}

/// Reads `batches` on a thread of its own while the rayon pool encodes the
/// previous batch, and hands each batch's texts and ids to `each` (its
/// first document has index `first` + the documents before it). Stops when
/// `each` returns `false`.
pub(crate) fn encode_stream<I>(
    encoder: &Encoder,
    batches: I,
    first: u64,
    mut each: impl FnMut(u64, &[String], Vec<Vec<u32>>, u64) -> Result<bool, PackError>,
) -> Result<(), PackError>
where
    I: Iterator<Item = Result<Vec<String>, cram_data::documents::DocumentsError>> + Send,
{
    std::thread::scope(|scope| -> Result<(), PackError> {
        let (tx, rx) = mpsc::sync_channel(2);
        let reader = scope.spawn(move || {
            for batch in batches {
                let stop = batch.is_err();
                if tx.send(batch).is_err() || stop {
                    break;
                }
            }
        });
        let result = (|| {
            let mut next = first;
            for batch in rx.iter() {
                let batch = batch?;
                let (encoded, unks) = encoder.encode(&batch, next)?;
                let index = next;
                next += batch.len() as u64;
                if !each(index, &batch, encoded, unks)? {
                    break;
                }
            }
            Ok(())
        })();
        drop(rx);
        reader.join().expect("the document reader thread panicked");
        result
    })
}

/// Cuts encoded documents into rows, in document order, and orders them
/// into the shards of `out_dir`.
pub(crate) struct Packer {
    scratch: tempfile::TempDir,
    writer: ShardWriter,
    heldout: HeldoutPicker,
    sink: Sink,
    rng: ChaCha8Rng,
    pending: Vec<u32>,
    seq_length: usize,
    dtype: IdType,
    limit: u64,
    shuffle_memory_bytes: u64,
    /// Tokens of the documents taken (without their `[SEP]`).
    pub(crate) tokens: u64,
    /// Rows formed so far.
    pub(crate) rows_formed: u64,
}

/// What a [`Packer`] wrote.
pub(crate) struct Packed {
    /// Shard file names, in row order.
    pub(crate) shards: Vec<String>,
    pub(crate) heldout: Heldout,
    /// Tokens left over after the last full row.
    pub(crate) dropped_tokens: u64,
    pub(crate) tokens: u64,
    pub(crate) rows_formed: u64,
}

impl Packer {
    /// A packer for a corpus of `documents` documents and at most
    /// `text_bound` bytes of text (which size the held-out share and the
    /// shuffle buckets).
    pub(crate) fn new(
        params: &PackParams,
        encoder: &Encoder,
        seed: u64,
        out_dir: &Path,
        documents: u64,
        text_bound: u64,
    ) -> Result<Packer, PackError> {
        let (seq_length, dtype) = (params.seq_length, encoder.dtype);
        let scratch = tempfile::Builder::new()
            .prefix(".pack-scratch-")
            .tempdir_in(out_dir)
            .map_err(io(out_dir))?;
        let writer = ShardWriter::new(out_dir, seq_length, dtype, params.shard_bytes);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7061_636b);
        // About 4 bytes of text per token: the rows the corpus will give, to
        // size the held-out share.
        let estimated_rows = text_bound / (4 * seq_length as u64);
        let heldout = HeldoutPicker::new(
            out_dir,
            params.heldout_rows,
            estimated_rows,
            seq_length,
            dtype,
            seed,
        )?;
        let sink = match params.ordering {
            RowOrdering::None => Sink::Direct,
            RowOrdering::Randomized => {
                // Tokens are at most bytes + documents (every token but
                // [SEP] covers at least one byte of text).
                let bound = (text_bound + documents) * dtype.width() as u64;
                let count = bound.div_ceil(params.shuffle_memory_bytes).clamp(1, 4096) as usize;
                Sink::Buckets {
                    spill: Spill::new(scratch.path(), "bucket", count, dtype)?,
                    rng: Box::new(ChaCha8Rng::seed_from_u64(rng.random())),
                }
            }
            RowOrdering::SentenceLengthCurriculum => Sink::Curriculum {
                spill: Spill::new(scratch.path(), "dots", seq_length + 1, dtype)?,
                period: encoder.period,
            },
        };
        Ok(Packer {
            scratch,
            writer,
            heldout,
            sink,
            rng,
            pending: Vec::with_capacity(seq_length * 4),
            seq_length,
            dtype,
            limit: params.max_sequences.unwrap_or(u64::MAX),
            shuffle_memory_bytes: params.shuffle_memory_bytes,
            tokens: 0,
            rows_formed: 0,
        })
    }

    /// Takes document `index` (its ids, ending in `[SEP]`); returns `false`
    /// once no more rows are wanted.
    pub(crate) fn push(&mut self, index: u64, doc: &[u32]) -> Result<bool, PackError> {
        self.tokens += doc.len() as u64 - 1;
        if self.heldout.takes(index) {
            self.heldout.push(doc)?;
            return Ok(true);
        }
        self.pending.extend_from_slice(doc);
        let full = self.pending.len() / self.seq_length * self.seq_length;
        let mut more = true;
        for row in self.pending[..full].chunks_exact(self.seq_length) {
            self.rows_formed += 1;
            more = self.sink.push(row, &mut self.writer, self.limit)?;
            if !more {
                break;
            }
        }
        self.pending.drain(..full);
        Ok(more)
    }

    /// Orders the rows into the shards and closes them.
    pub(crate) fn finish(self) -> Result<Packed, PackError> {
        let Packer {
            scratch,
            mut writer,
            heldout,
            sink,
            mut rng,
            pending,
            seq_length,
            dtype,
            limit,
            shuffle_memory_bytes,
            tokens,
            rows_formed,
        } = self;
        match sink {
            Sink::Direct => {}
            Sink::Buckets { spill, .. } => {
                let mut ctx = ShuffleContext {
                    dir: scratch.path(),
                    dtype,
                    seq_length,
                    budget: shuffle_memory_bytes,
                    limit,
                    rng: ChaCha8Rng::seed_from_u64(rng.random()),
                    splits: 0,
                };
                for (path, rows) in spill.finish()? {
                    if !drain_shuffled(&path, rows, &mut ctx, &mut writer, 0)? {
                        break;
                    }
                }
            }
            Sink::Curriculum { spill, .. } => {
                'outer: for (path, _) in spill.finish()?.iter().rev() {
                    let mut reader = SpillReader::open(path, dtype, seq_length)?;
                    while let Some(row) = reader.next_row()? {
                        if writer.rows() >= limit {
                            break 'outer;
                        }
                        writer.push(row)?;
                    }
                }
            }
        }
        let shards = writer.finish()?;
        let heldout = heldout.finish()?;
        drop(scratch);
        Ok(Packed {
            shards,
            heldout,
            dropped_tokens: pending.len() as u64,
            tokens,
            rows_formed,
        })
    }
}
