//! A synthetic GLUE task set for the offline sanity recipe.
//!
//! Small, clearly learnable tasks written in the hub's schema and layout
//! (`<out_dir>/<config>/<split>-00000-of-00001.parquet`), built from a few dozen plain English
//! words (the sanity recipe's tokenizer is trained on English-like text from such words).
//! Every task's label is a simple function of the words, so a tiny model learns it in seconds:
//!
//! * `sst2`: a clause with one or two sentiment adjectives of one polarity (positive = 1).
//! * `cola`: a clause in template order (acceptable = 1) or the same words scrambled (0).
//! * `mrpc`, `qqp`: the second text repeats a clause of the first (equivalent / duplicate = 1)
//!   or is a fresh clause (0).
//! * `rte`, `qnli`: the same, entailment = 0, not_entailment = 1 (the hub's mapping).
//! * `wnli`: the same with WNLI's reversed mapping (entailment = 1).
//! * `mnli`: the hypothesis repeats a clause (entailment 0), repeats it with `not` (contradiction
//!   2) or is a fresh clause (neutral 1); matched and mismatched dev splits.
//! * `stsb`: two clauses sharing `k` of their five content words; score `k` (0..5, float32).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{GlueError, Result, io_err};
use crate::task::GlueTask;

/// Parameters of the synthetic GLUE task set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticGlueParams {
    /// Training examples per task.
    pub train_size: usize,
    /// Examples per dev split (MNLI writes two dev splits of this size).
    pub dev_size: usize,
    /// Tasks to write. Default: the eight `GLUE_sane` tasks.
    pub tasks: Vec<GlueTask>,
}

impl Default for SyntheticGlueParams {
    fn default() -> Self {
        Self {
            train_size: 512,
            dev_size: 128,
            tasks: GlueTask::GLUE_SANE.to_vec(),
        }
    }
}

/// What [`write_synthetic_glue`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticGlueSummary {
    /// Per task: rows per split.
    pub tasks: BTreeMap<String, BTreeMap<String, usize>>,
    /// Files written, relative to the output directory.
    pub files: Vec<String>,
    /// Distinct words used.
    pub vocabulary: Vec<String>,
}

const NOUNS: &[&str] = &[
    "cat", "dog", "house", "city", "river", "teacher", "child", "bird", "tree", "book", "garden",
    "road", "friend", "school", "market", "boat", "horse", "farmer", "doctor", "window", "table",
    "village", "mother", "father",
];
const VERBS: &[&str] = &[
    "sees", "likes", "finds", "follows", "visits", "watches", "helps", "loves", "knows", "meets",
    "calls", "takes",
];
const NEUTRAL_ADJ: &[&str] = &[
    "small", "big", "old", "young", "red", "green", "tall", "little",
];
const POSITIVE_ADJ: &[&str] = &[
    "good",
    "happy",
    "nice",
    "great",
    "kind",
    "bright",
    "warm",
    "beautiful",
];
const NEGATIVE_ADJ: &[&str] = &[
    "bad", "sad", "poor", "dark", "cold", "angry", "ugly", "terrible",
];
const DETERMINERS: &[&str] = &["the", "a"];

/// A clause `det adj noun verb det adj noun` with its five content words.
#[derive(Debug, Clone)]
struct Clause {
    words: Vec<&'static str>,
}

