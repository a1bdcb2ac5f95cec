//! The right to reap every child of the process (`LibraryAlways`): at most
//! one [`ReapAllToken`] exists per process, since two `waitpid(-1)` loops
//! would steal each other's children.
//!
//! One atomic flag: taking it is a compare-and-swap, giving it back a store.
//! A forked child starts without it (the atfork handler clears the flag), so
//! it may create a `LibraryAlways` reactor of its own even though it holds a
//! copy of its parent's token.

use std::sync::atomic::{AtomicBool, Ordering};

use super::fork_generation;
use crate::Error;

static REAP_ALL_TAKEN: AtomicBool = AtomicBool::new(false);

/// The right to reap every child of the process (`LibraryAlways`).
///
/// Dropping it gives the right back; dropped in a forked child (another fork
/// generation), it does nothing at all.
#[derive(Debug)]
pub(crate) struct ReapAllToken {
    generation: u64,
}

impl ReapAllToken {
    /// Takes the right.
    ///
    /// # Errors
    /// [`Error::ReapAllTaken`] if another token of this process lives.
    pub(crate) fn take() -> Result<Self, Error> {
        REAP_ALL_TAKEN
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ReapAllToken {
                generation: fork_generation(),
            })
            .map_err(|_| Error::ReapAllTaken)
    }
}

impl Drop for ReapAllToken {
    fn drop(&mut self) {
        if self.generation == fork_generation() {
            REAP_ALL_TAKEN.store(false, Ordering::Release);
        }
    }
}

/// In a forked child: nobody holds the right. Async-signal-safe (one atomic
/// store). See `super::advance_after_fork`.
pub(super) fn reset_in_child() {
    REAP_ALL_TAKEN.store(false, Ordering::Release);
}
