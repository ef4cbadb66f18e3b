//! The `synthetic` stage kind: English-like documents for offline pipelines.
//!
//! The sanity pipeline must run without a network, yet the later stages need
//! text worth tokenising: real words with a Zipf-like spread, sentences that
//! end in `.`, paragraphs, varied lengths. Documents are built from a small
//! hand-written vocabulary (a few hundred real English words, by part of
//! speech) and a dozen sentence templates. To give the cleaning stages work,
//! some documents carry one of a few boilerplate lines (exact repeats across
//! documents, for dedup), some words are accented (`café`, `naïve`, `José`)
//! and quoted speech uses curly quotes (for normalisation).
//!
//! The output is a function of the parameters and the seed only.

use std::path::Path;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::documents::{DEFAULT_SHARD_BYTES, DocumentWriter, DocumentsError};

/// Bumped whenever a change to the code changes the bytes `synthetic` writes.
pub const CODE_VERSION: u32 = 1;

/// Parameters of the `synthetic` stage kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticParams {
    /// Number of documents to generate.
    pub documents: u64,
    /// Fewest sentences in a document (at least 1).
    pub min_sentences: u32,
    /// Most sentences in a document (at least `min_sentences`).
    pub max_sentences: u32,
    /// Most sentences in one paragraph; paragraphs are separated by a newline.
    pub max_paragraph_sentences: u32,
    /// Probability that a document carries one of a few boilerplate lines
    /// repeated verbatim across the corpus (material for dedup).
    pub boilerplate_probability: f64,
    /// Probability that a sentence is quoted speech in curly quotes.
    pub quote_probability: f64,
    /// Probability that a noun or name slot takes an accented word
    /// (`café`, `naïve`, `José`, …), material for normalisation.
    pub accent_probability: f64,
    /// Text bytes per output shard.
    pub shard_bytes: u64,
}

impl Default for SyntheticParams {
    fn default() -> Self {
        SyntheticParams {
            documents: 2000,
            min_sentences: 3,
            max_sentences: 30,
            max_paragraph_sentences: 6,
            boilerplate_probability: 0.2,
            quote_probability: 0.08,
            accent_probability: 0.05,
            shard_bytes: DEFAULT_SHARD_BYTES,
        }
    }
}

/// What `synthetic` wrote (also written to `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSummary {
    /// Documents written.
    pub documents: u64,
    /// UTF-8 bytes of text written.
    pub bytes: u64,
    /// Sentences generated (boilerplate lines not counted).
    pub sentences: u64,
    /// Boilerplate lines inserted.
    pub boilerplate_lines: u64,
    /// Shard file names.
    pub shards: Vec<String>,
    /// The seed the corpus was generated from.
    pub seed: u64,
}

