//! Terminal output: live progress bars on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors and the final summary only.
    Quiet,
    /// One line per stage plus live progress.
    Normal,
    /// Also periodic progress lines and the reasons for each run.
    Verbose,
}

/// The run's output channel.
pub struct Ui {
    multi: Option<MultiProgress>,
    verbosity: Verbosity,
}

impl Ui {
    /// Live bars when stderr is a terminal (and not quiet), plain lines
    /// otherwise.
    pub fn new(verbosity: Verbosity) -> Ui {
        let live = std::io::stderr().is_terminal() && verbosity != Verbosity::Quiet;
        Ui {
            multi: live.then(MultiProgress::new),
            verbosity,
        }
    }

    /// Whether bars are drawn live.
    pub fn is_live(&self) -> bool {
        self.multi.is_some()
    }

    /// The verbosity.
    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// A progress bar for one running stage (hidden when not live).
    pub fn stage_bar(&self, stage: &str) -> ProgressBar {
        match &self.multi {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner:.green} {prefix:.bold} [{elapsed_precise}] {bar:25.cyan/blue} {human_pos}/{human_len} eta {eta} {wide_msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(stage.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
            None => {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
                bar.set_prefix(stage.to_string());
                bar
            }
        }
    }

    /// A progress bar counting bytes (pushes and pulls; hidden when not live).
    pub fn bytes_bar(&self, stage: &str) -> ProgressBar {
        let bar = self.stage_bar(stage);
        if self.multi.is_some() {
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} {prefix:.bold} [{elapsed_precise}] {bar:25.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
        }
        bar
    }

    /// Removes a finished stage's bar.
    pub fn finish_bar(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        if let Some(multi) = &self.multi {
            multi.remove(bar);
        }
    }

    /// Prints a line of the run's story (above the bars when live).
    pub fn line(&self, text: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => println!("{text}"),
        }
    }

    /// Prints a line only in verbose mode.
    pub fn detail(&self, text: &str) {
        if self.verbosity == Verbosity::Verbose {
            self.line(text);
        }
    }

    /// Prints an error line (always).
    pub fn error(&self, text: &str) {
        match &self.multi {
            Some(multi) => {
                multi.suspend(|| eprintln!("{text}"));
            }
            None => eprintln!("{text}"),
        }
    }
}

/// A plain one-line rendering of a bar's state, for logs and non-terminals.
pub fn describe_bar(bar: &ProgressBar) -> String {
    let mut parts = Vec::new();
    if let Some(len) = bar.length().filter(|l| *l > 0) {
        let pos = bar.position();
        parts.push(format!(
            "{pos}/{len} ({:.0}%)",
            100.0 * pos as f64 / len as f64
        ));
        let eta = bar.eta();
        if pos > 0 && pos < len {
            parts.push(format!(
                "eta {}",
                humantime::format_duration(Duration::from_secs(eta.as_secs()))
            ));
        }
    }
    let msg = bar.message();
    if !msg.is_empty() {
        parts.push(msg.to_string());
    }
    parts.push(format!("{}s elapsed", bar.elapsed().as_secs()));
    parts.join(", ")
}
