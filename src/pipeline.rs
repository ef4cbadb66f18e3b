//! Pipeline files: reading, `include` merging, `--set` overrides, checking,
//! and ordering the stages.
//!
//! A pipeline file is TOML:
//!
//! ```toml
//! name = "sanity"
//! seed = 0
//! include = ["common.toml"]      # optional; this file's keys win
//!
//! [stages.corpus]
//! kind = "synthetic"
//! documents = 2000
//!
//! [stages.tokenizer]
//! kind = "tokenizer"
//! inputs = ["corpus"]
//! vocab_size = 4096
//! ```
//!
//! Every problem is reported with the file, line and column of the text at
//! fault (see [`crate::diag`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Value;
use toml::de::{DeTable, DeValue};

use crate::diag::{Location, PipelineError};
use crate::registry::{self, Artifact, Kind, Params, PipelineMeta};

/// Keys allowed at the top level of a pipeline file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "seed",
    "include",
    "description",
    "remote",
    "executor",
    "slurm",
    "stages",
];

/// A `--set STAGE.KEY=VALUE` override.
#[derive(Debug, Clone)]
pub struct Override {
    /// The argument as given.
    pub arg: String,
    /// Stage name (`None` for top-level keys such as `seed`).
    pub stage: Option<String>,
    /// Key path inside the stage table.
    pub path: Vec<String>,
    /// The parsed value.
    pub value: Value,
}

impl Override {
    /// Parses `STAGE.KEY[.SUB]=VALUE` (or `seed=N`). The value is read as a
    /// TOML value (`4`, `1e-4`, `true`, `"text"`, `[1, 2]`); anything that is
    /// not valid TOML is taken as a string, so `--set corpus.source=hf://x`
    /// needs no quotes.
    pub fn parse(arg: &str) -> Result<Override, PipelineError> {
        let Some((lhs, rhs)) = arg.split_once('=') else {
            return Err(PipelineError::plain(format!(
                "--set {arg}: expected STAGE.KEY=VALUE (e.g. --set pretrain.lr=1e-4)"
            )));
        };
        let lhs = lhs.trim();
        let value = parse_value(rhs.trim());
        let parts: Vec<String> = lhs.split('.').map(|s| s.trim().to_string()).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(PipelineError::plain(format!(
                "--set {arg}: `{lhs}` is not a key path; expected STAGE.KEY=VALUE"
            )));
        }
        if parts.len() == 1 {
            if !matches!(parts[0].as_str(), "seed" | "name") {
                return Err(PipelineError::plain(format!(
                    "--set {arg}: `{lhs}` names no stage key; expected STAGE.KEY=VALUE, or seed=N / name=TEXT"
                )));
            }
            return Ok(Override {
                arg: arg.to_string(),
                stage: None,
                path: parts,
                value,
            });
        }
        Ok(Override {
            arg: arg.to_string(),
            stage: Some(parts[0].clone()),
            path: parts[1..].to_vec(),
            value,
        })
    }

    fn location(&self) -> Location {
        Location {
            name: "--set".into(),
            text: self.arg.clone(),
            span: 0..self.arg.len(),
        }
    }
}

fn parse_value(text: &str) -> Value {
    let doc = format!("v = {text}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(text.into())),
        Err(_) => Value::String(text.to_string()),
    }
}

/// One stage of a loaded pipeline.
pub struct Stage {
    /// The stage's name (its table name).
    pub name: String,
    /// Its kind.
    pub kind: &'static dyn Kind,
    /// Upstream stage names, in the order given.
    pub inputs: Vec<String>,
    /// Parameters, checked and resolved.
    pub params: Params,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("kind", &self.kind.name())
            .field("inputs", &self.inputs)
            .finish()
    }
}

