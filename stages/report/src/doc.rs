//! A small document model rendered both as Markdown and as self-contained
//! XHTML-compatible HTML, so the two reports always say the same thing.

use std::fmt::Write as _;

use html_escape::{encode_double_quoted_attribute as attr, encode_text as esc};

/// A piece of running text.
#[derive(Debug, Clone, PartialEq)]
pub enum Span {
    /// Plain text.
    Text(String),
    /// Inline code (names, hashes, paths).
    Code(String),
    /// Emphasised text.
    Strong(String),
}

/// Shorthand for [`Span::Text`].
pub fn t(s: impl Into<String>) -> Span {
    Span::Text(s.into())
}

/// Shorthand for [`Span::Code`].
pub fn c(s: impl Into<String>) -> Span {
    Span::Code(s.into())
}

/// Shorthand for [`Span::Strong`].
pub fn b(s: impl Into<String>) -> Span {
    Span::Strong(s.into())
}

/// A table cell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cell {
    /// The cell's content.
    pub spans: Vec<Span>,
    /// A CSS class for the HTML cell (`pass`, `fail`, `warn`, `ref`, `num`).
    pub class: Option<&'static str>,
}

impl Cell {
    /// A plain-text cell.
    pub fn text(s: impl Into<String>) -> Cell {
        Cell {
            spans: vec![t(s)],
            class: None,
        }
    }

    /// A code cell.
    pub fn code(s: impl Into<String>) -> Cell {
        Cell {
            spans: vec![c(s)],
            class: None,
        }
    }

    /// A right-aligned numeric cell.
    pub fn num(s: impl Into<String>) -> Cell {
        Cell {
            spans: vec![t(s)],
            class: Some("num"),
        }
    }

    /// The same cell with a CSS class.
    pub fn with_class(mut self, class: &'static str) -> Cell {
        self.class = Some(class);
        self
    }
}

/// A block of a section.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A paragraph.
    Para(Vec<Span>),
    /// A sub-heading inside a section.
    Subheading(String),
    /// A table with a header row; `class` is a CSS class for the HTML table
    /// and a row's class (first cell's class `ref`/`ours`) styles it.
    Table {
        /// Column titles.
        header: Vec<String>,
        /// Rows of cells.
        rows: Vec<Vec<Cell>>,
    },
    /// Name/value pairs.
    Facts(Vec<(String, Cell)>),
    /// An SVG plot: inlined into the HTML, linked from the Markdown.
    Plot {
        /// Caption.
        title: String,
        /// The SVG document.
        svg: String,
        /// Path of the SVG file relative to the report (for Markdown).
        file: String,
    },
}

/// A section of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Anchor id (also the HTML `id`).
    pub id: &'static str,
    /// Heading.
    pub title: String,
    /// Content.
    pub blocks: Vec<Block>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Title.
    pub title: String,
    /// A lead paragraph under the title.
    pub lead: Vec<Span>,
    /// Sections in order.
    pub sections: Vec<Section>,
}

/// Escapes text for Markdown (characters that would start markup, and `|`
/// so text can sit in a table cell).
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// Inline code for Markdown, with a fence longer than any backtick run inside.
fn md_code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ").replace('|', "\\|");
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    if s.starts_with('`') || s.ends_with('`') {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

fn md_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| match s {
            Span::Text(x) => md_text(x),
            Span::Code(x) => md_code(x),
            Span::Strong(x) => {
                // Markdown emphasis must not start or end with a space.
                let inner = x.trim();
                let lead = &x[..x.len() - x.trim_start().len()];
                let trail = &x[x.trim_end().len()..];
                if inner.is_empty() {
                    x.clone()
                } else {
                    format!("{lead}**{}**{trail}", md_text(inner))
                }
            }
        })
        .collect()
}

fn html_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| match s {
            Span::Text(x) => esc(x).into_owned(),
            Span::Code(x) => format!("<code>{}</code>", esc(x)),
            Span::Strong(x) => format!("<strong>{}</strong>", esc(x)),
        })
        .collect()
}

