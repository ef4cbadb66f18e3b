//! The subcommands' work: settings are resolved once here (cache location,
//! overrides), then each command runs.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::{Cli, Command, DagFormat, PipelineArgs};
use crate::exec;
use crate::lockfile::LockFile;
use crate::pipeline::{self, Override, Pipeline};
use crate::plan::{self, State};
use crate::registry;
use crate::store::{Store, dir_size};
use crate::ui::Verbosity;

/// Exit code for a failed stage.
pub const EXIT_STAGE_FAILED: u8 = 1;
/// Exit code for bad usage or a bad pipeline file.
pub const EXIT_USAGE: u8 = 2;

/// The cache location: `--cache`, then `$CRAM_CACHE`, then `./cache`.
pub fn cache_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CRAM_CACHE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cache"))
}

/// Writes to stdout; a closed pipe (`cram dag | head`) ends quietly.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

pub(crate) fn load(args: &PipelineArgs) -> Result<Pipeline> {
    let overrides = args
        .set
        .iter()
        .map(|s| Override::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pipeline::load(&args.file, &overrides)?)
}

/// Runs one parsed command line.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let cache = cache_dir(cli.cache.as_deref());
    // Before any GPU kernel: cubecl's autotune results live beside the cache.
    cram_model::tuning::keep_tuning_in(&cram_model::tuning::tuning_dir(&cache));
    match cli.command {
        Command::Run(args) => {
            crate::run_command::run(args, &cache, cli.remote.as_deref(), verbosity)
        }
        Command::Task { spec, index } => {
            exec::task::run_task(&spec, index)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Push {
            pipeline: args,
            until,
        } => crate::remote::commands::push(
            &load(&args)?,
            &cache,
            cli.remote.as_deref(),
            until.as_deref(),
            verbosity,
        ),
        Command::Pull {
            pipeline: args,
            until,
        } => crate::remote::commands::pull(
            &load(&args)?,
            &cache,
            cli.remote.as_deref(),
            until.as_deref(),
            verbosity,
        ),
        Command::Status { pipeline: args } => {
            let pipeline = load(&args)?;
            let store = Store::open(&cache)?;
            let lock = LockFile::read(&pipeline.meta.lock_file)?;
            for st in plan::status(&pipeline, &store, &lock, &HashSet::new(), None) {
                match st.state {
                    State::Cached { .. } => out(&format!("{:<16} cached", st.name)),
                    State::Stale { reasons } => {
                        out(&format!("{:<16} stale: {}", st.name, reasons.join("; ")))
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dag {
            pipeline: args,
            format,
        } => {
            let pipeline = load(&args)?;
            out(&render_dag(&pipeline, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Show {
            pipeline: args,
            stage,
        } => {
            let pipeline = load(&args)?;
            if let Some(s) = &stage {
                pipeline.require_stage(s, "show")?;
            }
            let store = Store::open(&cache)?;
            let lock = LockFile::read(&pipeline.meta.lock_file)?;
            let statuses = plan::status(&pipeline, &store, &lock, &HashSet::new(), None);
            out(&format!(
                "pipeline {} ({}), seed {}, file hash {}",
                pipeline.meta.name,
                pipeline.meta.file.display(),
                pipeline.meta.seed,
                &pipeline.meta.file_hash[..16]
            ));
            for (st, status) in pipeline.stages.iter().zip(&statuses) {
                if stage.as_ref().is_some_and(|s| s != &st.name) {
                    continue;
                }
                out(&show_stage(st, status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reproduce {
            pipeline: args,
            stage,
            keep,
        } => crate::loop_commands::reproduce(&load(&args)?, &cache, &stage, keep, verbosity),
        Command::Export {
            pipeline: args,
            stage,
            dir,
            force,
        } => crate::loop_commands::export(&load(&args)?, &cache, &stage, &dir, force),
        Command::Sweep {
            pipeline: args,
            grid,
            jobs,
            out: dir,
        } => crate::loop_commands::sweep(args, grid, jobs, dir, &cache, verbosity),
        Command::Diff { a, b, set_a, set_b } => {
            let store = Store::open(&cache)?;
            out(&crate::diff::run(&a, &b, &set_a, &set_b, &store)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let store = Store::open(&cache)?;
            let total = store.entries()?.len();
            let damaged = store.verify()?;
            for (entry, problems) in &damaged {
                out(&format!(
                    "damaged {} ({} `{}`), moved to quarantine:",
                    &entry.manifest.key[..16],
                    entry.manifest.kind,
                    entry.manifest.stage
                ));
                for p in problems {
                    out(&format!("    {p}"));
                }
            }
            out(&format!(
                "verified {total} entries: {} intact, {} damaged",
                total - damaged.len(),
                damaged.len()
            ));
            Ok(if damaged.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_STAGE_FAILED)
            })
        }
        Command::Gc {
            keep_locked,
            dry_run,
        } => gc(&cache, keep_locked, dry_run),
        Command::ServeHub { dir, port, bind } => {
            crate::hub_server::HubServer::new(&dir)?.serve(&format!("{bind}:{port}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            arch,
            seq_len,
            vocab_size,
            micro_batch,
            steps,
            warmup,
            device,
            precision,
            fusion,
            peak_tflops,
            card,
            json,
        } => {
            crate::bench::run(&crate::bench::BenchArgs {
                arch,
                seq_len,
                vocab_size,
                fusion,
                micro_batch,
                steps,
                warmup,
                device,
                precisions: precision,
                peak_tflops,
                card,
                json,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Kinds { kind, markdown } => {
            if markdown {
                out(&kinds_markdown());
                return Ok(ExitCode::SUCCESS);
            }
            match kind {
                None => {
                    for k in registry::all_kinds() {
                        out(&format!("{:<10} {}", k.name(), k.about()));
                    }
                    out("\n`cram kinds KIND` lists a kind's parameters.");
                }
                Some(name) => {
                    let Some(k) = registry::find_kind(&name) else {
                        return Err(crate::diag::PipelineError::plain(format!(
                            "unknown kind `{name}`"
                        ))
                        .with_help(format!("kinds: {}", registry::kind_names().join(", ")))
                        .into());
                    };
                    out(&format!("{} — {}\n", k.name(), k.about()));
                    for p in param_docs(k.schema().as_value()) {
                        out(&format!(
                            "  {} ({}) default {}\n      {}",
                            p.name,
                            p.ty,
                            p.default,
                            p.doc.replace('\n', "\n      ")
                        ));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn dry_run_report(
    pipeline: &Pipeline,
    store: &Store,
    forced: &HashSet<String>,
    until: Option<&str>,
) -> Result<ExitCode> {
    let lock = LockFile::read(&pipeline.meta.lock_file)?;
    let only = until.map(|u| pipeline.with_ancestors(u));
    let statuses = plan::status(pipeline, store, &lock, forced, only.as_deref());
    let mut would = 0;
    for st in statuses {
        match st.state {
            State::Cached { .. } => out(&format!("  cached      {}", st.name)),
            State::Stale { reasons } => {
                would += 1;
                out(&format!(
                    "  would run   {}: {}",
                    st.name,
                    reasons.join("; ")
                ))
            }
        }
    }
    out(&format!(
        "dry run: {would} stage(s) would run; nothing was run"
    ));
    Ok(ExitCode::SUCCESS)
}

fn render_dag(pipeline: &Pipeline, format: DagFormat) -> String {
    let mut s = String::new();
    match format {
        DagFormat::Text => {
            for st in &pipeline.stages {
                if st.inputs.is_empty() {
                    s.push_str(&format!("{} ({})\n", st.name, st.kind.name()));
                } else {
                    s.push_str(&format!(
                        "{} ({}) <- {}\n",
                        st.name,
                        st.kind.name(),
                        st.inputs.join(", ")
                    ));
                }
            }
        }
        DagFormat::Dot => {
            s.push_str(&format!(
                "digraph \"{}\" {{\n  rankdir=LR;\n",
                pipeline.meta.name
            ));
            for st in &pipeline.stages {
                s.push_str(&format!(
                    "  \"{}\" [label=\"{}\\n({})\", shape=box];\n",
                    st.name,
                    st.name,
                    st.kind.name()
                ));
            }
            for st in &pipeline.stages {
                for i in &st.inputs {
                    s.push_str(&format!("  \"{i}\" -> \"{}\";\n", st.name));
                }
            }
            s.push('}');
        }
        DagFormat::Mermaid => {
            s.push_str("flowchart LR\n");
            let id = |n: &str| n.replace(['.', '-'], "_");
            for st in &pipeline.stages {
                s.push_str(&format!(
                    "  {}[\"{}<br/>({})\"]\n",
                    id(&st.name),
                    st.name,
                    st.kind.name()
                ));
            }
            for st in &pipeline.stages {
                for i in &st.inputs {
                    s.push_str(&format!("  {} --> {}\n", id(i), id(&st.name)));
                }
            }
        }
    }
    s.trim_end().to_string()
}

fn show_stage(st: &pipeline::Stage, status: &plan::StageStatus) -> String {
    let mut s = format!(
        "\n[stages.{}]  # kind {}, code version {}",
        st.name,
        st.kind.name(),
        st.kind.code_version()
    );
    if !st.inputs.is_empty() {
        s.push_str(&format!("\ninputs = {:?}", st.inputs));
    }
    let mut leaves = Vec::new();
    flatten("", &st.params.resolved, &mut leaves);
    for (k, v) in leaves {
        s.push_str(&format!("\n{k} = {v}"));
    }
    match &status.state {
        State::Cached { entry } => {
            s.push_str(&format!(
                "\n# cached: key {}\n# output {}\n# ran {} ({:.1} s)",
                entry.manifest.key,
                entry.out_dir().display(),
                entry.manifest.finished_at,
                entry.manifest.wall_seconds
            ));
            let mut metrics = Vec::new();
            flatten("", &entry.manifest.metrics, &mut metrics);
            for (k, v) in metrics.iter().take(60) {
                s.push_str(&format!("\n#   {k} = {v}"));
            }
        }
        State::Stale { reasons } => s.push_str(&format!("\n# stale: {}", reasons.join("; "))),
    }
    s
}

/// Flattens a JSON value into `(dotted.path, text)` pairs, sorted by key.
pub(crate) fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, &map[k], out);
            }
        }
        Value::Null => out.push((prefix.to_string(), "none".into())),
        other => {
            let text = other.to_string();
            let text = if text.len() > 200 {
                format!("{}…", &text[..text.floor_char_boundary(200)])
            } else {
                text
            };
            out.push((prefix.to_string(), text))
        }
    }
}

fn gc(cache: &Path, keep_locked: Vec<PathBuf>, dry_run: bool) -> Result<ExitCode> {
    let store = Store::open(cache)?;
    let _lock = store.lock_store(true)?;
    let locks = if keep_locked.is_empty() {
        let mut found = Vec::new();
        for dir in [Path::new("pipelines"), Path::new(".")] {
            if let Ok(items) = std::fs::read_dir(dir) {
                for item in items.flatten() {
                    let p = item.path();
                    if p.to_string_lossy().ends_with(".toml.lock") {
                        found.push(p);
                    }
                }
            }
        }
        found
    } else {
        keep_locked
    };
    let mut keep: HashSet<String> = HashSet::new();
    for path in &locks {
        let lock = LockFile::read(path).with_context(|| format!("reading {}", path.display()))?;
        for entry in lock.stages.values() {
            keep.insert(entry.key.clone());
            if let Some(e) = store.get(&entry.key) {
                keep.extend(e.manifest.units.iter().map(|u| u.key.clone()));
            }
        }
    }
    let mut freed = 0u64;
    let mut removed = 0usize;
    for entry in store.entries()? {
        if keep.contains(&entry.manifest.key) {
            continue;
        }
        removed += 1;
        if dry_run {
            freed += dir_size(&entry.dir);
            out(&format!(
                "would remove {} ({} `{}`)",
                &entry.manifest.key[..16],
                entry.manifest.kind,
                entry.manifest.stage
            ));
        } else {
            freed += store.remove(&entry.manifest.key)?;
        }
    }
    if !dry_run {
        freed += store.clean_tmp()?;
    }
    out(&format!(
        "{} {removed} entries ({}), keeping {} referenced by {} lock file(s)",
        if dry_run { "would remove" } else { "removed" },
        human_bytes(freed),
        keep.len(),
        locks.len()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Bytes in human units.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} bytes)", units[u])
    }
}

/// One documented parameter, read from a kind's JSON schema.
pub struct ParamDoc {
    /// Key name.
    pub name: String,
    /// Type, in words.
    pub ty: String,
    /// Default value, as JSON (or "required").
    pub default: String,
    /// The field's doc comment.
    pub doc: String,
}

/// The parameters of a schema, in declaration order.
pub fn param_docs(schema: &Value) -> Vec<ParamDoc> {
    let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
        return Vec::new();
    };
    let required: HashSet<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    props
        .iter()
        .map(|(name, p)| {
            let ty = type_name(schema, p);
            let default = match p.get("default") {
                Some(d) => d.to_string(),
                None if required.contains(name.as_str()) => "required".into(),
                None => "none".into(),
            };
            let doc = p
                .get("description")
                .and_then(|d| d.as_str())
                .or_else(|| {
                    p.get("$ref")
                        .and_then(|r| r.as_str())
                        .and_then(|r| r.rsplit('/').next())
                        .and_then(|n| schema.get("$defs").and_then(|d| d.get(n)))
                        .and_then(|d| d.get("description"))
                        .and_then(|d| d.as_str())
                })
                .unwrap_or("")
                .to_string();
            ParamDoc {
                name: name.clone(),
                ty,
                default,
                doc,
            }
        })
        .collect()
}

fn type_name(root: &Value, p: &Value) -> String {
    if let Some(t) = p.get("type") {
        return match t {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str())
                .filter(|x| *x != "null")
                .collect::<Vec<_>>()
                .join("|"),
            _ => "value".into(),
        };
    }
    if let Some(values) = p.get("enum").and_then(|e| e.as_array()) {
        return values
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("|");
    }
    if let Some(r) = p.get("$ref").and_then(|r| r.as_str()) {
        let name = r.rsplit('/').next().unwrap_or("");
        if let Some(def) = root.get("$defs").and_then(|d| d.get(name)) {
            if let Some(one) = def
                .get("oneOf")
                .or_else(|| def.get("anyOf"))
                .and_then(|o| o.as_array())
            {
                let names: Vec<String> = one
                    .iter()
                    .filter_map(|v| {
                        v.get("const")
                            .or_else(|| v.get("enum").and_then(|e| e.get(0)))
                            .map(|c| c.to_string())
                    })
                    .collect();
                if !names.is_empty() {
                    return names.join("|");
                }
            }
            if let Some(values) = def.get("enum").and_then(|e| e.as_array()) {
                return values
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("|");
            }
            return def
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("table")
                .to_string();
        }
        return name.to_string();
    }
    if let Some(any) = p.get("anyOf").and_then(|a| a.as_array()) {
        let parts: Vec<String> = any
            .iter()
            .filter(|x| x.get("type").and_then(|t| t.as_str()) != Some("null"))
            .map(|x| type_name(root, x))
            .collect();
        return parts.join("|");
    }
    "value".into()
}

/// The parameter reference of every kind, as Markdown (README's section).
pub fn kinds_markdown() -> String {
    let mut s = String::new();
    for k in registry::all_kinds() {
        s.push_str(&format!("### `{}`\n\n{}\n\n", k.name(), k.about()));
        let inputs: Vec<String> = k
            .inputs()
            .iter()
            .map(|i| {
                format!(
                    "{} ({}{})",
                    i.role,
                    i.accepts
                        .iter()
                        .map(|a| a.name())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    if i.required { "" } else { ", optional" }
                )
            })
            .collect();
        s.push_str(&format!(
            "Inputs: {}. Output: {}.\n\n",
            if inputs.is_empty() {
                "none".into()
            } else {
                inputs.join("; ")
            },
            k.output().name()
        ));
        let docs = param_docs(k.schema().as_value());
        if !docs.is_empty() {
            s.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
            for p in docs {
                s.push_str(&format!(
                    "| `{}` | {} | `{}` | {} |\n",
                    p.name,
                    p.ty.replace('|', "\\|"),
                    p.default.replace('|', "\\|"),
                    p.doc.replace('\n', " ").replace('|', "\\|")
                ));
            }
            s.push('\n');
        }
    }
    s.trim_end().to_string()
}
