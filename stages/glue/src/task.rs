//! The GLUE tasks: names, splits, columns, label spaces and headline metrics.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{GlueError, Result};

/// One GLUE task, named by its Hugging Face config (`nyu-mll/glue/<config>`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum GlueTask {
    /// Corpus of Linguistic Acceptability (single sentence, 2 classes, Matthews correlation).
    Cola,
    /// Stanford Sentiment Treebank, binary (single sentence, 2 classes, accuracy).
    Sst2,
    /// Microsoft Research Paraphrase Corpus (pair, 2 classes, F1 and accuracy).
    Mrpc,
    /// Semantic Textual Similarity Benchmark (pair, regression 0..5, Pearson and Spearman).
    Stsb,
    /// Quora Question Pairs (pair, 2 classes, F1 and accuracy).
    Qqp,
    /// Multi-Genre NLI (pair, 3 classes, accuracy on the matched and mismatched dev sets).
    Mnli,
    /// Question NLI from SQuAD (pair, 2 classes, accuracy).
    Qnli,
    /// Recognising Textual Entailment (pair, 2 classes, accuracy).
    Rte,
    /// Winograd NLI (pair, 2 classes, accuracy); not part of `GLUE_sane` nor of the average.
    Wnli,
}

/// The text columns of a task's Parquet files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextColumns {
    /// The first (or only) text.
    pub first: &'static str,
    /// The second text of a pair task.
    pub second: Option<&'static str>,
}

impl GlueTask {
    /// Every GLUE config this crate reads, WNLI included.
    pub const ALL: [GlueTask; 9] = [
        GlueTask::Cola,
        GlueTask::Sst2,
        GlueTask::Mrpc,
        GlueTask::Stsb,
        GlueTask::Qqp,
        GlueTask::Mnli,
        GlueTask::Qnli,
        GlueTask::Rte,
        GlueTask::Wnli,
    ];

    /// The eight tasks of the reference's `GLUE_sane` evaluation (WNLI excluded).
    pub const GLUE_SANE: [GlueTask; 8] = [
        GlueTask::Cola,
        GlueTask::Sst2,
        GlueTask::Mrpc,
        GlueTask::Stsb,
        GlueTask::Qqp,
        GlueTask::Mnli,
        GlueTask::Qnli,
        GlueTask::Rte,
    ];

