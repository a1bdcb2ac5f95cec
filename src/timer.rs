//! Deadlines without a runtime: `terminate`'s grace periods.
//!
//! A binary heap of (instant, child) ordered by instant. The loop learns the
//! next one from `Reactor::timeout` and passes it to `poll`; `dispatch` fires
//! the due ones. An entry whose child died in the meantime is skipped when it
//! comes due and pruned when it reaches the top, so a death costs nothing
//! here. O(log n) per deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::ChildId;

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ChildId)>>,
}

impl Deadlines {
    pub(crate) fn push(&mut self, at: Instant, id: ChildId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the child of the earliest deadline if it is due.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ChildId> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, id))| id),
            _ => None,
        }
    }

    /// Drops earliest deadlines while `stale` says their child is gone.
    pub(crate) fn prune(&mut self, mut stale: impl FnMut(ChildId) -> bool) {
        while let Some(Reverse((_, id))) = self.heap.peek() {
            if !stale(*id) {
                return;
            }
            self.heap.pop();
        }
    }
}
