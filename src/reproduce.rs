//! `cram reproduce FILE STAGE`: rerun a cached stage in scratch space and
//! compare its output with the cached one, file by file.
//!
//! The rerun gets the cached entries of its inputs, the pipeline's seed and
//! a fresh work directory, exactly as `cram run` would give them; sub-units
//! the stage caches on its own (GLUE tasks) are rerun too, into the scratch
//! space, not reused. Nothing is written to the cache: the scratch space is
//! removed afterwards unless asked to keep it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::exec::{ancestor_records, input_dirs};
use crate::hashing::{FileRecord, hash_tree, output_hash};
use crate::lockfile::LockFile;
use crate::pipeline::Pipeline;
use crate::plan::{self, State};
use crate::registry::{AncestorRecord, StageContext};
use crate::store::{Entry, Manifest, RUN_DIR, Store, now_rfc3339};
use crate::ui::Ui;

/// How one output (the stage's, or one sub-unit's) compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// `STAGE` or `STAGE.UNIT`.
    pub name: String,
    /// The cached output hash.
    pub cached_hash: String,
    /// The rerun's output hash.
    pub rerun_hash: String,
    /// Files whose bytes differ.
    pub differ: Vec<String>,
    /// Files only the cached output has.
    pub missing: Vec<String>,
    /// Files only the rerun made.
    pub extra: Vec<String>,
    /// Files in the output.
    pub files: usize,
}

impl Comparison {
    /// Whether the rerun gave the same bytes.
    pub fn equal(&self) -> bool {
        self.cached_hash == self.rerun_hash
    }

    fn new(name: &str, cached: &[FileRecord], rerun: &[FileRecord]) -> Comparison {
        let a: BTreeMap<&str, &FileRecord> = cached.iter().map(|f| (f.path.as_str(), f)).collect();
        let b: BTreeMap<&str, &FileRecord> = rerun.iter().map(|f| (f.path.as_str(), f)).collect();
        Comparison {
            name: name.to_string(),
            cached_hash: output_hash(cached),
            rerun_hash: output_hash(rerun),
            differ: a
                .iter()
                .filter(|(p, f)| b.get(*p).is_some_and(|g| g.blake3 != f.blake3))
                .map(|(p, _)| p.to_string())
                .collect(),
            missing: a
                .keys()
                .filter(|p| !b.contains_key(*p))
                .map(|p| p.to_string())
                .collect(),
            extra: b
                .keys()
                .filter(|p| !a.contains_key(*p))
                .map(|p| p.to_string())
                .collect(),
            files: cached.len(),
        }
    }
}

/// The result of a rerun.
#[derive(Debug, Clone)]
pub struct Reproduction {
    /// The stage's output first, then its sub-units.
    pub comparisons: Vec<Comparison>,
    /// The scratch directory, when kept.
    pub kept: Option<PathBuf>,
}

impl Reproduction {
    /// Whether every output came out the same.
    pub fn equal(&self) -> bool {
        self.comparisons.iter().all(Comparison::equal)
    }

    /// What `cram reproduce` prints: one line per output (and, where one
    /// differs, the files by how they differ), then where the rerun was kept.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.comparisons {
            if c.equal() {
                out.push(format!(
                    "equal    {}: {} files, output {}",
                    c.name, c.files, c.cached_hash
                ));
                continue;
            }
            out.push(format!(
                "DIFFERS  {}: cached output {}, rerun {}",
                c.name, c.cached_hash, c.rerun_hash
            ));
            for (what, list) in [
                ("differ", &c.differ),
                ("only cached", &c.missing),
                ("only rerun", &c.extra),
            ] {
                if !list.is_empty() {
                    out.push(format!("         {what}: {}", list.join(", ")));
                }
            }
        }
        if let Some(dir) = &self.kept {
            out.push(format!("rerun kept in {}", dir.display()));
        }
        out
    }
}