    /// The config name on the Hub and in params (`cola`, `sst2`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GlueTask::Cola => "cola",
            GlueTask::Sst2 => "sst2",
            GlueTask::Mrpc => "mrpc",
            GlueTask::Stsb => "stsb",
            GlueTask::Qqp => "qqp",
            GlueTask::Mnli => "mnli",
            GlueTask::Qnli => "qnli",
            GlueTask::Rte => "rte",
            GlueTask::Wnli => "wnli",
        }
    }

    /// The name as papers print it (`CoLA`, `SST-2`, ...).
    pub fn display_name(self) -> &'static str {
        match self {
            GlueTask::Cola => "CoLA",
            GlueTask::Sst2 => "SST-2",
            GlueTask::Mrpc => "MRPC",
            GlueTask::Stsb => "STS-B",
            GlueTask::Qqp => "QQP",
            GlueTask::Mnli => "MNLI",
            GlueTask::Qnli => "QNLI",
            GlueTask::Rte => "RTE",
            GlueTask::Wnli => "WNLI",
        }
    }

    /// Parses a task name, case-insensitively, accepting the printed forms too
    /// (`SST-2`, `sts-b`, `mnli`).
    pub fn parse(name: &str) -> Result<Self> {
        let key: String = name
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        Self::ALL
            .into_iter()
            .find(|t| t.name() == key)
            .ok_or_else(|| GlueError::UnknownTask {
                name: name.to_string(),
                known: Self::ALL.map(GlueTask::name).join(", "),
            })
    }

    /// The Parquet text columns (hub schema).
    pub fn text_columns(self) -> TextColumns {
        let (first, second) = match self {
            GlueTask::Cola | GlueTask::Sst2 => ("sentence", None),
            GlueTask::Mrpc | GlueTask::Stsb | GlueTask::Rte | GlueTask::Wnli => {
                ("sentence1", Some("sentence2"))
            }
            GlueTask::Qqp => ("question1", Some("question2")),
            GlueTask::Mnli => ("premise", Some("hypothesis")),
            GlueTask::Qnli => ("question", Some("sentence")),
        };
        TextColumns { first, second }
    }

    /// Number of outputs of the head: 1 for STS-B (regression), 3 for MNLI, else 2.
    pub fn num_labels(self) -> usize {
        match self {
            GlueTask::Stsb => 1,
            GlueTask::Mnli => 3,
            _ => 2,
        }
    }

    /// Whether the task is a regression (STS-B).
    pub fn is_regression(self) -> bool {
        self == GlueTask::Stsb
    }

    /// The ClassLabel names of the hub schema, index = label value (empty for STS-B).
    pub fn label_names(self) -> &'static [&'static str] {
        match self {
            GlueTask::Cola => &["unacceptable", "acceptable"],
            GlueTask::Sst2 => &["negative", "positive"],
            GlueTask::Mrpc => &["not_equivalent", "equivalent"],
            GlueTask::Stsb => &[],
            GlueTask::Qqp => &["not_duplicate", "duplicate"],
            GlueTask::Mnli => &["entailment", "neutral", "contradiction"],
            GlueTask::Qnli | GlueTask::Rte => &["entailment", "not_entailment"],
            GlueTask::Wnli => &["not_entailment", "entailment"],
        }
    }

    /// The training split's name.
    pub fn train_split(self) -> &'static str {
        "train"
    }

    /// The dev splits scored (MNLI: matched and mismatched).
    pub fn dev_splits(self) -> &'static [&'static str] {
        match self {
            GlueTask::Mnli => &["validation_matched", "validation_mismatched"],
            _ => &["validation"],
        }
    }

    /// The suffix of a dev split's metric names and prediction file (`matched` /
    /// `mismatched` for MNLI, none otherwise).
    pub fn split_suffix(self, split: &str) -> Option<&'static str> {
        match (self, split) {
            (GlueTask::Mnli, "validation_matched") => Some("matched"),
            (GlueTask::Mnli, "validation_mismatched") => Some("mismatched"),
            _ => None,
        }
    }

    /// The metric names reported for this task (before any split suffix): `matthews` (CoLA),
    /// `pearson`/`spearman` (STS-B), `f1`/`accuracy` (MRPC, QQP), `accuracy` (others).
    pub fn metric_names(self) -> &'static [&'static str] {
        match self {
            GlueTask::Cola => &["matthews"],
            GlueTask::Stsb => &["pearson", "spearman"],
            GlueTask::Mrpc | GlueTask::Qqp => &["f1", "accuracy"],
            _ => &["accuracy"],
        }
    }

    /// The path of one split in the hub layout: `<data_dir>/<config>/<split>-00000-of-00001.parquet`.
    pub fn split_path(self, data_dir: &Path, split: &str) -> PathBuf {
        data_dir
            .join(self.name())
            .join(format!("{split}-00000-of-00001.parquet"))
    }
}

impl std::fmt::Display for GlueTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GlueTask {
    type Err = GlueError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// The Parquet files a task reads (its train split, then its dev splits), so that the engine
/// can hash exactly these into the task's cache key. A missing file is an error naming the task
/// and the path expected.
pub fn task_files(data_dir: &Path, task: GlueTask) -> Result<Vec<PathBuf>> {
    std::iter::once(task.train_split())
        .chain(task.dev_splits().iter().copied())
        .map(|split| {
            let path = task.split_path(data_dir, split);
            if path.is_file() {
                Ok(path)
            } else {
                Err(GlueError::MissingSplit {
                    task: task.name().to_string(),
                    split: split.to_string(),
                    path,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_printed_names() {
        assert_eq!(GlueTask::parse("SST-2").unwrap(), GlueTask::Sst2);
        assert_eq!(GlueTask::parse("sts-b").unwrap(), GlueTask::Stsb);
        assert_eq!(GlueTask::parse("MNLI").unwrap(), GlueTask::Mnli);
        let err = GlueTask::parse("squad").unwrap_err().to_string();
        assert!(err.contains("squad") && err.contains("cola"), "{err}");
        for t in GlueTask::ALL {
            assert_eq!(GlueTask::parse(t.name()).unwrap(), t);
            assert_eq!(GlueTask::parse(t.display_name()).unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
        }
    }

    #[test]
    fn label_spaces_match_heads() {
        for t in GlueTask::ALL {
            if t.is_regression() {
                assert_eq!(t.num_labels(), 1);
            } else {
                assert_eq!(t.label_names().len(), t.num_labels(), "{t}");
            }
        }
    }
}
