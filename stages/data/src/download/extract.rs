//! Turning downloaded files into documents: input formats (Parquet, JSON
//! lines, plain text, compressed with gzip or zstd) produce *rows*, and a
//! layout assembles rows into documents.
//!
//! Layouts:
//! * `rows`: every row (a Parquet value, a JSON line's field, a text line) is
//!   one document.
//! * `lines`: every line of every row is one document.
//! * `paragraphs`: runs of non-blank lines, separated by blank lines, are one
//!   document each (lines joined with `\n`).
//! * `wikitext`: WikiText-103's layout, one line per row; a level-1 heading
//!   ` = Title = ` starts a new article, which runs until the next one. The
//!   document is the title (without the `=` marks) followed by the article's
//!   non-blank lines, each trimmed, joined with `\n`; lower-level headings
//!   (` = = Section = = `) stay as lines.
//! * `titled`: WikiExtractor's plain output, one line per row (the mirror's
//!   `enwiki-sample/raw` config): an article is a one-line title, one blank
//!   line, then its body lines; articles are separated by blank lines, and
//!   an article without body leaves its title followed by two blank lines
//!   (blank = empty; whitespace-only lines belong to the body).
//!   The document is `title\nbody`; titles without a body are dropped
//!   (counted as empty). A block of several lines where a title is expected
//!   becomes a document on its own. The format has no article markers, so a
//!   blank line inside a body ends the article there (the part after it is
//!   read as a new title and body); WikiExtractor rarely writes such lines.
//! * `file`: every input file is one document: its rows joined with `\n`
//!   (for plain text, the file's text with line ends as `\n` and without
//!   its final line end), blank lines kept. For local corpora of whole
//!   works (a folder of books), so that dedup sees repeats that span
//!   paragraphs. A file is held in memory while it is read.
//! * `auto`: `wikitext` if a level-1 heading appears among the first 1000
//!   rows, otherwise `rows` for Parquet and JSON lines and `paragraphs` for
//!   plain text.
//!
//! Whitespace-only documents are dropped (and counted). Bytes that are not
//! valid UTF-8 (JSON lines and text) are replaced by U+FFFD and counted.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DownloadError;
use crate::documents::{DocumentWriter, StringColumnBatches};

/// Format of the input files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// From the file name: `.parquet`; `.jsonl`, `.json`, `.ndjson` (also
    /// with `.gz`/`.zst`); anything else is plain text (also with `.gz`/`.zst`).
    Auto,
    /// Parquet: the string column `text_column`.
    Parquet,
    /// JSON lines: the string field `text_field` of every object.
    Jsonl,
    /// Plain text: one row per line.
    Text,
}

/// How rows are grouped into documents (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `wikitext` when level-1 ` = Title = ` headings are seen, otherwise
    /// `rows` for Parquet/JSON lines and `paragraphs` for text.
    Auto,
    /// One line per row, ` = Title = ` headings start articles.
    Wikitext,
    /// Every line is a document.
    Lines,
    /// Blank-line-separated blocks of lines are documents.
    Paragraphs,
    /// Every row is a document.
    Rows,
    /// WikiExtractor output: title line, blank line, body block.
    Titled,
    /// Every input file is a document (its rows joined with `\n`).
    File,
}

/// The concrete format of one file.
pub(crate) fn detect_format(requested: InputFormat, path: &str) -> InputFormat {
    if requested != InputFormat::Auto {
        return requested;
    }
    let lower = path.to_ascii_lowercase();
    let stem = lower.trim_end_matches(".gz").trim_end_matches(".zst");
    if stem.ends_with(".parquet") {
        InputFormat::Parquet
    } else if stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson") {
        InputFormat::Jsonl
    } else {
        InputFormat::Text
    }
}

/// A level-1 WikiText heading: ` = Title = ` (and not ` = = Sub = = `).
/// Returns the title.
pub(crate) fn wikitext_title(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = t.strip_prefix("= ")?.strip_suffix(" =")?;
    if inner.starts_with('=') || inner.ends_with('=') || inner.trim().is_empty() {
        return None;
    }
    Some(inner.trim())
}

