//! The prebuilt form of a [`Prepared`] and what one start does with it.
//!
//! Each part is built the first time a start needs it and kept until a
//! builder call that changes it drops it: the `argv` and `envp` arrays
//! (patched in place by `set_arg`, `env` and `env_remove`), the resolved
//! program path, the working directory, the `/dev/null` descriptor, the
//! child's stack, and the descriptor layout (the slots and the moves the
//! child makes). A start in steady state allocates nothing: it fills a
//! [`ChildPlan`] on the stack with pointers into these parts.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use super::{Prepared, Redirect};
use crate::sys::spawn::{self as sys, CStrings, ChildPlan, ChildStack, Move};
use crate::Pid;

/// The parts built once and reused by every start.
#[derive(Debug, Default)]
pub(super) struct Built {
    pub(super) argv: Option<CStrings>,
    pub(super) envp: Option<CStrings>,
    pub(super) path: Option<CString>,
    pub(super) dir: Option<Option<CString>>,
    pub(super) layout: Option<Layout>,
    null: Option<OwnedFd>,
    stack: Option<ChildStack>,
}

/// Where each descriptor the child gets comes from.
#[derive(Debug)]
pub(super) struct Layout {
    /// The slot of each `Piped` stream: `/dev/null` between starts, the
    /// child's pipe end during one.
    slots: [Option<OwnedFd>; 3],
    moves: Vec<Move>,
    closes: Vec<[u32; 2]>,
    low: RawFd,
    high: RawFd,
    two_phase: bool,
}

/// The parent's ends of one start's pipes (non-blocking, close-on-exec).
#[derive(Debug, Default)]
pub(crate) struct Pipes {
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn c_string(bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid("a string holds a NUL byte"))
}

/// `KEY=VALUE`.
pub(super) fn entry(key: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut bytes = Vec::with_capacity(key.len() + value.len() + 1);
    bytes.extend_from_slice(key.as_bytes());
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    c_string(bytes)
}

/// Where `KEY=` is in `envp`.
pub(super) fn find(envp: &CStrings, key: &OsStr) -> Option<usize> {
    let key = key.as_bytes();
    envp.iter().position(|e| {
        let e = e.to_bytes();
        e.len() > key.len() && e[key.len()] == b'=' && &e[..key.len()] == key
    })
}

impl Built {
    fn null(&mut self) -> io::Result<&OwnedFd> {
        if self.null.is_none() {
            self.null = Some(sys::open_null()?);
        }
        Ok(self.null.as_ref().expect("just set"))
    }
}

impl Prepared {
    /// The environment the child gets, resolved against the parent's now.
    fn resolved_env(&self) -> BTreeMap<OsString, OsString> {
        let mut env: BTreeMap<OsString, OsString> = match self.env_clear {
            true => BTreeMap::new(),
            false => std::env::vars_os().collect(),
        };
        for (key, value) in &self.env {
            match value {
                Some(value) => env.insert(key.clone(), value.clone()),
                None => env.remove(key),
            };
        }
        env
    }

    /// The program's path: as given if it holds a `/`, else the first
    /// executable file of that name in the child's `PATH` (the parent's if
    /// the child's is not set; `/bin:/usr/bin` if neither is, as glibc's
    /// `execvp`).
    fn resolve(&self) -> io::Result<CString> {
        let program = self.program.as_os_str();
        if program.as_bytes().contains(&b'/') {
            return c_string(program.as_bytes());
        }
        if program.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let path = match self.env.get(OsStr::new("PATH")) {
            Some(set) => set.clone(),
            None if self.env_clear => None,
            None => std::env::var_os("PATH"),
        }
        .unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
        let mut denied = false;
        for dir in std::env::split_paths(&path) {
            let candidate = Path::new(&dir).join(program);
            let Ok(meta) = std::fs::metadata(&candidate) else {
                continue;
            };
            let c = c_string(candidate.into_os_string().into_vec())?;
            if meta.is_file() && sys::is_executable(&c) {
                return Ok(c);
            }
            denied = true;
        }
        Err(io::Error::from_raw_os_error(if denied {
            libc::EACCES
        } else {
            libc::ENOENT
        }))
    }

    /// Builds every part that is missing (the first start builds them all).
    pub(super) fn build_parts(&mut self) -> io::Result<()> {
        // Reported once: the misused call changed nothing.
        if let Some(why) = self.invalid.take() {
            return Err(invalid(why));
        }
        if self.built.argv.is_none() {
            let mut argv = Vec::with_capacity(self.args.len() + 1);
            argv.push(c_string(self.arg0().as_bytes())?);
            for arg in &self.args {
                argv.push(c_string(arg.as_bytes())?);
            }
            self.built.argv = Some(CStrings::new(argv));
        }
        if self.built.envp.is_none() {
            let envp = self
                .resolved_env()
                .iter()
                .map(|(k, v)| entry(k, v))
                .collect::<io::Result<Vec<_>>>()?;
            self.built.envp = Some(CStrings::new(envp));
        }
        if self.built.path.is_none() {
            // Not kept on failure: the next start looks again.
            self.built.path = Some(self.resolve()?);
        }
        if self.built.dir.is_none() {
            let dir = match &self.dir {
                Some(dir) => Some(c_string(dir.as_os_str().as_bytes())?),
                None => None,
            };
            self.built.dir = Some(dir);
        }
        // The descriptors: /dev/null first, so that it is low too.
        self.built.null()?;
        if self.built.stack.is_none() {
            self.built.stack = Some(ChildStack::new()?);
        }
        if self.built.layout.is_none() {
            let layout = self.layout()?;
            self.built.layout = Some(layout);
        }
        Ok(())
    }