/// A loaded, checked pipeline with its stages in dependency order.
pub struct Pipeline {
    /// Name, file, seed, hash.
    pub meta: PipelineMeta,
    /// Stages, each after all of its inputs.
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// Looks a stage up by name.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Index of a stage in [`Pipeline::stages`].
    pub fn index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// The names of all stages, for messages.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// `name` and every stage it depends on, transitively, in pipeline order.
    pub fn with_ancestors(&self, name: &str) -> Vec<usize> {
        let mut keep = HashSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if keep.insert(n.clone())
                && let Some(s) = self.stage(&n)
            {
                todo.extend(s.inputs.iter().cloned());
            }
        }
        (0..self.stages.len())
            .filter(|&i| keep.contains(&self.stages[i].name))
            .collect()
    }

    /// Checks a stage name given on the command line.
    pub fn require_stage(&self, name: &str, flag: &str) -> Result<usize, PipelineError> {
        self.index(name).ok_or_else(|| {
            PipelineError::plain(format!(
                "{flag} {name}: {} has no stage `{name}`",
                self.meta.file.display()
            ))
            .with_help(format!("stages are: {}", self.stage_names().join(", ")))
        })
    }
}

/// A file read while loading (the main file and its includes).
struct Source {
    path: PathBuf,
    text: String,
}

/// Which file (or override) a value of the merged tables came from.
#[derive(Clone, Copy, Debug)]
enum Origin {
    File(usize),
    Set(usize),
}

/// Loading state: the files read and, for each stage and key path, where its
/// value came from.
struct Loader {
    sources: Vec<Source>,
    origins: HashMap<(String, Vec<String>), Origin>,
    stage_origin: HashMap<String, usize>,
    overrides: Vec<Override>,
}

/// Reads a pipeline file, applies overrides and checks everything.
pub fn load(path: &Path, overrides: &[Override]) -> Result<Pipeline, PipelineError> {
    let mut loader = Loader {
        sources: Vec::new(),
        origins: HashMap::new(),
        stage_origin: HashMap::new(),
        overrides: overrides.to_vec(),
    };
    let mut stack = Vec::new();
    let top = loader.read_file(path, &mut stack)?;
    loader.finish(path, top)
}

/// The merged content of one file and its includes.
struct Merged {
    name: Option<(String, usize)>,
    seed: Option<(i64, usize)>,
    remote: Option<(String, usize)>,
    executor: Option<(String, usize)>,
    slurm: Option<(toml::Table, usize)>,
    stages: toml::Table,
    order: Vec<String>,
}

impl Loader {
    fn loc(&self, origin: Origin, path: &[&str], want_value: bool) -> Location {
        match origin {
            Origin::Set(i) => self.overrides[i].location(),
            Origin::File(i) => {
                let src = &self.sources[i];
                let span = find_span(&src.text, path, want_value).unwrap_or(0..0);
                Location::in_file(&src.path, &src.text, span)
            }
        }
    }

    fn stage_loc(&self, stage: &str, key_path: &[String], want_value: bool) -> Location {
        // The most specific recorded origin: the key itself or a parent table.
        let mut probe = key_path.to_vec();
        loop {
            if let Some(origin) = self.origins.get(&(stage.to_string(), probe.clone())) {
                let mut full = vec!["stages", stage];
                full.extend(key_path.iter().map(String::as_str));
                if let Origin::File(i) = origin
                    && find_span(&self.sources[*i].text, &full, want_value).is_none()
                {
                    // The key itself is not in the file (e.g. a missing
                    // one): point at the deepest part that is.
                    let mut shorter = full.clone();
                    while shorter.len() > 2
                        && find_span(&self.sources[*i].text, &shorter, false).is_none()
                    {
                        shorter.pop();
                    }
                    return self.loc(*origin, &shorter, false);
                }
                return self.loc(*origin, &full, want_value);
            }
            if probe.pop().is_none() {
                break;
            }
        }
        let file = self.stage_origin.get(stage).copied().unwrap_or(0);
        self.loc(Origin::File(file), &["stages", stage], false)
    }

