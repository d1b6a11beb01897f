//! The synchronisation primitives of the parts checked under loom (`gate`,
//! `slot`, a reply cell's `Delivery`): loom's when built with
//! `--cfg workpool_loom`, std's otherwise.

#[cfg(workpool_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(workpool_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(workpool_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(workpool_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
