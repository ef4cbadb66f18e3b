//! Turns the stages' figures into the report's sections.

use indicatif::ProgressBar;
use serde_json::Value;

use crate::data::{
    Glue, GlueTask, PREPROCESSING_KINDS, Pretrain, manifest_params, manifest_seconds, num,
    stage_summary, text,
};
use crate::doc::{Block, Cell, Document, Section, Span, b, c, t};
use crate::fmt::{self, NA};
use crate::notes::{self, TrainingNote, training_notes};
use crate::plots::{LinePlot, line_svg, thin};
use crate::records::{PipelineInfo, StageRecord};
use crate::rules::{RuleCheck, RuleStatus, check_all};
use crate::{ReportError, ReportParams};

/// The figures read from every stage.
pub struct RunData {
    /// Every pretraining stage, in pipeline order.
    pub pretrains: Vec<Pretrain>,
    /// The GLUE results, if the pipeline fine-tuned.
    pub glue: Option<Glue>,
}

impl RunData {
    /// Reads the outputs the report needs.
    pub fn read(records: &[StageRecord], progress: &ProgressBar) -> Result<RunData, ReportError> {
        let mut pretrains = Vec::new();
        for r in records {
            if r.kind == "pretrain" {
                pretrains.push(Pretrain::read(r)?);
            }
            progress.inc(1);
        }
        Ok(RunData {
            pretrains,
            glue: Glue::read(records)?,
        })
    }

    /// The pretraining stage whose curves are shown: the last one.
    pub fn main_pretrain(&self) -> Option<&Pretrain> {
        self.pretrains.last()
    }
}

/// The report, ready to render.
pub struct Built {
    /// The document.
    pub document: Document,
    /// Plot files (relative path, SVG).
    pub plot_files: Vec<(String, String)>,
    /// The rules check.
    pub rules: Vec<RuleCheck>,
    /// GLUE average as a fraction.
    pub glue_average: Option<f64>,
    /// Warnings about the pretraining runs.
    pub notes: Vec<TrainingNote>,
}

/// Splits text on backticks into plain and code spans (`a `b` c`).
fn ticks(s: &str) -> Vec<Span> {
    s.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { c(part) } else { t(part) })
        .collect()
}

/// One column of the paper's GLUE table: the task and the metrics shown.
struct GlueColumn {
    title: &'static str,
    task: &'static str,
    metrics: &'static [&'static str],
}

const GLUE_COLUMNS: &[GlueColumn] = &[
    GlueColumn {
        title: "MNLI-m/mm",
        task: "mnli",
        metrics: &["accuracy_matched", "accuracy_mismatched"],
    },
    GlueColumn {
        title: "QQP",
        task: "qqp",
        metrics: &["f1"],
    },
    GlueColumn {
        title: "QNLI",
        task: "qnli",
        metrics: &["accuracy"],
    },
    GlueColumn {
        title: "SST-2",
        task: "sst2",
        metrics: &["accuracy"],
    },
    GlueColumn {
        title: "CoLA",
        task: "cola",
        metrics: &["matthews"],
    },
    GlueColumn {
        title: "STS-B",
        task: "stsb",
        metrics: &["pearson"],
    },
    GlueColumn {
        title: "MRPC",
        task: "mrpc",
        metrics: &["f1"],
    },
    GlueColumn {
        title: "RTE",
        task: "rte",
        metrics: &["accuracy"],
    },
];

/// The paper's reference rows (GLUE dev, one A6000, 24 h), on the 0–100
/// scale, in the order of [`GLUE_COLUMNS`] with MNLI split in two, then the
/// average.
const REFERENCES: &[(&str, [f64; 10])] = &[
    (
        "crammed BERT v1 (C4, A6000, 24 h), paper",
        [83.9, 84.1, 87.3, 89.5, 92.2, 44.5, 84.6, 87.5, 53.8, 78.6],
    ),
    (
        "crammed-bert v2 (Pile, A6000, 24 h), paper",
        [84.1, 84.6, 87.5, 90.2, 92.0, 53.3, 87.4, 88.9, 58.5, 80.7],
    ),
];

/// A metric of a task, falling back to `accuracy` when the named one is absent.
fn metric(values: &std::collections::BTreeMap<String, f64>, name: &str) -> Option<f64> {
    values
        .get(name)
        .or_else(|| {
            (name.starts_with("accuracy"))
                .then(|| values.get("accuracy"))
                .flatten()
        })
        .copied()
}

/// The nine numbers of a GLUE row (fractions), picked by `pick`.
fn nine(glue: &Glue, pick: impl Fn(&GlueTask, &str) -> Option<f64>) -> Vec<Option<f64>> {
    let pick = &pick;
    GLUE_COLUMNS
        .iter()
        .flat_map(|col| {
            let task = glue.tasks.get(col.task);
            col.metrics
                .iter()
                .map(move |m| task.and_then(|t| pick(t, m)))
        })
        .collect()
}

