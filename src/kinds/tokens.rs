//! Adapters for `cram-tokens`: `tokenizer` and `pack`.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use anyhow::Result;
use cram_tokens::pack_shards::{
    merge_pack_shards, pack_splits, prepare_pack_shards, run_pack_shard,
};
use cram_tokens::{PackParams, TokenizerParams};
use serde_json::{Value, json};

use super::simple::{Simple, summary_with_timings};
use crate::registry::{Artifact, InputSlot, Shards, StageContext};

/// `tokenizer`: trains a WordPiece, BPE or Unigram vocabulary.
pub static TOKENIZER: Simple<TokenizerParams> = Simple {
    name: "tokenizer",
    about: "Trains a WordPiece (default), BPE or Unigram tokenizer from scratch; writes a Hugging Face tokenizer.json with [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.",
    code_version: cram_tokens::tokenizer::CODE_VERSION,
    uses_seed: true,
    output: Artifact::Tokenizer,
    inputs: &[InputSlot {
        role: "documents",
        accepts: &[Artifact::Documents],
        required: true,
    }],
    run: run_tokenizer,
    shards: None,
    check: Some(|p| cram_tokens::tokenizer::check_params(p).map_err(|e| e.to_string())),
    params: PhantomData,
};

fn run_tokenizer(ctx: &StageContext<'_>, p: &TokenizerParams) -> Result<Value> {
    let docs = ctx.require_input(Artifact::Documents)?;
    let s = cram_tokens::run_tokenizer(p, &docs.dir, ctx.seed, ctx.out_dir, ctx.progress)?;
    summary_with_timings(&s, &s.timings)
}

/// `pack`: documents → fixed-length token rows in Parquet.
pub static PACK: Simple<PackParams> = Simple {
    name: "pack",
    about: "Tokenizes documents, appends [SEP] to each, concatenates and cuts rows of seq_length tokens into Parquet shards (recipes call this stage `tokenize`).",
    code_version: cram_tokens::pack::CODE_VERSION,
    uses_seed: true,
    output: Artifact::Sequences,
    inputs: &[
        InputSlot {
            role: "documents",
            accepts: &[Artifact::Documents],
            required: true,
        },
        InputSlot {
            role: "tokenizer",
            accepts: &[Artifact::Tokenizer],
            required: true,
        },
    ],
    run: run_pack,
    shards: Some(&PackShards),
    check: Some(|p| cram_tokens::pack::check_params(p).map_err(|e| e.to_string())),
    params: PhantomData,
};

fn run_pack(ctx: &StageContext<'_>, p: &PackParams) -> Result<Value> {
    let docs = ctx.require_input(Artifact::Documents)?;
    let tok = ctx.require_input(Artifact::Tokenizer)?;
    let s = cram_tokens::run_pack(
        p,
        &docs.dir,
        &tok.dir.join("tokenizer.json"),
        ctx.seed,
        ctx.out_dir,
        ctx.progress,
    )?;
    summary_with_timings(
        &s,
        &json!({ "seconds": s.seconds, "mb_per_second": s.mb_per_second }),
    )
}

/// The documents directory and `tokenizer.json` a `pack` stage reads.
fn pack_inputs(ctx: &StageContext<'_>) -> Result<(PathBuf, PathBuf)> {
    let docs = ctx.require_input(Artifact::Documents)?;
    let tok = ctx.require_input(Artifact::Tokenizer)?;
    Ok((docs.dir.clone(), tok.dir.join("tokenizer.json")))
}

/// `pack` in shards: each encodes a contiguous range of the documents; the
/// merge packs and orders them (see `cram_tokens::pack_shards`).
struct PackShards;

impl Shards for PackShards {
    fn splits(&self, ctx: &StageContext<'_>) -> Result<bool> {
        Ok(pack_splits(&ctx.typed::<PackParams>()?))
    }

    fn prepare(&self, ctx: &StageContext<'_>, prepared: &Path) -> Result<()> {
        let (docs, tok) = pack_inputs(ctx)?;
        prepare_pack_shards(&ctx.typed()?, &docs, &tok, prepared)?;
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
        let (docs, tok) = pack_inputs(ctx)?;
        let p: PackParams = ctx.typed()?;
        run_pack_shard(&p, &docs, &tok, prepared, shard, shards, dir, ctx.progress)?;
        Ok(())
    }

    fn merge(&self, ctx: &StageContext<'_>, prepared: &Path, dirs: &[PathBuf]) -> Result<Value> {
        let (docs, tok) = pack_inputs(ctx)?;
        let p: PackParams = ctx.typed()?;
        let s = merge_pack_shards(
            &p,
            &docs,
            &tok,
            ctx.seed,
            prepared,
            dirs,
            ctx.out_dir,
            ctx.progress,
        )?;
        summary_with_timings(
            &s,
            &json!({
                "seconds_merge": s.seconds,
                "shards": dirs.len(),
                "mb_per_second": s.mb_per_second,
            }),
        )
    }
}
