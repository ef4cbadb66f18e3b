//! Command-line definitions (clap). Parsing only: [`crate::commands`] does
//! the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// cram: pretrain a BERT-style model from scratch on a fixed compute budget
/// and score it on GLUE, as a cached pipeline of stages.
///
/// A pipeline file (TOML, under pipelines/) declares stages: download,
/// filter, dedup, tokenizer, pack, pretrain, glue, report. Every stage's
/// output is cached by the hash of its kind, code version, parameters and
/// inputs, so `cram run` only reruns what changed.
///
/// Start with: cram run pipelines/sanity.toml
#[derive(Debug, Parser)]
#[command(name = "cram", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// Where the cache lives [default: $CRAM_CACHE, else ./cache].
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// The shared cache to pull stages from and push them to: s3://BUCKET/PREFIX,
    /// gs://..., az://..., file:///PATH or a directory [default: $CRAM_REMOTE,
    /// else the pipeline file's `remote`; `none` turns it off].
    #[arg(long, global = true, value_name = "URL")]
    pub remote: Option<String>,

    /// Print less: errors and the final summary only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more: why each stage runs, and periodic progress lines.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options that pick a pipeline and override its parameters.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The pipeline file, e.g. pipelines/sanity.toml.
    pub file: PathBuf,

    /// Override a parameter for this invocation: STAGE.KEY=VALUE (e.g.
    /// pretrain.lr=1e-4, pretrain.model.num_layers=4, corpus.source=hf://...).
    /// VALUE is read as TOML (numbers, booleans, "strings", [arrays]); bare
    /// text is a string. Type-checked like the file. Repeatable.
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    pub set: Vec<String>,
}

