//! The registry of stage kinds: for each kind name, its parameter type, its
//! code version, what it consumes and produces, and the adapter that runs the
//! stage library.
//!
//! Adapters live in [`crate::kinds`]; this module holds the trait they
//! implement and the single list that names them all.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::store::Store;

/// What a stage's output directory holds. Used to check, when a pipeline is
/// loaded, that each stage gets inputs it can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Artifact {
    /// Parquet shards with a `text` column (`part-*.parquet`).
    Documents,
    /// Files kept verbatim under their source-relative paths (e.g. GLUE data).
    Files,
    /// A Hugging Face `tokenizer.json`.
    Tokenizer,
    /// Packed token rows (`input_ids` Parquet shards).
    Sequences,
    /// A pretrained checkpoint (`model.safetensors`, `config.json`, `tokenizer.json`).
    Checkpoint,
    /// GLUE fine-tuning results.
    GlueResults,
    /// The final report.
    Report,
    /// Whatever a user's command writes.
    Any,
}

impl Artifact {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Artifact::Documents => "documents",
            Artifact::Files => "files",
            Artifact::Tokenizer => "tokenizer",
            Artifact::Sequences => "sequences",
            Artifact::Checkpoint => "checkpoint",
            Artifact::GlueResults => "glue-results",
            Artifact::Report => "report",
            Artifact::Any => "any",
        }
    }
}

/// One kind of input a stage kind takes.
#[derive(Clone, Copy, Debug)]
pub struct InputSlot {
    /// What the input is for, in messages ("documents", "tokenizer").
    pub role: &'static str,
    /// The artifacts accepted in this slot.
    pub accepts: &'static [Artifact],
    /// Whether the stage fails to load without it.
    pub required: bool,
}

/// A parameter problem found while reading a stage's table: the path of the
/// key at fault (empty for the table itself) and what is wrong.
#[derive(Debug, Clone)]
pub struct ParamError {
    /// Key path inside the stage table, e.g. `["model", "num_layers"]`.
    pub path: Vec<String>,
    /// What went wrong, in words.
    pub message: String,
}

/// A stage's parameters after reading: `raw` is the user's table with every
/// default filled in (what the adapter deserializes at run time); `resolved`
/// is the canonical, fully expanded form that is hashed into the cache key and
/// printed by `cram show` (presets expanded). For most kinds both are equal.
#[derive(Debug, Clone)]
pub struct Params {
    /// The typed parameters with defaults, as JSON.
    pub raw: Value,
    /// The fully resolved parameters, as JSON.
    pub resolved: Value,
}

/// An upstream stage's output, as handed to an adapter.
#[derive(Debug, Clone)]
pub struct InputDir {
    /// The upstream stage's name.
    pub stage: String,
    /// The upstream stage's kind.
    pub kind: String,
    /// What it produced.
    pub artifact: Artifact,
    /// Its output directory in the cache.
    pub dir: PathBuf,
    /// Content hash of its output.
    pub output_hash: String,
}

/// A finished ancestor of a stage, for kinds that summarise a whole run (the
/// report).
#[derive(Debug, Clone)]
pub struct AncestorRecord {
    /// Stage name (sub-units carry `stage.unit`, e.g. `glue.cola`).
    pub name: String,
    /// Kind name.
    pub kind: String,
    /// Output directory in the cache.
    pub out_dir: PathBuf,
    /// Run-facts directory of the entry (timings and the like, outside the
    /// output hash; may be missing for old entries).
    pub run_dir: PathBuf,
    /// The entry's manifest (see `docs/architecture.md`).
    pub manifest: Value,
}

/// What the engine knows about the pipeline a stage belongs to.
#[derive(Debug, Clone)]
pub struct PipelineMeta {
    /// The pipeline's `name`.
    pub name: String,
    /// Path of the pipeline file.
    pub file: PathBuf,
    /// Directory of the pipeline file (relative paths in parameters resolve here).
    pub dir: PathBuf,
    /// blake3 of the pipeline file and every included file.
    pub file_hash: String,
    /// The pipeline's seed.
    pub seed: u64,
    /// Path of the lock file beside the pipeline.
    pub lock_file: PathBuf,
    /// The `--set` overrides this pipeline was loaded with, as given.
    pub overrides: Vec<String>,
    /// The executor the file names (`executor = "slurm"`), if any.
    pub executor: Option<String>,
    /// The file's `[slurm]` table (the Slurm executor's settings), as JSON.
    pub slurm: Option<Value>,
    /// The shared cache the file names (`remote = "s3://..."`), if any; a
    /// bare path is relative to the pipeline's directory.
    pub remote: Option<String>,
}

