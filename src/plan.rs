//! Cache keys and staleness: whether each stage is cached, and if not, why.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::hashing::hash_json;
use crate::lockfile::{LockEntry, LockFile};
use crate::pipeline::{Pipeline, Stage};
use crate::store::{Entry, InputRecord, Store};

/// Everything a stage's cache key is made of.
#[derive(Debug, Clone)]
pub struct KeyMaterial {
    /// Kind name.
    pub kind: String,
    /// The kind's code version.
    pub code_version: u32,
    /// Resolved parameters.
    pub params: Value,
    /// Seed, when the kind uses it.
    pub seed: Option<u64>,
    /// Extra identity.
    pub identity: Option<Value>,
    /// Inputs: name → (key, output hash).
    pub inputs: BTreeMap<String, InputRecord>,
}

impl KeyMaterial {
    /// Gathers the key material of `stage`, given its inputs' entries.
    pub fn new(
        pipeline: &Pipeline,
        stage: &Stage,
        identity: Option<Value>,
        inputs: BTreeMap<String, InputRecord>,
    ) -> KeyMaterial {
        KeyMaterial {
            kind: stage.kind.name().to_string(),
            code_version: stage.kind.code_version(),
            params: stage.params.resolved.clone(),
            seed: stage
                .kind
                .uses_seed(&stage.params)
                .then_some(pipeline.meta.seed),
            identity,
            inputs,
        }
    }

    /// The key: blake3 of the canonical JSON of all parts. Input *output
    /// hashes* are hashed (not input keys), so an upstream rerun that
    /// reproduces the same bytes leaves this key unchanged (early cutoff).
    pub fn key(&self) -> String {
        let inputs: BTreeMap<&String, &String> = self
            .inputs
            .iter()
            .map(|(k, v)| (k, &v.output_hash))
            .collect();
        hash_json(&json!({
            "kind": self.kind,
            "code_version": self.code_version,
            "params": self.params,
            "seed": self.seed,
            "identity": self.identity,
            "inputs": inputs,
        }))
    }
}

/// A stage's state before running.
#[derive(Debug, Clone)]
pub enum State {
    /// Its entry is in the cache.
    Cached {
        /// The entry.
        entry: Box<Entry>,
    },
    /// It must run.
    Stale {
        /// Why, in words (`param vocab_size: 32768 → 8192`, `never run`, …).
        reasons: Vec<String>,
    },
}

/// A stage and its state.
#[derive(Debug, Clone)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// Its state.
    pub state: State,
}

/// Works out, without running anything, which stages are cached and why the
/// others are stale. `only` limits the stages looked at (e.g. `--until`).
pub fn status(
    pipeline: &Pipeline,
    store: &Store,
    lock: &LockFile,
    forced: &HashSet<String>,
    only: Option<&[usize]>,
) -> Vec<StageStatus> {
    status_fetching(pipeline, store, lock, forced, only, &mut |_, _| None)
}

