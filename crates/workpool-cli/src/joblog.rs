//! The job log: one JSON object per line, one line per finished job, and
//! reading it back for `--resume`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// One line of the job log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position of the record among the input's non-empty records, from 1.
    pub seq: u64,
    /// The record, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The record's bytes in hex, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_hex: Option<String>,
    /// The command line of the last attempt (empty if it never ran).
    pub command: Vec<String>,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal number, if a signal ended it.
    pub signal: Option<i32>,
    /// succeeded, failed, timed_out, cancelled, unstarted or abandoned.
    pub outcome: String,
    /// Attempts made.
    pub attempts: u32,
    /// Start of the last attempt, seconds since the Unix epoch.
    pub start: Option<f64>,
    /// Seconds from the first attempt's start to the end.
    pub duration: f64,
    /// Why it failed, in words (exit status, signal, could not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last lines of the last attempt's stderr.
    #[serde(default)]
    pub stderr_tail: String,
}

impl Entry {
    /// The record's bytes, from `record` or `record_hex`.
    pub fn record_bytes(&self) -> Option<Vec<u8>> {
        match (&self.record, &self.record_hex) {
            (Some(s), _) => Some(s.as_bytes().to_vec()),
            (None, Some(h)) => from_hex(h),
            (None, None) => None,
        }
    }

    /// Stores `bytes` as text when they are UTF-8, as hex otherwise.
    pub fn set_record(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.record = Some(s.to_string());
                self.record_hex = None;
            }
            Err(_) => {
                self.record = None;
                self.record_hex = Some(bytes.iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
}

fn from_hex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What the previous runs recorded, per record number (the last entry
/// wins): only what resuming needs, the line, a hash of the record and how
/// it ended, so that a log of millions of lines stays small in memory.
#[derive(Debug, Default)]
pub struct Previous {
    entries: HashMap<u64, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    line: u64,
    record: u64,
    ended: Ended,
}

/// How a logged job ended, as far as resuming cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Succeeded,
    /// Failed or timed out: finished, not successfully.
    Finished,
    /// Cancelled, unstarted, abandoned: to run again.
    NotFinished,
}

/// What `--resume` does with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeMode {
    /// Skip records that finished: succeeded, failed, timed out.
    Finished,
    /// Skip only records that succeeded.
    Succeeded,
}

/// A record's hash, to compare the input with the log (within one process:
/// the same keys on both sides).
fn record_hash(record: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    record.hash(&mut h);
    h.finish()
}

impl Previous {
    /// Whether record `seq` should be skipped.
    ///
    /// # Errors
    ///
    /// When the log has a different record under this number: the input
    /// changed since the log was written.
    pub fn skip(
        &self,
        seq: u64,
        record: &[u8],
        mode: ResumeMode,
        path: &Path,
    ) -> Result<bool, String> {
        let Some(seen) = self.entries.get(&seq) else {
            return Ok(false);
        };
        if seen.record != record_hash(record) {
            return Err(format!(
                "{}:{}: record {seq} is different in the input now ({:?}); the input changed since the job log was written, so nothing was run",
                path.display(),
                seen.line,
                String::from_utf8_lossy(&record[..record.len().min(60)])
            ));
        }
        Ok(match mode {
            ResumeMode::Finished => seen.ended != Ended::NotFinished,
            ResumeMode::Succeeded => seen.ended == Ended::Succeeded,
        })
    }