    /// Reserves the slots (the lowest free descriptors from 3 up) and
    /// works out the moves.
    fn layout(&mut self) -> io::Result<Layout> {
        // Passed descriptors are moved as low as they go, once.
        for (_, fd) in &mut self.passed {
            let lower = sys::dup_low(fd.as_fd())?;
            if lower.as_raw_fd() < fd.as_raw_fd() {
                *fd = lower;
            } else {
                sys::set_cloexec(fd.as_fd())?;
            }
        }
        let null = self.built.null()?;
        let mut slots: [Option<OwnedFd>; 3] = [None, None, None];
        let mut moves = Vec::new();
        for (target, redirect) in self.stdio.iter().enumerate() {
            let source = match redirect {
                Redirect::Inherit => continue,
                Redirect::Null => null.as_raw_fd(),
                Redirect::Piped => {
                    let slot = sys::dup_low(null.as_fd())?;
                    let raw = slot.as_raw_fd();
                    slots[target] = Some(slot);
                    raw
                }
            };
            moves.push(Move {
                source,
                target: target as RawFd,
            });
        }
        for (target, fd) in &self.passed {
            moves.push(Move {
                source: fd.as_raw_fd(),
                target: *target,
            });
        }
        let low = moves.iter().map(|m| m.source + 1).max().unwrap_or(3).max(3);
        let high = moves
            .iter()
            .map(|m| m.source.max(m.target) + 1)
            .max()
            .unwrap_or(3)
            .max(3);
        let two_phase = moves
            .iter()
            .any(|m| moves.iter().any(|o| o.target == m.source && o != m));
        let mut keep: Vec<RawFd> = self.passed.iter().map(|(t, _)| *t).collect();
        keep.sort_unstable();
        keep.dedup();
        let closes = sys::ranges_to_close(&keep, high);
        Ok(Layout {
            slots,
            moves,
            closes,
            low,
            high,
            two_phase,
        })
    }

    /// Opens this start's pipes: each child end goes into its slot (so
    /// the child needs no descriptor above the slots), each parent end is
    /// made non-blocking. [`release`](Self::release) gives the slots
    /// `/dev/null` back. Call after [`build_parts`](Self::build_parts).
    pub(crate) fn open_pipes(&mut self) -> io::Result<Pipes> {
        let layout = self.built.layout.as_ref().expect("built");
        let mut pipes = Pipes::default();
        for (stream, slot) in layout.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let (read, write) = sys::pipe()?;
            let (child, parent) = match stream {
                0 => (read, write),
                _ => (write, read),
            };
            let opened = sys::dup_into(child.as_fd(), slot)
                .and_then(|()| sys::set_nonblocking(parent.as_fd()));
            if let Err(e) = opened {
                self.release();
                return Err(e);
            }
            match stream {
                0 => pipes.stdin = Some(parent),
                1 => pipes.stdout = Some(parent),
                _ => pipes.stderr = Some(parent),
            }
        }
        Ok(pipes)
    }

    /// Gives every slot `/dev/null` back, closing the child's pipe ends
    /// (so the parent sees end of file when the child closes its own).
    pub(crate) fn release(&mut self) {
        let Some(layout) = &self.built.layout else {
            return;
        };
        let Some(null) = &self.built.null else {
            return;
        };
        let mut failed = false;
        for slot in layout.slots.iter().flatten() {
            failed |= sys::dup_into(null.as_fd(), slot).is_err();
        }
        if failed {
            // Closing the slots releases them too; the next start reserves
            // new ones.
            self.built.layout = None;
        }
    }

    /// Starts the child (after [`build_parts`](Self::build_parts) and
    /// [`open_pipes`](Self::open_pipes)).
    pub(crate) fn launch(
        &mut self,
        pidfd: bool,
        check_sigchld: bool,
    ) -> io::Result<(Pid, Option<OwnedFd>)> {
        let built = &mut self.built;
        let (Some(argv), Some(envp), Some(path), Some(dir), Some(layout), Some(stack)) = (
            &built.argv,
            &built.envp,
            &built.path,
            &built.dir,
            &built.layout,
            &mut built.stack,
        ) else {
            return Err(invalid("not built"));
        };
        let mut plan = ChildPlan::new(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        plan.dir = dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
        plan.pgid = self.pgid;
        plan.parent_death = self.parent_death.unwrap_or((0, 0));
        plan.low = layout.low;
        plan.high = layout.high;
        plan.moves = layout.moves.as_ptr();
        plan.move_count = layout.moves.len();
        plan.two_phase = layout.two_phase;
        plan.closes = layout.closes.as_ptr();
        plan.close_count = layout.closes.len();
        plan.check_sigchld = check_sigchld;
        sys::clone_exec(&mut plan, stack, pidfd)
    }

    /// Descriptors reserved now (`/dev/null` and the slots), for tests and
    /// the docs' claims.
    pub(super) fn reserved(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.built.null.iter().map(|n| n.as_raw_fd()).collect();
        if let Some(layout) = &self.built.layout {
            fds.extend(layout.slots.iter().flatten().map(|s| s.as_raw_fd()));
        }
        fds.extend(self.passed.iter().map(|(_, fd)| fd.as_raw_fd()));
        fds
    }
}
