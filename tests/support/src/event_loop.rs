//! The mio loop a test drives its reactor with.

use std::time::{Duration, Instant};

use evchild::Reactor;
use mio::{Events, Interest, Poll, Token};

pub const CHILDREN: Token = Token(0);

/// A mio loop around one reactor (under [`CHILDREN`]), driven the way the
/// reactor's documentation asks: `poll` sleeps no longer than
/// [`Reactor::timeout`], and `dispatch` runs after every return of `poll`,
/// on an event or on time-out.
pub struct Loop {
    pub poll: Poll,
    events: Events,
}

impl Loop {
    pub fn new<C>(reactor: &mut Reactor<C>) -> Self {
        let poll = Poll::new().expect("mio::Poll::new");
        poll.registry()
            .register(reactor, CHILDREN, Interest::READABLE)
            .expect("register reactor");
        Loop {
            poll,
            events: Events::with_capacity(16),
        }
    }

    /// Polls and dispatches until `done(ctx)` holds; panics after `limit`.
    #[track_caller]
    pub fn run_until<C>(
        &mut self,
        reactor: &mut Reactor<C>,
        ctx: &mut C,
        limit: Duration,
        mut done: impl FnMut(&C) -> bool,
    ) {
        self.run_with(reactor, ctx, limit, |_, _, _| {}, |_, ctx| done(ctx));
    }

    /// Polls and dispatches until `done(reactor, ctx)` holds; panics after
    /// `limit`. Events of tokens other than [`CHILDREN`] (sources the test
    /// registered in [`Loop::poll`] itself) go to `on_event`, after the
    /// reactor's `dispatch`.
    #[track_caller]
    pub fn run_with<C>(
        &mut self,
        reactor: &mut Reactor<C>,
        ctx: &mut C,
        limit: Duration,
        mut on_event: impl FnMut(Token, &mut Reactor<C>, &mut C),
        mut done: impl FnMut(&Reactor<C>, &C) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !done(reactor, ctx) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {limit:?} waiting for the loop: {reactor:?}"
            );
            // Wake up for the reactor's next deadline, and for our limit.
            let sleep = reactor.timeout().map_or(left, |due| due.min(left));
            match self.poll.poll(&mut self.events, Some(sleep)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("poll: {e}"),
            }
            // After every return of `poll`, readiness or time-out: dispatch
            // also fires the deadlines that are due.
            reactor.dispatch(ctx).expect("dispatch");
            for event in &self.events {
                if event.token() != CHILDREN {
                    on_event(event.token(), reactor, ctx);
                }
            }
        }
    }
}
