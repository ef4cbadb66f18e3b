//! The `command` kind: a user's program as a stage, like a DVC stage.
//!
//! ```toml
//! [stages.myfilter]
//! kind = "command"
//! inputs = ["clean"]
//! run = "python my_filter.py {inputs.clean} {output}"
//! deps = ["my_filter.py"]
//! env = { THRESHOLD = "0.3" }
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::registry::{
    Artifact, InputSlot, Kind, ParamError, Params, PipelineMeta, StageContext, plain_params,
};
use crate::store::Store;

/// Parameters of the `command` kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// The command line, run by `sh -c` in the pipeline file's directory.
    /// Placeholders: `{output}` (the empty directory to write results into),
    /// `{inputs.NAME}` (the output directory of input stage NAME), `{work}`
    /// (a scratch directory kept across crashes) and `{seed}` (the pipeline
    /// seed; using it makes the seed part of the cache key).
    pub run: String,
    /// Files, relative to the pipeline file, whose content is hashed into the
    /// cache key (the script itself, its configuration): editing one reruns
    /// the stage.
    #[serde(default)]
    pub deps: Vec<String>,
    /// Environment variables set for the command; part of the cache key.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables passed through from cram's own environment; their
    /// current values are part of the cache key. Other variables are not
    /// passed, except PATH, HOME, LANG, TMPDIR and TERM.
    #[serde(default)]
    pub pass_env: Vec<String>,
}

/// The `command` kind.
pub struct CommandKind;

/// Bumped when the way commands are run changes.
const CODE_VERSION: u32 = 1;

static INPUTS: &[InputSlot] = &[InputSlot {
    role: "any upstream output",
    accepts: &[Artifact::Any],
    required: false,
}];

impl Kind for CommandKind {
    fn name(&self) -> &'static str {
        "command"
    }
    fn about(&self) -> &'static str {
        "Runs a program of yours as a stage (like a DVC stage): its dependencies are hashed into the key."
    }
    fn code_version(&self) -> u32 {
        CODE_VERSION
    }
    fn uses_seed(&self, params: &Params) -> bool {
        params.raw["run"]
            .as_str()
            .is_some_and(|r| r.contains("{seed}"))
    }
    fn output(&self) -> Artifact {
        Artifact::Any
    }
    fn inputs(&self) -> &'static [InputSlot] {
        INPUTS
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(CommandParams)
    }
    fn params(&self, table: toml::Value) -> Result<Params, ParamError> {
        plain_params::<CommandParams>(table)
    }
    fn identity(
        &self,
        params: &Params,
        pipeline: &PipelineMeta,
        _store: &Store,
    ) -> Result<Option<Value>> {
        let p: CommandParams = serde_json::from_value(params.raw.clone())?;
        let mut deps = BTreeMap::new();
        for dep in &p.deps {
            let path = pipeline.dir.join(dep);
            let hash = crate::hashing::hash_file(&path).with_context(|| {
                format!(
                    "dependency `{dep}` of a command stage cannot be read at {} (deps are relative to the pipeline file)",
                    path.display()
                )
            })?;
            deps.insert(dep.clone(), hash);
        }
        let passed: BTreeMap<String, Option<String>> = p
            .pass_env
            .iter()
            .map(|k| (k.clone(), std::env::var(k).ok()))
            .collect();
        Ok(Some(json!({ "deps": deps, "pass_env": passed })))
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<Value> {
        let p: CommandParams = ctx.typed()?;
        let mut line = p.run.clone();
        line = line.replace("{output}", &shell_quote(&absolute(ctx.out_dir)));
        line = line.replace("{work}", &shell_quote(&absolute(ctx.work_dir)));
        line = line.replace("{seed}", &ctx.seed.to_string());
        for input in ctx.inputs {
            line = line.replace(
                &format!("{{inputs.{}}}", input.stage),
                &shell_quote(&absolute(&input.dir)),
            );
        }
        if let Some(start) = line.find("{inputs.") {
            let rest = &line[start..];
            let end = rest.find('}').map(|e| e + 1).unwrap_or(rest.len());
            bail!(
                "`run` uses {} but that stage is not among this stage's inputs",
                &rest[..end]
            );
        }
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(ctx.log)?;
        writeln!(log, "$ {line}")?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&line)
            .current_dir(&ctx.pipeline.dir)
            .env_clear();
        for key in ["PATH", "HOME", "LANG", "TMPDIR", "TERM"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        for key in &p.pass_env {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(&p.env);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = std::time::Instant::now();
        let mut child = cmd.spawn().context("cannot start `sh`")?;
        // Both streams go to the log; the latest line is shown as progress.
        let stderr = child.stderr.take().expect("piped stderr");
        let log_err = log.try_clone()?;
        let err_thread = std::thread::spawn(move || copy_lines(stderr, log_err, None));
        let stdout = child.stdout.take().expect("piped stdout");
        copy_lines(stdout, log.try_clone()?, Some(ctx.progress));
        let _ = err_thread.join();
        let status = child.wait()?;
        if !status.success() {
            bail!("the command exited with {status}: {}", p.run);
        }
        Ok(json!({
            "exit_code": status.code(),
            "seconds": start.elapsed().as_secs_f64(),
        }))
    }
}

fn copy_lines(
    from: impl std::io::Read,
    mut to: std::fs::File,
    progress: Option<&indicatif::ProgressBar>,
) {
    for line in BufReader::new(from).lines().map_while(Result::ok) {
        let _ = writeln!(to, "{line}");
        if let Some(pb) = progress {
            pb.set_message(line.chars().take(80).collect::<String>());
        }
    }
}

fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Quotes a path for `sh` (single quotes, with embedded quotes escaped).
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote("/a/b"), "/a/b");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