impl Clause {
    fn random(rng: &mut ChaCha8Rng, nouns: &[&'static str]) -> Self {
        let words = vec![
            *DETERMINERS.choose(rng).expect("non-empty"),
            *NEUTRAL_ADJ.choose(rng).expect("non-empty"),
            *nouns.choose(rng).expect("non-empty"),
            *VERBS.choose(rng).expect("non-empty"),
            *DETERMINERS.choose(rng).expect("non-empty"),
            *NEUTRAL_ADJ.choose(rng).expect("non-empty"),
            *nouns.choose(rng).expect("non-empty"),
        ];
        Self { words }
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    /// The clause with `does not` before its verb stem (`sees` -> `does not see`).
    fn negated(&self) -> String {
        let mut out: Vec<String> = self.words[..3].iter().map(|w| w.to_string()).collect();
        let verb = self.words[3];
        out.push("does not".into());
        out.push(verb.strip_suffix('s').unwrap_or(verb).to_string());
        out.extend(self.words[4..].iter().map(|w| w.to_string()));
        out.join(" ")
    }
}

/// One generated row: texts and a label.
struct Row {
    a: String,
    b: Option<String>,
    label: f32,
}

fn sentence(s: String) -> String {
    s + " ."
}

fn gen_sst2(rng: &mut ChaCha8Rng, nouns: &[&'static str]) -> Row {
    let positive = rng.random_bool(0.5);
    let pool = if positive { POSITIVE_ADJ } else { NEGATIVE_ADJ };
    let mut c = Clause::random(rng, nouns);
    c.words[1] = pool.choose(rng).expect("non-empty");
    if rng.random_bool(0.5) {
        c.words[5] = pool.choose(rng).expect("non-empty");
    }
    Row {
        a: sentence(c.text()),
        b: None,
        label: positive as u8 as f32,
    }
}

fn gen_cola(rng: &mut ChaCha8Rng, nouns: &[&'static str]) -> Row {
    let c = Clause::random(rng, nouns);
    let acceptable = rng.random_bool(0.5);
    let words = if acceptable {
        c.words.clone()
    } else {
        let mut w = c.words.clone();
        // Reshuffle until the order breaks the template: the verb or a determiner moves.
        loop {
            w.shuffle(rng);
            if !DETERMINERS.contains(&w[0])
                || !VERBS.contains(&w[3])
                || !DETERMINERS.contains(&w[4])
            {
                break;
            }
        }
        w
    };
    Row {
        a: sentence(words.join(" ")),
        b: None,
        label: acceptable as u8 as f32,
    }
}

/// A two-clause first text and a second text that repeats one of its clauses (`same`), or a
/// fresh clause, or (for `negate`) the repeated clause negated.
fn pair(rng: &mut ChaCha8Rng, nouns: &[&'static str], kind: PairKind) -> (String, String) {
    let c1 = Clause::random(rng, nouns);
    let c2 = Clause::random(rng, nouns);
    let first = sentence(format!("{} and {}", c1.text(), c2.text()));
    let picked = if rng.random_bool(0.5) { &c1 } else { &c2 };
    let second = match kind {
        PairKind::Repeat => picked.text(),
        PairKind::Negate => picked.negated(),
        PairKind::Fresh => Clause::random(rng, nouns).text(),
    };
    (first, sentence(second))
}

#[derive(Clone, Copy)]
enum PairKind {
    Repeat,
    Negate,
    Fresh,
}

/// A binary pair task: `positive_label` when the second text repeats a clause.
fn gen_pair(rng: &mut ChaCha8Rng, nouns: &[&'static str], positive_label: f32) -> Row {
    let repeat = rng.random_bool(0.5);
    let (a, b) = pair(
        rng,
        nouns,
        if repeat {
            PairKind::Repeat
        } else {
            PairKind::Fresh
        },
    );
    Row {
        a,
        b: Some(b),
        label: if repeat {
            positive_label
        } else {
            1.0 - positive_label
        },
    }
}

fn gen_qqp(rng: &mut ChaCha8Rng, nouns: &[&'static str]) -> Row {
    let c = Clause::random(rng, nouns);
    let duplicate = rng.random_bool(0.5);
    let q1 = format!("does {} ?", c.text());
    let q2 = if duplicate {
        format!("is it true that {} ?", c.text())
    } else {
        format!("is it true that {} ?", Clause::random(rng, nouns).text())
    };
    Row {
        a: q1,
        b: Some(q2),
        label: duplicate as u8 as f32,
    }
}

fn gen_qnli(rng: &mut ChaCha8Rng, nouns: &[&'static str]) -> Row {
    let c = Clause::random(rng, nouns);
    let entails = rng.random_bool(0.5);
    let question = format!("what {} {} ?", c.words[3], c.words[4..].join(" "));
    let answer = if entails {
        c.text()
    } else {
        let mut other = Clause::random(rng, nouns);
        while other.words[3] == c.words[3] && other.words[6] == c.words[6] {
            other = Clause::random(rng, nouns);
        }
        other.text()
    };
    Row {
        a: question,
        b: Some(sentence(answer)),
        label: if entails { 0.0 } else { 1.0 },
    }
}

fn gen_mnli(rng: &mut ChaCha8Rng, nouns: &[&'static str]) -> Row {
    let label = rng.random_range(0..3u8);
    let kind = match label {
        0 => PairKind::Repeat,
        1 => PairKind::Fresh,
        _ => PairKind::Negate,
    };
    let (a, b) = pair(rng, nouns, kind);
    Row {
        a,
        b: Some(b),
        label: label as f32,
    }
}

fn gen_stsb(rng: &mut ChaCha8Rng, nouns: &[&'static str]) -> Row {
    let c1 = Clause::random(rng, nouns);
    let shared = rng.random_range(0..=5usize);
    // Content slots: adjective, noun, verb, adjective, noun.
    let mut slots = [1usize, 2, 3, 5, 6];
    slots.shuffle(rng);
    let mut c2 = c1.clone();
    for &slot in &slots[shared..] {
        let pool: &[&'static str] = match slot {
            3 => VERBS,
            1 | 5 => NEUTRAL_ADJ,
            _ => nouns,
        };
        let original = c1.words[slot];
        c2.words[slot] = **pool
            .iter()
            .filter(|w| **w != original)
            .collect::<Vec<_>>()
            .choose(rng)
            .expect("pools have more than one word");
    }
    Row {
        a: sentence(c1.text()),
        b: Some(sentence(c2.text())),
        label: shared as f32,
    }
}

fn generate(task: GlueTask, rng: &mut ChaCha8Rng, nouns: &[&'static str]) -> Row {
    match task {
        GlueTask::Sst2 => gen_sst2(rng, nouns),
        GlueTask::Cola => gen_cola(rng, nouns),
        GlueTask::Mrpc => gen_pair(rng, nouns, 1.0),
        GlueTask::Rte => gen_pair(rng, nouns, 0.0),
        GlueTask::Wnli => gen_pair(rng, nouns, 1.0),
        GlueTask::Qqp => gen_qqp(rng, nouns),
        GlueTask::Qnli => gen_qnli(rng, nouns),
        GlueTask::Mnli => gen_mnli(rng, nouns),
        GlueTask::Stsb => gen_stsb(rng, nouns),
    }
}

fn write_split(path: &Path, task: GlueTask, rows: &[Row]) -> Result<()> {
    let cols = task.text_columns();
    let mut fields = vec![Field::new(cols.first, DataType::Utf8, true)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.a.as_str()),
    ))];
    if let Some(second) = cols.second {
        fields.push(Field::new(second, DataType::Utf8, true));
        arrays.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.b.as_deref().unwrap_or_default()),
        )));
    }
    if task.is_regression() {
        fields.push(Field::new("label", DataType::Float32, true));
        arrays.push(Arc::new(Float32Array::from_iter_values(
            rows.iter().map(|r| r.label),
        )));
    } else {
        fields.push(Field::new("label", DataType::Int64, true));
        arrays.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.label as i64),
        )));
    }
    fields.push(Field::new("idx", DataType::Int32, true));
    arrays.push(Arc::new(Int32Array::from_iter_values(0..rows.len() as i32)));
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), arrays).map_err(|source| GlueError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
    write_parquet(path, batch)
}