/// Reruns `stage_name` of `pipeline` (which must be cached, with its
/// ancestors) in scratch space under the store's `tmp/` and compares.
pub fn reproduce(
    pipeline: &Pipeline,
    store: &Store,
    stage_name: &str,
    keep: bool,
    ui: &Ui,
) -> Result<Reproduction> {
    let _store_lock = store.lock_store(false)?;
    let stage = pipeline
        .stage(stage_name)
        .with_context(|| format!("no stage {stage_name} in {}", pipeline.meta.file.display()))?;
    let done = cached_with_ancestors(pipeline, store, stage_name)?;
    let cached = done[stage_name].clone();
    let inputs: Vec<Entry> = stage.inputs.iter().map(|n| done[n].clone()).collect();
    let ancestors = if stage.kind.wants_ancestors() {
        ancestor_records(pipeline, store, stage, &done)
    } else {
        Vec::new()
    };

    let scratch = tempfile::Builder::new()
        .prefix(&format!("reproduce-{stage_name}-"))
        .tempdir_in(store.root().join("tmp"))
        .context("cannot make the scratch directory")?;
    let root = scratch.path();
    let (out_dir, run_dir, work_dir, units_dir) = (
        root.join("out"),
        root.join("run"),
        root.join("work"),
        root.join("units"),
    );
    for d in [&out_dir, &run_dir, &work_dir, &units_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let log = root.join("log.txt");
    std::fs::write(&log, format!("reproducing stage {stage_name}\n"))?;
    let input_dirs = input_dirs(pipeline, stage, &inputs);
    let units: Mutex<Vec<AncestorRecord>> = Mutex::new(Vec::new());
    let bar = ui.stage_bar(stage_name);
    let ctx = StageContext {
        stage: &stage.name,
        params: &stage.params,
        identity: cached.manifest.identity.as_ref(),
        seed: pipeline.meta.seed,
        inputs: &input_dirs,
        ancestors: &ancestors,
        out_dir: &out_dir,
        run_dir: &run_dir,
        work_dir: &work_dir,
        store,
        pipeline: &pipeline.meta,
        progress: &bar,
        log: &log,
        units: &units,
        rerun_units: Some(&units_dir),
        jobs: crate::exec::default_jobs(),
    };
    ui.line(&format!(
        "  rerunning {stage_name} ({}) in {}",
        stage.kind.name(),
        root.display()
    ));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.kind.run(&ctx)));
    ui.finish_bar(&bar);
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.context(format!("rerunning stage {stage_name}"))),
        Err(_) => bail!("rerunning stage {stage_name}: the stage panicked"),
    }

    let rerun_files = hash_tree(&out_dir)?;
    let mut comparisons = vec![Comparison::new(
        stage_name,
        &cached.manifest.files,
        &rerun_files,
    )];
    let rerun_units: Vec<AncestorRecord> = units.into_inner().expect("units lock");
    for unit in &cached.manifest.units {
        let Some(cached_unit) = store.get(&unit.key) else {
            continue;
        };
        let Some(rerun) = rerun_units.iter().find(|r| r.name == unit.name) else {
            continue;
        };
        comparisons.push(Comparison::new(
            &unit.name,
            &cached_unit.manifest.files,
            &hash_tree(&rerun.out_dir)?,
        ));
    }
    let kept = keep.then(|| scratch.keep());
    Ok(Reproduction { comparisons, kept })
}

/// The cache entries of `stage_name` and every stage it depends on, by
/// stage name; an error naming the first one that is not cached and the
/// command that makes it.
pub(crate) fn cached_with_ancestors(
    pipeline: &Pipeline,
    store: &Store,
    stage_name: &str,
) -> Result<HashMap<String, Entry>> {
    let lock = LockFile::read(&pipeline.meta.lock_file)?;
    let wanted = pipeline.with_ancestors(stage_name);
    let mut done: HashMap<String, Entry> = HashMap::new();
    for st in plan::status(pipeline, store, &lock, &HashSet::new(), Some(&wanted)) {
        match st.state {
            State::Cached { entry } => {
                done.insert(st.name, *entry);
            }
            State::Stale { reasons } => bail!(
                "stage {} is not cached ({}): run `cram run {} --until {stage_name}` first",
                st.name,
                reasons.join("; "),
                pipeline.meta.file.display()
            ),
        }
    }
    Ok(done)
}

/// Builds a stage's sub-unit afresh under `root/UNIT/{out,run}` for a
/// rerun, never from or into the cache; returns it as an entry (not in the
/// store) whose manifest has what [`crate::exec::cached_unit`] would record.
pub(crate) fn rerun_unit(
    root: &Path,
    unit: &str,
    mut manifest: Manifest,
    body: impl FnOnce(&Path, &Path) -> Result<Value>,
) -> Result<Entry> {
    let dir = root.join(unit);
    let (out, run) = (dir.join("out"), dir.join(RUN_DIR));
    for d in [&out, &run] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let t0 = std::time::Instant::now();
    manifest.metrics = body(&out, &run)?;
    manifest.files = hash_tree(&out)?;
    manifest.output_hash = output_hash(&manifest.files);
    manifest.finished_at = now_rfc3339();
    manifest.wall_seconds = t0.elapsed().as_secs_f64();
    Ok(Entry { dir, manifest })
}
