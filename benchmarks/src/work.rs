//! The workloads and the work each job does.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The three workloads of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Sum a 64-byte payload.
    Trivial,
    /// About 1 µs of CPU work.
    Micro,
    /// Await a 10 ms sleep (I/O-like); async strategies only.
    Sleep,
}

impl Workload {
    pub(crate) fn title(self) -> &'static str {
        match self {
            Workload::Trivial => "10^6 trivial jobs (sum a 64-byte payload)",
            Workload::Micro => "10^6 jobs of about 1 µs of CPU work",
            Workload::Sleep => "10^5 jobs awaiting a 10 ms sleep, W = 1000",
        }
    }
}

pub(crate) type Payload = [u8; 64];

pub(crate) fn payload(i: u64) -> Payload {
    let mut p = [0u8; 64];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

/// The synchronous part of a job: sum the payload, and for `Micro` spin
/// `rounds` rounds of a multiply-add on top.
#[inline]
pub(crate) fn cpu(p: &Payload, rounds: u64) -> u64 {
    let mut x: u64 = p.iter().map(|b| u64::from(*b)).sum();
    for _ in 0..rounds {
        x = black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    black_box(x)
}

/// Rounds of `cpu` that take about 1 µs on this machine.
pub(crate) fn calibrate() -> u64 {
    let p = payload(1);
    let rounds = 100_000;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        cpu(&p, rounds);
        best = best.min(start.elapsed());
    }
    (rounds as f64 * 1_000.0 / best.as_nanos() as f64)
        .round()
        .max(1.0) as u64
}

/// The rounds a workload's job spins.
pub(crate) fn rounds(w: Workload, calibration: u64) -> u64 {
    match w {
        Workload::Micro => calibration,
        _ => 0,
    }
}
