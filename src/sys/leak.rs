//! [`Leakable`]: a value that is dropped as usual, unless it was marked to
//! be leaked: what a reactor dropped in a forked child needs (freeing
//! memory there is not async-signal-safe: the allocator's lock may be held
//! by a thread that does not exist in the child).

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

/// A `T` that is dropped when the `Leakable` is, unless [`leak`](Self::leak)
/// was called first. Derefs to `T`.
#[derive(Debug, Default)]
pub(crate) struct Leakable<T> {
    value: ManuallyDrop<T>,
    leak: bool,
}

impl<T> Leakable<T> {
    pub(crate) fn new(value: T) -> Self {
        Leakable {
            value: ManuallyDrop::new(value),
            leak: false,
        }
    }

    /// Never drop the value: its memory and resources are leaked.
    pub(crate) fn leak(&mut self) {
        self.leak = true;
    }
}

impl<T> Deref for Leakable<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Leakable<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for Leakable<T> {
    fn drop(&mut self) {
        if !self.leak {
            // SAFETY: `value` is dropped at most once: here, in our own
            // drop, after which it is never touched again.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
    }
}