/// The options of `cram run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Run only STAGE and the stages it depends on.
    #[arg(long, value_name = "STAGE")]
    pub until: Option<String>,
    /// Rerun STAGE even if it is cached (repeatable). Its descendants
    /// rerun only if its output changes.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Print what would run and why, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How many independent stages may run at once [default: the
    /// number of cores]. They share one pool of CPU threads (as many as
    /// cores, or RAYON_NUM_THREADS), so more jobs never means more
    /// threads; a pretrain stage runs alone, as its wall clock is the
    /// budget.
    #[arg(short = 'j', long, default_value_t = crate::exec::default_jobs(), hide_default_value = true, value_name = "N")]
    pub jobs: usize,
    /// Hold the run to FILE.lock, as `cargo --locked`: fail, naming the
    /// stage and both hashes, where a stage's key or output differs from
    /// the lock's; the lock file is left as it is.
    #[arg(long)]
    pub locked: bool,
    /// Push every stage's entry to the shared cache once it is built or
    /// found (see --remote).
    #[arg(long)]
    pub push: bool,
    /// Where stale stages are built: here (local), or as Slurm array jobs
    /// (slurm; settings in the file's [slurm] table, the cache on a
    /// filesystem every node shares) [default: the file's `executor`,
    /// else local].
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<ExecutorName>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the stages that are stale, in dependency order.
    ///
    /// A stage is stale when its kind, code version, parameters, seed (if it
    /// uses one), source or any input's content changed since it was cached.
    /// Results are recorded in FILE.lock beside the pipeline.
    Run(RunArgs),
    /// One array task of a stage the Slurm executor submitted (what its
    /// batch script runs on the node).
    #[command(hide = true)]
    Task {
        /// The task spec the submitting `cram run` wrote.
        spec: PathBuf,
        /// The array task index ($SLURM_ARRAY_TASK_ID).
        index: usize,
    },
    /// Upload the pipeline's cached stages to the shared cache (--remote,
    /// $CRAM_REMOTE or the file's `remote`), so that others pull them
    /// instead of building them. Entries the remote has are skipped; the
    /// manifest goes last, so a cut-short push leaves no entry behind.
    Push {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Push only STAGE and the stages it depends on.
        #[arg(long, value_name = "STAGE")]
        until: Option<String>,
    },
    /// Download the pipeline's stages from the shared cache into the local
    /// one, checking every file against its manifest and every manifest
    /// against its key; a damaged or partial remote entry is not used.
    /// Nothing runs: `cram run` builds what the remote lacks (and pulls by
    /// itself where a remote is set).
    Pull {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Pull only STAGE and the stages it depends on.
        #[arg(long, value_name = "STAGE")]
        until: Option<String>,
    },
    /// Rerun a cached stage in scratch space and compare its output with
    /// the cached one, byte for byte: says whether they are equal and, if
    /// not, which files differ. The cache is left as it was.
    Reproduce {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The stage to rerun (it and everything it depends on must be
        /// cached: `cram run FILE --until STAGE` first).
        stage: String,
        /// Keep the rerun's output directory and print where it is.
        #[arg(long)]
        keep: bool,
    },
    /// Write a cached model as a Hugging Face `transformers` directory:
    /// config.json with an auto_map, our modeling code, model.safetensors,
    /// the tokenizer files and a reference batch with cram's logits.
    ///
    /// STAGE is a pretrain stage (loads with AutoModelForMaskedLM) or a GLUE
    /// task, GLUE.TASK or GLUE.TASK@K for trial K (loads with
    /// AutoModelForSequenceClassification); both with trust_remote_code=True.
    Export {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The stage or GLUE task to export (it must be cached).
        stage: String,
        /// The directory to write (made whole, then moved into place).
        dir: PathBuf,
        /// Replace DIR if it exists and is not empty.
        #[arg(long)]
        force: bool,
    },
    /// Say, for each stage, whether it is cached or why it is stale.
    Status {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Draw the stage graph.
    Dag {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Output format: text (indented tree), dot (Graphviz) or mermaid.
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
    /// Print every resolved parameter (defaults and presets filled in), the
    /// output paths and the metrics of one stage or all.
    Show {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Only this stage.
        stage: Option<String>,
    },
    /// Run every combination of a parameter grid on one cache and write a
    /// sweep report (Markdown and self-contained HTML) comparing them.
    ///
    /// Stages whose key is the same across combinations run once. Each
    /// combination keeps its own lock file in the sweep folder; a stopped
    /// sweep picks up where it was when run again.
    Sweep {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// One axis of the grid: STAGE.KEY=V1,V2,... (repeatable; every
        /// combination of the axes runs, the first varying slowest).
        #[arg(long = "grid", value_name = "STAGE.KEY=V1,V2", required = true)]
        grid: Vec<String>,
        /// How many independent stages of one combination may run at once
        /// [default: the number of cores; a pretrain stage runs alone].
        #[arg(short = 'j', long, default_value_t = crate::exec::default_jobs(), hide_default_value = true, value_name = "N")]
        jobs: usize,
        /// The sweep folder (lock files and report) [default: FILE's name
        /// with .sweep instead of .toml, beside it].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Compare two runs: the resolved parameters that differ, the stages
    /// whose outputs differ, and the metrics side by side with their deltas
    /// (GLUE per task, losses, tokens/s, budget).
    ///
    /// Each run is a pipeline file (with --set-a/--set-b overrides), a lock
    /// file (FILE.lock) or a cache key (8 or more hex digits).
    Diff {
        /// The first run.
        a: String,
        /// The second run.
        b: String,
        /// Override a parameter of run A (a pipeline file): STAGE.KEY=VALUE.
        #[arg(long = "set-a", value_name = "STAGE.KEY=VALUE")]
        set_a: Vec<String>,
        /// Override a parameter of run B (a pipeline file): STAGE.KEY=VALUE.
        #[arg(long = "set-b", value_name = "STAGE.KEY=VALUE")]
        set_b: Vec<String>,
    },
    /// Recheck the content hashes of every cache entry; move damaged entries
    /// to the cache's quarantine/ folder.
    Verify,
    /// Remove cache entries that no lock file references, and leftovers of
    /// crashed runs; print the bytes freed.
    Gc {
        /// Lock files whose entries are kept (repeatable). Default: every
        /// *.lock file under ./pipelines and the current directory.
        #[arg(long = "keep-locked", value_name = "FILE")]
        keep_locked: Vec<PathBuf>,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Serve a local copy of Hugging Face Hub datasets (DIR/datasets/ORG/NAME/
    /// resolve/main/FILE) with the hub API that downloads need, so recipes run
    /// offline: set HF_ENDPOINT=http://ADDR.
    ServeHub {
        /// The mirror directory.
        dir: PathBuf,
        /// Port to listen on.
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
    },
    /// Measure the pretraining step on synthetic tokens: tokens/s, MFU, peak memory and the
    /// step's anatomy (kernel launches, transfers, waits, device memory, FLOPs), with and
    /// without kernel fusion on a GPU (the GPU benchmark, scripts/gpu-bench.sh, runs it).
    Bench {
        /// Architecture preset (crammed-bert, bert-base, tiny, ...).
        #[arg(long, default_value = "crammed-bert")]
        arch: String,
        /// Tokens per sequence instead of the preset's (its positions must cover them).
        #[arg(long)]
        seq_len: Option<usize>,
        /// Vocabulary size instead of the preset's.
        #[arg(long)]
        vocab_size: Option<usize>,
        /// Sequences per step.
        #[arg(long, default_value_t = 128)]
        micro_batch: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Untimed steps first (kernel compilation, autotuning).
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Device: auto, gpu, cpu, cuda:N or vulkan:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Precisions to measure, comma-separated (fp32, bf16).
        #[arg(long, default_value = "fp32,bf16", value_delimiter = ',')]
        precision: Vec<String>,
        /// On a GPU: measure with burn's kernel fusion, without it (the process must run with
        /// BURN_FUSION_MAX_EXPLORATIONS=0), or both (without in a child process).
        #[arg(long, value_enum, default_value = "both")]
        fusion: crate::bench::FusionMode,
        /// The device's dense bf16 peak in TFLOP/s for MFU (default: from the
        /// card's name where known, e.g. 989 for an H100 or H200).
        #[arg(long, value_name = "TFLOPS")]
        peak_tflops: Option<f64>,
        /// The card's name, for the MFU peak and the printout (default: what
        /// nvidia-smi reports, if anything).
        #[arg(long)]
        card: Option<String>,
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// List the stage kinds, or describe one kind's parameters.
    Kinds {
        /// A kind to describe.
        kind: Option<String>,
        /// Print Markdown (the README's parameter reference).
        #[arg(long)]
        markdown: bool,
    },
}

/// Executors of `cram run --executor`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExecutorName {
    /// In this process.
    Local,
    /// As Slurm array jobs.
    Slurm,
}

/// Formats of `cram dag`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DagFormat {
    /// An indented list.
    Text,
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}
