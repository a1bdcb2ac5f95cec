//! Deadlines without a runtime: `terminate`'s grace periods.
//!
//! A binary heap of (instant, child, whole group?) ordered by instant. The loop learns the
//! next one from `Reactor::timeout` and passes it to `poll`; `dispatch` fires
//! the due ones. An entry whose child died in the meantime is skipped when it
//! comes due and pruned when it reaches the top, so a death costs nothing
//! here. O(log n) per deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::ChildId;

/// Whom a deadline's `SIGKILL` is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    Child,
    Group,
}

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ChildId, Target)>>,
}

impl Deadlines {
    pub(crate) fn push(&mut self, at: Instant, id: ChildId, target: Target) {
        self.heap.push(Reverse((at, id, target)));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest deadline's child if it is due.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(ChildId, Target)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                self.heap.pop().map(|Reverse((_, id, target))| (id, target))
            }
            _ => None,
        }
    }

    /// Removes every deadline of `id`; whether there was one.
    pub(crate) fn remove(&mut self, id: crate::ChildId) -> bool {
        let before = self.heap.len();
        self.heap.retain(|Reverse((_, of, _))| *of != id);
        self.heap.len() != before
    }

    /// Drops earliest deadlines while `stale` says their child is gone.
    pub(crate) fn prune(&mut self, mut stale: impl FnMut(ChildId) -> bool) {
        while let Some(Reverse((_, id, _))) = self.heap.peek() {
            if !stale(*id) {
                return;
            }
            self.heap.pop();
        }
    }
}
