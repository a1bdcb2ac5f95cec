//! Which backend a `Library` reactor of the suite uses, and the reactors
//! most tests start with.

use evchild::{Backend, Hooks, Reactor, SigchldOwner};

use crate::event_loop::Loop;

/// The environment variable that picks the `Library`-mode backend of the
/// whole suite: `pidfd`, `peek` or `scan`; unset (or empty) means
/// [`Backend::Auto`]. CI runs the suite once per value.
pub const BACKEND_VAR: &str = "EVCHILD_TEST_BACKEND";

/// The backend this run of the suite asks for (see [`BACKEND_VAR`]). Panics
/// on any other value, so a typo cannot quietly test `Auto` instead.
#[track_caller]
pub fn test_backend() -> Backend {
    match std::env::var(BACKEND_VAR) {
        Err(std::env::VarError::NotPresent) => Backend::Auto,
        Ok(value) => match value.to_ascii_lowercase().as_str() {
            "" | "auto" => Backend::Auto,
            "pidfd" => Backend::Pidfd,
            "peek" => Backend::Peek,
            "scan" => Backend::Scan,
            other => panic!("{BACKEND_VAR}={other:?}: expected pidfd, peek, scan or auto"),
        },
        Err(e) => panic!("{BACKEND_VAR}: {e}"),
    }
}

/// Whether this system gives evchild pidfds (a reactor asked for
/// [`Backend::Pidfd`] gets it, rather than the fallback to peek).
pub fn pidfd_available() -> bool {
    Reactor::<()>::new(Hooks::new(SigchldOwner::Library).backend(Backend::Pidfd))
        .expect("Reactor::new(Library)")
        .backend()
        == Some(Backend::Pidfd)
}

/// The backends that work through the `SIGCHLD` handler, for tests about
/// the handler itself.
pub const SIGCHLD_BACKENDS: [Backend; 2] = [Backend::Scan, Backend::Peek];

/// Every backend a `Library` reactor can be asked for, `Auto` aside.
pub const BACKENDS: [Backend; 3] = [Backend::Pidfd, Backend::Peek, Backend::Scan];

/// Hooks for `owner` with this run's backend ([`test_backend`]). Other modes
/// ignore the backend, so any test may use this.
pub fn hooks<C>(owner: SigchldOwner) -> Hooks<C> {
    Hooks::new(owner).backend(test_backend())
}

/// A reactor in `Library` mode, the default, with this run's backend
/// ([`test_backend`]).
#[track_caller]
pub fn library<C>() -> Reactor<C> {
    Reactor::new(hooks(SigchldOwner::Library)).expect("Reactor::new(Library)")
}

/// A reactor in `Library` mode with `backend`, whatever this run's backend:
/// for tests about one backend (a `SIGCHLD` handler test asks for `Scan` or
/// `Peek`). Checks the reactor uses it (`Pidfd` needs a kernel with pidfds).
#[track_caller]
pub fn library_with<C>(backend: Backend) -> Reactor<C> {
    let reactor = Reactor::new(Hooks::new(SigchldOwner::Library).backend(backend))
        .expect("Reactor::new(Library)");
    assert_eq!(reactor.backend(), Some(backend), "the backend asked for");
    reactor
}

/// [`library_loop`] with `backend` (see [`library_with`]).
#[track_caller]
pub fn library_loop_with<C: Default>(backend: Backend) -> (Reactor<C>, Loop, C) {
    let mut reactor = library_with(backend);
    let lp = Loop::new(&mut reactor);
    (reactor, lp, C::default())
}

/// What most tests start with: a `Library` reactor (with this run's
/// backend), a [`Loop`] around it, and an empty context. Bind them in this
/// order (they drop in reverse).
#[track_caller]
pub fn library_loop<C: Default>() -> (Reactor<C>, Loop, C) {
    let mut reactor = library();
    let lp = Loop::new(&mut reactor);
    (reactor, lp, C::default())
}