    /// The highest record number the log knows: resuming reads the input up
    /// to it, checking every record, before it runs anything.
    pub fn last_seq(&self) -> u64 {
        self.entries.keys().copied().max().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A job log read back.
#[derive(Debug)]
pub struct Parsed {
    pub previous: Previous,
    /// The byte offset of a last line cut off by a crash (ignored), if any.
    pub cut: Option<u64>,
    /// The log's last line is whole but lacks its newline.
    pub missing_newline: bool,
    /// The log's length in bytes.
    pub len: u64,
}

impl Parsed {
    fn new(previous: Previous, cut: Option<u64>, missing_newline: bool, len: u64) -> Self {
        Parsed {
            previous,
            cut,
            missing_newline,
            len,
        }
    }
}

/// Reads a job log line by line (never the whole file at once).
///
/// A last line without its newline that does not parse was cut off by a
/// crash: it is reported in `cut` (its byte offset) and ignored.
///
/// # Errors
///
/// Any other line that is not a job log entry, named by its number, or a
/// read error.
pub fn parse(mut reader: impl BufRead, path: &Path) -> Result<Parsed, String> {
    let mut previous = Previous::default();
    let (mut offset, mut number) = (0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read job log {}: {e}", path.display()))?;
        if n == 0 {
            return Ok(Parsed::new(previous, None, false, offset));
        }
        number += 1;
        let whole = line.last() == Some(&b'\n');
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if !text.is_empty() {
            match serde_json::from_slice::<Entry>(text) {
                Ok(entry) => {
                    let ended = match entry.outcome.as_str() {
                        "succeeded" => Ended::Succeeded,
                        "failed" | "timed_out" => Ended::Finished,
                        _ => Ended::NotFinished,
                    };
                    let record = record_hash(&entry.record_bytes().unwrap_or_default());
                    let seen = Seen {
                        line: number,
                        record,
                        ended,
                    };
                    previous.entries.insert(entry.seq, seen);
                }
                Err(_) if !whole => return Ok(Parsed::new(previous, Some(offset), false, offset)),
                Err(e) => {
                    return Err(format!(
                        "{}:{number}: not a workpool job log entry ({e}); refusing to resume from it",
                        path.display()
                    ));
                }
            }
        }
        offset += n as u64;
        if !whole {
            return Ok(Parsed::new(previous, None, true, offset));
        }
    }
}

/// The open job log. Each entry is written with one `write_all` of a whole
/// line and no buffering, so a crash loses at most the line being written;
/// a write that fails part-way (a full disk) is cut back off, so a line is
/// in the log whole or not at all.
pub struct JobLog {
    /// Locked for this run: two runs on one log would interleave it.
    file: Flock<File>,
    path: PathBuf,
    /// The log's length after its last whole line.
    len: u64,
}

impl JobLog {
    /// Creates (or, resuming, reopens) the log, before anything runs.
    ///
    /// # Errors
    ///
    /// A message naming the file when it cannot be opened, read or parsed.
    pub fn open(path: &Path, resume: bool) -> Result<(JobLog, Previous), String> {
        let fail =
            |what: &str, e: io::Error| format!("cannot {what} job log {}: {e}", path.display());
        // Opened without truncating, locked, and only then emptied or read:
        // a second run on the same log must not touch it.
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| fail("create", e))?;
        let mut file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            format!(
                "job log {} is in use by another workpool run ({e}); two runs cannot share one",
                path.display()
            )
        })?;
        if !resume {
            // A device (/dev/null, /dev/full) has no length to cut.
            if file.metadata().is_ok_and(|m| m.is_file()) {
                file.set_len(0).map_err(|e| fail("create", e))?;
            }
            let log = JobLog {
                file,
                path: path.to_path_buf(),
                len: 0,
            };
            return Ok((log, Previous::default()));
        }
        let parsed = parse(io::BufReader::new(&*file), path)?;
        let mut len = parsed.len;
        if let Some(offset) = parsed.cut {
            crate::report::say(&format!(
                "workpool: warning: {}: the last line was cut off (a crash while writing?); ignoring it\n",
                path.display()
            ));
            file.set_len(offset).map_err(|e| fail("repair", e))?;
            len = offset;
        } else if parsed.missing_newline {
            // A whole last entry that lacks only its newline: end it, so the
            // next entry starts a line of its own.
            file.write_all(b"\n").map_err(|e| fail("repair", e))?;
            len += 1;
        }
        let log = JobLog {
            file,
            path: path.to_path_buf(),
            len,
        };
        Ok((log, parsed.previous))
    }

    pub fn write(&mut self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        match self.file.write_all(&line) {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Whole or not at all: cut back what part of it went in.
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(seq: u64, record: &[u8], outcome: &str) -> Entry {
        let mut e = Entry {
            seq,
            record: None,
            record_hex: None,
            command: vec!["echo".into()],
            exit_code: Some(0),
            signal: None,
            outcome: outcome.into(),
            attempts: 1,
            start: Some(1.0),
            duration: 0.5,
            error: None,
            stderr_tail: String::new(),
        };
        e.set_record(record);
        e
    }

    fn log(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            out.extend(serde_json::to_vec(e).unwrap());
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn records_round_trip_as_text_or_hex() {
        for bytes in [&b"plain"[..], b"\xff\x00bad"] {
            let e = entry(1, bytes, "succeeded");
            let back: Entry = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
            assert_eq!(back.record_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn resume_skips_by_mode_and_the_last_entry_wins() {
        let p = Path::new("log");
        let text = log(&[
            entry(1, b"a", "failed"),
            entry(2, b"b", "succeeded"),
            entry(3, b"c", "unstarted"),
            entry(1, b"a", "succeeded"),
        ]);
        let parsed = parse(&text[..], p).unwrap();
        let prev = parsed.previous;
        assert_eq!(parsed.cut, None);
        assert_eq!(prev.skip(1, b"a", ResumeMode::Succeeded, p), Ok(true));
        assert_eq!(prev.skip(2, b"b", ResumeMode::Finished, p), Ok(true));
        assert_eq!(prev.skip(3, b"c", ResumeMode::Finished, p), Ok(false));
        assert_eq!(prev.skip(4, b"d", ResumeMode::Finished, p), Ok(false));
        let text = log(&[entry(1, b"a", "failed")]);
        let prev = parse(&text[..], p).unwrap().previous;
        assert_eq!(prev.skip(1, b"a", ResumeMode::Finished, p), Ok(true));
        assert_eq!(prev.skip(1, b"a", ResumeMode::Succeeded, p), Ok(false));
        assert!(
            prev.skip(1, b"changed", ResumeMode::Finished, p)
                .unwrap_err()
                .contains("input changed")
        );
    }

    #[test]
    fn a_cut_last_line_is_ignored_and_located() {
        let p = Path::new("log");
        let mut text = log(&[entry(1, b"a", "succeeded")]);
        let good = text.len();
        text.extend_from_slice(br#"{"seq":2,"rec"#);
        let parsed = parse(&text[..], p).unwrap();
        assert_eq!(parsed.cut, Some(good as u64));
        assert_eq!(parsed.previous.len(), 1);
    }

    #[test]
    fn a_corrupt_line_elsewhere_is_an_error_naming_it() {
        let p = Path::new("jobs.log");
        let mut text = log(&[entry(1, b"a", "succeeded")]);
        text.extend_from_slice(b"this is not json\n");
        text.extend(log(&[entry(2, b"b", "succeeded")]));
        let err = parse(&text[..], p).unwrap_err();
        assert!(
            err.starts_with("jobs.log:2: not a workpool job log entry"),
            "{err}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes[..], Path::new("x"));
        }
    }
}