/// Everything an adapter needs to run one stage.
pub struct StageContext<'a> {
    /// Stage name.
    pub stage: &'a str,
    /// Parameters (raw and resolved).
    pub params: &'a Params,
    /// The kind's extra identity computed before running (e.g. a download's
    /// resolved source), if any.
    pub identity: Option<&'a Value>,
    /// The pipeline seed.
    pub seed: u64,
    /// Direct inputs, in the order the pipeline lists them.
    pub inputs: &'a [InputDir],
    /// Every finished ancestor, in dependency order.
    pub ancestors: &'a [AncestorRecord],
    /// The empty directory the stage writes its outputs into. Everything in
    /// it is hashed: it must be a function of the inputs, the parameters
    /// and the seed (no timings, host names or dates).
    pub out_dir: &'a Path,
    /// The empty directory for facts about this run that are not outputs:
    /// timings, the machine, documents made from them. Kept in the entry,
    /// outside the output hash.
    pub run_dir: &'a Path,
    /// A persistent scratch directory for this stage key (kept across crashes,
    /// for resumable work such as pretraining checkpoints).
    pub work_dir: &'a Path,
    /// The cache store (for downloads and cached sub-units).
    pub store: &'a Store,
    /// The pipeline.
    pub pipeline: &'a PipelineMeta,
    /// Progress bar owned by the engine.
    pub progress: &'a ProgressBar,
    /// The stage's log file (the engine writes a header; adapters may append).
    pub log: &'a Path,
    /// Extra cached sub-units finished while running (the adapter pushes
    /// them; the engine hands them to descendants as ancestors).
    pub units: &'a std::sync::Mutex<Vec<AncestorRecord>>,
    /// Set by `cram reproduce`: sub-units are rerun into this directory
    /// instead of being taken from (and stored in) the cache.
    pub rerun_units: Option<&'a Path>,
    /// How many pieces of work the run may do at once (`-j`): a stage that
    /// splits into independent units (GLUE tasks) runs at most this many
    /// side by side. CPU threads come from the one rayon pool either way.
    pub jobs: usize,
}

impl StageContext<'_> {
    /// The first input that holds `artifact` (or, failing that, the first
    /// input of a `command` stage, whose output kind is up to the user).
    pub fn input(&self, artifact: Artifact) -> Option<&InputDir> {
        self.inputs
            .iter()
            .find(|i| i.artifact == artifact)
            .or_else(|| self.inputs.iter().find(|i| i.artifact == Artifact::Any))
    }

    /// The first input that holds `artifact`, or an error naming the role.
    pub fn require_input(&self, artifact: Artifact) -> anyhow::Result<&InputDir> {
        self.input(artifact).ok_or_else(|| {
            anyhow::anyhow!(
                "stage `{}` needs an input that produces {}",
                self.stage,
                artifact.name()
            )
        })
    }

    /// Deserializes the raw parameters into the kind's typed struct.
    pub fn typed<P: DeserializeOwned>(&self) -> anyhow::Result<P> {
        Ok(serde_json::from_value(self.params.raw.clone())?)
    }
}

/// A stage kind: the engine's view of one stage library entry point.
pub trait Kind: Send + Sync {
    /// The name used as `kind = "..."` in pipeline files.
    fn name(&self) -> &'static str;
    /// One line saying what the kind does.
    fn about(&self) -> &'static str;
    /// Bumped by the stage library whenever its output bytes may change.
    fn code_version(&self) -> u32;
    /// Whether the pipeline seed influences the output (and so the key).
    fn uses_seed(&self, params: &Params) -> bool;
    /// What the output directory holds (in general; see [`Kind::output_for`]).
    fn output(&self) -> Artifact;
    /// What the output directory holds with these parameters (a download in
    /// `files` mode keeps files instead of writing documents).
    fn output_for(&self, _params: &Params) -> Artifact {
        self.output()
    }
    /// Inputs the kind takes.
    fn inputs(&self) -> &'static [InputSlot];
    /// JSON schema of the parameters (with the doc comments of every field).
    fn schema(&self) -> schemars::Schema;
    /// Reads and checks the parameter table (everything but `kind` and
    /// `inputs`), filling defaults and expanding presets.
    fn params(&self, table: toml::Value) -> Result<Params, ParamError>;
    /// Extra identity to hash into the key, computed before deciding whether
    /// the stage is cached (a download's resolved revision and checksums, a
    /// command's dependency hashes). `None` for most kinds.
    fn identity(
        &self,
        _params: &Params,
        _pipeline: &PipelineMeta,
        _store: &Store,
    ) -> anyhow::Result<Option<Value>> {
        Ok(None)
    }
    /// Whether the kind needs every ancestor's record (the report does).
    fn wants_ancestors(&self) -> bool {
        false
    }
    /// Whether a stage of this kind runs alone under `-j`: no other stage
    /// starts while it runs, and it starts only once the others finished.
    /// Pretraining does: its wall clock is the compute budget (the Cramming
    /// rules), which a neighbour would eat into.
    fn runs_alone(&self) -> bool {
        false
    }
    /// Checks, before anything of the run starts, what the stage will need of this machine
    /// (a pretraining that asks for a GPU, say), so that a run does not fail hours in, after
    /// its preprocessing. Called by `cram run` for the stages it will build here.
    fn preflight(&self, _params: &Params) -> anyhow::Result<()> {
        Ok(())
    }
    /// Runs the stage; returns the metrics stored in the manifest.
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<Value>;
    /// How the stage splits into shards for an executor that spreads them
    /// over machines (the Slurm executor); `None`: it runs as one task.
    fn shards(&self) -> Option<&dyn Shards> {
        None
    }
}

