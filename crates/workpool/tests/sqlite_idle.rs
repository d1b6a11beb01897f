//! An idle durable pool costs next to nothing: its workers poll the file
//! at the poll interval, they do not spin. (A test binary of its own: it
//! measures the whole process's CPU time.)

#![cfg(feature = "sqlite")]

use std::time::Duration;

use workpool::store::sqlite::SqliteStore;
use workpool::{Job, JobContext, Pool};

/// This process's CPU time so far, in clock ticks (user + system).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // utime and stime are fields 14 and 15; the first after `)` is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Before: each claimer's fetch woke the others, who fetched in turn: four
/// idle workers kept two cores busy asking an empty file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_durable_pool_does_not_spin() {
    let dir = std::env::temp_dir().join(format!("workpool-sqlite-idle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::options(dir.join("q.db"))
        .poll_interval(Duration::from_millis(20))
        .open()
        .unwrap();
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(4)
        .store(store)
        .build(|_job: Job<Vec<u8>>, _ctx: JobContext| async { Ok::<_, std::io::Error>(()) })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks() - before;
    // Clock ticks are 1/100 s: 2 s of a spinning pool was over 100 here.
    assert!(used < 40, "{used} ticks of CPU in 2 s of idling");
    pool.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
