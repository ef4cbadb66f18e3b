//! A synthetic GLUE task set for the offline sanity recipe.
//!
//! Small, clearly learnable tasks written in the hub's schema and layout
//! (`<out_dir>/<config>/<split>-00000-of-00001.parquet`), built from a few dozen plain English
//! words (the sanity recipe's tokenizer is trained on English-like text from such words).
//! Every task's label is a simple function of the words, so a tiny model learns it in a few
//! hundred updates. Pair tasks hold a relation between the two texts (the second repeats a
//! clause of the first, or not) and also a lexical cue: first texts draw their content words
//! from one pool ("A"), and unrelated texts or replaced words come from a second pool ("B"),
//! so a model can solve them by comparing the texts or by spotting pool-B words.
//!
//! * `sst2`: a clause with one or two sentiment adjectives of one polarity (positive = 1).
//! * `cola`: a clause in template order (acceptable = 1) or the same clause without its verb,
//!   words scrambled (0).
//! * `mrpc`, `qqp`: the second text repeats a clause of the first (equivalent / duplicate = 1)
//!   or is a fresh pool-B clause (0).
//! * `rte`, `qnli`: the same, entailment = 0, not_entailment = 1 (the hub's mapping).
//! * `wnli`: the same with WNLI's reversed mapping (entailment = 1).
//! * `mnli`: the hypothesis repeats a clause (entailment 0), repeats it with `not` (contradiction
//!   2) or is a fresh clause (neutral 1); matched and mismatched dev splits.
//! * `stsb`: two clauses sharing `k` of their five content words, the others replaced from pool
//!   B; score `k` (0..5, float32).

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

/// Content words of the first texts ("pool A").
const NOUNS_A: &[&str] = &[
    "cat", "dog", "house", "city", "river", "teacher", "child", "bird", "tree", "book", "garden",
    "road",
];
/// Content words only fresh (unrelated) texts use ("pool B").
const NOUNS_B: &[&str] = &[
    "friend", "school", "market", "boat", "horse", "farmer", "doctor", "window", "table",
    "village", "mother", "father",
];
const VERBS_A: &[&str] = &["sees", "likes", "finds", "follows", "visits", "watches"];
const VERBS_B: &[&str] = &["helps", "loves", "knows", "meets", "calls", "takes"];
const ADJ_A: &[&str] = &["small", "big", "old", "young"];
const ADJ_B: &[&str] = &["red", "green", "tall", "little"];
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
const FUNCTION_WORDS: &[&str] = &[
    "and", "does", "not", "is", "it", "true", "that", "what", ".", "?",
];

/// A word pool: the content words a clause draws from.
#[derive(Clone, Copy)]
struct Pool {
    nouns: &'static [&'static str],
    verbs: &'static [&'static str],
    adjectives: &'static [&'static str],
}

const POOL_A: Pool = Pool {
    nouns: NOUNS_A,
    verbs: VERBS_A,
    adjectives: ADJ_A,
};
const POOL_B: Pool = Pool {
    nouns: NOUNS_B,
    verbs: VERBS_B,
    adjectives: ADJ_B,
};

fn pick(rng: &mut ChaCha8Rng, words: &'static [&'static str]) -> &'static str {
    words.choose(rng).expect("word lists are not empty")
}

/// A clause `det adj noun verb det adj noun`; slots 1, 2, 3, 5, 6 hold content words.
#[derive(Debug, Clone)]
struct Clause {
    words: Vec<&'static str>,
}

/// The content slots of a clause and the part of speech each takes.
const CONTENT_SLOTS: [usize; 5] = [1, 2, 3, 5, 6];

impl Clause {
    fn random(rng: &mut ChaCha8Rng, pool: Pool) -> Self {
        let words = vec![
            pick(rng, DETERMINERS),
            pick(rng, pool.adjectives),
            pick(rng, pool.nouns),
            pick(rng, pool.verbs),
            pick(rng, DETERMINERS),
            pick(rng, pool.adjectives),
            pick(rng, pool.nouns),
        ];
        Self { words }
    }