/// Writes one record batch as a snappy Parquet file (the hub's converter uses snappy).
pub(crate) fn write_parquet(path: &Path, batch: RecordBatch) -> Result<()> {
    let pq = |source| GlueError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let file = File::create(path).map_err(io_err(path))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(pq)?;
    writer.write(&batch).map_err(pq)?;
    writer.close().map_err(pq)?;
    Ok(())
}

/// Writes the synthetic tasks of `params` under `out_dir` in the hub layout, plus
/// `summary.json`. Deterministic in `seed`. MNLI's mismatched dev split draws its nouns from a
/// held-out half of the noun list (its "other genre").
pub fn write_synthetic_glue(
    params: &SyntheticGlueParams,
    seed: u64,
    out_dir: &Path,
) -> Result<SyntheticGlueSummary> {
    if params.train_size == 0 || params.dev_size == 0 {
        return Err(GlueError::Params(
            "synthetic GLUE: train_size and dev_size must be at least 1".into(),
        ));
    }
    let mut summary = SyntheticGlueSummary {
        tasks: BTreeMap::new(),
        files: Vec::new(),
        vocabulary: Vec::new(),
    };
    let (matched_nouns, mismatched_nouns) = NOUNS.split_at(NOUNS.len() / 2);
    for &task in &params.tasks {
        let task_index = GlueTask::ALL.iter().position(|t| *t == task).unwrap_or(0) as u64;
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ task_index);
        let mut splits = vec![(task.train_split(), params.train_size, NOUNS)];
        for &split in task.dev_splits() {
            let nouns = if split == "validation_mismatched" {
                mismatched_nouns
            } else if task == GlueTask::Mnli {
                matched_nouns
            } else {
                NOUNS
            };
            splits.push((split, params.dev_size, nouns));
        }
        let mut counts = BTreeMap::new();
        for (split, n, nouns) in splits {
            let rows: Vec<Row> = (0..n).map(|_| generate(task, &mut rng, nouns)).collect();
            let path = task.split_path(out_dir, split);
            write_split(&path, task, &rows)?;
            summary
                .files
                .push(format!("{}/{split}-00000-of-00001.parquet", task.name()));
            counts.insert(split.to_string(), n);
        }
        summary.tasks.insert(task.name().to_string(), counts);
    }
    summary.vocabulary = synthetic_vocabulary();
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    let path = out_dir.join("summary.json");
    std::fs::write(&path, json + "\n").map_err(io_err(&path))?;
    Ok(summary)
}