    fn read_file(
        &mut self,
        path: &Path,
        stack: &mut Vec<PathBuf>,
    ) -> Result<Merged, PipelineError> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if stack.contains(&canonical) {
            let chain: Vec<String> = stack
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| p.display().to_string())
                .collect();
            return Err(PipelineError::in_file(
                path,
                format!("include cycle: {}", chain.join(" -> ")),
            )
            .with_help("remove one of the `include` entries on this cycle"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            PipelineError::in_file(path, format!("cannot read the pipeline file: {e}"))
                .with_help("check the path; pipelines usually live under pipelines/")
        })?;
        let idx = self.sources.len();
        self.sources.push(Source {
            path: path.to_path_buf(),
            text: text.clone(),
        });
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let loc = Location::in_file(path, &text, span);
            PipelineError::at(&loc, format!("invalid TOML: {}", e.message()), "here")
        })?;
        for key in table.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                let loc = self.loc(Origin::File(idx), &[key], false);
                return Err(PipelineError::at(
                    &loc,
                    format!("unknown top-level key `{key}`"),
                    "not a pipeline key",
                )
                .with_help(format!(
                    "allowed top-level keys: {}; stage tables go under [stages.NAME]",
                    TOP_LEVEL_KEYS.join(", ")
                )));
            }
        }
        let mut merged = Merged {
            name: None,
            seed: None,
            remote: None,
            executor: None,
            slurm: None,
            stages: toml::Table::new(),
            order: Vec::new(),
        };
        // Includes first, so that this file's keys override theirs.
        if let Some(inc) = table.get("include") {
            let Some(items) = inc.as_array() else {
                let loc = self.loc(Origin::File(idx), &["include"], true);
                return Err(PipelineError::at(
                    &loc,
                    "`include` must be an array of file paths",
                    "expected [\"file.toml\", ...]",
                ));
            };
            stack.push(canonical.clone());
            for item in items {
                let Some(rel) = item.as_str() else {
                    let loc = self.loc(Origin::File(idx), &["include"], true);
                    return Err(PipelineError::at(
                        &loc,
                        "`include` entries must be strings",
                        "expected file paths",
                    ));
                };
                let inc_path = path.parent().unwrap_or(Path::new(".")).join(rel);
                if !inc_path.exists() {
                    let loc = self.loc(Origin::File(idx), &["include"], true);
                    return Err(PipelineError::at(
                        &loc,
                        format!("included file {} does not exist", inc_path.display()),
                        "included here",
                    )
                    .with_help("include paths are relative to the including file"));
                }
                let sub = self.read_file(&inc_path, stack)?;
                merge_into(&mut merged, sub);
            }
            stack.pop();
        }
        if let Some(v) = table.get("name") {
            let Some(s) = v.as_str() else {
                let loc = self.loc(Origin::File(idx), &["name"], true);
                return Err(PipelineError::at(
                    &loc,
                    "`name` must be a string",
                    "expected a string",
                ));
            };
            merged.name = Some((s.to_string(), idx));
        }
        if let Some(v) = table.get("remote") {
            let Some(s) = v.as_str().filter(|s| !s.trim().is_empty()) else {
                let loc = self.loc(Origin::File(idx), &["remote"], true);
                return Err(PipelineError::at(
                    &loc,
                    "`remote` must be the address of a shared cache",
                    "expected e.g. \"s3://bucket/prefix\" or \"/shared/cram-remote\"",
                ));
            };
            merged.remote = Some((s.to_string(), idx));
        }
        if let Some(v) = table.get("executor") {
            let Some(s) = v.as_str().filter(|s| ["local", "slurm"].contains(s)) else {
                let loc = self.loc(Origin::File(idx), &["executor"], true);
                return Err(PipelineError::at(
                    &loc,
                    "`executor` must be \"local\" or \"slurm\"",
                    "expected \"local\" or \"slurm\"",
                ));
            };
            merged.executor = Some((s.to_string(), idx));
        }
        if let Some(v) = table.get("slurm") {
            let Some(t) = v.as_table() else {
                let loc = self.loc(Origin::File(idx), &["slurm"], true);
                return Err(PipelineError::at(
                    &loc,
                    "`slurm` must be a table of the Slurm executor's settings",
                    "expected [slurm] with partition = \"...\", time = \"1:00:00\", ...",
                ));
            };
            merged.slurm = Some((t.clone(), idx));
        }
        if let Some(v) = table.get("seed") {
            let Some(s) = v.as_integer().filter(|s| *s >= 0) else {
                let loc = self.loc(Origin::File(idx), &["seed"], true);
                return Err(PipelineError::at(
                    &loc,
                    "`seed` must be a non-negative integer",
                    "expected e.g. 0",
                ));
            };
            merged.seed = Some((s, idx));
        }
        if let Some(stages) = table.get("stages") {
            let Some(stages) = stages.as_table() else {
                let loc = self.loc(Origin::File(idx), &["stages"], true);
                return Err(PipelineError::at(
                    &loc,
                    "`stages` must be a table of stage tables",
                    "expected [stages.NAME]",
                ));
            };
            for (name, body) in stages {
                let Some(body) = body.as_table() else {
                    let loc = self.loc(Origin::File(idx), &["stages", name], true);
                    return Err(PipelineError::at(
                        &loc,
                        format!("stage `{name}` must be a table"),
                        "expected [stages.NAME] with kind = \"...\"",
                    ));
                };
                self.stage_origin.insert(name.clone(), idx);
                record_origins(
                    &mut self.origins,
                    name,
                    &mut Vec::new(),
                    body,
                    Origin::File(idx),
                );
                if !merged.order.contains(name) {
                    merged.order.push(name.clone());
                }
                let slot = merged
                    .stages
                    .entry(name.clone())
                    .or_insert_with(|| Value::Table(toml::Table::new()));
                deep_merge(slot.as_table_mut().expect("stage slot is a table"), body);
            }
        }
        Ok(merged)
    }

    fn finish(mut self, path: &Path, mut merged: Merged) -> Result<Pipeline, PipelineError> {
        // Apply overrides.
        for (i, ov) in self.overrides.clone().iter().enumerate() {
            match &ov.stage {
                None => match ov.path[0].as_str() {
                    "seed" => {
                        let Some(s) = ov.value.as_integer().filter(|s| *s >= 0) else {
                            return Err(PipelineError::at(
                                &ov.location(),
                                "seed must be a non-negative integer",
                                "here",
                            ));
                        };
                        merged.seed = Some((s, 0));
                    }
                    _ => {
                        let Some(s) = ov.value.as_str() else {
                            return Err(PipelineError::at(
                                &ov.location(),
                                "name must be a string",
                                "here",
                            ));
                        };
                        merged.name = Some((s.to_string(), 0));
                    }
                },
                Some(stage) => {
                    let Some(Value::Table(table)) = merged.stages.get_mut(stage) else {
                        return Err(PipelineError::at(
                            &ov.location(),
                            format!("{} has no stage `{stage}`", path.display()),
                            "unknown stage",
                        )
                        .with_help(format!("stages are: {}", merged.order.join(", "))));
                    };
                    set_path(table, &ov.path, ov.value.clone())
                        .map_err(|m| PipelineError::at(&ov.location(), m, "here"))?;
                    self.origins
                        .insert((stage.clone(), ov.path.clone()), Origin::Set(i));
                }
            }
        }

        let name = merged.name.map(|(n, _)| n).unwrap_or_else(|| {
            path.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        });
        let seed = merged.seed.map(|(s, _)| s as u64).unwrap_or(0);
        if merged.order.is_empty() {
            return Err(
                PipelineError::in_file(path, "the pipeline declares no stages")
                    .with_help("add a table such as [stages.corpus] with kind = \"synthetic\""),
            );
        }

        // Names, kinds and parameters.
        let mut stages = Vec::new();
        for stage_name in &merged.order {
            let body = merged.stages[stage_name]
                .as_table()
                .expect("stage tables")
                .clone();
            if !safe_stage_name(stage_name) {
                let loc = self.stage_loc(stage_name, &[], false);
                return Err(PipelineError::at(
                    &loc,
                    format!("unsafe stage name `{stage_name}`"),
                    "stage names become paths",
                )
                .with_help("use letters, digits, `_` and `-` (and `.` not at the start); no `/`, `\\` or `..`"));
            }
            let kind_name = match body.get("kind") {
                Some(Value::String(k)) => k.clone(),
                Some(_) => {
                    let loc = self.stage_loc(stage_name, &["kind".into()], true);
                    return Err(PipelineError::at(
                        &loc,
                        "`kind` must be a string",
                        "expected e.g. \"tokenizer\"",
                    )
                    .with_help(format!("kinds: {}", registry::kind_names().join(", "))));
                }
                None => {
                    let loc = self.stage_loc(stage_name, &[], false);
                    return Err(PipelineError::at(
                        &loc,
                        format!("stage `{stage_name}` has no `kind`"),
                        "kind = \"...\" missing",
                    )
                    .with_help(format!("kinds: {}", registry::kind_names().join(", "))));
                }
            };
            let Some(kind) = registry::find_kind(&kind_name) else {
                let loc = self.stage_loc(stage_name, &["kind".into()], true);
                return Err(PipelineError::at(
                    &loc,
                    format!(
                        "unknown stage kind `{kind_name}`{}",
                        did_you_mean(&kind_name, &registry::kind_names())
                    ),
                    "no such kind",
                )
                .with_help(format!(
                    "kinds: {} (see `cram kinds`)",
                    registry::kind_names().join(", ")
                )));
            };
            let inputs = match body.get("inputs") {
                None => Vec::new(),
                Some(Value::Array(items)) => {
                    let mut out = Vec::new();
                    for item in items {
                        let Some(s) = item.as_str() else {
                            let loc = self.stage_loc(stage_name, &["inputs".into()], true);
                            return Err(PipelineError::at(
                                &loc,
                                "`inputs` must list stage names as strings",
                                "expected [\"stage\", ...]",
                            ));
                        };
                        out.push(s.to_string());
                    }
                    out
                }
                Some(_) => {
                    let loc = self.stage_loc(stage_name, &["inputs".into()], true);
                    return Err(PipelineError::at(
                        &loc,
                        "`inputs` must be an array of stage names",
                        "expected [\"stage\", ...]",
                    ));
                }
            };
            let mut params_table = body.clone();
            params_table.remove("kind");
            params_table.remove("inputs");
            let params_table = Value::Table(params_table);
            if let Some(path) = registry::first_non_finite(&params_table) {
                return Err(self.param_error(
                    stage_name,
                    kind,
                    registry::ParamError {
                        path,
                        message: "must be a finite number (nan and inf are not parameter values)"
                            .into(),
                    },
                ));
            }
            let params = kind
                .params(params_table)
                .map_err(|err| self.param_error(stage_name, kind, err))?;
            stages.push(Stage {
                name: stage_name.clone(),
                kind,
                inputs,
                params,
            });
        }

        // Inputs exist and carry what each kind reads.
        let by_name: BTreeMap<&str, &Stage> = stages.iter().map(|s| (s.name.as_str(), s)).collect();
        for stage in &stages {
            let mut seen = HashSet::new();
            for input in &stage.inputs {
                let loc = self.input_loc(&stage.name, input);
                if !seen.insert(input) {
                    return Err(PipelineError::at(
                        &loc,
                        format!("input `{input}` is listed twice"),
                        "duplicate",
                    ));
                }
                if input == &stage.name {
                    return Err(PipelineError::at(
                        &loc,
                        format!("stage `{input}` lists itself as an input"),
                        "cycle",
                    )
                    .with_help("a stage cannot read its own output"));
                }
                let Some(up) = by_name.get(input.as_str()) else {
                    return Err(PipelineError::at(
                        &loc,
                        format!("input `{input}` is not a stage of this pipeline"),
                        "no such stage",
                    )
                    .with_help(format!("stages are: {}", merged.order.join(", "))));
                };
                let produced = up.kind.output_for(&up.params);
                let slots = stage.kind.inputs();
                if produced != Artifact::Any
                    && !slots.iter().any(|s| {
                        s.accepts.contains(&produced) || s.accepts.contains(&Artifact::Any)
                    })
                {
                    let wanted: Vec<String> = slots
                        .iter()
                        .map(|s| {
                            format!(
                                "{} ({})",
                                s.role,
                                s.accepts
                                    .iter()
                                    .map(|a| a.name())
                                    .collect::<Vec<_>>()
                                    .join(" or ")
                            )
                        })
                        .collect();
                    return Err(PipelineError::at(
                        &loc,
                        format!(
                            "stage `{}` (kind `{}`) cannot read `{input}`, which is a `{}` stage producing {}",
                            stage.name,
                            stage.kind.name(),
                            up.kind.name(),
                            produced.name()
                        ),
                        "wrong kind of input",
                    )
                    .with_help(if wanted.is_empty() {
                        format!("kind `{}` takes no inputs", stage.kind.name())
                    } else {
                        format!("kind `{}` reads: {}", stage.kind.name(), wanted.join("; "))
                    }));
                }
            }
            for slot in stage.kind.inputs().iter().filter(|s| s.required) {
                let filled = stage.inputs.iter().any(|i| {
                    by_name.get(i.as_str()).is_some_and(|u| {
                        let out = u.kind.output_for(&u.params);
                        out == Artifact::Any
                            || slot.accepts.contains(&out)
                            || slot.accepts.contains(&Artifact::Any)
                    })
                });
                if !filled {
                    let loc = if stage.inputs.is_empty() {
                        self.stage_loc(&stage.name, &[], false)
                    } else {
                        self.stage_loc(&stage.name, &["inputs".into()], true)
                    };
                    let producers: Vec<&str> = registry::all_kinds()
                        .iter()
                        .filter(|k| slot.accepts.contains(&k.output()))
                        .map(|k| k.name())
                        .collect();
                    return Err(PipelineError::at(
                        &loc,
                        format!(
                            "stage `{}` (kind `{}`) needs a {} input",
                            stage.name,
                            stage.kind.name(),
                            slot.role
                        ),
                        "missing input",
                    )
                    .with_help(format!(
                        "add to `inputs` a stage of kind {}",
                        producers
                            .iter()
                            .map(|p| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )));
                }
            }
        }

        let order = self.topo_order(&stages)?;
        let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
        let stages: Vec<Stage> = order
            .into_iter()
            .map(|i| slots[i].take().expect("each stage once"))
            .collect();

        let mut hasher = blake3::Hasher::new();
        for src in &self.sources {
            hasher.update(src.text.as_bytes());
        }
        for ov in &self.overrides {
            hasher.update(ov.arg.as_bytes());
        }
        let file_name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let meta = PipelineMeta {
            name,
            file: path.to_path_buf(),
            dir: path
                .parent()
                .map(Path::to_path_buf)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from(".")),
            file_hash: hasher.finalize().to_hex().to_string(),
            seed,
            lock_file: path.with_file_name(format!("{file_name}.lock")),
            remote: merged.remote.map(|(r, _)| r),
            overrides: self.overrides.iter().map(|o| o.arg.clone()).collect(),
            executor: merged.executor.map(|(e, _)| e),
            slurm: merged.slurm.and_then(|(t, _)| serde_json::to_value(t).ok()),
        };
        Ok(Pipeline { meta, stages })
    }

    fn input_loc(&self, stage: &str, input: &str) -> Location {
        if let Some(Origin::File(i)) = self
            .origins
            .get(&(stage.to_string(), vec!["inputs".to_string()]))
        {
            let src = &self.sources[*i];
            if let Some(span) = find_array_item(&src.text, &["stages", stage, "inputs"], input) {
                return Location::in_file(&src.path, &src.text, span);
            }
        }
        self.stage_loc(stage, &["inputs".into()], true)
    }

    fn param_error(
        &self,
        stage: &str,
        kind: &dyn Kind,
        err: registry::ParamError,
    ) -> PipelineError {
        let mut path = err.path.clone();
        // serde names an unknown key in its message; point at that key.
        let unknown = err
            .message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        if let Some(key) = &unknown
            && path.last() != Some(key)
        {
            path.push(key.clone());
        }
        let loc = self.stage_loc(stage, &path, unknown.is_none());
        let key_name = if path.is_empty() {
            "parameters".to_string()
        } else {
            format!("`{}`", path.join("."))
        };
        let message = if unknown.is_some() {
            format!(
                "unknown key {key_name} in stage `{stage}` (kind `{}`): {}",
                kind.name(),
                err.message
            )
        } else {
            format!(
                "bad value for {key_name} in stage `{stage}` (kind `{}`): {}",
                kind.name(),
                err.message
            )
        };
        let allowed = allowed_keys(kind, &path);
        let label = if unknown.is_some() {
            "unknown key"
        } else {
            "here"
        };
        let e = PipelineError::at(&loc, message, label);
        if allowed.is_empty() {
            e
        } else {
            e.with_help(format!("allowed keys: {}", allowed.join(", ")))
        }
    }

    fn topo_order(&self, stages: &[Stage]) -> Result<Vec<usize>, PipelineError> {
        let index: HashMap<&str, usize> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let mut state = vec![0u8; stages.len()];
        let mut order = Vec::new();
        let mut path: Vec<usize> = Vec::new();
        fn visit(
            i: usize,
            stages: &[Stage],
            index: &HashMap<&str, usize>,
            state: &mut [u8],
            order: &mut Vec<usize>,
            path: &mut Vec<usize>,
        ) -> Result<(), Vec<usize>> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let start = path.iter().position(|&p| p == i).expect("on the stack");
                    return Err(path[start..].to_vec());
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for input in &stages[i].inputs {
                visit(index[input.as_str()], stages, index, state, order, path)?;
            }
            path.pop();
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..stages.len() {
            if let Err(cycle) = visit(i, stages, &index, &mut state, &mut order, &mut path) {
                let names: Vec<&str> = cycle.iter().map(|&c| stages[c].name.as_str()).collect();
                let first = names[0];
                let loc = self.stage_loc(first, &["inputs".into()], true);
                let mut shown = names.clone();
                shown.push(first);
                return Err(PipelineError::at(
                    &loc,
                    format!("dependency cycle: {}", shown.join(" -> ")),
                    "this input closes the cycle",
                )
                .with_help(format!(
                    "stages on the cycle: {}; remove one of their inputs",
                    names.join(", ")
                )));
            }
        }
        Ok(order)
    }
}

