//! The order in which training reads the packed rows, pass after pass.
//!
//! Training reads one endless stream of rows, as the reference does when it keeps training over
//! the data until the budget is spent: position `p` of the stream is row `order(p / N)[p % N]`
//! of the `N` packed rows. Micro-batches are cut from the stream, so one may hold the last rows
//! of a pass and the first of the next; no row is skipped at a pass boundary.
//!
//! * Pass 0 reads the rows in the packed order, which the `pack` stage chose (a seeded shuffle,
//!   or the sentence-length curriculum, which only means something on the first pass).
//! * Pass `k >= 1` reads a seeded reshuffle of them, derived from the pipeline seed and `k`.
//!   The packed rows of a real recipe are gigabytes, so a pass is shuffled in bounded memory:
//!   the Parquet row groups (the unit a reader can fetch on its own) are put in a random order,
//!   consecutive groups of that order are gathered into *windows* of about [`WINDOW_TOKENS`]
//!   tokens, and the rows of each window are permuted in memory. A corpus that fits in one
//!   window (the enwiki sample, any test corpus) therefore gets a uniform permutation each pass;
//!   a larger one gets every row group in a new place and every micro-batch a new mix of rows.
//!
//! Everything here is a pure function of `(seed, pass, the shards' row-group layout)`: a
//! resumed run regenerates the order of its pass and skips to its position.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Tokens of packed rows mixed in memory at once in a reshuffled pass (64 MiB as `u32`).
pub const WINDOW_TOKENS: u64 = 1 << 24;

/// A run of consecutive packed rows that can be read on its own: one row group of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Index of the shard in the packed order.
    pub shard: usize,
    /// Row group within the shard.
    pub row_group: usize,
    /// Global index of its first row.
    pub first_row: u64,
    /// Rows in it.
    pub rows: u64,
}

/// The blocks of a reshuffled pass whose rows are permuted together, and that permutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Indices into the block list, in the order their rows are gathered.
    pub blocks: Vec<usize>,
    /// Rows in those blocks.
    pub rows: u64,
}

/// The seed of pass `pass`'s order, derived from the pipeline seed (splitmix64, so consecutive
/// passes get unrelated streams).
pub fn pass_seed(seed: u64, pass: u64) -> u64 {
    let mut z = (seed ^ 0x7061_7373_6f72_6465) // "passorde"
        .wrapping_add(pass.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The windows of reshuffled pass `pass >= 1` over `blocks`, for rows of `seq_len` tokens.
pub fn windows(blocks: &[Block], seq_len: usize, seed: u64, pass: u64) -> Vec<Window> {
    debug_assert!(pass >= 1, "pass 0 reads the packed order");
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(pass_seed(seed, pass));
    order.shuffle(&mut rng);
    let limit = (WINDOW_TOKENS / seq_len.max(1) as u64).max(1);
    let mut out: Vec<Window> = Vec::new();
    let mut current = Window {
        blocks: Vec::new(),
        rows: 0,
    };
    for b in order {
        if current.rows > 0 && current.rows + blocks[b].rows > limit {
            out.push(std::mem::replace(
                &mut current,
                Window {
                    blocks: Vec::new(),
                    rows: 0,
                },
            ));
        }
        current.rows += blocks[b].rows;
        current.blocks.push(b);
    }
    if current.rows > 0 {
        out.push(current);
    }
    out
}

/// The order in which window `index` of pass `pass` emits its gathered rows: a seeded
/// permutation of `0..rows`.
pub fn window_permutation(rows: u64, seed: u64, pass: u64, index: usize) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..rows as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(pass_seed(seed, pass));
    rng.set_stream(index as u64 + 1);
    perm.shuffle(&mut rng);
    perm
}

/// The global row indices of pass `pass` in the order training reads them (for tests and
/// inspection; the reader streams the same order without materialising it).
pub fn pass_order(blocks: &[Block], seq_len: usize, seed: u64, pass: u64) -> Vec<u64> {
    if pass == 0 {
        let total: u64 = blocks.iter().map(|b| b.rows).sum();
        return (0..total).collect();
    }
    let mut out = Vec::new();
    for (i, w) in windows(blocks, seq_len, seed, pass).iter().enumerate() {
        let gathered: Vec<u64> = w
            .blocks
            .iter()
            .flat_map(|&b| blocks[b].first_row..blocks[b].first_row + blocks[b].rows)
            .collect();
        out.extend(
            window_permutation(w.rows, seed, pass, i)
                .into_iter()
                .map(|r| gathered[r as usize]),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(groups: &[u64]) -> Vec<Block> {
        let mut first = 0;
        groups
            .iter()
            .enumerate()
            .map(|(i, &rows)| {
                let b = Block {
                    shard: i / 2,
                    row_group: i % 2,
                    first_row: first,
                    rows,
                };
                first += rows;
                b
            })
            .collect()
    }

    fn is_permutation(order: &[u64], n: u64) -> bool {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        sorted == (0..n).collect::<Vec<_>>()
    }

    #[test]
    fn every_pass_is_a_permutation_and_passes_differ() {
        let blocks = layout(&[100, 37, 100, 5]);
        let orders: Vec<Vec<u64>> = (0..4).map(|k| pass_order(&blocks, 128, 7, k)).collect();
        assert_eq!(
            orders[0],
            (0..242).collect::<Vec<_>>(),
            "pass 0 is the packed order"
        );
        for o in &orders {
            assert!(is_permutation(o, 242));
        }
        for a in 0..4 {
            for b in a + 1..4 {
                assert_ne!(orders[a], orders[b], "passes {a} and {b}");
            }
        }
        // A small corpus is one window: rows of different row groups mix.
        assert_eq!(windows(&blocks, 128, 7, 1).len(), 1);
        // The same seed gives the same order, another seed another.
        assert_eq!(orders[2], pass_order(&blocks, 128, 7, 2));
        assert_ne!(orders[2], pass_order(&blocks, 128, 8, 2));
    }

    #[test]
    fn a_large_corpus_is_shuffled_in_bounded_windows() {
        // 64 row groups of 64Ki rows of 128 tokens: 512 Mi tokens, 32 windows of 2 groups.
        let blocks = layout(&[65536; 64]);
        let w = windows(&blocks, 128, 0, 1);
        assert!(w.iter().all(|w| w.rows * 128 <= WINDOW_TOKENS));
        assert_eq!(w.iter().map(|w| w.rows).sum::<u64>(), 64 * 65536);
        assert_eq!(w.len(), 32);
        let visited: Vec<usize> = w.iter().flat_map(|w| w.blocks.clone()).collect();
        assert_ne!(visited, (0..64).collect::<Vec<_>>(), "row groups reordered");
        // A row group larger than a window is a window of its own.
        let big = layout(&[1 << 20, 10]);
        assert_eq!(windows(&big, 128, 0, 1).len(), 2);
    }
}