/// Errors of the `synthetic` kind.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    /// A parameter is out of range.
    #[error("synthetic: invalid parameter: {0}")]
    InvalidParams(String),
    /// Writing the documents failed.
    #[error(transparent)]
    Documents(#[from] DocumentsError),
    /// Writing `summary.json` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

const DETERMINERS: &[&str] = &[
    "the", "a", "every", "this", "that", "one", "some", "each", "no", "another",
];
const ADJECTIVES: &[&str] = &[
    "old", "new", "small", "large", "quiet", "bright", "dark", "early", "late", "young", "ancient",
    "modern", "simple", "strange", "famous", "local", "northern", "southern", "green", "red",
    "heavy", "light", "careful", "curious", "gentle", "happy", "narrow", "wide", "cold", "warm",
    "busy", "empty", "hidden", "public", "private", "rural", "urban", "wooden", "golden", "silent",
    "rapid", "slow", "rare", "common", "honest", "clever", "brave", "tired", "proud", "distant",
];
const NOUNS: &[&str] = &[
    "river",
    "city",
    "village",
    "teacher",
    "farmer",
    "king",
    "queen",
    "soldier",
    "church",
    "bridge",
    "road",
    "garden",
    "house",
    "school",
    "market",
    "library",
    "castle",
    "forest",
    "mountain",
    "island",
    "harbour",
    "ship",
    "train",
    "station",
    "letter",
    "book",
    "song",
    "painting",
    "museum",
    "village",
    "doctor",
    "student",
    "writer",
    "poet",
    "merchant",
    "council",
    "army",
    "company",
    "railway",
    "newspaper",
    "museum",
    "valley",
    "lake",
    "tower",
    "factory",
    "hospital",
    "university",
    "engineer",
    "scientist",
    "artist",
    "festival",
    "election",
    "treaty",
    "war",
    "storm",
    "winter",
    "summer",
    "harvest",
    "machine",
    "theory",
    "album",
    "film",
    "novel",
    "team",
    "player",
    "season",
    "league",
    "club",
    "coach",
    "captain",
    "province",
    "district",
    "county",
    "family",
    "child",
    "friend",
    "neighbour",
    "stranger",
    "window",
    "door",
    "table",
    "letter",
    "message",
    "story",
    "history",
    "language",
    "country",
    "region",
    "government",
    "minister",
];
const ACCENTED_NOUNS: &[&str] = &[
    "café",
    "façade",
    "résumé",
    "fiancée",
    "naïveté",
    "crème",
    "débutante",
    "protégé",
];
const NAMES: &[&str] = &[
    "Anna",
    "Thomas",
    "Maria",
    "John",
    "Elizabeth",
    "George",
    "Henry",
    "Clara",
    "Peter",
    "Margaret",
    "Oliver",
    "Sophie",
    "William",
    "Alice",
    "Edward",
    "Grace",
    "Samuel",
    "Helen",
    "Arthur",
    "Emily",
];
const ACCENTED_NAMES: &[&str] = &[
    "José",
    "Zoë",
    "Renée",
    "François",
    "Björn",
    "Chloé",
    "Søren",
    "Inés",
];
const PLACES: &[&str] = &[
    "London", "Paris", "Berlin", "Vienna", "Madrid", "Boston", "Chicago", "Dublin", "Lisbon",
    "Oslo", "Geneva", "Toronto", "Sydney", "Cairo", "Prague",
];
const ACCENTED_PLACES: &[&str] = &["Zürich", "Montréal", "Bogotá", "Kraków", "Málaga", "Genève"];
const TRANSITIVE: &[&str] = &[
    "built",
    "found",
    "visited",
    "painted",
    "described",
    "praised",
    "sold",
    "bought",
    "opened",
    "closed",
    "studied",
    "wrote",
    "read",
    "carried",
    "followed",
    "watched",
    "remembered",
    "discovered",
    "repaired",
    "designed",
    "defended",
    "attacked",
    "crossed",
    "joined",
    "left",
    "reached",
    "owned",
    "managed",
    "taught",
    "helped",
];
const INTRANSITIVE: &[&str] = &[
    "arrived",
    "waited",
    "slept",
    "laughed",
    "disappeared",
    "grew",
    "fell",
    "returned",
    "worked",
    "travelled",
    "lived",
    "died",
    "spoke",
    "smiled",
    "changed",
    "moved",
    "retired",
    "survived",
    "collapsed",
    "recovered",
];
const ADVERBS: &[&str] = &[
    "quickly",
    "slowly",
    "quietly",
    "suddenly",
    "finally",
    "often",
    "rarely",
    "carefully",
    "happily",
    "early",
    "later",
    "again",
    "together",
    "alone",
    "soon",
];
const PREPOSITIONS: &[&str] = &[
    "near", "behind", "across", "inside", "beyond", "under", "above", "beside", "along", "around",
];
const CONNECTIVES: &[&str] = &[
    "However,",
    "Later,",
    "In time,",
    "As a result,",
    "Meanwhile,",
    "At first,",
    "Soon after,",
    "For many years,",
];
const SPEECH_VERBS: &[&str] = &[
    "said",
    "wrote",
    "replied",
    "explained",
    "declared",
    "whispered",
];
/// Lines repeated verbatim across documents, so exact dedup has work to do.
const BOILERPLATE: &[&str] = &[
    "This article is part of a synthetic corpus generated for testing and may be copied freely without restriction.",
    "Retrieved from the synthetic archive of the county records office; all figures are approximate and unverified.",
    "Please help improve this article by adding citations to reliable sources; unsourced material may be removed.",
    "The text of this page is available under the same terms as the rest of the collection unless noted otherwise.",
];

struct Grammar<'a> {
    rng: &'a mut ChaCha8Rng,
    accent: f64,
}