fn merge_into(into: &mut Merged, from: Merged) {
    if from.name.is_some() {
        into.name = from.name;
    }
    if from.seed.is_some() {
        into.seed = from.seed;
    }
    if from.remote.is_some() {
        into.remote = from.remote;
    }
    if from.executor.is_some() {
        into.executor = from.executor;
    }
    if from.slurm.is_some() {
        into.slurm = from.slurm;
    }
    for name in from.order {
        if !into.order.contains(&name) {
            into.order.push(name.clone());
        }
        let body = from.stages[&name].as_table().expect("stage tables").clone();
        let slot = into
            .stages
            .entry(name)
            .or_insert_with(|| Value::Table(toml::Table::new()));
        deep_merge(slot.as_table_mut().expect("stage slot is a table"), &body);
    }
}

/// Merges `from` into `into`: tables merge key by key, other values replace.
fn deep_merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => deep_merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

fn record_origins(
    origins: &mut HashMap<(String, Vec<String>), Origin>,
    stage: &str,
    prefix: &mut Vec<String>,
    table: &toml::Table,
    origin: Origin,
) {
    origins.insert((stage.to_string(), prefix.clone()), origin);
    for (k, v) in table {
        prefix.push(k.clone());
        if let Value::Table(t) = v {
            record_origins(origins, stage, prefix, t, origin);
        } else {
            origins.insert((stage.to_string(), prefix.clone()), origin);
        }
        prefix.pop();
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = table;
    for p in parents {
        let next = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Table(toml::Table::new()));
        cur = match next {
            Value::Table(t) => t,
            _ => {
                return Err(format!(
                    "`{p}` is not a table, so `{}` cannot be set inside it",
                    path.join(".")
                ));
            }
        };
    }
    if last == "kind" {
        return Err("the kind of a stage cannot be overridden".into());
    }
    cur.insert(last.clone(), value);
    Ok(())
}

