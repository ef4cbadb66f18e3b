//! The Slurm executor: each stale stage is one `sbatch --array` job whose
//! tasks run the hidden `cram task` subcommand on the cluster's nodes, with
//! the cache on a filesystem they all share.
//!
//! The submitting `cram run` watches the job with `squeue` and the tasks'
//! markers: a task that left the queue without writing its marker failed
//! (it exited non-zero, was killed, or its node died) and is submitted again,
//! up to `retries` times; after that the stage fails, naming the task and its
//! log. A relaunched `cram run` finds the markers of the tasks that finished
//! (they lie in the key's scratch directory) and submits only the others.
//! Nothing here relies on `flock` across hosts: markers and entries are
//! written whole and renamed into place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::executor::{Build, Executor};
use super::task::{Marker, PlanDirs};
use crate::registry::{AncestorRecord, PipelineMeta};

/// The Slurm executor's settings: the pipeline file's `[slurm]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// The partition (`--partition`) [default: the cluster's default].
    pub partition: Option<String>,
    /// The time limit of one task (`--time`, e.g. "4:00:00").
    pub time: Option<String>,
    /// CPUs per task (`--cpus-per-task`); the task's thread pool uses as
    /// many.
    pub cpus_per_task: Option<u32>,
    /// Memory per task (`--mem`, e.g. "16G").
    pub memory: Option<String>,
    /// More `sbatch` arguments, as given (e.g. ["--account=lab", "--gres=gpu:1"]).
    pub sbatch_args: Vec<String>,
    /// How many times a failed task is submitted again before the stage fails.
    pub retries: u32,
    /// Seconds between looks at the queue.
    pub poll_seconds: f64,
    /// The `cram` binary the tasks run [default: this one; it must be at
    /// the same path on every node].
    pub cram: Option<PathBuf>,
    /// Into how many array tasks a stage that splits (filter) is split;
    /// other stages are one task each.
    pub shards: usize,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: None,
            time: None,
            cpus_per_task: None,
            memory: None,
            sbatch_args: Vec::new(),
            retries: 2,
            poll_seconds: 2.0,
            cram: None,
            shards: 4,
        }
    }
}

/// Builds stages as Slurm array jobs.
#[derive(Debug, Clone)]
pub struct Slurm {
    config: SlurmConfig,
    cram: PathBuf,
}

impl Slurm {
    /// The executor with the settings of `meta`'s `[slurm]` table. Fails,
    /// naming the file, on an unknown or mistyped setting, and where
    /// `sbatch` is not on PATH.
    pub fn from_pipeline(meta: &PipelineMeta) -> Result<Slurm> {
        let config: SlurmConfig = match &meta.slurm {
            None => SlurmConfig::default(),
            Some(table) => serde_json::from_value(table.clone()).with_context(|| {
                format!(
                    "{}: [slurm] is not valid (settings: partition, time, cpus_per_task, memory, sbatch_args, retries, poll_seconds, cram, shards)",
                    meta.file.display()
                )
            })?,
        };
        if config.shards == 0 {
            bail!("{}: [slurm] shards must be at least 1", meta.file.display());
        }
        if !(config.poll_seconds > 0.0 && config.poll_seconds.is_finite()) {
            bail!(
                "{}: [slurm] poll_seconds must be a positive number of seconds",
                meta.file.display()
            );
        }
        if Command::new("sbatch").arg("--version").output().is_err() {
            bail!(
                "executor slurm: `sbatch` is not on PATH (run on a Slurm login node, or use --executor local)"
            );
        }
        let cram = match &config.cram {
            Some(p) => p.clone(),
            None => std::env::current_exe().context("cannot find this cram binary")?,
        };
        Ok(Slurm { config, cram })
    }

    /// The batch script: one task of the plan, with the task's CPUs as its
    /// thread pool.
    fn script(&self, dirs: &PlanDirs) -> String {
        let threads = match self.config.cpus_per_task {
            Some(n) => format!("export RAYON_NUM_THREADS={n}\n"),
            None => String::new(),
        };
        format!(
            "#!/bin/sh\n# Written by cram: one array task of a stage build.\n{threads}exec {} task {} \"$SLURM_ARRAY_TASK_ID\"\n",
            shell_quote(&self.cram.to_string_lossy()),
            shell_quote(&dirs.spec().to_string_lossy()),
        )
    }

