//! The rules check: did the run obey the cramming rules, line by line.

use std::collections::{BTreeSet, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{
    FROM_SCRATCH_KINDS, Glue, Pretrain, manifest_inputs, manifest_params, num, text,
};
use crate::fmt;
use crate::records::StageRecord;

/// Outcome of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RuleStatus {
    /// The run obeys the rule.
    Pass,
    /// The run cannot be shown to obey it (a user command, missing data).
    Warn,
    /// The run breaks the rule.
    Fail,
}

impl RuleStatus {
    /// `PASS`, `WARN` or `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleStatus::Pass => "PASS",
            RuleStatus::Warn => "WARN",
            RuleStatus::Fail => "FAIL",
        }
    }
}

/// One line of the rules check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RuleCheck {
    /// The rule, in words.
    pub rule: String,
    /// Passed, failed, or unverifiable.
    pub status: RuleStatus,
    /// Why.
    pub reason: String,
}

/// Relative slack allowed past the budget: training stops at the first step
/// that ends after the budget, so the wall clock overshoots by up to a step.
const BUDGET_SLACK: f64 = 0.02;

fn check(rule: &str, status: RuleStatus, reason: impl Into<String>) -> RuleCheck {
    RuleCheck {
        rule: rule.to_string(),
        status,
        reason: reason.into(),
    }
}

/// Runs every rule over the records.
pub fn check_all(
    records: &[StageRecord],
    pretrains: &[Pretrain],
    glue: Option<&Glue>,
) -> Vec<RuleCheck> {
    vec![
        budget_rule(pretrains),
        weights_rule(records),
        glue_rule(glue),
        downstream_rule(records, pretrains),
        quick_rule(glue, pretrains),
    ]
}

const BUDGET: &str = "Pretraining within the budget on one device";

fn budget_rule(pretrains: &[Pretrain]) -> RuleCheck {
    if pretrains.is_empty() {
        return check(
            BUDGET,
            RuleStatus::Warn,
            "no pretrain stage in this pipeline",
        );
    }
    let mut worst = RuleStatus::Pass;
    let mut reasons = Vec::new();
    for p in pretrains {
        let wall = p.wall_seconds();
        let device = text(&p.summary, "device");
        // The device count where the summary has one; older summaries list the devices.
        let multi_device = match num(&p.summary, "devices") {
            Some(n) => n > 1.0,
            None => device
                .as_deref()
                .is_some_and(|d| d.contains(',') || d.contains('+') || d.contains(';')),
        };
        let (status, mut reason) = match (p.budget_seconds(), wall) {
            (Some(budget), Some(wall)) if wall <= budget * (1.0 + BUDGET_SLACK) => (
                RuleStatus::Pass,
                format!(
                    "`{}` trained {} of a {} budget",
                    p.name,
                    fmt::duration(wall),
                    fmt::duration(budget)
                ),
            ),
            (Some(budget), Some(wall)) => (
                RuleStatus::Fail,
                format!(
                    "`{}` trained {}, past its {} budget",
                    p.name,
                    fmt::duration(wall),
                    fmt::duration(budget)
                ),
            ),
            (Some(budget), None) => (
                RuleStatus::Warn,
                format!(
                    "`{}` has a {} budget but no recorded wall clock",
                    p.name,
                    fmt::duration(budget)
                ),
            ),
            (None, wall) => match crate::data::num(&p.summary, "budget_tokens") {
                Some(tokens) => (
                    RuleStatus::Warn,
                    format!(
                        "`{}` trained to a token budget ({} tokens, {}), not against a wall-clock budget",
                        p.name,
                        fmt::int(tokens),
                        fmt::opt(wall, fmt::duration)
                    ),
                ),
                None => (
                    RuleStatus::Warn,
                    format!(
                        "`{}` trained by step count ({} steps, {}), not against a wall-clock budget",
                        p.name,
                        fmt::opt(crate::data::num(&p.summary, "steps"), fmt::int),
                        fmt::opt(wall, fmt::duration)
                    ),
                ),
            },
        };
        if status == RuleStatus::Pass && p.budget_seconds().is_some_and(|b| b != 86400.0) {
            reason.push_str(" (the paper's budget is 24 h)");
        }
        let status = match (&device, multi_device) {
            (_, true) => {
                reason.push_str(&format!(
                    "; ran on several devices ({})",
                    device.as_deref().unwrap_or_default()
                ));
                RuleStatus::Fail
            }
            (Some(d), false) => {
                reason.push_str(&format!("; one device: {d}"));
                status
            }
            (None, false) => {
                reason.push_str("; device not recorded");
                status.max(RuleStatus::Warn)
            }
        };
        worst = worst.max(status);
        reasons.push(reason);
    }
    check(BUDGET, worst, reasons.join(". "))
}

