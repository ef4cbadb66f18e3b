//! A faster encoder for the default tokenizer configuration, used by `pack`.
//!
//! Hand-written because `tokenizers`' general pipeline tracks offsets and
//! alignments and allocates a `String` per token and per WordPiece lookup,
//! which is most of the packing time. It applies only when the tokenizer is
//! exactly the `tokenizer` kind's default WordPiece (lowercase, strip accents,
//! force English keyboard, `Whitespace` pre-tokenizer, `##` prefix, only the
//! five special tokens added); otherwise [`FastWordPiece::new`] returns
//! `None` and the library encodes.
//!
//! Per document: if it contains a special token's text, the library encodes
//! it (added tokens are matched before normalisation). Otherwise the
//! normalised text is computed (for ASCII characters, the whole normaliser
//! reduces to ` `` `/`''` → `"` and ASCII lowercase; every other character
//! goes through the library's normaliser on its own, see
//! `FastWordPiece::normalize`), split like the
//! `Whitespace` pre-tokenizer (`\w+|[^\w\s]+`, ASCII classes since the text
//! is ASCII), and each word matched greedily longest-first against the
//! vocabulary exactly as `tokenizers`' WordPiece does. The benchmark
//! `benches/pack.rs` checks id-for-id equality with the library on the whole
//! enwiki sample.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokenizers::models::ModelWrapper;
use tokenizers::{NormalizedString, Normalizer, NormalizerWrapper, Tokenizer};

use crate::tokenizer::{SPECIAL_TOKENS, TokenizerParams, normalizer};

/// The fast encoder (see the module docs).
#[derive(Debug, Clone)]
pub struct FastWordPiece {
    text: FastText,
    vocab: HashMap<String, u32>,
    unk: u32,
    max_chars: usize,
}

/// The default normaliser and the `Whitespace` pre-tokenizer, done fast
/// (see the module docs): what both the fast encoder and the tokenizer
/// trainer's word count use.
#[derive(Debug, Clone)]
pub struct FastText {
    /// The library's normaliser, for non-ASCII characters.
    normalizer: Arc<NormalizerWrapper>,
    /// Normalised form of each non-ASCII character met so far.
    cache: Arc<RwLock<HashMap<char, String>>>,
}

/// Character classes of the `Whitespace` pre-tokenizer on ASCII.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Space,
    Punct,
}

fn class(b: u8) -> Class {
    if b.is_ascii_alphanumeric() || b == b'_' {
        Class::Word
    } else if matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') {
        Class::Space
    } else {
        Class::Punct
    }
}

impl FastText {
    /// The fast path for `tokenizer` if it has the default normaliser and
    /// the `Whitespace` pre-tokenizer, `None` otherwise (its model does not
    /// matter).
    pub fn new(tokenizer: &Tokenizer) -> Option<FastText> {
        let expected = normalizer(&TokenizerParams::default()).ok()?;
        let ours = serde_json::to_value(tokenizer.get_normalizer()?).ok()?;
        if ours != serde_json::to_value(&expected).ok()? {
            return None;
        }
        let pre = serde_json::to_value(tokenizer.get_pre_tokenizer()?).ok()?;
        if pre != serde_json::json!({"type": "Whitespace"}) {
            return None;
        }
        Some(FastText {
            normalizer: Arc::new(tokenizer.get_normalizer()?.clone()),
            cache: Arc::default(),
        })
    }

    /// Calls `f` with each pre-tokenized word of `text`'s normal form, in
    /// order, exactly as the library's normaliser and `Whitespace`
    /// pre-tokenizer would split it.
    pub fn for_each_word(&self, text: &str, mut f: impl FnMut(&str)) -> tokenizers::Result<()> {
        let normalized = self.normalize(text)?;
        let bytes = normalized.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = class(bytes[i]);
            let mut j = i + 1;
            while j < bytes.len() && class(bytes[j]) == c {
                j += 1;
            }
            if c != Class::Space {
                f(&normalized[i..j]);
            }
            i = j;
        }
        Ok(())
    }

    /// The normaliser's output for `text`. ASCII characters are mapped
    /// directly; each other character through the library's normaliser
    /// alone (cached). That is exact because after the two quote
    /// replacements (done first, on the original text, as the library
    /// does) every step is character-local as far as ASCII output goes:
    /// NFD decomposes each character on its own (canonical reordering only
    /// moves combining marks, which are non-ASCII and deleted at the end),
    /// lowercasing and accent stripping map characters one by one, the
    /// final step deletes all non-ASCII, and collapsing runs of spaces does
    /// not change how the pre-tokenizer splits.
    fn normalize(&self, text: &str) -> tokenizers::Result<String> {
        let text = text.replace("``", "\"").replace("''", "\"");
        if text.is_ascii() {
            let mut s = text;
            s.make_ascii_lowercase();
            return Ok(s);
        }
        let mut out = String::with_capacity(text.len());
        let mut utf8 = [0u8; 4];
        for c in text.chars() {
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
                continue;
            }
            if let Some(mapped) = self.cache.read().expect("cache lock").get(&c) {
                out.push_str(mapped);
                continue;
            }
            let mut n = NormalizedString::from(&*c.encode_utf8(&mut utf8));
            self.normalizer.normalize(&mut n)?;
            let mapped = n.get().to_string();
            out.push_str(&mapped);
            self.cache.write().expect("cache lock").insert(c, mapped);
        }
        Ok(out)
    }
}

impl FastWordPiece {
    /// Builds the fast encoder if `tokenizer` has the supported
    /// configuration, `None` otherwise.
    pub fn new(tokenizer: &Tokenizer) -> Option<FastWordPiece> {
        let text = FastText::new(tokenizer)?;
        let ModelWrapper::WordPiece(wp) = tokenizer.get_model() else {
            return None;
        };
        if wp.continuing_subword_prefix != "##" {
            return None;
        }
        let added = tokenizer.get_added_tokens_decoder();
        if added.len() != SPECIAL_TOKENS.len()
            || added
                .values()
                .any(|t| !SPECIAL_TOKENS.contains(&t.content.as_str()))
        {
            return None;
        }
        let vocab: HashMap<String, u32> = tokenizers::Model::get_vocab(wp).into_iter().collect();
        let unk = *vocab.get(&wp.unk_token)?;
        Some(FastWordPiece {
            text,
            vocab,
            unk,
            max_chars: wp.max_input_chars_per_word,
        })
    }

    /// Appends the ids of `text` (no special tokens) to `out`, as
    /// `tokenizer.encode_fast(text, false)` would give them.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        text: &str,
        out: &mut Vec<u32>,
    ) -> tokenizers::Result<()> {
        if text.contains('[') && SPECIAL_TOKENS.iter().any(|s| text.contains(s)) {
            out.extend_from_slice(tokenizer.encode_fast(text, false)?.get_ids());
            return Ok(());
        }
        let mut buf = String::with_capacity(64);
        self.text
            .for_each_word(text, |word| self.word(word, &mut buf, out))
    }

    /// Greedy longest-match-first WordPiece of one ASCII word.
    fn word(&self, word: &str, buf: &mut String, out: &mut Vec<u32>) {
        if word.len() > self.max_chars {
            out.push(self.unk);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                buf.clear();
                if start > 0 {
                    buf.push_str("##");
                }
                buf.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(buf.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(mark);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}
