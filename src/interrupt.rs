//! Ctrl-C during `cram run`.
//!
//! A stage that can stop cleanly holds a [`Graceful`] guard while it runs (pretraining: it
//! finishes the current optimizer step, writes a checkpoint and stops). While one does, the first
//! Ctrl-C only raises the flag the stage watches, and the engine starts no new stage; a second
//! Ctrl-C, or one while no such stage runs, ends the process at once (status 130), as Ctrl-C
//! does anywhere. Nothing finished is lost either way: finished stages are in the cache, a
//! stage killed mid-way leaves no entry, and pretraining resumes from its last checkpoint.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Exit status of a process ended by Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

static GRACEFUL: AtomicUsize = AtomicUsize::new(0);

fn flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the Ctrl-C handler (once per process; later calls do nothing).
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Failing to install (another handler is set) leaves the default: Ctrl-C ends the
        // process, which loses nothing finished either.
        let _ = ctrlc::set_handler(on_ctrl_c);
    });
}

fn on_ctrl_c() {
    if GRACEFUL.load(Ordering::SeqCst) > 0 && !flag().swap(true, Ordering::SeqCst) {
        eprintln!(
            "\ncram: interrupt: pretraining stops after its current step and writes a \
             checkpoint (`cram run` resumes from it); no new stage starts. Press Ctrl-C again \
             to stop at once."
        );
    } else {
        eprintln!("\ncram: interrupted");
        std::process::exit(EXIT_INTERRUPTED.into());
    }
}

/// Whether a Ctrl-C asked running stages to stop.
pub fn requested() -> bool {
    flag().load(Ordering::SeqCst)
}

/// Held by a stage that stops cleanly on Ctrl-C, for as long as it runs.
#[derive(Debug)]
pub struct Graceful(());

impl Graceful {
    /// Registers a stage that watches [`Graceful::flag`].
    pub fn new() -> Self {
        GRACEFUL.fetch_add(1, Ordering::SeqCst);
        Graceful(())
    }

    /// The flag raised by the first Ctrl-C.
    pub fn flag(&self) -> Arc<AtomicBool> {
        flag().clone()
    }
}

impl Default for Graceful {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Graceful {
    fn drop(&mut self) {
        GRACEFUL.fetch_sub(1, Ordering::SeqCst);
    }
}
