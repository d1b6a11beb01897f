//! The synchronisation primitives of the parts checked under loom (the
//! lifecycle gate, a worker's slot, a reply cell's delivery, the memory
//! store's waiters): loom's when built with `--cfg workpool_loom`, std's
//! otherwise. And `lock`, for the
//! std mutexes everywhere else.

#[cfg(workpool_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
#[cfg(workpool_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(workpool_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
#[cfg(not(workpool_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks a mutex of this module (std's, or loom's under the models),
/// ignoring poison as [`lock`] does.
pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks a std mutex, ignoring poison: every critical section in this crate
/// leaves its data valid, and user code (hooks, handlers) never runs under
/// these locks.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