impl Document {
    /// Renders the report as GitHub-flavoured Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {}\n", md_text(&self.title));
        if !self.lead.is_empty() {
            let _ = writeln!(out, "{}\n", md_spans(&self.lead));
        }
        let _ = writeln!(out, "Contents:\n");
        for s in &self.sections {
            let _ = writeln!(out, "- [{}](#{})", md_text(&s.title), s.id);
        }
        out.push('\n');
        for section in &self.sections {
            let _ = writeln!(out, "<a id=\"{}\"></a>\n", section.id);
            let _ = writeln!(out, "## {}\n", md_text(&section.title));
            for block in &section.blocks {
                match block {
                    Block::Para(spans) => {
                        let _ = writeln!(out, "{}\n", md_spans(spans));
                    }
                    Block::Subheading(title) => {
                        let _ = writeln!(out, "### {}\n", md_text(title));
                    }
                    Block::Table { header, rows } => {
                        let _ = writeln!(
                            out,
                            "| {} |",
                            header
                                .iter()
                                .map(|h| md_text(h))
                                .collect::<Vec<_>>()
                                .join(" | ")
                        );
                        let _ = writeln!(
                            out,
                            "|{}|",
                            header
                                .iter()
                                .enumerate()
                                .map(|(i, _)| {
                                    let numeric = rows
                                        .iter()
                                        .any(|r| r.get(i).is_some_and(|c| c.class == Some("num")));
                                    if numeric { "---:" } else { "---" }
                                })
                                .collect::<Vec<_>>()
                                .join("|")
                        );
                        for row in rows {
                            let cells: Vec<String> = row
                                .iter()
                                .map(|cell| {
                                    let text = md_spans(&cell.spans);
                                    if text.is_empty() {
                                        " ".to_string()
                                    } else {
                                        text
                                    }
                                })
                                .collect();
                            let _ = writeln!(out, "| {} |", cells.join(" | "));
                        }
                        out.push('\n');
                    }
                    Block::Facts(facts) => {
                        for (name, value) in facts {
                            let _ = writeln!(
                                out,
                                "- **{}:** {}",
                                md_text(name),
                                md_spans(&value.spans)
                            );
                        }
                        out.push('\n');
                    }
                    Block::Plot { title, file, .. } => {
                        let _ = writeln!(out, "![{}]({})\n", md_text(title), file);
                    }
                }
            }
        }
        out
    }

    /// Renders the report as one self-contained HTML page (inline CSS and
    /// SVG, no scripts, no external resources). The markup is also
    /// well-formed XML (XHTML), so it can be checked with an XML parser.
    pub fn to_html(&self) -> String {
        let mut out = String::new();
        out.push_str("<!DOCTYPE html>\n");
        out.push_str("<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n");
        out.push_str("<meta charset=\"utf-8\"/>\n");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n");
        let _ = writeln!(out, "<title>{}</title>", esc(&self.title));
        let _ = writeln!(out, "<style>{CSS}</style>\n</head>\n<body>\n<main>");
        let _ = writeln!(out, "<h1>{}</h1>", esc(&self.title));
        if !self.lead.is_empty() {
            let _ = writeln!(out, "<p class=\"lead\">{}</p>", html_spans(&self.lead));
        }
        out.push_str("<nav><ul>\n");
        for s in &self.sections {
            let _ = writeln!(
                out,
                "<li><a href=\"#{}\">{}</a></li>",
                attr(s.id),
                esc(&s.title)
            );
        }
        out.push_str("</ul></nav>\n");
        for section in &self.sections {
            let _ = writeln!(out, "<section id=\"{}\">", attr(section.id));
            let _ = writeln!(out, "<h2>{}</h2>", esc(&section.title));
            for block in &section.blocks {
                match block {
                    Block::Para(spans) => {
                        let _ = writeln!(out, "<p>{}</p>", html_spans(spans));
                    }
                    Block::Subheading(title) => {
                        let _ = writeln!(out, "<h3>{}</h3>", esc(title));
                    }
                    Block::Table { header, rows } => {
                        out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
                        for h in header {
                            let _ = write!(out, "<th>{}</th>", esc(h));
                        }
                        out.push_str("</tr></thead>\n<tbody>\n");
                        for row in rows {
                            match row.first().and_then(|c| c.class) {
                                Some(class @ ("ref" | "ours" | "base")) => {
                                    let _ = write!(out, "<tr class=\"{class}\">");
                                }
                                _ => out.push_str("<tr>"),
                            }
                            for cell in row {
                                match cell.class {
                                    Some(class) => {
                                        let _ = write!(out, "<td class=\"{class}\">");
                                    }
                                    None => out.push_str("<td>"),
                                }
                                out.push_str(&html_spans(&cell.spans));
                                out.push_str("</td>");
                            }
                            out.push_str("</tr>\n");
                        }
                        out.push_str("</tbody>\n</table></div>\n");
                    }
                    Block::Facts(facts) => {
                        out.push_str("<table class=\"facts\"><tbody>\n");
                        for (name, value) in facts {
                            let _ = writeln!(
                                out,
                                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                                esc(name),
                                html_spans(&value.spans)
                            );
                        }
                        out.push_str("</tbody></table>\n");
                    }
                    Block::Plot { title, svg, .. } => {
                        // The chart draws its own caption; the label is for
                        // screen readers.
                        let _ = writeln!(
                            out,
                            "<figure aria-label=\"{}\">\n{}\n</figure>",
                            attr(title),
                            svg.trim()
                        );
                    }
                }
            }
            out.push_str("</section>\n");
        }
        out.push_str("</main>\n</body>\n</html>\n");
        out
    }
}

