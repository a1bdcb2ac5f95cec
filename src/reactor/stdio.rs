//! Handing a child's pipe end to the next child: pipelines (`a | b`).
//!
//! A pipe end from [`Reactor::spawn`](crate::Reactor::spawn) is
//! non-blocking, and `O_NONBLOCK` lives on the *open file description*, not
//! on the descriptor: every descriptor that refers to it (the child's copy
//! at 0, 1 or 2 after `dup2` included) shares it. A program that gets a
//! non-blocking stdin or stdout is not written for `EAGAIN`: `cat` would
//! fail with "Resource temporarily unavailable" as soon as its input is
//! empty. So the conversion clears the flag first (one `fcntl`), and the
//! parent must not use the end afterwards (it has given it away).

use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use mio::unix::pipe::{Receiver, Sender};

/// Turns a pipe end that evchild handed out (non-blocking, for the loop)
/// into a [`Stdio`] for the next child of a pipeline.
///
/// ```no_run
/// use std::process::{Command, Stdio};
/// use evchild::{Hooks, IntoStdio, OutputOptions, Reactor};
///
/// let mut children = Reactor::<()>::new(Hooks::default())?;
/// // ls | wc -l
/// let ls = children.spawn(Command::new("ls").stdout(Stdio::piped()), |_, _, _| {})?;
/// let mut wc = Command::new("wc");
/// wc.arg("-l").stdin(ls.stdout.expect("piped").into_stdio()?);
/// // `command_stdin`: wc's stdin is the pipe, not null. Given by value,
/// // `wc` (which holds the parent's copy of the pipe) is dropped once it
/// // has started; a `&mut wc` must be dropped by hand, or `wc` never sees
/// // end of file.
/// let options = OutputOptions::new().command_stdin();
/// children.spawn_output(wc, options, |_, _, output| {
///     println!("{}", String::from_utf8_lossy(&output.stdout));
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The end is cleared of `O_NONBLOCK` first: that flag belongs to the open
/// file description, which the next child shares (its stdin or stdout is
/// the same description after `dup2`), and programs expect blocking
/// standard streams. The descriptor stays close-on-exec in the parent; the
/// child's copy at 0, 1 or 2 is not (`dup2` clears the flag), as for any
/// [`Stdio`].
///
/// The [`Command`](std::process::Command) that takes the `Stdio` keeps the
/// parent's copy open until the `Command` itself is dropped. Drop it once
/// the child has started, or the other end never sees end of file.
pub trait IntoStdio {
    /// Clears `O_NONBLOCK` and converts.
    ///
    /// # Errors
    ///
    /// The error of `fcntl(F_SETFL)`, which a valid pipe does not give; the
    /// pipe end is closed then.
    fn into_stdio(self) -> io::Result<Stdio>;
}

impl IntoStdio for Receiver {
    fn into_stdio(self) -> io::Result<Stdio> {
        self.set_nonblocking(false)?;
        Ok(Stdio::from(OwnedFd::from(self)))
    }
}

impl IntoStdio for Sender {
    fn into_stdio(self) -> io::Result<Stdio> {
        self.set_nonblocking(false)?;
        Ok(Stdio::from(OwnedFd::from(self)))
    }
}
