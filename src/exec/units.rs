//! Sub-units of a stage cached on their own (one GLUE task each).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use crate::hashing::hash_json;
use crate::registry::{AncestorRecord, StageContext};
use crate::store::{Entry, MANIFEST_FORMAT, Manifest, now_rfc3339};

/// Runs (or reuses) a sub-unit of a stage that is cached on its own, such
/// as one GLUE task: its key is made of `kind`, `code_version` and
/// `material`; `body` fills the output directory (and may write run facts
/// into the run directory it is given second) and returns metrics.
pub fn cached_unit(
    ctx: &StageContext<'_>,
    unit: &str,
    kind: &str,
    code_version: u32,
    material: Value,
    body: impl FnOnce(&std::path::Path, &std::path::Path) -> Result<Value>,
) -> Result<Entry> {
    let key = hash_json(&json!({
        "unit_kind": kind,
        "code_version": code_version,
        "material": material,
    }));
    let name = format!("{}.{unit}", ctx.stage);
    let record = |entry: &Entry| {
        ctx.units.lock().expect("units lock").push(AncestorRecord {
            name: name.clone(),
            kind: kind.to_string(),
            out_dir: entry.out_dir(),
            run_dir: entry.run_dir(),
            manifest: serde_json::to_value(&entry.manifest).unwrap_or(Value::Null),
        });
    };
    let manifest = |started_at: String| Manifest {
        format: MANIFEST_FORMAT.into(),
        stage: name.clone(),
        kind: kind.into(),
        key: key.clone(),
        code_version,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        params: material.clone(),
        seed: Some(ctx.seed),
        identity: None,
        inputs: BTreeMap::new(),
        output_hash: String::new(),
        files: Vec::new(),
        started_at,
        finished_at: String::new(),
        wall_seconds: 0.0,
        metrics: Value::Null,
        units: Vec::new(),
    };
    if let Some(root) = ctx.rerun_units {
        // `cram reproduce`: the unit is built afresh in scratch space.
        let entry = crate::reproduce::rerun_unit(root, unit, manifest(now_rfc3339()), body)?;
        record(&entry);
        return Ok(entry);
    }
    if let Some(entry) = ctx.store.get(&key) {
        record(&entry);
        return Ok(entry);
    }
    let _lock = ctx.store.lock_key(&key, || {})?;
    if let Some(entry) = ctx.store.get(&key) {
        record(&entry);
        return Ok(entry);
    }
    let staging = ctx.store.stage(&key)?;
    let mut manifest = manifest(now_rfc3339());
    let t0 = Instant::now();
    let out = staging.out_dir();
    match body(&out, &staging.run_dir()) {
        Ok(metrics) => {
            manifest.finished_at = now_rfc3339();
            manifest.wall_seconds = t0.elapsed().as_secs_f64();
            manifest.metrics = metrics;
            let entry = ctx.store.commit(staging, manifest, false)?;
            record(&entry);
            Ok(entry)
        }
        Err(e) => {
            ctx.store.abandon(staging, &name);
            Err(e)
        }
    }
}
