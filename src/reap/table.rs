//! The child table: registered children by slab key, with a pid index.
//!
//! A slab keeps entries dense (the per-pid scan walks it without hashing) and
//! gives each child a small key; the index answers "is this pid ours?" in
//! O(1) for reap-all mode, `kill` and `reaped`.

use std::collections::HashMap;

use slab::Slab;

use crate::Pid;

#[derive(Debug)]
pub(crate) struct ChildTable<T> {
    slab: Slab<(Pid, T)>,
    by_pid: HashMap<Pid, usize>,
}

impl<T> Default for ChildTable<T> {
    fn default() -> Self {
        ChildTable {
            slab: Slab::new(),
            by_pid: HashMap::new(),
        }
    }
}

impl<T> ChildTable<T> {
    /// Makes room for one more child, so that `insert` does not allocate.
    pub(crate) fn reserve_one(&mut self) {
        self.slab.reserve(1);
        self.by_pid.reserve(1);
    }

    /// Registers `pid`. If the pid was already registered, that entry is
    /// returned: its process must have been reaped by someone else, since the
    /// kernel does not reuse the pid of an unreaped child.
    pub(crate) fn insert(&mut self, pid: Pid, value: T) -> Option<T> {
        let displaced = self.remove(pid);
        let key = self.slab.insert((pid, value));
        self.by_pid.insert(pid, key);
        displaced
    }

    pub(crate) fn remove(&mut self, pid: Pid) -> Option<T> {
        let key = self.by_pid.remove(&pid)?;
        Some(self.slab.remove(key).1)
    }

    #[cfg(any(test, fuzzing))]
    pub(crate) fn contains(&self, pid: Pid) -> bool {
        self.by_pid.contains_key(&pid)
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub(crate) fn get(&self, pid: Pid) -> Option<&T> {
        let key = *self.by_pid.get(&pid)?;
        self.slab.get(key).map(|(_, value)| value)
    }

    pub(crate) fn get_mut(&mut self, pid: Pid) -> Option<&mut T> {
        let key = *self.by_pid.get(&pid)?;
        self.slab.get_mut(key).map(|(_, value)| value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Pid, &T)> + '_ {
        self.slab.iter().map(|(_, (pid, value))| (*pid, value))
    }

    /// Removes every entry, in no particular order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (Pid, T)> + '_ {
        self.by_pid.clear();
        self.slab.drain()
    }
}