/// Counters of one extraction.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub rows: u64,
    pub replaced_characters: u64,
    pub skipped_empty: u64,
}

const AUTO_PEEK_ROWS: usize = 1000;

/// Assembles rows into documents according to a layout and writes them.
pub(crate) struct Assembler {
    layout: Layout,
    /// Layout `auto` falls back to this one when no heading is seen.
    fallback: Layout,
    pending: Vec<String>,
    current: String,
    /// Titled layout: lines of the current block, the pending title, blank
    /// lines seen since the last block, whether the block is a body.
    block: Vec<String>,
    title: Option<String>,
    blank_run: u32,
    in_body: bool,
    /// File layout: rows of the current file so far.
    file_rows: u64,
    max_documents: Option<u64>,
    writer: DocumentWriter,
    pub counts: Counts,
}

impl Assembler {
    pub(crate) fn new(layout: Layout, max_documents: Option<u64>, writer: DocumentWriter) -> Self {
        Assembler {
            layout,
            fallback: Layout::Rows,
            pending: Vec::new(),
            current: String::new(),
            block: Vec::new(),
            title: None,
            blank_run: 0,
            in_body: false,
            file_rows: 0,
            max_documents,
            writer,
            counts: Counts::default(),
        }
    }

    /// Sets the fallback of `auto` for the format of the first file.
    pub(crate) fn set_fallback(&mut self, format: InputFormat) {
        if self.counts.rows == 0 {
            self.fallback = if format == InputFormat::Text {
                Layout::Paragraphs
            } else {
                Layout::Rows
            };
        }
    }

    /// True once `max_documents` documents are written.
    pub(crate) fn full(&self) -> bool {
        self.max_documents
            .is_some_and(|m| self.writer.documents() >= m)
    }

    fn emit(&mut self, text: &str) -> Result<(), DownloadError> {
        if self.full() {
            return Ok(());
        }
        if text.trim().is_empty() {
            self.counts.skipped_empty += 1;
            return Ok(());
        }
        self.writer.push(text)?;
        Ok(())
    }

    fn flush_current(&mut self) -> Result<(), DownloadError> {
        if !self.current.is_empty() {
            let doc = std::mem::take(&mut self.current);
            self.emit(&doc)?;
        }
        Ok(())
    }

    /// Feeds one row.
    pub(crate) fn row(&mut self, row: &str) -> Result<(), DownloadError> {
        self.counts.rows += 1;
        if self.layout == Layout::Auto {
            let heading = row.lines().any(|l| wikitext_title(l).is_some());
            self.pending.push(row.to_string());
            if heading {
                self.decide(Layout::Wikitext)?;
            } else if self.pending.len() >= AUTO_PEEK_ROWS {
                self.decide(self.fallback)?;
            }
            return Ok(());
        }
        self.process(row)
    }

    fn decide(&mut self, layout: Layout) -> Result<(), DownloadError> {
        self.layout = layout;
        for row in std::mem::take(&mut self.pending) {
            self.process(&row)?;
        }
        Ok(())
    }

    fn process(&mut self, row: &str) -> Result<(), DownloadError> {
        match self.layout {
            Layout::Rows | Layout::Auto => self.emit(row),
            Layout::Lines => {
                for line in row.lines() {
                    self.emit(line)?;
                }
                Ok(())
            }
            Layout::Paragraphs => {
                for line in row.lines() {
                    if line.trim().is_empty() {
                        self.flush_current()?;
                    } else {
                        if !self.current.is_empty() {
                            self.current.push('\n');
                        }
                        self.current.push_str(line.trim_end());
                    }
                }
                // A row that is itself empty (no lines) is a blank line.
                if row.is_empty() {
                    self.flush_current()?;
                }
                Ok(())
            }
            Layout::File => {
                if self.file_rows > 0 {
                    self.current.push('\n');
                }
                self.current.push_str(row);
                self.file_rows += 1;
                Ok(())
            }
            Layout::Titled => {
                if row.is_empty() {
                    return self.titled_line("");
                }
                for line in row.lines() {
                    self.titled_line(line)?;
                }
                Ok(())
            }
            Layout::Wikitext => {
                for line in row.lines() {
                    if let Some(title) = wikitext_title(line) {
                        self.flush_current()?;
                        self.current.push_str(title);
                    } else if !line.trim().is_empty() {
                        if !self.current.is_empty() {
                            self.current.push('\n');
                        }
                        self.current.push_str(line.trim());
                    }
                }
                Ok(())
            }
        }
    }