/// Formats nine numbers (MNLI as `m/mm`) into the eight score cells.
fn score_cells(values: &[Option<f64>], f: impl Fn(f64) -> String) -> Vec<Cell> {
    let show = |v: Option<f64>| v.map_or_else(|| "—".to_string(), &f);
    let mut cells = vec![Cell::num(format!(
        "{}/{}",
        show(values[0]),
        show(values[1])
    ))];
    cells.extend(values[2..].iter().map(|v| Cell::num(show(*v))));
    cells
}

fn mean(values: &[Option<f64>]) -> Option<f64> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

/// Flattens a JSON value into `path = value` rows (scalars and short arrays).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => out.push((prefix.to_string(), "null".to_string())),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// A safe file-name fragment for a stage name.
fn slug(name: &str) -> String {
    name.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                ch
            } else {
                '-'
            }
        })
        .collect()
}

/// Wall-clock axis: scale and unit name for a maximum of `max_seconds`.
fn time_axis(max_seconds: f64) -> (f64, &'static str) {
    if max_seconds > 2.0 * 3600.0 {
        (3600.0, "wall clock (hours)")
    } else if max_seconds > 120.0 {
        (60.0, "wall clock (minutes)")
    } else {
        (1.0, "wall clock (seconds)")
    }
}

/// Builds the whole report.
pub fn build(
    params: &ReportParams,
    pipeline: &PipelineInfo,
    records: &[StageRecord],
    run: &RunData,
) -> Result<Built, ReportError> {
    let title = if params.title.trim().is_empty() {
        format!("Cramming report: {}", pipeline.name)
    } else {
        params.title.clone()
    };
    let rules = check_all(records, &run.pretrains, run.glue.as_ref());
    let mut plot_files = Vec::new();
    let notes: Vec<TrainingNote> = run
        .pretrains
        .iter()
        .flat_map(|p| training_notes(p, params.repeat_warning_epochs))
        .collect();

    let (glue_section, glue_average, glue_count) = glue_section(params, pipeline, run);
    let mut sections = vec![rules_section(&rules), glue_section];
    sections.push(pretrain_section(params, run, &notes, &mut plot_files)?);
    sections.push(schedule_section(params, run, &mut plot_files)?);
    sections.push(preprocessing_section(records)?);
    sections.push(budget_section(records, run));
    sections.push(machine_section(pipeline, run));
    sections.push(reproduce_section(pipeline, records));

    let mut lead = vec![
        t("Pipeline "),
        c(&pipeline.name),
        t(" ("),
        c(&pipeline.file),
        t("). "),
    ];
    match glue_average {
        Some(avg) => {
            lead.push(t("GLUE dev average "));
            lead.push(b(fmt::score(avg)));
            lead.push(t(format!(" over {glue_count} of 9 scores. ")));
        }
        None => lead.push(t("No GLUE scores. ")),
    }
    if let Some(p) = run.main_pretrain() {
        lead.push(t(format!(
            "Pretraining: {} of training, {} tokens, final loss {}{}. ",
            fmt::opt(p.wall_seconds(), fmt::duration),
            fmt::opt(num(&p.summary, "tokens"), fmt::int),
            fmt::opt(num(&p.summary, "final_loss"), fmt::number),
            num(&p.summary, "heldout_loss")
                .map(|h| format!(", held-out loss {}", fmt::number(h)))
                .unwrap_or_default()
        )));
    }
    if !notes.is_empty() {
        lead.push(b(format!(
            "{} pretraining warning{} (see Pretraining). ",
            notes.len(),
            if notes.len() == 1 { "" } else { "s" }
        )));
    }
    let fails = rules
        .iter()
        .filter(|r| r.status == RuleStatus::Fail)
        .count();
    let warns = rules
        .iter()
        .filter(|r| r.status == RuleStatus::Warn)
        .count();
    lead.push(b(if fails == 0 {
        format!("Rules: no rule failed ({warns} warnings).")
    } else {
        format!("Rules: {fails} failed, so this run is not comparable to the paper.")
    }));

    Ok(Built {
        document: Document {
            title,
            lead,
            sections,
        },
        plot_files,
        rules,
        glue_average,
        notes,
    })
}