/// A kind's split into shards. Merged, the shards must give the one-pass
/// [`Kind::run`]'s output, byte for byte, whatever hosts they ran on.
pub trait Shards: Send + Sync {
    /// Whether these parameters split at all. A kind whose one-pass run
    /// stops early for some parameters (`pack` with `ordering = "none"` and
    /// `max_sequences`) runs in one task for them, since shards would do
    /// work the one pass skips.
    fn splits(&self, _ctx: &StageContext<'_>) -> anyhow::Result<bool> {
        Ok(true)
    }
    /// Runs once, on the submitting host, before any shard: writes what the
    /// shards share (a trained tokenizer, a document count) into `prepared`.
    fn prepare(&self, ctx: &StageContext<'_>, prepared: &Path) -> anyhow::Result<()>;
    /// Builds shard `shard` of `shards` into the empty directory `dir`.
    fn run_shard(
        &self,
        ctx: &StageContext<'_>,
        prepared: &Path,
        shard: usize,
        shards: usize,
        dir: &Path,
    ) -> anyhow::Result<()>;
    /// Merges the shards' directories, in order, into `ctx.out_dir`;
    /// returns the metrics.
    fn merge(
        &self,
        ctx: &StageContext<'_>,
        prepared: &Path,
        dirs: &[PathBuf],
    ) -> anyhow::Result<Value>;
}

/// Deserializes a TOML table into `P`, reporting the path of the key at fault.
pub fn parse_typed<P: DeserializeOwned>(table: toml::Value) -> Result<P, ParamError> {
    serde_path_to_error::deserialize::<_, P>(table).map_err(|err| {
        let path = err
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        ParamError {
            path,
            message: err.into_inner().to_string(),
        }
    })
}

/// The key path of the first float in `value` that is NaN or infinite, if any. JSON, which
/// cache keys and run-time parameters are made of, has no such numbers (serde_json would turn
/// them into `null`, i.e. into "unset"), and no parameter means anything by them, so the
/// loader refuses them before any kind reads its table.
pub fn first_non_finite(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::Float(f) if !f.is_finite() => Some(Vec::new()),
        toml::Value::Table(t) => t.iter().find_map(|(k, v)| {
            first_non_finite(v).map(|mut path| {
                path.insert(0, k.clone());
                path
            })
        }),
        toml::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            first_non_finite(v).map(|mut path| {
                path.insert(0, i.to_string());
                path
            })
        }),
        _ => None,
    }
}

/// Serializes typed parameters to JSON (infallible for plain data structs).
pub fn to_json<P: Serialize>(params: &P) -> Value {
    serde_json::to_value(params).expect("parameters serialize to JSON")
}

/// Reads a parameter table whose raw and resolved forms are the same.
pub fn plain_params<P: DeserializeOwned + Serialize>(
    table: toml::Value,
) -> Result<Params, ParamError> {
    let typed: P = parse_typed(table)?;
    let json = to_json(&typed);
    Ok(Params {
        raw: json.clone(),
        resolved: json,
    })
}

/// Every stage kind cram knows, in the order `cram kinds` lists them.
pub fn all_kinds() -> &'static [&'static dyn Kind] {
    crate::kinds::ALL
}

/// Looks a kind up by name.
pub fn find_kind(name: &str) -> Option<&'static dyn Kind> {
    all_kinds().iter().copied().find(|k| k.name() == name)
}

/// The names of all kinds, for messages.
pub fn kind_names() -> Vec<&'static str> {
    all_kinds().iter().map(|k| k.name()).collect()
}