impl Grammar<'_> {
    fn pick(&mut self, list: &[&'static str]) -> &'static str {
        // Zipf-like preference for the head of each list: square a uniform
        // draw so early words are more frequent, as in real text.
        let u: f64 = self.rng.random();
        let i = ((u * u) * list.len() as f64) as usize;
        list[i.min(list.len() - 1)]
    }
    fn noun(&mut self) -> &'static str {
        if self.rng.random_bool(self.accent) {
            ACCENTED_NOUNS.choose(self.rng).copied().unwrap_or("café")
        } else {
            self.pick(NOUNS)
        }
    }
    fn name(&mut self) -> &'static str {
        if self.rng.random_bool(self.accent) {
            ACCENTED_NAMES.choose(self.rng).copied().unwrap_or("José")
        } else {
            self.pick(NAMES)
        }
    }
    fn place(&mut self) -> &'static str {
        if self.rng.random_bool(self.accent) {
            ACCENTED_PLACES
                .choose(self.rng)
                .copied()
                .unwrap_or("Zürich")
        } else {
            self.pick(PLACES)
        }
    }
    fn noun_phrase(&mut self) -> String {
        let det = self.pick(DETERMINERS);
        let noun = self.noun();
        let det = if det == "a" && noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            det
        };
        if self.rng.random_bool(0.5) {
            let adj = self.pick(ADJECTIVES);
            let det = if det == "an" && !adj.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "a"
            } else if det == "a" && adj.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                det
            };
            format!("{det} {adj} {noun}")
        } else {
            format!("{det} {noun}")
        }
    }
    fn prep_phrase(&mut self) -> String {
        let p = self.pick(PREPOSITIONS);
        let np = self.noun_phrase();
        format!("{p} {np}")
    }
    /// A sentence without its final period, with a lower-case first letter
    /// possible (the caller capitalises).
    fn clause(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0 | 1 => format!(
                "{} {} {}",
                self.noun_phrase(),
                self.pick(TRANSITIVE),
                self.noun_phrase()
            ),
            2 => format!(
                "{} {} {} {}",
                self.noun_phrase(),
                self.pick(TRANSITIVE),
                self.noun_phrase(),
                self.prep_phrase()
            ),
            3 => format!(
                "{} {} {}",
                self.name(),
                self.pick(INTRANSITIVE),
                self.pick(ADVERBS)
            ),
            4 => format!(
                "in {} {} {} {}",
                self.rng.random_range(1650..2024),
                self.name(),
                self.pick(TRANSITIVE),
                self.noun_phrase()
            ),
            5 => format!(
                "{} {} in {} {}",
                self.name(),
                self.pick(INTRANSITIVE),
                self.place(),
                self.pick(ADVERBS)
            ),
            6 => format!(
                "{} that {} {} {} {}",
                self.noun_phrase(),
                self.pick(TRANSITIVE),
                self.noun_phrase(),
                self.pick(INTRANSITIVE),
                self.prep_phrase()
            ),
            7 => format!(
                "{} {} {}, and {} {}",
                self.name(),
                self.pick(TRANSITIVE),
                self.noun_phrase(),
                self.noun_phrase(),
                self.pick(INTRANSITIVE)
            ),
            8 => format!(
                "{} {} {} {} near {}",
                self.pick(CONNECTIVES),
                self.noun_phrase(),
                self.pick(INTRANSITIVE),
                self.pick(ADVERBS),
                self.place()
            ),
            _ => format!(
                "the {} of {} had {} {} people",
                self.noun(),
                self.place(),
                ["about", "nearly", "more than", "fewer than"][self.rng.random_range(0..4)],
                self.rng.random_range(2..90_000)
            ),
        }
    }
    fn sentence(&mut self, quote: f64) -> String {
        if self.rng.random_bool(quote) {
            let speaker = self.name();
            let verb = self.pick(SPEECH_VERBS);
            let inner = capitalise(&self.clause());
            format!("{speaker} {verb}, “{inner}.”")
        } else {
            format!("{}.", capitalise(&self.clause()))
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Generates `params.documents` English-like documents from `seed` into
/// `out_dir` (documents format) and writes `summary.json` there.
pub fn run_synthetic(
    params: &SyntheticParams,
    seed: u64,
    out_dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<SyntheticSummary, SyntheticError> {
    if params.min_sentences == 0 || params.max_sentences < params.min_sentences {
        return Err(SyntheticError::InvalidParams(format!(
            "need 1 <= min_sentences <= max_sentences, got {} and {}",
            params.min_sentences, params.max_sentences
        )));
    }
    if params.max_paragraph_sentences == 0 {
        return Err(SyntheticError::InvalidParams(
            "max_paragraph_sentences must be at least 1".into(),
        ));
    }
    for (name, p) in [
        ("boilerplate_probability", params.boilerplate_probability),
        ("quote_probability", params.quote_probability),
        ("accent_probability", params.accent_probability),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err(SyntheticError::InvalidParams(format!(
                "{name} must be within [0, 1], got {p}"
            )));
        }
    }
    progress.set_length(params.documents);
    progress.set_message("generating synthetic documents");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut writer = DocumentWriter::create(out_dir)?.with_shard_bytes(params.shard_bytes);
    let mut sentences = 0u64;
    let mut boilerplate_lines = 0u64;
    let mut doc = String::new();
    for _ in 0..params.documents {
        doc.clear();
        let n = rng.random_range(params.min_sentences..=params.max_sentences);
        let boiler = if rng.random_bool(params.boilerplate_probability) {
            let line = BOILERPLATE
                .choose(&mut rng)
                .copied()
                .unwrap_or(BOILERPLATE[0]);
            Some((line, rng.random_bool(0.5)))
        } else {
            None
        };
        if let Some((line, true)) = boiler {
            doc.push_str(line);
            doc.push('\n');
            boilerplate_lines += 1;
        }
        let mut grammar = Grammar {
            rng: &mut rng,
            accent: params.accent_probability,
        };
        let mut in_paragraph = 0u32;
        let mut paragraph_len = grammar.rng.random_range(1..=params.max_paragraph_sentences);
        for i in 0..n {
            if i > 0 {
                if in_paragraph >= paragraph_len {
                    doc.push('\n');
                    in_paragraph = 0;
                    paragraph_len = grammar.rng.random_range(1..=params.max_paragraph_sentences);
                } else {
                    doc.push(' ');
                }
            }
            doc.push_str(&grammar.sentence(params.quote_probability));
            in_paragraph += 1;
        }
        sentences += u64::from(n);
        if let Some((line, false)) = boiler {
            doc.push('\n');
            doc.push_str(line);
            boilerplate_lines += 1;
        }
        writer.push(&doc)?;
        progress.inc(1);
    }
    let written = writer.finish()?;
    let summary = SyntheticSummary {
        documents: written.documents,
        bytes: written.bytes,
        sentences,
        boilerplate_lines,
        shards: written.shards,
        seed,
    };
    let path = out_dir.join("summary.json");
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    std::fs::write(&path, json).map_err(|source| SyntheticError::Io { path, source })?;
    Ok(summary)
}
