//! Deadlines without a runtime: `terminate`'s grace periods, and
//! `spawn_output`'s time-outs and drain times.
//!
//! A binary heap of (instant, child, what to do) ordered by instant. The loop learns the
//! next one from `Reactor::timeout` and passes it to `poll`; `dispatch` fires
//! the due ones. An entry whose child died in the meantime is skipped when it
//! comes due and pruned when it reaches the top, so a death costs nothing
//! here (a drain deadline lives on after the death, until the child's
//! output callback). O(log n) per deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::ChildId;

/// What a deadline does when it comes due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    /// `SIGKILL` to the child (`terminate`).
    Child,
    /// `SIGKILL` to the group the child leads, and the child
    /// (`terminate_group`).
    Group,
    /// `OutputOptions::timeout` ran out: terminate the child (its group if
    /// it leads one), with the job's kill grace.
    Timeout,
    /// `OutputOptions::drain_after_exit` ran out after the child's death:
    /// stop reading its pipes and deliver what was read.
    Drain,
}

impl Target {
    /// Whether it is one of `terminate`'s `SIGKILL` deadlines (the ones
    /// `cancel_terminate` cancels).
    pub(crate) fn is_kill(self) -> bool {
        matches!(self, Target::Child | Target::Group)
    }

    /// Whether it still matters once the child's death has been reaped.
    pub(crate) fn outlives_child(self) -> bool {
        self == Target::Drain
    }
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
        self.remove_where(id, |_| true)
    }

    /// Removes the deadlines of `id` whose target `which` picks; whether
    /// there was one.
    pub(crate) fn remove_where(
        &mut self,
        id: crate::ChildId,
        mut which: impl FnMut(Target) -> bool,
    ) -> bool {
        let before = self.heap.len();
        self.heap
            .retain(|Reverse((_, of, target))| *of != id || !which(*target));
        self.heap.len() != before
    }

    /// Drops earliest deadlines while `stale` says they no longer matter.
    pub(crate) fn prune(&mut self, mut stale: impl FnMut(ChildId, Target) -> bool) {
        while let Some(Reverse((_, id, target))) = self.heap.peek() {
            if !stale(*id, *target) {
                return;
            }
            self.heap.pop();
        }
    }
}
