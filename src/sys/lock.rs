//! The process-wide lock: a futex word, so a waiting thread sleeps in the
//! kernel instead of spinning, and a forked child can release it with one
//! atomic store (a `std::sync::Mutex` held by a thread that does not exist
//! in the child could never be released there).
//!
//! The classic three-state futex mutex (Drepper, "Futexes Are Tricky",
//! mutex 2): 0 unlocked, 1 locked, 2 locked with waiters. Uncontended lock
//! and unlock are one atomic operation each and no system call.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};

/// Sleeps while `word` holds `expected` (or until woken; spurious returns
/// are allowed, so callers re-check). `FUTEX_WAIT_PRIVATE`.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a live, aligned 32-bit atomic for the duration of
    // the call; a null timeout means no limit; the kernel only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// Wakes every thread sleeping in [`futex_wait`] on `word`.
/// Async-signal-safe (one system call).
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as for `futex_wait`; FUTEX_WAKE reads nothing but the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

/// A lock around a `T`, fit for a `static`. See the module docs.
pub(crate) struct Lock<T> {
    word: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a `LockGuard`, and at most one
// guard exists at a time (the futex word's acquire/release orderings
// publish the value between holders), so sharing the lock shares a `T`
// between threads one at a time: `T: Send` suffices.
unsafe impl<T: Send> Sync for Lock<T> {}

impl<T> Lock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Lock {
            word: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, sleeping (not spinning) while another thread holds
    /// it. Never called from a signal handler.
    pub(crate) fn lock(&self) -> LockGuard<'_, T> {
        if self
            .word
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Contended: mark waiters and sleep until the word is ours.
            while self.word.swap(2, Ordering::Acquire) != 0 {
                futex_wait(&self.word, 2);
            }
        }
        LockGuard {
            lock: self,
            _not_send: std::marker::PhantomData,
        }
    }

    /// In a forked child, from the `pthread_atfork` child handler: the lock
    /// is free (a holder that was another thread of the parent does not
    /// exist here). The value may be half-changed; the caller must treat it
    /// as garbage (evchild replaces it, leaked, at the next use).
    /// Async-signal-safe: one atomic store.
    pub(crate) fn reset_in_child(&self) {
        self.word.store(0, Ordering::Release);
    }
}

/// Holds a [`Lock`] until dropped. Neither `Send` (it is released by the
/// thread that took it) nor, unless `T` is, `Sync`.
pub(crate) struct LockGuard<'a, T> {
    lock: &'a Lock<T>,
    _not_send: std::marker::PhantomData<*const ()>,
}

// SAFETY: a shared `&LockGuard` only gives out `&T` (through `Deref`), so
// sharing the guard between threads shares `&T`, which `T: Sync` allows
// (as for std's `MutexGuard`).
unsafe impl<T: Sync> Sync for LockGuard<'_, T> {}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no `&mut` to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock and is borrowed mutably, so this
        // is the only reference to the value.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for LockGuard<'_, T> {
    fn drop(&mut self) {
        if self.lock.word.swap(0, Ordering::Release) == 2 {
            futex_wake_all(&self.lock.word);
        }
    }
}