/// ` (did you mean `x`?)` when a known name is close to `word`.
fn did_you_mean(word: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Stage names become directory and file names: letters, digits, `_`, `-`
/// and inner dots only.
pub fn safe_stage_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The keys a kind accepts at `path` of its table, from its JSON schema.
fn allowed_keys(kind: &dyn Kind, path: &[String]) -> Vec<String> {
    let schema = kind.schema();
    let root = schema.as_value();
    let mut node = root;
    for seg in path.iter().take(path.len().saturating_sub(1)) {
        let next = node.get("properties").and_then(|p| p.get(seg));
        node = match next.and_then(|n| resolve_ref(root, n)) {
            Some(n) => n,
            None => break,
        };
    }
    let mut keys: Vec<String> = node
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    if path.len() <= 1 {
        keys.insert(0, "inputs".into());
        keys.insert(0, "kind".into());
    }
    keys
}

fn resolve_ref<'a>(
    root: &'a serde_json::Value,
    node: &'a serde_json::Value,
) -> Option<&'a serde_json::Value> {
    if let Some(r) = node.get("$ref").and_then(|r| r.as_str()) {
        let name = r.rsplit('/').next()?;
        return root.get("$defs").and_then(|d| d.get(name));
    }
    if let Some(all) = node.get("allOf").and_then(|a| a.as_array()) {
        return all.first().and_then(|n| resolve_ref(root, n));
    }
    if let Some(any) = node.get("anyOf").and_then(|a| a.as_array()) {
        return any
            .iter()
            .find_map(|n| resolve_ref(root, n).filter(|r| r.get("properties").is_some()));
    }
    Some(node)
}