/// As [`status`], but a stage missing from `store` is first offered to
/// `fetch` (stage, key), which may bring its entry (from a shared cache):
/// the stages after it are then keyed on what it brought.
pub fn status_fetching(
    pipeline: &Pipeline,
    store: &Store,
    lock: &LockFile,
    forced: &HashSet<String>,
    only: Option<&[usize]>,
    fetch: &mut dyn FnMut(&Stage, &str) -> Option<Entry>,
) -> Vec<StageStatus> {
    let mut out: Vec<StageStatus> = Vec::new();
    let mut known: BTreeMap<String, Entry> = BTreeMap::new();
    for (i, stage) in pipeline.stages.iter().enumerate() {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let locked = lock.stages.get(&stage.name);
        let mut reasons = Vec::new();
        let stale_inputs: Vec<&String> = stage
            .inputs
            .iter()
            .filter(|i| !known.contains_key(*i))
            .collect();
        if !stale_inputs.is_empty() {
            for input in stale_inputs {
                reasons.push(format!("input {input} will rerun"));
            }
            if let Some(l) = locked {
                reasons.extend(describe_changes(pipeline, stage, l, None, None));
            } else {
                reasons.push("never run".into());
            }
            out.push(StageStatus {
                name: stage.name.clone(),
                state: State::Stale { reasons },
            });
            continue;
        }
        let inputs: BTreeMap<String, InputRecord> = stage
            .inputs
            .iter()
            .map(|i| {
                let e = &known[i];
                (
                    i.clone(),
                    InputRecord {
                        key: e.manifest.key.clone(),
                        output_hash: e.manifest.output_hash.clone(),
                    },
                )
            })
            .collect();
        let identity = match stage.kind.identity(&stage.params, &pipeline.meta, store) {
            Ok(id) => id,
            Err(e) => {
                out.push(StageStatus {
                    name: stage.name.clone(),
                    state: State::Stale {
                        reasons: vec![format!("its source cannot be checked: {e:#}")],
                    },
                });
                continue;
            }
        };
        let material = KeyMaterial::new(pipeline, stage, identity, inputs);
        let key = material.key();
        if forced.contains(&stage.name) {
            out.push(StageStatus {
                name: stage.name.clone(),
                state: State::Stale {
                    reasons: vec!["forced with --force".into()],
                },
            });
            continue;
        }
        if let Some(entry) = store.get(&key).or_else(|| fetch(stage, &key)) {
            known.insert(stage.name.clone(), entry.clone());
            out.push(StageStatus {
                name: stage.name.clone(),
                state: State::Cached {
                    entry: Box::new(entry),
                },
            });
            continue;
        }
        match locked {
            None => reasons.push("never run".into()),
            Some(l) => {
                reasons.extend(describe_changes(
                    pipeline,
                    stage,
                    l,
                    Some(&material),
                    Some(&key),
                ));
            }
        }
        out.push(StageStatus {
            name: stage.name.clone(),
            state: State::Stale { reasons },
        });
    }
    out
}

/// Compares a stage's current definition with its lock entry.
fn describe_changes(
    pipeline: &Pipeline,
    stage: &Stage,
    locked: &LockEntry,
    material: Option<&KeyMaterial>,
    key: Option<&String>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if locked.kind != stage.kind.name() {
        reasons.push(format!("kind {} → {}", locked.kind, stage.kind.name()));
        return reasons;
    }
    if locked.code_version != stage.kind.code_version() {
        reasons.push(format!(
            "code version {} → {}",
            locked.code_version,
            stage.kind.code_version()
        ));
    }
    diff_values("", &locked.params, &stage.params.resolved, &mut reasons);
    let seed = stage
        .kind
        .uses_seed(&stage.params)
        .then_some(pipeline.meta.seed);
    if locked.seed != seed {
        reasons.push(format!(
            "seed {} → {}",
            locked.seed.map_or("none".into(), |s| s.to_string()),
            seed.map_or("none".into(), |s| s.to_string())
        ));
    }
    if let Some(m) = material {
        if locked.identity != m.identity {
            reasons.push(match stage.kind.name() {
                "download" => "source changed (revision or file checksums differ)".into(),
                "command" => "a dependency file or passed variable changed".into(),
                _ => "source identity changed".into(),
            });
        }
        for (name, rec) in &m.inputs {
            match locked.inputs.get(name) {
                Some(old) if old.output_hash == rec.output_hash => {}
                Some(_) => reasons.push(format!("input {name} changed")),
                None => reasons.push(format!("input {name} added")),
            }
        }
        for name in locked.inputs.keys() {
            if !m.inputs.contains_key(name) {
                reasons.push(format!("input {name} removed"));
            }
        }
    }
    if reasons.is_empty() {
        reasons.push(if key == Some(&locked.key) {
            "output missing from the cache (removed by gc, quarantined, or another cache)".into()
        } else {
            "not in the cache".into()
        });
    }
    reasons
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s
    }
}

/// Lists the leaves that differ between two parameter trees as
/// `param a.b: old → new`.
fn diff_values(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_values(&path, x, y, out),
                    (None, Some(y)) => out.push(format!("param {path}: (unset) → {}", short(y))),
                    (Some(x), None) => out.push(format!("param {path}: {} → (unset)", short(x))),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("param {prefix}: {} → {}", short(a), short(b))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_the_changed_leaf() {
        let mut out = Vec::new();
        diff_values(
            "",
            &json!({"vocab_size": 32768, "model": {"layers": 2}}),
            &json!({"vocab_size": 8192, "model": {"layers": 2}}),
            &mut out,
        );
        assert_eq!(out, ["param vocab_size: 32768 → 8192"]);
    }
}