/// The page's style sheet (no `<` or `&`, so it is valid XML text too).
const CSS: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1d2330; background: #f6f7f9; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { font-size: 1.8rem; margin: 0.5rem 0 0.25rem; }
h2 { font-size: 1.35rem; border-bottom: 2px solid #dde1e8; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 0.4rem; }
p.lead { font-size: 1.05rem; color: #3a4255; }
nav ul { display: flex; flex-wrap: wrap; gap: 0.3rem 1rem; padding: 0; list-style: none; font-size: 0.92rem; }
nav a { color: #2458b3; text-decoration: none; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #d5d9e0; padding: 0.28rem 0.55rem; text-align: left; vertical-align: top; }
thead th { background: #eef1f5; }
table.facts th { background: #f7f8fa; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.ref td { color: #50596b; background: #fafbfc; }
tr.ours td { font-weight: 600; background: #eef6ee; }
tr.base td { color: #7a8294; font-style: italic; }
td.pass { color: #116329; font-weight: 700; }
td.fail { color: #b3261e; font-weight: 700; }
td.warn { color: #9a6700; font-weight: 700; }
code { font-family: ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace; font-size: 0.85em; background: #f1f3f6; padding: 0 0.2em; overflow-wrap: anywhere; }
div.scroll { overflow-x: auto; }
figure { margin: 1rem 0; }
figure svg { max-width: 100%; height: auto; border: 1px solid #e3e6eb; }
figcaption { font-size: 0.88rem; color: #50596b; }
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_in_both_formats() {
        let doc = Document {
            title: "a <b> & c".into(),
            lead: vec![t("x|y"), c("p`q")],
            sections: vec![Section {
                id: "s",
                title: "S".into(),
                blocks: vec![Block::Table {
                    header: vec!["h".into()],
                    rows: vec![vec![Cell::text("1 | 2 <i>")]],
                }],
            }],
        };
        let md = doc.to_markdown();
        assert_eq!(md_spans(&[b("Bold. "), t("x")]), "**Bold.** x");
        assert!(md.contains("# a \\<b\\> & c"));
        assert!(md.contains("| 1 \\| 2 \\<i\\> |"));
        assert!(md.contains("``p`q``"));
        let html = doc.to_html();
        assert!(html.contains("<h1>a &lt;b&gt; &amp; c</h1>"));
        assert!(html.contains("<td>1 | 2 &lt;i&gt;</td>"));
        assert!(!html.contains("<i>"));
    }
}