/// The span of the key (or its value) at `path` in a TOML text.
fn find_span(text: &str, path: &[&str], want_value: bool) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable = doc.get_ref();
    for (i, seg) in path.iter().enumerate() {
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *seg)?;
        if i + 1 == path.len() {
            return Some(if want_value { v.span() } else { k.span() });
        }
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return Some(k.span()),
        }
    }
    None
}

/// The span of the array element equal to `item` at `path`.
fn find_array_item(text: &str, path: &[&str], item: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable = doc.get_ref();
    for (i, seg) in path.iter().enumerate() {
        let (_, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *seg)?;
        if i + 1 == path.len() {
            if let DeValue::Array(items) = v.get_ref() {
                return items
                    .iter()
                    .find(|e| matches!(e.get_ref(), DeValue::String(s) if s.as_ref() == item))
                    .map(|e| e.span());
            }
            return Some(v.span());
        }
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_values_as_toml_with_string_fallback() {
        let o = Override::parse("pretrain.lr=1e-4").unwrap();
        assert_eq!(o.stage.as_deref(), Some("pretrain"));
        assert_eq!(o.path, ["lr"]);
        assert_eq!(o.value, Value::Float(1e-4));
        let o = Override::parse("corpus.source=hf://datasets/a/b/*.parquet").unwrap();
        assert_eq!(o.value, Value::String("hf://datasets/a/b/*.parquet".into()));
        let o = Override::parse("pretrain.model.num_layers=4").unwrap();
        assert_eq!(o.path, ["model", "num_layers"]);
        assert!(Override::parse("nonsense").is_err());
        assert!(Override::parse("lr=3").is_err());
        assert_eq!(Override::parse("seed=3").unwrap().value, Value::Integer(3));
    }

    #[test]
    fn stage_names_that_could_escape_are_refused() {
        assert!(safe_stage_name("tokenize"));
        assert!(safe_stage_name("glue-v2.cola"));
        for bad in ["", "../x", "a/b", "a\\b", ".hidden", "a..b", "sp ace"] {
            assert!(!safe_stage_name(bad), "{bad}");
        }
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "[stages.a]\nkind = \"x\"\nvocab = 3\n";
        let span = find_span(text, &["stages", "a", "vocab"], false).unwrap();
        assert_eq!(&text[span], "vocab");
        let span = find_span(text, &["stages", "a", "kind"], true).unwrap();
        assert_eq!(&text[span], "\"x\"");
    }
}
