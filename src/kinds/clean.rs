//! Adapters for `cram-clean`: `filter` and `dedup`.

use std::marker::PhantomData;

use std::path::{Path, PathBuf};

use anyhow::Result;
use cram_clean::dedup_shards::{merge_dedup_shards, prepare_dedup_shards, run_dedup_shard};
use cram_clean::filter_shards::{merge_filter_shards, prepare_filter_shards, run_filter_shard};
use cram_clean::{DedupParams, DedupSummary, FilterParams};
use serde_json::{Value, json};

use super::simple::{Simple, summary_with_timings};
use crate::registry::{Artifact, InputSlot, Shards, StageContext};

static DOCUMENTS: InputSlot = InputSlot {
    role: "documents",
    accepts: &[Artifact::Documents],
    required: true,
};

/// `filter`: the reference's normalisation, then trash and length filters.
pub static FILTER: Simple<FilterParams> = Simple {
    name: "filter",
    about: "Normalises text as the reference does (quotes, NFD/NFKC, lowercase, accents, spaces) and drops trash, empty, too short or too long documents.",
    code_version: cram_clean::FILTER_CODE_VERSION,
    uses_seed: true,
    output: Artifact::Documents,
    inputs: &[
        DOCUMENTS,
        InputSlot {
            role: "tokenizer for the trash filter (optional: else one is trained on a sample)",
            accepts: &[Artifact::Tokenizer],
            required: false,
        },
    ],
    run: run_filter,
    shards: Some(&FilterShards),
    check: Some(|p| cram_clean::filter::check_params(p).map_err(|e| e.to_string())),
    params: PhantomData,
};

/// The filter's optional tokenizer input.
fn trash_tokenizer_input(ctx: &StageContext<'_>) -> Option<PathBuf> {
    ctx.inputs
        .iter()
        .find(|i| i.artifact == Artifact::Tokenizer)
        .map(|i| i.dir.join("tokenizer.json"))
}

/// `filter` in shards: contiguous ranges of the input's documents.
struct FilterShards;

impl Shards for FilterShards {
    fn prepare(&self, ctx: &StageContext<'_>, prepared: &Path) -> Result<()> {
        let p: FilterParams = ctx.typed()?;
        let docs = ctx.require_input(Artifact::Documents)?;
        let tokenizer = trash_tokenizer_input(ctx);
        prepare_filter_shards(
            &p,
            &docs.dir,
            tokenizer.as_deref(),
            ctx.seed,
            prepared,
            ctx.progress,
        )?;
        Ok(())
    }

    fn run_shard(
        &self,
        ctx: &StageContext<'_>,
        prepared: &Path,
        shard: usize,
        shards: usize,
        dir: &Path,
    ) -> Result<()> {
        let p: FilterParams = ctx.typed()?;
        let docs = ctx.require_input(Artifact::Documents)?;
        let tokenizer = trash_tokenizer_input(ctx);
        run_filter_shard(
            &p,
            &docs.dir,
            tokenizer.as_deref(),
            prepared,
            shard,
            shards,
            dir,
            ctx.progress,
        )?;
        Ok(())
    }

    fn merge(&self, ctx: &StageContext<'_>, prepared: &Path, dirs: &[PathBuf]) -> Result<Value> {
        let s = merge_filter_shards(prepared, dirs, ctx.out_dir, ctx.progress)?;
        summary_with_timings(
            &s,
            &json!({ "seconds_merge": s.seconds, "shards": dirs.len() }),
        )
    }
}

fn run_filter(ctx: &StageContext<'_>, p: &FilterParams) -> Result<Value> {
    let docs = ctx.require_input(Artifact::Documents)?;
    let tokenizer = trash_tokenizer_input(ctx);
    let s = cram_clean::run_filter(
        p,
        &docs.dir,
        tokenizer.as_deref(),
        ctx.seed,
        ctx.out_dir,
        ctx.progress,
    )?;
    summary_with_timings(&s, &json!({ "seconds": s.seconds }))
}

/// `dedup`: exact-substring deduplication with a suffix array.
pub static DEDUP: Simple<DedupParams> = Simple {
    name: "dedup",
    about: "Removes every substring of at least min_length bytes that occurs twice or more (suffix array, Lee et al. 2021), never across document boundaries.",
    code_version: cram_clean::DEDUP_CODE_VERSION,
    uses_seed: false,
    output: Artifact::Documents,
    inputs: &[DOCUMENTS],
    run: run_dedup,
    shards: Some(&DedupShards),
    check: Some(|p| cram_clean::dedup::check_params(p).map_err(|e| e.to_string())),
    params: PhantomData,
};

fn run_dedup(ctx: &StageContext<'_>, p: &DedupParams) -> Result<Value> {
    let docs = ctx.require_input(Artifact::Documents)?;
    // The pass holds its resident memory to `memory_mb`: freed suffix arrays
    // and read buffers must go back to the kernel, not stay with mimalloc.
    let _purge = cram_pretrain::alloc::ReturnFreedMemory::new();
    let s = cram_clean::run_dedup(p, &docs.dir, ctx.out_dir, ctx.progress)?;
    dedup_metrics(&s, None)
}

/// The manifest's metrics of a dedup run (`shards` where it ran in shards).
fn dedup_metrics(s: &DedupSummary, shards: Option<usize>) -> Result<Value> {
    let mut timings = json!({
        "seconds_read": s.seconds_read,
        "seconds_find": s.seconds_find,
        "seconds_write": s.seconds_write,
        "peak_rss_bytes": s.peak_rss_bytes,
        "baseline_rss_bytes": s.baseline_rss_bytes,
        "within_budget": s.within_budget,
        "page_releases": s.page_releases,
        "parts": s.parts,
        "memory_estimate_bytes": s.memory_estimate_bytes,
    });
    if let Some(n) = shards {
        timings["shards"] = n.into();
    }
    summary_with_timings(s, &timings)
}

/// `dedup` in shards: each builds the suffix arrays of a run of the parts;
/// the merge scans them all and cuts (see `cram_clean::dedup_shards`).
struct DedupShards;

impl Shards for DedupShards {
    fn prepare(&self, ctx: &StageContext<'_>, prepared: &Path) -> Result<()> {
        let p: DedupParams = ctx.typed()?;
        let docs = ctx.require_input(Artifact::Documents)?;
        prepare_dedup_shards(&p, &docs.dir, prepared, ctx.progress)?;
        Ok(())
    }

    fn run_shard(
        &self,
        ctx: &StageContext<'_>,
        prepared: &Path,
        shard: usize,
        shards: usize,
        dir: &Path,
    ) -> Result<()> {
        let p: DedupParams = ctx.typed()?;
        let _purge = cram_pretrain::alloc::ReturnFreedMemory::new();
        run_dedup_shard(&p, prepared, shard, shards, dir, ctx.progress)?;
        Ok(())
    }

    fn merge(&self, ctx: &StageContext<'_>, prepared: &Path, dirs: &[PathBuf]) -> Result<Value> {
        let p: DedupParams = ctx.typed()?;
        let _purge = cram_pretrain::alloc::ReturnFreedMemory::new();
        let s = merge_dedup_shards(&p, prepared, dirs, ctx.out_dir, ctx.progress)?;
        dedup_metrics(&s, Some(dirs.len()))
    }
}
