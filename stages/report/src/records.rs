//! What the engine hands the report: one record per finished ancestor stage,
//! and what it knows about the pipeline and the machine.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One finished stage of the pipeline that ran before the report.
///
/// The engine passes every ancestor of the report stage (not only its direct
/// inputs), in topological order. Cached sub-units appear as records of their
/// own: the GLUE stage gives one `glue-task` record per task (named like
/// `glue.cola`) besides its `glue` aggregate record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage name as written in the pipeline file (`stage.unit` for sub-units).
    pub name: String,
    /// Kind name (`download`, `filter`, `pretrain`, `glue`, `glue-task`, …).
    pub kind: String,
    /// The stage's output directory in the cache.
    pub out_dir: PathBuf,
    /// The entry's run-facts directory (timings outside the output hash,
    /// e.g. a pretraining run's `timeline.jsonl`); it may not exist.
    pub run_dir: PathBuf,
    /// The cache entry's `manifest.json` (format `cram-manifest-v1`: params,
    /// inputs, timings, metrics = the stage's summary, …).
    pub manifest: Value,
}

/// What the engine knows about the pipeline the report belongs to; printed in
/// the reproduction section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineInfo {
    /// The pipeline's `name`.
    pub name: String,
    /// Path of the pipeline file, as the user gave it.
    pub file: String,
    /// blake3 of the pipeline file (and every included file).
    pub file_blake3: String,
    /// The pipeline seed.
    pub seed: u64,
    /// The lock entries: a map from stage name to `{key, output_hash}`.
    pub lock: Value,
    /// Version of the `cram` tool that ran the pipeline.
    pub tool_version: String,
    /// The machine the report was made on.
    pub machine: MachineInfo,
}

/// The machine a run happened on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// Host name (`unknown` when it cannot be read).
    pub hostname: String,
    /// Operating system: distribution name, kernel release and architecture
    /// where known.
    pub os: String,
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// Total memory in bytes, when known.
    pub memory_bytes: Option<u64>,
    /// CPU model name, when known.
    pub cpu_model: Option<String>,
}

impl MachineInfo {
    /// Reads what it can about the current machine. On Linux it reads
    /// `/proc` and `/etc/os-release`; elsewhere fields it cannot read are left
    /// as `unknown`/`None`. Never fails.
    pub fn detect() -> MachineInfo {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let hostname = read("/proc/sys/kernel/hostname")
            .or_else(|| read("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .unwrap_or_else(|| "unknown".to_string());
        let distro = read("/etc/os-release").and_then(|text| os_release_name(&text));
        let kernel = read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string());
        let mut os = distro.unwrap_or_else(|| std::env::consts::OS.to_string());
        if let Some(kernel) = kernel.filter(|k| !k.is_empty()) {
            os.push_str(&format!(", kernel {kernel}"));
        }
        os.push_str(&format!(", {}", std::env::consts::ARCH));
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let memory_bytes = read("/proc/meminfo").and_then(|text| meminfo_total(&text));
        let cpu_model = read("/proc/cpuinfo").and_then(|text| cpuinfo_model(&text));
        MachineInfo {
            hostname,
            os,
            cpus,
            memory_bytes,
            cpu_model,
        }
    }
}

/// `PRETTY_NAME` (or `NAME`) from the text of `/etc/os-release`.
fn os_release_name(text: &str) -> Option<String> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_string())
        })
    };
    field("PRETTY_NAME")
        .or_else(|| field("NAME"))
        .filter(|s| !s.is_empty())
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let scale = match parts.next().map(str::to_ascii_lowercase).as_deref() {
        Some("kb") => 1024,
        Some("mb") => 1024 * 1024,
        Some("gb") => 1024 * 1024 * 1024,
        _ => 1,
    };
    Some(value * scale)
}

/// The first CPU model name in the text of `/proc/cpuinfo` (x86 `model name`,
/// ARM `Model`/`Hardware`).
fn cpuinfo_model(text: &str) -> Option<String> {
    ["model name", "Model", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key).then(|| v.trim().to_string())
            })
        })
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            meminfo_total("MemTotal:       16337992 kB\nMemFree: 1 kB\n"),
            Some(16337992 * 1024)
        );
        assert_eq!(
            cpuinfo_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"),
            Some("AMD EPYC 7B13".to_string())
        );
        assert_eq!(
            os_release_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".to_string())
        );
        assert_eq!(meminfo_total("nothing"), None);
    }

    #[test]
    fn detect_never_fails() {
        let m = MachineInfo::detect();
        assert!(m.cpus >= 1);
        assert!(!m.hostname.is_empty());
        assert!(m.os.contains(std::env::consts::ARCH));
    }
}
