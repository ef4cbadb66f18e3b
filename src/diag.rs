//! Diagnostics for pipeline files, printed like a compiler's: the file, line
//! and column, the offending text underlined, what was expected, and a hint.

use std::path::Path;

use miette::{Diagnostic, NamedSource, SourceSpan};

/// A problem with a pipeline file or a `--set` override.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(cram::pipeline))]
pub struct PipelineError {
    /// One line: `FILE:LINE:COL: what is wrong`.
    pub message: String,
    #[source_code]
    src: Option<NamedSource<String>>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    /// What to do about it.
    #[help]
    pub help: Option<String>,
}

/// Where a problem is: a file (or the command line) and a byte range.
#[derive(Debug, Clone)]
pub struct Location {
    /// Display name of the source (a path, or `--set`).
    pub name: String,
    /// The full source text.
    pub text: String,
    /// Byte range in `text`.
    pub span: std::ops::Range<usize>,
}

impl Location {
    /// A location in a file's text.
    pub fn in_file(path: &Path, text: &str, span: std::ops::Range<usize>) -> Location {
        Location {
            name: path.display().to_string(),
            text: text.to_string(),
            span,
        }
    }

    /// 1-based line and column of the span start.
    pub fn line_col(&self) -> (usize, usize) {
        let start = self.span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map(|i| before[i + 1..].chars().count())
            .unwrap_or_else(|| before.chars().count())
            + 1;
        (line, col)
    }
}

impl PipelineError {
    /// An error at a location, with a short label under the span.
    pub fn at(loc: &Location, message: impl Into<String>, label: impl Into<String>) -> Self {
        let (line, col) = loc.line_col();
        PipelineError {
            message: format!("{}:{}:{}: {}", loc.name, line, col, message.into()),
            src: Some(NamedSource::new(loc.name.clone(), loc.text.clone())),
            span: Some((loc.span.start, loc.span.end.saturating_sub(loc.span.start)).into()),
            label: label.into(),
            help: None,
        }
    }

    /// An error that concerns a whole file rather than a place in it.
    pub fn in_file(path: &Path, message: impl Into<String>) -> Self {
        PipelineError {
            message: format!("{}: {}", path.display(), message.into()),
            src: None,
            span: None,
            label: String::new(),
            help: None,
        }
    }

    /// An error without a source location (e.g. a bad command-line value).
    pub fn plain(message: impl Into<String>) -> Self {
        PipelineError {
            message: message.into(),
            src: None,
            span: None,
            label: String::new(),
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let loc = Location {
            name: "p.toml".into(),
            text: "a = 1\nbb = 2\n".into(),
            span: 6..8,
        };
        assert_eq!(loc.line_col(), (2, 1));
        let err = PipelineError::at(&loc, "unknown key `bb`", "here");
        assert!(err.message.starts_with("p.toml:2:1: unknown key"));
    }
}
