//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use workpool::{Completion, JobId, OutcomeKind, PoolBuilder};

/// One outcome as the hook saw it: (id, kind, attempts, duration).
pub type SeenOutcome = (JobId, OutcomeKind, u32, Duration);

/// Every outcome the hook saw.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<SeenOutcome>>>);

impl Seen {
    pub fn hook<P: Send + 'static>(&self, builder: PoolBuilder<P>) -> PoolBuilder<P> {
        let seen = self.0.clone();
        builder.on_outcome(move |c: &Completion<P>| {
            seen.lock().unwrap().push((
                c.id().clone(),
                c.outcome().kind(),
                c.outcome().attempts(),
                c.duration(),
            ));
        })
    }

    pub fn all(&self) -> Vec<SeenOutcome> {
        self.0.lock().unwrap().clone()
    }

    pub fn kind_of(&self, id: impl Into<JobId>) -> Vec<OutcomeKind> {
        let id = id.into();
        self.all()
            .into_iter()
            .filter(|s| s.0 == id)
            .map(|s| s.1)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Silences the default panic message for panics the tests cause on purpose
/// (messages starting with "boom"), keeping every other panic visible.
pub fn quiet_boom_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.starts_with("boom") {
                default(info);
            }
        }));
    });
}

/// A one-shot "it started" signal a handler can fire and a test can await.
pub fn started() -> (
    tokio::sync::mpsc::UnboundedSender<u64>,
    tokio::sync::mpsc::UnboundedReceiver<u64>,
) {
    tokio::sync::mpsc::unbounded_channel()
}
