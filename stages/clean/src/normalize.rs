//! Text normalisation as the reference applies it before tokenisation.
//!
//! Cramming (`cramming/data/tokenizer_preparation.py`, `_get_sane_normalizers`)
//! builds a Hugging Face `normalizers.Sequence` of, in this order:
//!
//! 1. `Replace("``", "\"")` and `Replace("''", "\"")` (LaTeX-style quotes);
//! 2. `NFD` when accents are stripped, `NFKC` otherwise;
//! 3. `Lowercase` (if `force_lowercase`), character by character;
//! 4. `StripAccents` (if `strip_accents`): drop combining marks;
//! 5. `Replace(Regex(" {2,}"), " ")`: runs of ASCII spaces become one space
//!    (tabs and newlines are left alone);
//! 6. `Replace(Regex("[^\x00-\x7F]+"), "")` (if `force_english_keyboard`):
//!    delete every non-ASCII character;
//! 7. `Replace(" ", "一")` (if `whitespace_escape`).
//!
//! [`Normalizer`] reproduces that sequence with `unicode-normalization`
//! (without the alignment tracking of the `tokenizers` normalizers, which
//! costs several times the time and is not needed here); a test checks it
//! against the `tokenizers` implementation on mixed-script text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Which Unicode normalisation form is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnicodeForm {
    /// As the reference: NFD when `strip_accents` is on, NFKC otherwise.
    Auto,
    /// Canonical decomposition.
    Nfd,
    /// Compatibility decomposition followed by canonical composition.
    Nfkc,
    /// No Unicode normalisation.
    None,
}

/// The switches of the reference's normaliser sequence, with its defaults
/// (the `normalizer` block of every Cramming data config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeOptions {
    /// Replace the LaTeX-style quotes "``" and "''" by '"' (the reference
    /// always does).
    pub replace_quotes: bool,
    /// Unicode normalisation form: "auto" (NFD if `strip_accents`, else NFKC,
    /// as the reference), "nfd", "nfkc" or "none".
    pub unicode_form: UnicodeForm,
    /// Lowercase every character (`force_lowercase`, on in the reference's
    /// configs).
    pub lowercase: bool,
    /// Remove combining marks, i.e. accents after NFD (`strip_accents`, on in
    /// the reference's configs).
    pub strip_accents: bool,
    /// Collapse runs of two or more ASCII spaces into one (the reference
    /// always does; tabs and newlines are kept).
    pub collapse_spaces: bool,
    /// Delete every non-ASCII character (`force_english_keyboard`, on in the
    /// reference's configs; applied after space collapsing, as there).
    pub force_english_keyboard: bool,
    /// Replace every space by "一" (`whitespace_escape`, off in the
    /// reference's configs).
    pub whitespace_escape: bool,
}

impl Default for NormalizeOptions {
    fn default() -> Self {
        NormalizeOptions {
            replace_quotes: true,
            unicode_form: UnicodeForm::Auto,
            lowercase: true,
            strip_accents: true,
            collapse_spaces: true,
            force_english_keyboard: true,
            whitespace_escape: false,
        }
    }
}

impl NormalizeOptions {
    /// The options that leave every text unchanged.
    pub fn identity() -> Self {
        NormalizeOptions {
            replace_quotes: false,
            unicode_form: UnicodeForm::None,
            lowercase: false,
            strip_accents: false,
            collapse_spaces: false,
            force_english_keyboard: false,
            whitespace_escape: false,
        }
    }

    /// The Unicode form actually applied (resolves [`UnicodeForm::Auto`]).
    pub fn effective_form(&self) -> UnicodeForm {
        match self.unicode_form {
            UnicodeForm::Auto if self.strip_accents => UnicodeForm::Nfd,
            UnicodeForm::Auto => UnicodeForm::Nfkc,
            form => form,
        }
    }