    /// Replaces the content word of `slot` by one of the same part of speech from `pool`.
    fn replace(&mut self, rng: &mut ChaCha8Rng, slot: usize, pool: Pool) {
        self.words[slot] = match slot {
            3 => pick(rng, pool.verbs),
            1 | 5 => pick(rng, pool.adjectives),
            _ => pick(rng, pool.nouns),
        };
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

fn gen_sst2(rng: &mut ChaCha8Rng) -> Row {
    let positive = rng.random_bool(0.5);
    let polar = if positive { POSITIVE_ADJ } else { NEGATIVE_ADJ };
    let pool = if rng.random_bool(0.5) { POOL_A } else { POOL_B };
    let mut c = Clause::random(rng, pool);
    c.words[1] = pick(rng, polar);
    if rng.random_bool(0.5) {
        c.words[5] = pick(rng, polar);
    }
    Row {
        a: sentence(c.text()),
        b: None,
        label: positive as u8 as f32,
    }
}

/// Acceptable: a clause in template order. Unacceptable: the same clause without its verb,
/// words scrambled.
fn gen_cola(rng: &mut ChaCha8Rng) -> Row {
    let pool = if rng.random_bool(0.5) { POOL_A } else { POOL_B };
    let c = Clause::random(rng, pool);
    let acceptable = rng.random_bool(0.5);
    let words = if acceptable {
        c.words.clone()
    } else {
        let mut w = c.words.clone();
        w.remove(3);
        w.shuffle(rng);
        w
    };
    Row {
        a: sentence(words.join(" ")),
        b: None,
        label: acceptable as u8 as f32,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum PairKind {
    /// The second text repeats a clause of the first.
    Repeat,
    /// The second text repeats a clause of the first with `does not`.
    Negate,
    /// The second text is a fresh clause from the other word pool.
    Fresh,
}

/// A two-clause first text (pool A) and a second text of the given kind.
fn pair(rng: &mut ChaCha8Rng, kind: PairKind) -> (String, String) {
    let c1 = Clause::random(rng, POOL_A);
    let c2 = Clause::random(rng, POOL_A);
    let first = sentence(format!("{} and {}", c1.text(), c2.text()));
    let picked = if rng.random_bool(0.5) { &c1 } else { &c2 };
    let second = match kind {
        PairKind::Repeat => picked.text(),
        PairKind::Negate => picked.negated(),
        PairKind::Fresh => Clause::random(rng, POOL_B).text(),
    };
    (first, sentence(second))
}

/// A binary pair task: `positive_label` when the second text repeats a clause.
fn gen_pair(rng: &mut ChaCha8Rng, positive_label: f32) -> Row {
    let repeat = rng.random_bool(0.5);
    let kind = if repeat {
        PairKind::Repeat
    } else {
        PairKind::Fresh
    };
    let (a, b) = pair(rng, kind);
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

fn gen_qqp(rng: &mut ChaCha8Rng) -> Row {
    let c = Clause::random(rng, POOL_A);
    let duplicate = rng.random_bool(0.5);
    let q1 = format!("does {} ?", c.text());
    let other = if duplicate {
        c
    } else {
        Clause::random(rng, POOL_B)
    };
    Row {
        a: q1,
        b: Some(format!("is it true that {} ?", other.text())),
        label: duplicate as u8 as f32,
    }
}

fn gen_qnli(rng: &mut ChaCha8Rng) -> Row {
    let c = Clause::random(rng, POOL_A);
    let entails = rng.random_bool(0.5);
    let question = format!("what {} {} ?", c.words[3], c.words[4..].join(" "));
    let answer = if entails {
        c
    } else {
        Clause::random(rng, POOL_B)
    };
    Row {
        a: question,
        b: Some(sentence(answer.text())),
        label: if entails { 0.0 } else { 1.0 },
    }
}

fn gen_mnli(rng: &mut ChaCha8Rng) -> Row {
    let label = rng.random_range(0..3u8);
    let kind = match label {
        0 => PairKind::Repeat,
        1 => PairKind::Fresh,
        _ => PairKind::Negate,
    };
    let (a, b) = pair(rng, kind);
    Row {
        a,
        b: Some(b),
        label: label as f32,
    }
}

/// Two clauses sharing `k` of their five content words (the others replaced from pool B);
/// score `k`.
fn gen_stsb(rng: &mut ChaCha8Rng) -> Row {
    let c1 = Clause::random(rng, POOL_A);
    let shared = rng.random_range(0..=5usize);
    let mut slots = CONTENT_SLOTS;
    slots.shuffle(rng);
    let mut c2 = c1.clone();
    for &slot in &slots[shared..] {
        c2.replace(rng, slot, POOL_B);
    }
    Row {
        a: sentence(c1.text()),
        b: Some(sentence(c2.text())),
        label: shared as f32,
    }
}

fn generate(task: GlueTask, rng: &mut ChaCha8Rng) -> Row {
    match task {
        GlueTask::Sst2 => gen_sst2(rng),
        GlueTask::Cola => gen_cola(rng),
        GlueTask::Mrpc => gen_pair(rng, 1.0),
        GlueTask::Rte => gen_pair(rng, 0.0),
        GlueTask::Wnli => gen_pair(rng, 1.0),
        GlueTask::Qqp => gen_qqp(rng),
        GlueTask::Qnli => gen_qnli(rng),
        GlueTask::Mnli => gen_mnli(rng),
        GlueTask::Stsb => gen_stsb(rng),
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
/// `summary.json`. Deterministic in `seed`. (MNLI's matched and mismatched dev splits are
/// independent draws of the same generator: the synthetic set has no genres.)
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
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let mut summary = SyntheticGlueSummary {
        tasks: BTreeMap::new(),
        files: Vec::new(),
        vocabulary: Vec::new(),
    };
    for &task in &params.tasks {
        let task_index = GlueTask::ALL.iter().position(|t| *t == task).unwrap_or(0) as u64;
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ task_index);
        let mut counts = BTreeMap::new();
        let splits = std::iter::once((task.train_split(), params.train_size))
            .chain(task.dev_splits().iter().map(|&s| (s, params.dev_size)));
        for (split, n) in splits {
            let rows: Vec<Row> = (0..n).map(|_| generate(task, &mut rng)).collect();
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
    let lists: [&[&str]; 10] = [
        NOUNS_A,
        NOUNS_B,
        VERBS_A,
        VERBS_B,
        ADJ_A,
        ADJ_B,
        POSITIVE_ADJ,
        NEGATIVE_ADJ,
        DETERMINERS,
        FUNCTION_WORDS,
    ];
    let stems = VERBS_A
        .iter()
        .chain(VERBS_B)
        .map(|v| v.strip_suffix('s').unwrap_or(v).to_string());
    let mut words: Vec<String> = lists
        .concat()
        .iter()
        .map(|w| w.to_string())
        .chain(stems)
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
