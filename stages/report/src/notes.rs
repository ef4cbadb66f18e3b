//! Warnings about how a pretraining run used its budget and its data: a run that stopped before
//! its budget (so its learning-rate schedule never finished), and a run that repeated its data
//! so often that the scores may suffer.

use crate::data::{Pretrain, num, text};
use crate::fmt;

/// What kind of problem a [`TrainingNote`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The run stopped before its budget: the schedule did not finish.
    StoppedEarly,
    /// The run read its data more than the report's threshold of passes.
    Repeated,
}

/// One warning about one pretraining stage.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingNote {
    /// The stage.
    pub stage: String,
    /// What is wrong.
    pub kind: NoteKind,
    /// The sentence the report prints (backticks mark code).
    pub text: String,
}

/// Passes over the data a run made: `epochs` in its summary (`epochs_fraction` in summaries
/// written before data repetition existed).
pub fn epochs(p: &Pretrain) -> Option<f64> {
    num(&p.summary, "epochs").or_else(|| num(&p.summary, "epochs_fraction"))
}

/// A number of passes with at most two decimals, trailing zeros dropped (`2`, `6.2`, `1.83`).
fn passes(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The warnings for `p`; `repeat_threshold` is the number of passes above which repetition is
/// flagged.
pub fn training_notes(p: &Pretrain, repeat_threshold: f64) -> Vec<TrainingNote> {
    let mut notes = Vec::new();
    let s = &p.summary;
    let note = |kind, text: String| TrainingNote {
        stage: p.name.clone(),
        kind,
        text,
    };
    if text(s, "stopped_by").as_deref() == Some("data") {
        let rows = num(s, "rows");
        let steps = num(s, "steps").unwrap_or(0.0);
        let micro = num(&p.params, "micro_batch");
        let why = match (num(s, "max_epochs"), rows, micro) {
            (_, Some(r), Some(m)) if r < m => format!(
                "its input holds {} rows, fewer than one micro-batch of {}",
                fmt::int(r),
                fmt::int(m)
            ),
            (Some(e), _, _) => format!("it reached `max_epochs = {}`", passes(e)),
            _ => "it ran out of data".to_string(),
        };
        let lr = match (num(s, "final_lr"), num(s, "peak_lr")) {
            (Some(last), Some(peak)) if peak > 0.0 => format!(
                "; its last learning rate was {} ({:.0} % of the peak)",
                fmt::number(last),
                100.0 * last / peak
            ),
            _ => String::new(),
        };
        let budget = match (
            num(s, "budget_seconds"),
            p.wall_seconds(),
            num(s, "budget_steps"),
        ) {
            (Some(b), Some(w), _) => format!(
                " after {} of its {} budget",
                fmt::duration(w),
                fmt::duration(b)
            ),
            (None, _, Some(n)) => {
                format!(" after {} of its {} steps", fmt::int(steps), fmt::int(n))
            }
            (None, _, None) if num(s, "budget_tokens").is_some() => format!(
                " after {} of its {} tokens",
                fmt::opt(num(s, "tokens"), fmt::int),
                fmt::int(num(s, "budget_tokens").unwrap_or_default())
            ),
            _ => String::new(),
        };
        notes.push(note(
            NoteKind::StoppedEarly,
            format!(
                "`{}` stopped{budget} because {why}: its learning-rate schedule and batch ramp did not finish{lr}.",
                p.name
            ),
        ));
    }
    if let Some(e) = epochs(p)
        && e > repeat_threshold
    {
        notes.push(note(
            NoteKind::Repeated,
            format!(
                "`{}` read its data {} times (more than {}): repeated data is worth less with \
                 every pass, and GLUE scores of the reference dropped when a fast GPU ran many \
                 epochs of a small corpus. Pack more text, or set the report's \
                 `repeat_warning_epochs` if this is intended.",
                p.name,
                passes(e),
                passes(repeat_threshold)
            ),
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(summary: serde_json::Value) -> Pretrain {
        Pretrain {
            name: "pretrain".into(),
            summary,
            params: json!({"micro_batch": 32}),
            points: Vec::new(),
            stage_seconds: None,
        }
    }

    #[test]
    fn a_run_that_spent_its_budget_once_over_the_data_has_no_note() {
        let p = run(json!({"stopped_by": "budget", "epochs": 1.7, "budget_seconds": 900.0}));
        assert!(training_notes(&p, 4.0).is_empty());
        assert_eq!(epochs(&p), Some(1.7));
        // Summaries from before data repetition named it `epochs_fraction`.
        assert_eq!(epochs(&run(json!({"epochs_fraction": 0.5}))), Some(0.5));
    }

    #[test]
    fn early_stops_and_repetition_are_flagged() {
        let p = run(json!({
            "stopped_by": "data", "epochs": 2.0, "max_epochs": 2.0, "rows": 1000,
            "steps": 40, "budget_steps": 100, "final_lr": 8e-4, "peak_lr": 1e-3
        }));
        let n = training_notes(&p, 4.0);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].kind, NoteKind::StoppedEarly);
        assert!(n[0].text.contains("max_epochs = 2"), "{}", n[0].text);
        assert!(n[0].text.contains("40 of its 100 steps"), "{}", n[0].text);
        assert!(n[0].text.contains("80 % of the peak"), "{}", n[0].text);

        let tiny = run(json!({"stopped_by": "data", "epochs": 0.0, "rows": 10, "steps": 0}));
        let n = training_notes(&tiny, 4.0);
        assert!(
            n[0].text
                .contains("10 rows, fewer than one micro-batch of 32"),
            "{}",
            n[0].text
        );

        let many = run(json!({"stopped_by": "budget", "epochs": 9.5}));
        let n = training_notes(&many, 4.0);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].kind, NoteKind::Repeated);
        assert!(n[0].text.contains("9.5 times"), "{}", n[0].text);
        assert!(training_notes(&many, 10.0).is_empty());
    }
}
