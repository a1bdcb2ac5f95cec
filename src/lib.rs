//! evchild: child processes for a `mio` event loop.
//!
//! (Crate documentation: see below; filled in with the full SIGCHLD contract.)

#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

mod dispatch;
mod error;
mod exit;
mod fork;
mod mode;
mod reactor;
mod reap;
mod selfpipe;
mod sigchld;
mod sys;
mod table;

pub use error::{Error, Result};
pub use exit::{Exit, Outcome, Pid};
pub use mode::{Claim, Forked, Hooks, SigchldOwner};
pub use reactor::{Reactor, Stats};