fn rules_section(rules: &[RuleCheck]) -> Section {
    let rows = rules
        .iter()
        .map(|r| {
            let class = match r.status {
                RuleStatus::Pass => "pass",
                RuleStatus::Warn => "warn",
                RuleStatus::Fail => "fail",
            };
            vec![
                Cell::text(r.status.as_str()).with_class(class),
                Cell::text(&r.rule),
                Cell {
                    spans: ticks(&r.reason),
                    class: None,
                },
            ]
        })
        .collect();
    Section {
        id: "rules",
        title: "Rules check".into(),
        blocks: vec![
            Block::Para(vec![t(
                "The cramming rules: pretrain from scratch with masked language modelling on one device within a wall-clock budget, using no downstream data; fine-tune GLUE on each task's training data for at most 5 epochs with one set of hyperparameters. WARN means cram cannot verify the rule.",
            )]),
            Block::Table {
                header: vec!["Status".into(), "Rule".into(), "Reason".into()],
                rows,
            },
        ],
    }
}

/// How many fine-tunings stand behind the GLUE numbers, in words.
fn trials_sentence(glue: &crate::data::Glue) -> String {
    let counts: std::collections::BTreeSet<usize> =
        glue.tasks.values().map(|t| t.trial_count()).collect();
    match counts.iter().copied().max().unwrap_or(1) {
        1 => "Each task was fine-tuned once (`trials = 1`); the paper's model card reports the median of 5 fine-tunings.".to_string(),
        n if counts.len() == 1 => format!(
            "Each score is the median of {n} fine-tunings with seeds seed … seed + {} (`trials = {n}`), as the paper's model card reports GLUE; the per-task table gives the range.",
            n - 1
        ),
        n => format!("Scores are medians over up to {n} fine-tunings per task (`trials`); the per-task table gives each task's count and range."),
    }
}