    /// Marks the end of an input file: blocks (paragraphs, titled articles)
    /// do not continue into the next file; WikiText articles may, as the
    /// hub's WikiText shards split between rows. `auto` decides here at the
    /// latest.
    pub(crate) fn end_of_file(&mut self) -> Result<(), DownloadError> {
        if self.layout == Layout::Auto {
            self.decide(self.fallback)?;
        }
        match self.layout {
            Layout::Paragraphs => self.flush_current()?,
            Layout::File => {
                let doc = std::mem::take(&mut self.current);
                self.file_rows = 0;
                self.emit(&doc)?;
            }
            Layout::Titled => {
                if !self.block.is_empty() {
                    self.titled_block_end()?;
                }
                if self.title.take().is_some() {
                    self.counts.skipped_empty += 1;
                }
                self.blank_run = 0;
                self.in_body = false;
            }
            _ => {}
        }
        Ok(())
    }

    fn titled_line(&mut self, line: &str) -> Result<(), DownloadError> {
        // Only empty lines separate: WikiExtractor keeps whitespace-only
        // lines inside bodies.
        if line.is_empty() {
            if !self.block.is_empty() {
                self.titled_block_end()?;
            }
            self.blank_run += 1;
            return Ok(());
        }
        if self.block.is_empty() {
            // A block starts: after a pending title, one blank line means
            // this is its body; more mean the title had no body.
            if self.title.is_some() {
                if self.blank_run == 1 {
                    self.in_body = true;
                } else {
                    self.title = None;
                    self.counts.skipped_empty += 1;
                }
            }
        }
        self.blank_run = 0;
        self.block.push(line.to_string());
        Ok(())
    }

    fn titled_block_end(&mut self) -> Result<(), DownloadError> {
        let block = std::mem::take(&mut self.block).join("\n");
        if self.in_body {
            self.in_body = false;
            let title = self.title.take().unwrap_or_default();
            self.emit(&format!("{title}\n{block}"))?;
        } else if !block.contains('\n') {
            self.title = Some(block);
        } else {
            self.emit(&block)?;
        }
        Ok(())
    }

    /// Flushes what is pending and returns the writer.
    pub(crate) fn finish(mut self) -> Result<(DocumentWriter, Counts, Layout), DownloadError> {
        if self.layout == Layout::Auto {
            self.decide(self.fallback)?;
        }
        if !self.block.is_empty() {
            self.titled_block_end()?;
        }
        if self.title.take().is_some() {
            self.counts.skipped_empty += 1;
        }
        self.flush_current()?;
        Ok((self.writer, self.counts, self.layout))
    }
}

/// Decodes bytes as UTF-8, replacing invalid sequences by U+FFFD; returns the
/// number of replacements.
pub(crate) fn decode_lossy(bytes: &[u8], out: &mut String) -> u64 {
    out.clear();
    let mut replaced = 0;
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push('\u{FFFD}');
            replaced += 1;
        }
    }
    replaced
}