    /// Normalises one text (see the module documentation for the steps).
    pub fn apply(&self, text: &str) -> String {
        let mut s = if self.replace_quotes && (text.contains("``") || text.contains("''")) {
            // Two sequential replacements, as the reference's two `Replace`
            // normalisers (the first cannot create a match for the second).
            text.replace("``", "\"").replace("''", "\"")
        } else {
            text.to_string()
        };
        // Fast path: ASCII text is unchanged by NFD/NFKC and by accent
        // stripping.
        let ascii = s.is_ascii();
        if !ascii {
            s = match self.effective_form() {
                UnicodeForm::Nfd => s.nfd().collect(),
                UnicodeForm::Nfkc => s.nfkc().collect(),
                UnicodeForm::None | UnicodeForm::Auto => s,
            };
        }
        if self.lowercase {
            if s.is_ascii() {
                s.make_ascii_lowercase();
            } else {
                // Character by character, as `tokenizers`' `Lowercase` does:
                // `str::to_lowercase` would turn a final 'Σ' into 'ς'.
                s = s.chars().flat_map(char::to_lowercase).collect();
            }
        }
        if self.strip_accents && !s.is_ascii() {
            s = s.chars().filter(|&c| !is_combining_mark(c)).collect();
        }
        if self.collapse_spaces && s.contains("  ") {
            let mut out = String::with_capacity(s.len());
            let mut previous_space = false;
            for c in s.chars() {
                if c == ' ' {
                    if !previous_space {
                        out.push(' ');
                    }
                    previous_space = true;
                } else {
                    out.push(c);
                    previous_space = false;
                }
            }
            s = out;
        }
        if self.force_english_keyboard && !s.is_ascii() {
            s.retain(|c| c.is_ascii());
        }
        if self.whitespace_escape && s.contains(' ') {
            s = s.replace(' ', "一");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::NormalizerWrapper;
    use tokenizers::normalizers::{
        Lowercase, NFD, NFKC, Replace, Sequence, StripAccents, replace::ReplacePattern,
    };
    use tokenizers::tokenizer::{NormalizedString, Normalizer};

    /// The reference's normaliser sequence built from `tokenizers` itself.
    fn reference(options: &NormalizeOptions) -> Sequence {
        let mut ops: Vec<NormalizerWrapper> = vec![
            Replace::new("``", "\"").unwrap().into(),
            Replace::new("''", "\"").unwrap().into(),
        ];
        if options.strip_accents {
            ops.push(NFD.into());
        } else {
            ops.push(NFKC.into());
        }
        if options.lowercase {
            ops.push(Lowercase.into());
        }
        if options.strip_accents {
            ops.push(StripAccents.into());
        }
        ops.push(
            Replace::new(ReplacePattern::Regex(" {2,}".into()), " ")
                .unwrap()
                .into(),
        );
        if options.force_english_keyboard {
            ops.push(
                Replace::new(ReplacePattern::Regex(r"[^\x00-\x7F]+".into()), "")
                    .unwrap()
                    .into(),
            );
        }
        Sequence::new(ops)
    }

    fn reference_apply(options: &NormalizeOptions, text: &str) -> String {
        let mut n = NormalizedString::from(text);
        reference(options).normalize(&mut n).unwrap();
        n.get().to_string()
    }

    const SAMPLES: &[&str] = &[
        "Hello  World",
        "``Quoted'' text with   three spaces\tand\ttabs\n\nnewlines",
        "Crème brûlée à la française, naïve café — “smart quotes”",
        "ΣΟΦΙΑ ΟΔΥΣΣΕΥΣ: final sigma test",
        "Ｆｕｌｌｗｉｄｔｈ ﬁ ligature ① ² ½ ㎏",
        "Ångström İstanbul ß ẞ Œuvre",
        "中文 文本 ，日本語のテキスト  한국어",
        "emoji 🙂  👍🏽 and zero\u{200b}width",
        "a ☃ b  ☃  c",
        "",
        "   ",
        "e\u{301} vs é, n\u{303}",
    ];

    #[test]
    fn matches_the_tokenizers_sequence_with_reference_defaults() {
        let options = NormalizeOptions::default();
        for sample in SAMPLES {
            assert_eq!(
                options.apply(sample),
                reference_apply(&options, sample),
                "sample {sample:?}"
            );
        }
    }

    #[test]
    fn matches_the_tokenizers_sequence_without_accent_stripping() {
        let options = NormalizeOptions {
            strip_accents: false,
            force_english_keyboard: false,
            lowercase: false,
            ..NormalizeOptions::default()
        };
        for sample in SAMPLES {
            assert_eq!(
                options.apply(sample),
                reference_apply(&options, sample),
                "sample {sample:?}"
            );
        }
    }

    #[test]
    fn matches_with_lowercase_and_nfkc() {
        let options = NormalizeOptions {
            strip_accents: false,
            force_english_keyboard: false,
            ..NormalizeOptions::default()
        };
        for sample in SAMPLES {
            assert_eq!(
                options.apply(sample),
                reference_apply(&options, sample),
                "sample {sample:?}"
            );
        }
    }

    #[test]
    fn known_outputs() {
        let options = NormalizeOptions::default();
        assert_eq!(options.apply("Crème  Brûlée ``x''"), "creme brulee \"x\"");
        assert_eq!(options.apply("ΣΑΣ"), "");
        let keep_greek = NormalizeOptions {
            force_english_keyboard: false,
            ..options.clone()
        };
        // Character-wise lowercasing: no final sigma.
        assert_eq!(keep_greek.apply("ΣΑΣ"), "σασ");
        assert_eq!(
            NormalizeOptions::identity().apply("A  ``b''  É"),
            "A  ``b''  É"
        );
        let escape = NormalizeOptions {
            whitespace_escape: true,
            ..NormalizeOptions::default()
        };
        assert_eq!(escape.apply("a b"), "a一b");
    }
}
