//! Each attempt runs in a `tracing` span `job` with the job's ID and attempt.
//!
//! Alone in its test binary: tracing caches each callsite's interest
//! process-wide, and a test running at the same time on another thread
//! without a subscriber could race with this one's thread-local subscriber.

use std::time::Duration;

use workpool::{Job, JobContext, Pool};

/// A minimal subscriber that records the fields of every `job` span.
mod spans {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Clone, Default)]
    pub struct Spans(pub Arc<Mutex<Vec<(String, String)>>>, Arc<AtomicU64>);

    struct Fields(String, String);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            match field.name() {
                "id" => self.0 = format!("{value:?}"),
                "attempt" => self.1 = format!("{value:?}"),
                _ => {}
            }
        }
    }

    impl Subscriber for Spans {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            if attrs.metadata().name() == "job" {
                let mut f = Fields(String::new(), String::new());
                attrs.record(&mut f);
                self.0.lock().unwrap().push((f.0, f.1));
            }
            Id::from_u64(self.1.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[test]
fn each_attempt_runs_in_a_span_with_the_job_id_and_attempt() {
    let spans = spans::Spans::default();
    let _default = tracing::subscriber::set_default(spans.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = Pool::builder()
            .workers(1)
            .retry(workpool::RetryPolicy::attempts(2).with_backoff(Duration::ZERO, Duration::ZERO))
            .build(|_job: Job, ctx: JobContext| async move {
                if ctx.attempt() == 1 {
                    Err("once")
                } else {
                    Ok(())
                }
            })
            .unwrap();
        let out = pool
            .submit(Job::with_id("job-7", "x".into()))
            .await
            .unwrap()
            .await;
        assert!(out.is_success());
    });
    let got = spans.0.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            ("job-7".to_string(), "1".to_string()),
            ("job-7".to_string(), "2".to_string())
        ]
    );
}
