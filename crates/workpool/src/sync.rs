//! The synchronisation primitives of the parts checked under loom (`gate`,
//! `slot`): loom's when built with `--cfg workpool_loom`, std's otherwise.

#[cfg(workpool_loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(workpool_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(workpool_loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(workpool_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
