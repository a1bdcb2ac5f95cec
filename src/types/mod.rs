//! The public vocabulary: what a child is called ([`Pid`], [`ChildId`]),
//! how it ended ([`Exit`], [`Outcome`], [`ResourceUsage`], [`ChildState`]),
//! what may be sent to it ([`Signal`]), what can go wrong ([`Error`]), and
//! how a reactor is configured ([`Hooks`], [`SigchldOwner`], [`Backend`]).
//! Plain data: nothing here makes a system call or knows about a reactor's
//! insides.

mod error;
mod exit;
mod hooks;
mod signal;

pub use error::{Error, Result};
pub use exit::{ChildId, ChildState, Exit, Outcome, Pid, ResourceUsage};
pub use hooks::{Backend, Claim, Forked, Hooks, SigchldOwner};
pub(crate) use hooks::{ForkFn, UnknownFn};
pub use signal::Signal;