    /// Submits the tasks `indices` as one array job; returns its job id.
    fn submit(&self, name: &str, dirs: &PlanDirs, indices: &[usize]) -> Result<String> {
        let list: Vec<String> = indices.iter().map(|i| i.to_string()).collect();
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--job-name={name}"))
            .arg(format!("--array={}", list.join(",")))
            .arg(format!(
                "--output={}",
                dirs.logs().join("task-%a-job-%A.log").display()
            ));
        if let Some(p) = &self.config.partition {
            cmd.arg(format!("--partition={p}"));
        }
        if let Some(t) = &self.config.time {
            cmd.arg(format!("--time={t}"));
        }
        if let Some(n) = self.config.cpus_per_task {
            cmd.arg(format!("--cpus-per-task={n}"));
        }
        if let Some(m) = &self.config.memory {
            cmd.arg(format!("--mem={m}"));
        }
        cmd.args(&self.config.sbatch_args).arg(dirs.script());
        let out = cmd.output().context("cannot run sbatch")?;
        if !out.status.success() {
            bail!(
                "sbatch refused the job: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            bail!("sbatch answered {:?}, not a job id", text.trim());
        }
        Ok(id)
    }
}

/// The array tasks of jobs named `name` that Slurm still holds (pending,
/// running, completing), by task index, with their job id and state; only
/// those of `jobs`.
fn queued(name: &str, jobs: &[String]) -> Result<BTreeMap<usize, (String, String)>> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-n", name, "-o", "%F %K %T"])
        .output()
        .context("cannot run squeue")?;
    if !out.status.success() {
        bail!(
            "squeue failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut tasks = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(job), Some(index), Some(state)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let Ok(index) = index.parse::<usize>()
            && jobs.iter().any(|j| j == job)
        {
            tasks.insert(index, (job.to_string(), state.to_string()));
        }
    }
    Ok(tasks)
}

fn cancel(name: &str) {
    let _ = Command::new("scancel").args(["-n", name]).output();
}

/// The last `n` lines of a file, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Executor for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn build(&self, b: &Build<'_>) -> Result<Value> {
        let ctx = b.ctx;
        let key = &b.task.key;
        let sharded = match b.stage.kind.shards() {
            Some(shards) if self.config.shards > 1 && shards.splits(ctx)? => Some(shards),
            _ => None,
        };
        let tasks = if sharded.is_some() {
            self.config.shards
        } else {
            1
        };
        let dirs = PlanDirs::of_work_dir(ctx.work_dir, tasks);
        std::fs::create_dir_all(dirs.logs())?;
        let mut spec = b.task.clone();
        spec.shards = sharded.map(|_| tasks);
        spec.write(&dirs.spec())?;
        super::executor::write_atomic(&dirs.script(), self.script(&dirs).as_bytes())?;
        let name = format!("cram-{}-{}", b.stage.name, &key[..8.min(key.len())]);
        let mut log = std::fs::OpenOptions::new().append(true).open(ctx.log).ok();
        let mut note = |text: String| {
            if let Some(log) = log.as_mut() {
                let _ = writeln!(log, "{} slurm: {text}", crate::store::now_rfc3339());
            }
            ctx.progress.set_message(text);
        };
        if let Some(shards) = sharded
            && !dirs.prepared_marker().is_file()
        {
            note(format!("preparing {tasks} shards on this host"));
            let _ = std::fs::remove_dir_all(dirs.prepared());
            std::fs::create_dir_all(dirs.prepared())?;
            shards.prepare(ctx, &dirs.prepared())?;
            super::executor::write_atomic(&dirs.prepared_marker(), b"")?;
        }
        let mut attempts = vec![0u32; tasks];
        let mut jobs: Vec<String> = Vec::new();
        let todo: Vec<usize> = (0..tasks).filter(|&i| !dirs.marker(i).is_file()).collect();
        if todo.is_empty() {
            note("every task finished in an earlier run; collecting".into());
        } else {
            // Tasks of an earlier, interrupted submission would race ours.
            cancel(&name);
            let id = self.submit(&name, &dirs, &todo)?;
            let plural = if todo.len() == 1 { "task" } else { "tasks" };
            note(format!("submitted job {id} ({} {plural})", todo.len()));
            for &i in &todo {
                attempts[i] += 1;
            }
            jobs.push(id);
        }
        ctx.progress.set_length(tasks as u64);
        loop {
            if crate::interrupt::requested() {
                cancel(&name);
                bail!(
                    "interrupted: the job is cancelled (finished tasks are kept for the next run)"
                );
            }
            let held = queued(&name, &jobs)?;
            let finished: Vec<usize> = (0..tasks).filter(|&i| dirs.marker(i).is_file()).collect();
            ctx.progress.set_position(finished.len() as u64);
            if finished.len() == tasks {
                break;
            }
            let failed: Vec<usize> = (0..tasks)
                .filter(|i| !finished.contains(i) && !held.contains_key(i))
                .collect();
            if !failed.is_empty() {
                for &i in &failed {
                    let logfile = jobs
                        .iter()
                        .rev()
                        .map(|j| dirs.logs().join(format!("task-{i}-job-{j}.log")))
                        .find(|p| p.is_file())
                        .unwrap_or_else(|| dirs.logs().join(format!("task-{i}-job-?.log")));
                    if attempts[i] > self.config.retries {
                        bail!(
                            "Slurm task {i} of stage {} failed {} times (the last in job {}); its log: {}\n{}",
                            b.stage.name,
                            attempts[i],
                            jobs.last().map_or("?", String::as_str),
                            logfile.display(),
                            tail(&logfile, 8)
                        );
                    }
                    note(format!(
                        "task {i} ended without finishing (attempt {} of {}; log {}): retrying",
                        attempts[i],
                        self.config.retries + 1,
                        logfile.display()
                    ));
                }
                let id = self.submit(&name, &dirs, &failed)?;
                for &i in &failed {
                    attempts[i] += 1;
                }
                note(format!("resubmitted {} task(s) as job {id}", failed.len()));
                jobs.push(id);
                continue;
            }
            let running = held.values().filter(|(_, s)| s == "RUNNING").count();
            ctx.progress.set_message(format!(
                "slurm: {running} running, {} waiting",
                held.len() - running
            ));
            std::thread::sleep(Duration::from_secs_f64(self.config.poll_seconds));
        }
        match sharded {
            Some(shards) => {
                note(format!("merging {tasks} shards"));
                let parts: Vec<PathBuf> = (0..tasks).map(|i| dirs.shard(i)).collect();
                shards.merge(ctx, &dirs.prepared(), &parts)
            }
            None => collect_whole(&dirs, ctx),
        }
    }
}

/// Moves a whole-stage task's output into the staged entry and returns its
/// metrics, recording the sub-units it cached.
fn collect_whole(dirs: &PlanDirs, ctx: &crate::registry::StageContext<'_>) -> Result<Value> {
    let marker: Marker = serde_json::from_slice(&std::fs::read(dirs.marker(0))?)
        .context("the task's marker is not readable")?;
    for (from, to) in [(dirs.out(), ctx.out_dir), (dirs.run(), ctx.run_dir)] {
        if from.is_dir() {
            let _ = std::fs::remove_dir_all(to);
            std::fs::rename(&from, to)
                .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        }
    }
    for unit in &marker.units {
        let entry = ctx.store.get(&unit.key).with_context(|| {
            format!("sub-unit {} ({}) is not in the cache", unit.name, unit.key)
        })?;
        ctx.units.lock().expect("units lock").push(AncestorRecord {
            name: unit.name.clone(),
            kind: unit.kind.clone(),
            out_dir: entry.out_dir(),
            run_dir: entry.run_dir(),
            manifest: serde_json::to_value(&entry.manifest).unwrap_or(Value::Null),
        });
    }
    Ok(marker.metrics)
}