/// The distinct words the synthetic tasks use (for building a test vocabulary).
pub fn synthetic_vocabulary() -> Vec<String> {
    let mut words: Vec<String> = [
        NOUNS,
        VERBS,
        NEUTRAL_ADJ,
        POSITIVE_ADJ,
        NEGATIVE_ADJ,
        DETERMINERS,
    ]
    .concat()
    .iter()
    .map(|w| w.to_string())
    .chain(
        [
            "and", "does", "not", "is", "it", "true", "that", "what", ".", "?",
        ]
        .iter()
        .map(|w| w.to_string()),
    )
    .chain(
        VERBS
            .iter()
            .map(|v| v.strip_suffix('s').unwrap_or(v).to_string()),
    )
    .collect();
    words.sort();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Label, load_split};

    #[test]
    fn writes_every_task_in_the_hub_schema() {
        let dir = tempfile::tempdir().unwrap();
        let params = SyntheticGlueParams {
            train_size: 40,
            dev_size: 12,
            tasks: GlueTask::ALL.to_vec(),
        };
        let summary = write_synthetic_glue(&params, 7, dir.path()).unwrap();
        assert_eq!(summary.tasks.len(), 9);
        assert_eq!(
            summary.files.len(),
            19,
            "train + dev for 8 tasks, MNLI has two dev splits"
        );
        for task in GlueTask::ALL {
            let files = crate::task::task_files(dir.path(), task).unwrap();
            assert_eq!(files.len(), 1 + task.dev_splits().len());
            let train = load_split(dir.path(), task, "train").unwrap();
            assert_eq!(train.examples.len(), 40);
            for split in task.dev_splits() {
                assert_eq!(
                    load_split(dir.path(), task, split).unwrap().examples.len(),
                    12
                );
            }
            // Every class appears in 40 balanced draws.
            if !task.is_regression() {
                for c in 0..task.num_labels() {
                    assert!(
                        train.examples.iter().any(|e| e.label == Label::Class(c)),
                        "{task} {c}"
                    );
                }
            }
            let vocab = synthetic_vocabulary();
            for e in &train.examples {
                for w in e
                    .text_a
                    .split(' ')
                    .chain(e.text_b.iter().flat_map(|b| b.split(' ')))
                {
                    assert!(
                        vocab.iter().any(|v| v == w),
                        "{task}: {w:?} not in the vocabulary"
                    );
                }
            }
        }
        assert_eq!(summary.vocabulary, synthetic_vocabulary());
        // Deterministic in the seed.
        let again = tempfile::tempdir().unwrap();
        write_synthetic_glue(&params, 7, again.path()).unwrap();
        for f in &summary.files {
            assert_eq!(
                std::fs::read(dir.path().join(f)).unwrap(),
                std::fs::read(again.path().join(f)).unwrap(),
                "{f}"
            );
        }
    }

    #[test]
    fn labels_follow_the_words() {
        let dir = tempfile::tempdir().unwrap();
        let params = SyntheticGlueParams {
            train_size: 60,
            dev_size: 4,
            tasks: vec![
                GlueTask::Sst2,
                GlueTask::Rte,
                GlueTask::Stsb,
                GlueTask::Mnli,
            ],
        };
        write_synthetic_glue(&params, 1, dir.path()).unwrap();
        for e in load_split(dir.path(), GlueTask::Sst2, "train")
            .unwrap()
            .examples
        {
            let positive = e.text_a.split(' ').any(|w| POSITIVE_ADJ.contains(&w));
            assert_eq!(e.label, Label::Class(positive as usize), "{}", e.text_a);
        }
        for e in load_split(dir.path(), GlueTask::Rte, "train")
            .unwrap()
            .examples
        {
            let b = e.text_b.unwrap();
            let clause = b.trim_end_matches(" .");
            let repeated = e.text_a.contains(clause);
            assert_eq!(
                e.label,
                Label::Class(if repeated { 0 } else { 1 }),
                "{} / {b}",
                e.text_a
            );
        }
        for e in load_split(dir.path(), GlueTask::Stsb, "train")
            .unwrap()
            .examples
        {
            let Label::Score(s) = e.label else { panic!() };
            assert!((0.0..=5.0).contains(&s) && s.fract() == 0.0);
        }
        for e in load_split(dir.path(), GlueTask::Mnli, "train")
            .unwrap()
            .examples
        {
            let b = e.text_b.unwrap();
            if e.label == Label::Class(2) {
                assert!(b.contains("does not"), "{b}");
            }
        }
    }
}