fn glue_section(
    params: &ReportParams,
    pipeline: &PipelineInfo,
    run: &RunData,
) -> (Section, Option<f64>, usize) {
    let mut header = vec!["Run".to_string()];
    header.extend(GLUE_COLUMNS.iter().map(|c| c.title.to_string()));
    header.push("Avg".into());
    let mut rows = Vec::new();
    if params.reference_rows {
        for (name, values) in REFERENCES {
            let mut row = vec![Cell::text(*name).with_class("ref")];
            let fractions: Vec<Option<f64>> = values[..9].iter().map(|v| Some(v / 100.0)).collect();
            row.extend(score_cells(&fractions, fmt::score));
            row.push(Cell::num(format!("{:.1}", values[9])));
            rows.push(row);
        }
    }
    let mut blocks = Vec::new();
    let mut average = None;
    let mut count = 0;
    match &run.glue {
        None => {
            blocks.push(Block::Para(vec![t(
                "This pipeline has no GLUE stage; only the paper's rows are shown.",
            )]));
        }
        Some(glue) => {
            let ours = nine(glue, |task, m| metric(&task.metrics, m));
            count = ours.iter().flatten().count();
            average = glue.average.or_else(|| mean(&ours));
            let mut row =
                vec![Cell::text(format!("this run ({})", pipeline.name)).with_class("ours")];
            row.extend(score_cells(&ours, fmt::score));
            let avg_text = match average {
                Some(a) if count < 9 => format!("{} ({count} of 9)", fmt::score(a)),
                Some(a) => fmt::score(a),
                None => "—".to_string(),
            };
            row.push(Cell::num(avg_text));
            rows.push(row);
            if params.majority_baseline {
                let base = nine(glue, |task, m| metric(&task.majority_baseline, m));
                if base.iter().any(Option::is_some) {
                    let mut row =
                        vec![Cell::text("majority class (this run's dev sets)").with_class("base")];
                    row.extend(score_cells(&base, fmt::score));
                    let all = base.iter().all(Option::is_some);
                    row.push(Cell::num(if all {
                        fmt::score(mean(&base).unwrap_or_default())
                    } else {
                        "—".to_string()
                    }));
                    rows.push(row);
                }
            }
        }
    }
    let mut section_blocks = vec![
        Block::Para(vec![t(
            "GLUE dev scores ×100, laid out as in the paper: MNLI matched/mismatched accuracy, QQP F1, QNLI accuracy, SST-2 accuracy, CoLA Matthews correlation, STS-B Pearson correlation, MRPC F1, RTE accuracy; Avg is the mean of the nine numbers. — marks a task this run did not fine-tune.",
        )]),
        Block::Table { header, rows },
    ];
    section_blocks.extend(blocks);
    if let Some(glue) = &run.glue {
        if glue.quick_run || !glue.outside_rules.is_empty() {
            let mut spans = vec![b("Quick run: not comparable to the paper. ")];
            if !glue.outside_rules.is_empty() {
                spans.push(t(format!(
                    "Outside the rules: {}.",
                    glue.outside_rules.join("; ")
                )));
            }
            section_blocks.push(Block::Para(spans));
        }
        if let Some(acc) = glue.average_acc {
            section_blocks.push(Block::Para(vec![t(format!(
                "Accuracy-style average reported by the GLUE stage: {}.",
                fmt::score(acc)
            ))]));
        }
        section_blocks.push(Block::Para(vec![t(trials_sentence(glue))]));
        section_blocks.push(Block::Subheading("Per task".into()));
        let rows = glue
            .tasks
            .iter()
            .map(|(name, task)| {
                let metrics = task
                    .metrics
                    .iter()
                    .map(
                        |(k, v)| match (task.metrics_min.get(k), task.metrics_max.get(k)) {
                            (Some(lo), Some(hi)) if task.trial_count() > 1 => format!(
                                "{k} {} ({}–{}, {} trials)",
                                fmt::score(*v),
                                fmt::score(*lo),
                                fmt::score(*hi),
                                task.trial_count()
                            ),
                            _ => format!("{k} {}", fmt::score(*v)),
                        },
                    )
                    .collect::<Vec<_>>()
                    .join(", ");
                let baseline = task
                    .majority_baseline
                    .iter()
                    .map(|(k, v)| format!("{k} {}", fmt::score(*v)))
                    .collect::<Vec<_>>()
                    .join(", ");
                vec![
                    Cell::code(name),
                    Cell::text(if metrics.is_empty() {
                        NA.to_string()
                    } else {
                        metrics
                    }),
                    Cell::num(fmt::opt(task.epochs, fmt::number)),
                    Cell::num(fmt::opt(task.train_examples, fmt::int)),
                    Cell::num(fmt::opt(task.dev_examples, fmt::int)),
                    Cell::num(fmt::opt(task.seconds, fmt::duration)),
                    Cell::text(if baseline.is_empty() {
                        NA.to_string()
                    } else {
                        baseline
                    }),
                    if task.has_overrides() {
                        Cell::code(task.overrides.to_string())
                    } else {
                        Cell::text("none")
                    },
                ]
            })
            .collect();
        section_blocks.push(Block::Table {
            header: [
                "Task",
                "Dev metrics (×100)",
                "Epochs",
                "Train examples",
                "Dev examples",
                "Time",
                "Majority baseline",
                "Overrides",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        });
        let mut hp = Vec::new();
        flatten("", &glue.hyperparameters, &mut hp);
        if !hp.is_empty() && glue.hyperparameters.is_object() {
            section_blocks.push(Block::Subheading(
                "Fine-tuning hyperparameters (all tasks)".into(),
            ));
            section_blocks.push(Block::Facts(
                hp.into_iter().map(|(k, v)| (k, Cell::code(v))).collect(),
            ));
        }
    }
    (
        Section {
            id: "glue",
            title: "GLUE dev results".into(),
            blocks: section_blocks,
        },
        average,
        count,
    )
}

/// Draws a plot, records its file and returns the block.
fn plot_block(
    params: &ReportParams,
    plot: LinePlot<'_>,
    file: String,
    plot_files: &mut Vec<(String, String)>,
) -> Result<Block, ReportError> {
    let plot = LinePlot {
        points: thin(plot.points, params.max_plot_points),
        ..plot
    };
    let svg = line_svg(&plot, (params.plot_width, params.plot_height))?;
    plot_files.push((file.clone(), svg.clone()));
    Ok(Block::Plot {
        title: plot.caption.to_string(),
        svg,
        file,
    })
}

fn pretrain_section(
    params: &ReportParams,
    run: &RunData,
    notes: &[TrainingNote],
    plot_files: &mut Vec<(String, String)>,
) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    if run.pretrains.is_empty() {
        blocks.push(Block::Para(vec![t("This pipeline has no pretrain stage.")]));
    }
    for p in &run.pretrains {
        if run.pretrains.len() > 1 {
            blocks.push(Block::Subheading(format!("Stage {}", p.name)));
        }
        let s = &p.summary;
        let mean_tps = {
            let v: Vec<f64> = p
                .points
                .iter()
                .filter_map(|x| x.tokens_per_second)
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let text_or_na = |k: &str| {
            s.get(k).map_or_else(
                || NA.to_string(),
                |v| v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        };
        blocks.push(Block::Facts(vec![
            ("Stage".into(), Cell::code(&p.name)),
            ("Architecture".into(), Cell::code(text_or_na("arch"))),
            (
                "Parameters".into(),
                Cell::text(fmt::opt(num(s, "parameters"), fmt::int)),
            ),
            (
                "Budget".into(),
                Cell::text(
                    match (
                        p.budget_seconds(),
                        num(s, "budget_steps"),
                        num(s, "budget_tokens"),
                    ) {
                        (Some(b), _, _) => format!("{} wall clock", fmt::duration(b)),
                        (None, Some(steps), _) => {
                            format!("{} steps (no wall-clock budget)", fmt::int(steps))
                        }
                        (None, None, Some(tokens)) => format!(
                            "{} tokens (equal data across machines; no wall-clock budget)",
                            fmt::int(tokens)
                        ),
                        (None, None, None) => NA.to_string(),
                    },
                ),
            ),
            (
                "Training wall clock".into(),
                Cell::text(fmt::opt(p.wall_seconds(), fmt::duration)),
            ),
            (
                "Steps".into(),
                Cell::text(fmt::opt(num(s, "steps"), fmt::int)),
            ),
            (
                "Tokens".into(),
                Cell::text(fmt::opt(num(s, "tokens"), fmt::int)),
            ),
            (
                "Passes over the data".into(),
                Cell::text(match (notes::epochs(p), num(s, "rows")) {
                    (Some(e), Some(r)) => format!("{:.2} (of {} rows)", e, fmt::int(r)),
                    (Some(e), None) => format!("{e:.2}"),
                    _ => NA.to_string(),
                }),
            ),
            (
                "Final loss".into(),
                Cell::text(fmt::opt(num(s, "final_loss"), fmt::number)),
            ),
            (
                "Held-out loss".into(),
                Cell::text(match (num(s, "heldout_loss"), num(s, "heldout_rows")) {
                    (Some(h), Some(r)) => format!(
                        "{} ({} held-out rows, fixed masks)",
                        fmt::number(h),
                        fmt::int(r)
                    ),
                    (Some(h), None) => fmt::number(h),
                    _ => "n/a (the packed input has no held-out rows)".to_string(),
                }),
            ),
            (
                "Scaling fit".into(),
                Cell::text(crate::scaling::describe(p)),
            ),
            ("Stopped by".into(), Cell::text(text_or_na("stopped_by"))),
            (
                "Last learning rate".into(),
                Cell::text(match (num(s, "final_lr"), num(s, "peak_lr")) {
                    (Some(l), Some(peak)) if peak > 0.0 => format!(
                        "{} ({:.1} % of the peak {})",
                        fmt::number(l),
                        100.0 * l / peak,
                        fmt::number(peak)
                    ),
                    (l, _) => fmt::opt(l, fmt::number),
                }),
            ),
            (
                "Mean throughput".into(),
                Cell::text(fmt::opt(mean_tps, |x| format!("{} tokens/s", fmt::int(x)))),
            ),
            ("Dropout".into(), Cell::text(text_or_na("dropout"))),
            (
                "Precision".into(),
                Cell::text(match text(s, "precision") {
                    Some(p) if p == "bf16" => "bf16 matrix products, fp32 weights".to_string(),
                    Some(p) => p,
                    None => "fp32".to_string(),
                }),
            ),
            (
                "Device".into(),
                Cell::text(format!(
                    "{} ({} backend)",
                    text_or_na("device"),
                    text_or_na("backend")
                )),
            ),
            (
                "Peak device memory".into(),
                Cell::text(fmt::opt(num(s, "peak_memory_bytes"), fmt::bytes)),
            ),
        ]));
        for n in notes.iter().filter(|n| n.stage == p.name) {
            let mut spans = vec![b("Warning: ")];
            spans.extend(ticks(&n.text));
            blocks.push(Block::Para(spans));
        }
        let loss_tokens: Vec<(f64, f64)> = p
            .points
            .iter()
            .filter_map(|x| Some((x.tokens?, x.loss?)))
            .collect();
        let loss_time: Vec<(f64, f64)> = p
            .points
            .iter()
            .filter_map(|x| Some((x.elapsed_seconds?, x.loss?)))
            .collect();
        if loss_tokens.is_empty() && loss_time.is_empty() {
            blocks.push(Block::Para(vec![
                t("No training metrics were recorded ("),
                c("metrics.jsonl"),
                t(" is missing or empty)."),
            ]));
            continue;
        }
        let slug = slug(&p.name);
        if !loss_tokens.is_empty() {
            blocks.push(plot_block(
                params,
                LinePlot {
                    caption: "Training loss against tokens seen",
                    x_label: "tokens",
                    y_label: "MLM loss",
                    points: loss_tokens,
                    steps: false,
                },
                format!("plots/{slug}-loss-tokens.svg"),
                plot_files,
            )?);
        }
        let heldout: Vec<(f64, f64)> = p
            .points
            .iter()
            .filter_map(|x| Some((x.tokens?, x.heldout_loss?)))
            .collect();
        if !heldout.is_empty() {
            blocks.push(plot_block(
                params,
                LinePlot {
                    caption: "Held-out loss against tokens seen (fixed masks; compare runs by this)",
                    x_label: "tokens",
                    y_label: "held-out MLM loss",
                    points: heldout,
                    steps: false,
                },
                format!("plots/{slug}-heldout-tokens.svg"),
                plot_files,
            )?);
        }
        if !loss_time.is_empty() {
            let max = loss_time.iter().map(|p| p.0).fold(0.0, f64::max);
            let (scale, unit) = time_axis(max);
            blocks.push(plot_block(
                params,
                LinePlot {
                    caption: "Training loss against wall clock",
                    x_label: unit,
                    y_label: "MLM loss",
                    points: loss_time.into_iter().map(|(x, y)| (x / scale, y)).collect(),
                    steps: false,
                },
                format!("plots/{slug}-loss-time.svg"),
                plot_files,
            )?);
        }
        let mut rows = Vec::new();
        flatten("", &p.params, &mut rows);
        if p.params.is_object() && !rows.is_empty() {
            blocks.push(Block::Subheading(format!(
                "Resolved parameters of {}",
                p.name
            )));
            blocks.push(Block::Table {
                header: vec!["Parameter".into(), "Value".into()],
                rows: rows
                    .into_iter()
                    .map(|(k, v)| vec![Cell::code(k), Cell::code(v)])
                    .collect(),
            });
        }
    }
    Ok(Section {
        id: "pretraining",
        title: "Pretraining".into(),
        blocks,
    })
}

fn schedule_section(
    params: &ReportParams,
    run: &RunData,
    plot_files: &mut Vec<(String, String)>,
) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let Some(p) = run.main_pretrain() else {
        blocks.push(Block::Para(vec![t("This pipeline has no pretrain stage.")]));
        return Ok(Section {
            id: "schedule",
            title: "Learning-rate and batch-size schedule".into(),
            blocks,
        });
    };
    // Prefer wall-clock time as x (the budget schedules run on it), else steps.
    let x_of = |m: &crate::data::MetricPoint| m.elapsed_seconds.or(m.step);
    let by_time = p.points.iter().any(|m| m.elapsed_seconds.is_some());
    let max_x = p.points.iter().filter_map(x_of).fold(0.0, f64::max);
    let (scale, unit) = if by_time {
        time_axis(max_x)
    } else {
        (1.0, "optimizer step")
    };
    let lr: Vec<(f64, f64)> = p
        .points
        .iter()
        .filter_map(|m| Some((x_of(m)? / scale, m.lr?)))
        .collect();
    let bs: Vec<(f64, f64)> = p
        .points
        .iter()
        .filter_map(|m| Some((x_of(m)? / scale, m.batch_size?)))
        .collect();
    blocks.push(Block::Para(vec![
        t("The learning rate and the batch size (sequences per optimizer step, reached by gradient accumulation) as logged by "),
        c(&p.name),
        t(" at each logged step."),
    ]));
    let peak_lr = lr.iter().map(|p| p.1).fold(f64::NAN, f64::max);
    let last_lr = lr.last().map(|p| p.1);
    let first_bs = bs.first().map(|p| p.1);
    let last_bs = bs.last().map(|p| p.1);
    blocks.push(Block::Facts(vec![
        (
            "Peak learning rate".into(),
            Cell::text(if peak_lr.is_nan() {
                NA.to_string()
            } else {
                fmt::number(peak_lr)
            }),
        ),
        (
            "Last learning rate".into(),
            Cell::text(fmt::opt(last_lr, fmt::number)),
        ),
        (
            "Batch size, first → last".into(),
            Cell::text(format!(
                "{} → {}",
                fmt::opt(first_bs, fmt::int),
                fmt::opt(last_bs, fmt::int)
            )),
        ),
    ]));
    let slug = slug(&p.name);
    if lr.is_empty() {
        blocks.push(Block::Para(vec![t("No learning rate was logged.")]));
    } else {
        blocks.push(plot_block(
            params,
            LinePlot {
                caption: "Learning rate applied",
                x_label: unit,
                y_label: "learning rate",
                points: lr,
                steps: false,
            },
            format!("plots/{slug}-lr.svg"),
            plot_files,
        )?);
    }
    if bs.is_empty() {
        blocks.push(Block::Para(vec![t("No batch size was logged.")]));
    } else {
        blocks.push(plot_block(
            params,
            LinePlot {
                caption: "Batch size applied (sequences per step)",
                x_label: unit,
                y_label: "batch size",
                points: bs,
                steps: true,
            },
            format!("plots/{slug}-batch-size.svg"),
            plot_files,
        )?);
    }
    Ok(Section {
        id: "schedule",
        title: "Learning-rate and batch-size schedule".into(),
        blocks,
    })
}

fn preprocessing_section(records: &[StageRecord]) -> Result<Section, ReportError> {
    let mut blocks = vec![Block::Para(vec![t(
        "Figures each data stage recorded. Downloading and preprocessing are free under the rules.",
    )])];
    let pre: Vec<&StageRecord> = records
        .iter()
        .filter(|r| PREPROCESSING_KINDS.contains(&r.kind.as_str()))
        .collect();
    if pre.is_empty() {
        blocks.push(Block::Para(vec![t(
            "This pipeline has no preprocessing stage.",
        )]));
    }
    for r in pre {
        blocks.push(Block::Subheading(format!("{} ({})", r.name, r.kind)));
        let metrics = match r.manifest.get("metrics").filter(|m| m.is_object()) {
            Some(m) => m.clone(),
            None => stage_summary(r)?,
        };
        let mut rows = vec![vec![
            Cell::text("time"),
            Cell::num(fmt::opt(manifest_seconds(r), fmt::duration)),
        ]];
        let params = manifest_params(r);
        if let Some(source) = text(&params, "source") {
            rows.push(vec![Cell::text("source"), Cell::code(source)]);
        }
        if let Some(map) = metrics.as_object() {
            for (key, value) in map {
                match value {
                    Value::Number(n) => {
                        if let Some(x) = n.as_f64() {
                            rows.push(vec![
                                Cell::text(fmt::label(key)),
                                Cell::num(fmt::by_key(key, x)),
                            ]);
                        }
                    }
                    Value::Bool(v) => {
                        rows.push(vec![Cell::text(fmt::label(key)), Cell::text(v.to_string())])
                    }
                    Value::String(s) if s.chars().count() <= 80 => {
                        rows.push(vec![Cell::text(fmt::label(key)), Cell::code(s)])
                    }
                    _ => {}
                }
            }
        }
        blocks.push(Block::Table {
            header: vec!["Figure".into(), "Value".into()],
            rows,
        });
    }
    Ok(Section {
        id: "preprocessing",
        title: "Preprocessing".into(),
        blocks,
    })
}

fn budget_section(records: &[StageRecord], run: &RunData) -> Section {
    let mut rows = Vec::new();
    let mut free = 0.0;
    let mut fine_tune = 0.0;
    let mut budgeted = 0.0;
    for r in records {
        let finished = text(&r.manifest, "finished_at").unwrap_or_else(|| NA.to_string());
        let seconds = manifest_seconds(r);
        let (time, account) = match r.kind.as_str() {
            k if PREPROCESSING_KINDS.contains(&k) => {
                free += seconds.unwrap_or(0.0);
                (seconds, "free (preprocessing)".to_string())
            }
            "pretrain" => {
                let p = run.pretrains.iter().find(|p| p.name == r.name);
                let wall = p.and_then(Pretrain::wall_seconds).or(seconds);
                budgeted += wall.unwrap_or(0.0);
                let account = match (wall, p.and_then(Pretrain::budget_seconds)) {
                    (Some(w), Some(b)) if b > 0.0 => format!(
                        "budgeted: {} of {} ({:.1} %)",
                        fmt::duration(w),
                        fmt::duration(b),
                        w / b * 100.0
                    ),
                    _ => "budgeted (no wall-clock budget set)".to_string(),
                };
                (wall, account)
            }
            "glue-task" => {
                let task = r.name.rsplit_once('.').map_or(r.name.as_str(), |(_, t)| t);
                let secs = run
                    .glue
                    .as_ref()
                    .and_then(|g| g.tasks.get(&crate::data::task_key(task)))
                    .and_then(|t| t.seconds)
                    .or(seconds);
                fine_tune += secs.unwrap_or(0.0);
                (secs, "not counted (fine-tuning)".to_string())
            }
            "glue" => {
                let has_tasks = records.iter().any(|x| x.kind == "glue-task");
                let secs = run
                    .glue
                    .as_ref()
                    .and_then(|g| g.fine_tune_seconds)
                    .or(seconds);
                if !has_tasks {
                    fine_tune += secs.unwrap_or(0.0);
                }
                (secs, "not counted (fine-tuning, all tasks)".to_string())
            }
            _ => (seconds, "not counted".to_string()),
        };
        rows.push(vec![
            Cell::code(&r.name),
            Cell::text(&r.kind),
            Cell::num(fmt::opt(time, fmt::duration)),
            Cell::text(account),
            Cell::text(finished),
        ]);
    }
    let budget: f64 = run
        .pretrains
        .iter()
        .filter_map(Pretrain::budget_seconds)
        .sum();
    let mut facts = vec![
        (
            "Preprocessing (free)".to_string(),
            Cell::text(fmt::duration(free)),
        ),
        (
            "Pretraining (counted)".to_string(),
            Cell::text(if budget > 0.0 {
                format!(
                    "{} of a {} budget",
                    fmt::duration(budgeted),
                    fmt::duration(budget)
                )
            } else {
                fmt::duration(budgeted)
            }),
        ),
        (
            "Fine-tuning (not counted)".to_string(),
            Cell::text(fmt::duration(fine_tune)),
        ),
    ];
    if run.pretrains.is_empty() {
        facts.remove(1);
    }
    Section {
        id: "budget",
        title: "Budget account".into(),
        blocks: vec![
            Block::Para(vec![t(
                "Only the pretraining wall clock counts against the budget; preprocessing is free and fine-tuning is not counted. Times of cached stages are those of the run that made them.",
            )]),
            Block::Facts(facts),
            Block::Table {
                header: ["Stage", "Kind", "Time", "Account", "Finished at"]
                    .map(String::from)
                    .to_vec(),
                rows,
            },
        ],
    }
}

fn machine_section(pipeline: &PipelineInfo, run: &RunData) -> Section {
    let m = &pipeline.machine;
    let mut facts = vec![
        ("Host".to_string(), Cell::text(&m.hostname)),
        ("Operating system".to_string(), Cell::text(&m.os)),
        (
            "CPU".to_string(),
            Cell::text(m.cpu_model.clone().unwrap_or_else(|| NA.to_string())),
        ),
        ("Logical CPUs".to_string(), Cell::text(m.cpus.to_string())),
        (
            "Memory".to_string(),
            Cell::text(fmt::opt(m.memory_bytes.map(|x| x as f64), fmt::bytes)),
        ),
        (
            "cram version".to_string(),
            Cell::code(&pipeline.tool_version),
        ),
    ];
    for p in &run.pretrains {
        let dev = text(&p.summary, "device").unwrap_or_else(|| NA.to_string());
        let backend = text(&p.summary, "backend").unwrap_or_else(|| NA.to_string());
        facts.push((
            format!("Training device ({})", p.name),
            Cell::text(format!(
                "{dev}, {backend} backend, peak memory {}",
                fmt::opt(num(&p.summary, "peak_memory_bytes"), fmt::bytes)
            )),
        ));
    }
    Section {
        id: "machine",
        title: "Device and machine".into(),
        blocks: vec![
            Block::Para(vec![t(
                "The machine that wrote this report; stages served from the cache may have run elsewhere.",
            )]),
            Block::Facts(facts),
        ],
    }
}

fn reproduce_section(pipeline: &PipelineInfo, records: &[StageRecord]) -> Section {
    let facts = vec![
        ("Pipeline".to_string(), Cell::code(&pipeline.name)),
        ("File".to_string(), Cell::code(&pipeline.file)),
        ("File blake3".to_string(), Cell::code(&pipeline.file_blake3)),
        ("Seed".to_string(), Cell::code(pipeline.seed.to_string())),
        (
            "cram version".to_string(),
            Cell::code(&pipeline.tool_version),
        ),
        (
            "Command".to_string(),
            Cell::code(format!("cram run {}", pipeline.file)),
        ),
    ];
    let kind_of = |name: &str| {
        records
            .iter()
            .find(|r| r.name == name)
            .map_or_else(|| NA.to_string(), |r| r.kind.clone())
    };
    let mut rows = Vec::new();
    match pipeline.lock.as_object().filter(|m| !m.is_empty()) {
        Some(lock) => {
            for (stage, entry) in lock {
                rows.push(vec![
                    Cell::code(stage),
                    Cell::text(kind_of(stage)),
                    Cell::code(text(entry, "key").unwrap_or_else(|| NA.to_string())),
                    Cell::code(text(entry, "output_hash").unwrap_or_else(|| NA.to_string())),
                ]);
            }
        }
        None => {
            for r in records {
                rows.push(vec![
                    Cell::code(&r.name),
                    Cell::text(&r.kind),
                    Cell::code(text(&r.manifest, "key").unwrap_or_else(|| NA.to_string())),
                    Cell::code(text(&r.manifest, "output_hash").unwrap_or_else(|| NA.to_string())),
                ]);
            }
        }
    }
    Section {
        id: "reproduce",
        title: "Reproducing this run".into(),
        blocks: vec![
            Block::Facts(facts),
            Block::Para(vec![t(
                "Lock entries: the cache key of each stage (kind, code version, resolved parameters and input hashes) and the hash of what it wrote. A rerun that matches these keys is served from the cache; matching output hashes mean identical bytes.",
            )]),
            Block::Table {
                header: ["Stage", "Kind", "Key", "Output hash"]
                    .map(String::from)
                    .to_vec(),
                rows,
            },
        ],
    }
}
