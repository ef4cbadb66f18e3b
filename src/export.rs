//! `cram export FILE STAGE DIR`: a cached checkpoint as a Hugging Face
//! `transformers` model directory.
//!
//! `STAGE` is a stage whose output is a checkpoint (a pretrain stage: the MLM
//! model) or a GLUE task unit of a glue stage, `GLUE.TASK` or, for trial `k`
//! of `trials = N`, `GLUE.TASK@k` (the fine-tuned classifier). The directory
//! itself is written by [`cram_model::export_hugging_face`]; this module finds
//! the cache entry, says where it came from, and puts the directory in place
//! whole: it is built beside `DIR` and renamed onto it, so a crash leaves no
//! half-written model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cram_model::{HfExportInfo, HfExported};

use crate::pipeline::Pipeline;
use crate::registry::Artifact;
use crate::reproduce::cached_with_ancestors;
use crate::store::{Entry, Store};

/// The kind of a GLUE task unit's entry.
const TASK_UNIT: &str = "glue-task";

/// What was exported, for the command to print.
#[derive(Debug, Clone)]
pub struct Export {
    /// The stage or unit exported.
    pub name: String,
    /// Its cache entry.
    pub entry: Entry,
    /// What the exporter wrote.
    pub exported: HfExported,
    /// The directory it is in.
    pub dir: PathBuf,
}

/// Exports `target` of `pipeline` (cached with what it depends on) into
/// `dir`, which must not exist or be empty unless `force` replaces it.
pub fn export(
    pipeline: &Pipeline,
    store: &Store,
    target: &str,
    dir: &Path,
    force: bool,
) -> Result<Export> {
    let (name, entry, labels) = resolve(pipeline, store, target)?;
    check_destination(dir, force)?;
    let info = HfExportInfo {
        labels,
        provenance: vec![
            ("pipeline".into(), pipeline.meta.file.display().to_string()),
            ("stage".into(), name.clone()),
            ("cache key".into(), entry.manifest.key.clone()),
            ("output hash".into(), entry.manifest.output_hash.clone()),
            ("cram version".into(), env!("CARGO_PKG_VERSION").into()),
        ],
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".cram-export-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot make a staging directory in {}", parent.display()))?;
    let exported = cram_model::export_hugging_face(&entry.out_dir(), staging.path(), &info)
        .with_context(|| format!("exporting {name}"))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir).with_context(|| {
        format!(
            "cannot move the export from {} to {}",
            staged.display(),
            dir.display()
        )
    })?;
    Ok(Export {
        name,
        entry,
        exported,
        dir: dir.to_path_buf(),
    })
}

/// The entry of `target` and, for a GLUE task, its class names.
fn resolve(
    pipeline: &Pipeline,
    store: &Store,
    target: &str,
) -> Result<(String, Entry, Vec<String>)> {
    let file = pipeline.meta.file.display();
    let (stage_name, unit) = match pipeline.stage(target) {
        Some(_) => (target, None),
        None => match target.split_once('.') {
            Some((stage, _)) if pipeline.stage(stage).is_some() => (stage, Some(target)),
            _ => bail!(
                "{file} has no stage `{target}` (stages are: {}); export a checkpoint stage \
                 or a GLUE task as STAGE.TASK",
                pipeline.stage_names().join(", ")
            ),
        },
    };
    let stage = pipeline.stage(stage_name).expect("looked up above");
    let output = stage.kind.output();
    let entries = cached_with_ancestors(pipeline, store, stage_name)?;
    let entry = entries[stage_name].clone();
    let units: Vec<&str> = entry
        .manifest
        .units
        .iter()
        .filter(|u| u.kind == TASK_UNIT)
        .map(|u| u.name.as_str())
        .collect();
    let Some(unit) = unit else {
        if output == Artifact::Checkpoint {
            return Ok((target.to_string(), entry, Vec::new()));
        }
        if !units.is_empty() {
            bail!(
                "stage `{target}` holds one fine-tuned model per GLUE task: export one of {}",
                units.join(", ")
            );
        }
        bail!(
            "stage `{target}` ({}) does not make a model: export a pretrain stage or a GLUE \
             task (STAGE.TASK)",
            stage.kind.name()
        );
    };
    let Some(unit_ref) = entry
        .manifest
        .units
        .iter()
        .find(|u| u.name == unit && u.kind == TASK_UNIT)
    else {
        if units.is_empty() {
            bail!("stage `{stage_name}` has no GLUE tasks to export (`{unit}` was asked for)");
        }
        bail!(
            "stage `{stage_name}` has no task unit `{unit}`: its units are {}",
            units.join(", ")
        );
    };
    let task_entry = store.get(&unit_ref.key).with_context(|| {
        format!(
            "the cache has lost `{unit}` (entry {}): run `cram run {file} --force {stage_name}`",
            unit_ref.key
        )
    })?;
    let labels = task_entry.manifest.params["task"]
        .as_str()
        .and_then(|t| cram_glue::GlueTask::parse(t).ok())
        .map(|task| {
            if task.is_regression() {
                vec!["score".to_string()]
            } else {
                task.label_names().iter().map(|s| s.to_string()).collect()
            }
        })
        .unwrap_or_default();
    Ok((unit.to_string(), task_entry, labels))
}

/// `dir` may be absent or an empty directory; anything else needs `force`.
fn check_destination(dir: &Path, force: bool) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        bail!("{} exists and is not a directory", dir.display());
    }
    let empty = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .next()
        .is_none();
    if !empty && !force {
        bail!(
            "{} exists and is not empty: pass --force to replace it",
            dir.display()
        );
    }
    Ok(())
}