impl PartialOrd for RuleStatus {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RuleStatus {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |s: &RuleStatus| match s {
            RuleStatus::Pass => 0,
            RuleStatus::Warn => 1,
            RuleStatus::Fail => 2,
        };
        rank(self).cmp(&rank(other))
    }
}

const WEIGHTS: &str = "No pretrained weights in any stage";

fn weights_rule(records: &[StageRecord]) -> RuleCheck {
    let unverified: Vec<String> = records
        .iter()
        .filter(|r| !FROM_SCRATCH_KINDS.contains(&r.kind.as_str()))
        .map(|r| format!("`{}` ({})", r.name, r.kind))
        .collect();
    if unverified.is_empty() {
        check(
            WEIGHTS,
            RuleStatus::Pass,
            format!(
                "all {} stages are built-in kinds that start from scratch",
                records.len()
            ),
        )
    } else {
        check(
            WEIGHTS,
            RuleStatus::Warn,
            format!(
                "cannot verify {}: user commands may load anything",
                unverified.join(", ")
            ),
        )
    }
}

const GLUE: &str = "GLUE fine-tuning: at most 5 epochs, one set of hyperparameters";

fn glue_rule(glue: Option<&Glue>) -> RuleCheck {
    let Some(glue) = glue else {
        return check(GLUE, RuleStatus::Warn, "no GLUE stage in this pipeline");
    };
    if glue.tasks.is_empty() {
        return check(GLUE, RuleStatus::Warn, "the GLUE stage recorded no tasks");
    }
    let too_long: Vec<String> = glue
        .tasks
        .iter()
        .filter(|(_, t)| t.epochs.is_some_and(|e| e > 5.0))
        .map(|(name, t)| format!("{name} ({} epochs)", fmt::opt(t.epochs, fmt::number)))
        .collect();
    let overridden: Vec<String> = glue
        .tasks
        .iter()
        .filter(|(_, t)| t.has_overrides())
        .map(|(name, t)| format!("{name} ({})", t.overrides))
        .collect();
    let unknown: Vec<&String> = glue
        .tasks
        .iter()
        .filter(|(_, t)| t.epochs.is_none())
        .map(|(name, _)| name)
        .collect();
    let mut problems = Vec::new();
    if !too_long.is_empty() {
        problems.push(format!("more than 5 epochs: {}", too_long.join(", ")));
    }
    if !overridden.is_empty() {
        problems.push(format!("per-task overrides: {}", overridden.join(", ")));
    }
    if !problems.is_empty() {
        return check(GLUE, RuleStatus::Fail, problems.join("; "));
    }
    if !unknown.is_empty() {
        return check(
            GLUE,
            RuleStatus::Warn,
            format!(
                "epochs not recorded for {}",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let max_epochs = glue
        .tasks
        .values()
        .filter_map(|t| t.epochs)
        .fold(0.0, f64::max);
    check(
        GLUE,
        RuleStatus::Pass,
        format!(
            "{} tasks, at most {} epochs each, no per-task overrides",
            glue.tasks.len(),
            fmt::number(max_epochs)
        ),
    )
}

const DOWNSTREAM: &str = "No downstream (GLUE) data in pretraining";

/// Whether any string inside `v` mentions GLUE.
fn mentions_glue(v: &Value) -> bool {
    match v {
        Value::String(s) => s.to_ascii_lowercase().contains("glue"),
        Value::Array(a) => a.iter().any(mentions_glue),
        Value::Object(m) => m.values().any(mentions_glue),
        _ => false,
    }
}

fn downstream_rule(records: &[StageRecord], pretrains: &[Pretrain]) -> RuleCheck {
    if pretrains.is_empty() {
        return check(
            DOWNSTREAM,
            RuleStatus::Warn,
            "no pretrain stage in this pipeline",
        );
    }
    let by_name: HashMap<&str, (usize, &StageRecord)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), (i, r)))
        .collect();
    let mut worst = RuleStatus::Pass;
    let mut reasons = Vec::new();
    for p in pretrains {
        let Some(&(index, start)) = by_name.get(p.name.as_str()) else {
            continue;
        };
        // Walk the manifests' `inputs` upwards; when a manifest does not name
        // its inputs, fall back to every record before it (records come in
        // topological order), which can only over-report.
        let mut ancestors: BTreeSet<usize> = BTreeSet::new();
        let mut approximate = false;
        let mut stack = vec![(index, start)];
        while let Some((i, r)) = stack.pop() {
            match manifest_inputs(r) {
                Some(names) => {
                    for name in names {
                        if let Some(&(j, up)) = by_name.get(name.as_str())
                            && ancestors.insert(j)
                        {
                            stack.push((j, up));
                        }
                    }
                }
                None => {
                    approximate = true;
                    for (j, up) in records.iter().enumerate().take(i) {
                        if ancestors.insert(j) {
                            stack.push((j, up));
                        }
                    }
                }
            }
        }
        let mut bad = Vec::new();
        let mut unverified = Vec::new();
        for &j in &ancestors {
            let r = &records[j];
            match r.kind.as_str() {
                "glue" | "glue-task" | "synthetic-glue" => {
                    bad.push(format!("`{}` is a GLUE stage", r.name))
                }
                "download" | "synthetic" if mentions_glue(&manifest_params(r)) => {
                    bad.push(format!("`{}` ({}) fetches GLUE data", r.name, r.kind))
                }
                "command" => unverified.push(format!("`{}`", r.name)),
                _ => {}
            }
        }
        let names: Vec<String> = ancestors
            .iter()
            .map(|&j| format!("`{}`", records[j].name))
            .collect();
        let (status, reason) = if !bad.is_empty() {
            (
                RuleStatus::Fail,
                format!("`{}` is fed by {}", p.name, bad.join(", ")),
            )
        } else if !unverified.is_empty() {
            (
                RuleStatus::Warn,
                format!(
                    "`{}` is fed by user commands that cannot be verified: {}",
                    p.name,
                    unverified.join(", ")
                ),
            )
        } else if approximate {
            (
                RuleStatus::Warn,
                format!(
                    "`{}`: a manifest does not list its inputs; no GLUE data among the stages before it",
                    p.name
                ),
            )
        } else if names.is_empty() {
            (
                RuleStatus::Warn,
                format!("`{}` has no recorded data stages", p.name),
            )
        } else {
            (
                RuleStatus::Pass,
                format!(
                    "no GLUE source among the data stages of `{}` ({})",
                    p.name,
                    names.join(", ")
                ),
            )
        };
        worst = worst.max(status);
        reasons.push(reason);
    }
    check(DOWNSTREAM, worst, reasons.join(". "))
}

const QUICK: &str = "Full-size run (no quick-run limits)";

fn quick_rule(glue: Option<&Glue>, pretrains: &[Pretrain]) -> RuleCheck {
    let mut reasons: Vec<String> = Vec::new();
    if let Some(glue) = glue {
        if glue.quick_run && glue.outside_rules.is_empty() {
            reasons.push("GLUE ran with quick-run limits".to_string());
        }
        reasons.extend(glue.outside_rules.iter().cloned());
    }
    for p in pretrains {
        if let Some(reasons_p) = p.summary.get("outside_rules").and_then(Value::as_array) {
            reasons.extend(
                reasons_p
                    .iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| format!("`{}`: {s}", p.name)),
            );
        }
        if p.summary.get("quick_run").and_then(Value::as_bool) == Some(true) {
            reasons.push(format!("`{}` ran with quick-run limits", p.name));
        }
    }
    if reasons.is_empty() {
        check(
            QUICK,
            RuleStatus::Pass,
            "no quick-run limits were used; the scores are comparable to the paper's",
        )
    } else {
        check(
            QUICK,
            RuleStatus::Fail,
            format!("not comparable to the paper: {}", reasons.join("; ")),
        )
    }
}
