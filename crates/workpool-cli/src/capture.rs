//! A job's captured output: in memory up to a limit, the rest spilled to an
//! unlinked temporary file (as GNU parallel does), so that memory stays
//! bounded whatever the jobs print and however slowly it is read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt};

/// What a job wrote to one of its streams.
#[derive(Debug, Default)]
pub struct Captured {
    /// The first bytes (all of them, if it wrote no more than the limit).
    head: Vec<u8>,
    /// The rest, in a file that has no name any more.
    spill: Option<File>,
    len: u64,
    /// Why some of it could not be kept (no room for the temporary file):
    /// what was kept is still printed, and the run fails.
    lost: Option<String>,
}

impl Captured {
    /// Bytes written in all.
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads `pipe` to its end, keeping at most `limit` bytes in memory.
    pub async fn read(pipe: &mut (impl AsyncRead + Unpin), limit: usize) -> io::Result<Self> {
        let mut c = Captured::default();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = pipe.read(&mut buf).await?;
            if n == 0 {
                return Ok(c);
            }
            let chunk = &buf[..n];
            c.len += n as u64;
            let room = limit.saturating_sub(c.head.len()).min(n);
            c.head.extend_from_slice(&chunk[..room]);
            if room < n && c.lost.is_none() {
                // A local file: a short blocking write, as a pipe's read is.
                let kept = match &mut c.spill {
                    Some(f) => f.write_all(&chunk[room..]),
                    None => spill_file().and_then(|f| c.spill.insert(f).write_all(&chunk[room..])),
                };
                if let Err(e) = kept {
                    // Keep draining the pipe, so the job is not blocked.
                    c.lost = Some(format!("a temporary file for its output failed: {e}"));
                }
            }
        }
    }

    /// Why part of the output could not be kept, if it could not.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// Writes everything captured to `out`.
    pub fn write_to(&mut self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.head)?;
        if let Some(f) = &mut self.spill {
            f.seek(SeekFrom::Start(0))?;
            io::copy(f, out)?;
        }
        Ok(())
    }

    /// The last `n` bytes (or fewer), for a log's tail.
    pub fn last_bytes(&mut self, n: usize) -> Vec<u8> {
        let Some(f) = &mut self.spill else {
            let from = self.head.len().saturating_sub(n);
            return self.head[from..].to_vec();
        };
        let spilled = self.len - self.head.len() as u64;
        let from_file = spilled.min(n as u64);
        let mut tail = Vec::with_capacity(n);
        if (from_file as usize) < n {
            let from = self.head.len().saturating_sub(n - from_file as usize);
            tail.extend_from_slice(&self.head[from..]);
        }
        let mut rest = Vec::with_capacity(from_file as usize);
        let read = f
            .seek(SeekFrom::Start(spilled - from_file))
            .and_then(|_| f.take(from_file).read_to_end(&mut rest));
        if read.is_ok() {
            tail.extend_from_slice(&rest);
        }
        tail
    }
}

/// --line-buffer: passes a job's output on to the reporter a chunk of whole
/// lines at a time, as it comes. The reporter writes each chunk at once, so
/// a line of one job never lands inside another's. Chunks in flight are
/// bounded by `budget` (bytes), so a slow reader of stdout holds up the
/// jobs instead of filling memory.
#[derive(Debug)]
pub struct LineSink {
    pub events: tokio::sync::mpsc::UnboundedSender<crate::report::Event>,
    pub budget: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Bytes of chunks in flight to the reporter, for all jobs together.
pub const LINE_BUDGET: usize = 4 << 20;

/// A line longer than this is passed on in pieces.
const LONGEST_LINE: usize = 256 << 10;

impl LineSink {
    /// Reads `pipe` to its end, passing on whole lines (each started with
    /// `tag`); a last line without its newline goes at the end.
    pub async fn pass_on(&self, pipe: &mut (impl AsyncRead + Unpin), stderr: bool, tag: &[u8]) {
        let mut pending = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            let cut = match pending.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if pending.len() >= LONGEST_LINE => pending.len(),
                None => continue,
            };
            let rest = pending.split_off(cut);
            let lines = std::mem::replace(&mut pending, rest);
            self.send(lines, stderr, tag).await;
        }
        if !pending.is_empty() {
            self.send(pending, stderr, tag).await;
        }
    }

    async fn send(&self, lines: Vec<u8>, stderr: bool, tag: &[u8]) {
        let bytes = if tag.is_empty() {
            lines
        } else {
            let mut tagged = Vec::with_capacity(lines.len() + tag.len() * 4);
            let _ = Tagged::new(&mut tagged, tag).write_all(&lines);
            tagged
        };
        // Given back by the reporter once written.
        let cost = bytes.len().clamp(1, LINE_BUDGET) as u32;
        match self.budget.acquire_many(cost).await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        let _ = self
            .events
            .send(crate::report::Event::Lines { stderr, bytes });
    }
}

/// A writer that starts every line with `prefix` (a last line without its
/// newline too), for `--tag`.
pub struct Tagged<'a, W: Write> {
    out: W,
    prefix: &'a [u8],
    at_line_start: bool,
}

impl<'a, W: Write> Tagged<'a, W> {
    pub fn new(out: W, prefix: &'a [u8]) -> Self {
        Tagged {
            out,
            prefix,
            at_line_start: true,
        }
    }
}

impl<W: Write> Write for Tagged<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.at_line_start {
                self.out.write_all(self.prefix)?;
                self.at_line_start = false;
            }
            let end = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.at_line_start = true;
                    i + 1
                }
                None => rest.len(),
            };
            self.out.write_all(&rest[..end])?;
            rest = &rest[end..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A new temporary file, readable by its owner only, unlinked at once: it
/// goes away with its handle, whatever happens to this process.
fn spill_file() -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path: PathBuf = dir.join(format!("workpool-{}-{n}.out", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(bytes: &[u8], limit: usize) -> Captured {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut pipe = bytes;
            Captured::read(&mut pipe, limit).await.unwrap()
        })
    }

    #[test]
    fn output_past_the_limit_is_spilled_and_comes_back_whole() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for limit in [0, 1, 1000, 299_999, 300_000, 1 << 20] {
            let mut c = capture(&bytes, limit);
            assert_eq!(c.len(), bytes.len() as u64);
            assert_eq!(c.head.len(), limit.min(bytes.len()));
            assert_eq!(c.spill.is_some(), limit < bytes.len());
            let mut out = Vec::new();
            c.write_to(&mut out).unwrap();
            assert_eq!(out, bytes, "limit {limit}");
            for n in [0, 10, 2000, 400_000] {
                let from = bytes.len().saturating_sub(n);
                assert_eq!(c.last_bytes(n), &bytes[from..], "limit {limit}, tail {n}");
            }
            // Written twice (a retry of the print): the same bytes.
            let mut again = Vec::new();
            c.write_to(&mut again).unwrap();
            assert_eq!(again, bytes);
        }
    }

    #[test]
    fn tagged_lines_start_with_the_prefix_whatever_the_chunks() {
        let mut out = Vec::new();
        {
            let mut t = Tagged::new(&mut out, b"r\t");
            for chunk in [&b"a"[..], b"b\nc", b"\n", b"\nd"] {
                t.write_all(chunk).unwrap();
            }
        }
        assert_eq!(out, b"r\tab\nr\tc\nr\t\nr\td");
    }

    #[test]
    fn nothing_captured_is_empty() {
        let c = capture(b"", 10);
        assert!(c.is_empty());
    }
}