/// Opens a file, decompressing by the extension of its (repo) name.
fn open_decoded(path: &Path, name: &str) -> Result<Box<dyn BufRead>, DownloadError> {
    let file = File::open(path).map_err(|e| DownloadError::io(path, e))?;
    let lower = name.to_ascii_lowercase();
    let reader: Box<dyn Read> = if lower.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else if lower.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| DownloadError::io(path, e))?)
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// Options of the extraction of one file.
pub(crate) struct FileSpec<'a> {
    /// Local path of the content.
    pub path: &'a Path,
    /// Name to report (repo path) and to detect the format/compression by.
    pub name: &'a str,
    pub format: InputFormat,
    pub text_column: &'a str,
    pub text_field: &'a str,
}

/// Feeds the rows of one file into the assembler; stops early once it is
/// full.
pub(crate) fn extract_file(spec: &FileSpec<'_>, asm: &mut Assembler) -> Result<(), DownloadError> {
    let format = detect_format(spec.format, spec.name);
    asm.set_fallback(format);
    match format {
        InputFormat::Parquet => {
            let batches =
                StringColumnBatches::new(vec![spec.path.to_path_buf()], spec.text_column, 8192);
            for batch in batches {
                let batch = batch.map_err(|source| DownloadError::Extract {
                    file: spec.name.to_string(),
                    source,
                })?;
                for text in batch {
                    if asm.full() {
                        return Ok(());
                    }
                    asm.row(&text)?;
                }
            }
            asm.end_of_file()?;
        }
        InputFormat::Jsonl | InputFormat::Text | InputFormat::Auto => {
            let mut reader = open_decoded(spec.path, spec.name)?;
            let mut buf = Vec::new();
            let mut line = String::new();
            let mut number = 0u64;
            loop {
                if asm.full() {
                    return Ok(());
                }
                buf.clear();
                let n = reader
                    .read_until(b'\n', &mut buf)
                    .map_err(|e| DownloadError::Read {
                        file: spec.name.to_string(),
                        line: number + 1,
                        source: e,
                    })?;
                if n == 0 {
                    break;
                }
                number += 1;
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                asm.counts.replaced_characters += decode_lossy(&buf, &mut line);
                if format == InputFormat::Text {
                    asm.row(&line)?;
                    continue;
                }
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| DownloadError::Json {
                        file: spec.name.to_string(),
                        line: number,
                        reason: e.to_string(),
                    })?;
                match value.get(spec.text_field) {
                    Some(serde_json::Value::String(s)) => asm.row(s)?,
                    other => {
                        return Err(DownloadError::Json {
                            file: spec.name.to_string(),
                            line: number,
                            reason: format!(
                                "field {:?} is {}, expected a string (set `text_field`)",
                                spec.text_field,
                                match other {
                                    None => "missing".to_string(),
                                    Some(v) => format!("{v}").chars().take(60).collect(),
                                }
                            ),
                        });
                    }
                }
            }
            asm.end_of_file()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::read_documents;

    fn assemble(layout: Layout, rows: &[&str], format: InputFormat) -> (Vec<String>, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let writer = DocumentWriter::create(dir.path()).unwrap();
        let mut asm = Assembler::new(layout, None, writer);
        asm.set_fallback(format);
        for r in rows {
            asm.row(r).unwrap();
        }
        let (writer, _, layout) = asm.finish().unwrap();
        writer.finish().unwrap();
        let docs = read_documents(dir.path())
            .unwrap()
            .flat_map(|b| b.unwrap())
            .collect();
        (docs, layout)
    }

    #[test]
    fn wikitext_headings() {
        assert_eq!(
            wikitext_title(" = Valkyria Chronicles III = \n"),
            Some("Valkyria Chronicles III")
        );
        assert_eq!(wikitext_title(" = = Gameplay = = "), None);
        assert_eq!(wikitext_title("x = y = z"), None);
        assert_eq!(wikitext_title(" = = "), None);
        let rows = [
            "",
            " = Alpha = \n",
            "",
            " Alpha is a letter . \n",
            " = = History = = \n",
            " It is old . \n",
            " = Beta = \n",
            " Beta follows . \n",
        ];
        let (docs, layout) = assemble(Layout::Auto, &rows, InputFormat::Parquet);
        assert_eq!(layout, Layout::Wikitext);
        assert_eq!(
            docs,
            vec![
                "Alpha\nAlpha is a letter .\n= = History = =\nIt is old .",
                "Beta\nBeta follows ."
            ]
        );
    }

    #[test]
    fn other_layouts() {
        let rows = ["a b", "", "c", "d\ne", "   ", "f"];
        assert_eq!(
            assemble(Layout::Rows, &rows, InputFormat::Parquet).0,
            vec!["a b", "c", "d\ne", "f"]
        );
        assert_eq!(
            assemble(Layout::Lines, &rows, InputFormat::Parquet).0,
            vec!["a b", "c", "d", "e", "f"]
        );
        assert_eq!(
            assemble(Layout::Paragraphs, &rows, InputFormat::Text).0,
            vec!["a b", "c\nd\ne", "f"]
        );
        let (docs, layout) = assemble(Layout::Auto, &rows, InputFormat::Text);
        assert_eq!(layout, Layout::Paragraphs);
        assert_eq!(docs.len(), 3);
        assert_eq!(
            assemble(Layout::Auto, &rows, InputFormat::Jsonl).1,
            Layout::Rows
        );
    }

    #[test]
    fn file_layout_makes_one_document_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DocumentWriter::create(dir.path()).unwrap();
        let mut asm = Assembler::new(Layout::File, None, writer);
        asm.set_fallback(InputFormat::Text);
        let files: [&[&str]; 3] = [
            &["Chapter 1", "", "It was a dark night.", "  indented", ""],
            &["", "   "],
            &["A second book.", "", "", "Its end."],
        ];
        for rows in files {
            for r in rows {
                asm.row(r).unwrap();
            }
            asm.end_of_file().unwrap();
        }
        let (writer, counts, layout) = asm.finish().unwrap();
        writer.finish().unwrap();
        assert_eq!(layout, Layout::File);
        // The whitespace-only file is dropped and counted.
        assert_eq!(counts.skipped_empty, 1);
        let docs: Vec<String> = read_documents(dir.path())
            .unwrap()
            .flat_map(|b| b.unwrap())
            .collect();
        assert_eq!(
            docs,
            vec![
                "Chapter 1\n\nIt was a dark night.\n  indented\n",
                "A second book.\n\n\nIts end."
            ]
        );
    }

    #[test]
    fn titled_layout() {
        let rows = [
            "Alpha",
            "",
            "Alpha is first.",
            "It is a letter.",
            "",
            "Empty",
            "",
            "",
            "Beta",
            "",
            "Beta.",
            "",
        ];
        let (docs, _) = assemble(Layout::Titled, &rows, InputFormat::Parquet);
        assert_eq!(
            docs,
            vec!["Alpha\nAlpha is first.\nIt is a letter.", "Beta\nBeta."]
        );
    }

    #[test]
    fn lossy_decoding_counts() {
        let mut s = String::new();
        assert_eq!(decode_lossy(b"caf\xe9 ok \xff\xfe", &mut s), 3);
        assert_eq!(s, "caf\u{FFFD} ok \u{FFFD}\u{FFFD}");
        assert_eq!(decode_lossy("héllo".as_bytes(), &mut s), 0);
        assert_eq!(s, "héllo");
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(
            detect_format(InputFormat::Auto, "a/train.parquet"),
            InputFormat::Parquet
        );
        assert_eq!(
            detect_format(InputFormat::Auto, "x.jsonl.zst"),
            InputFormat::Jsonl
        );
        assert_eq!(
            detect_format(InputFormat::Auto, "x.json.gz"),
            InputFormat::Jsonl
        );
        assert_eq!(
            detect_format(InputFormat::Auto, "wiki.train.raw"),
            InputFormat::Text
        );
        assert_eq!(
            detect_format(InputFormat::Text, "x.parquet"),
            InputFormat::Text
        );
    }
}
