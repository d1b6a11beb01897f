//! `--results`: each job's stdout, stderr and sequence number stored in
//! files instead of printed, laid out as GNU parallel lays them out.
//!
//! `--results DIR`: `DIR/1/VALUE1/2/VALUE2/…/{stdout,stderr,seq}`, one level
//! per value, each value made into one safe file name (`\` is `\\`, `/` is
//! `\_` as in GNU parallel; an empty value is `\e`, and `.` and `..` are
//! `\.` and `\.\.`, so that no value names a directory above its own).
//! With a replacement string, DIR is filled in per job: ending in `/`, a
//! directory that gets `stdout`, `stderr` and `seq`; otherwise the stdout
//! file, with `.err` and `.seq` beside it.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::capture::Captured;
use crate::template::{Slots, Spread, Template};

/// Where `--results` stores each job's output.
#[derive(Debug)]
pub enum Results {
    /// A tree of directories, one level per value.
    Tree(PathBuf),
    /// A path made from the job's values.
    Named(Template),
}

impl Results {
    pub fn new(spec: &OsStr) -> Self {
        let template = Template::new(&[spec.to_os_string()], Spread::Splice);
        if template.has_placeholder() {
            Results::Named(template)
        } else {
            Results::Tree(PathBuf::from(spec))
        }
    }

    /// Stores one job's output. (The job slot is not known here: `{%}`
    /// in the path is 0.)
    pub fn store(
        &self,
        seq: u64,
        values: &[Vec<u8>],
        stdout: &mut Captured,
        stderr: &mut Captured,
    ) -> io::Result<()> {
        let (out, err, seq_file) = match self {
            Results::Tree(dir) => {
                let mut path = dir.clone();
                for (i, v) in values.iter().enumerate() {
                    path.push((i + 1).to_string());
                    path.push(file_name(v));
                }
                in_dir(path)
            }
            Results::Named(template) => {
                let name = template.joined(values, Slots { seq, slot: 0 });
                if name.ends_with(b"/") {
                    in_dir(PathBuf::from(OsString::from_vec(name)))
                } else {
                    let with =
                        |ext: &[u8]| PathBuf::from(OsString::from_vec([&name, ext].concat()));
                    (with(b""), with(b".err"), with(b".seq"))
                }
            }
        };
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_file(&out, |f| stdout.write_to(f))?;
        write_file(&err, |f| stderr.write_to(f))?;
        write_file(&seq_file, |f| writeln!(f, "{seq}"))
    }
}

fn in_dir(dir: PathBuf) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join("stdout"), dir.join("stderr"), dir.join("seq"))
}

fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<std::fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    let file = std::fs::File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut out = io::BufWriter::new(file);
    fill(&mut out)?;
    out.flush()
}

/// A value as one file name that stays inside its directory.
fn file_name(value: &[u8]) -> OsString {
    let name: Vec<u8> = match value {
        b"" => b"\\e".to_vec(),
        b"." => b"\\.".to_vec(),
        b".." => b"\\.\\.".to_vec(),
        _ => value
            .iter()
            .flat_map(|b| match b {
                b'\\' => b"\\\\".to_vec(),
                b'/' => b"\\_".to_vec(),
                b => vec![*b],
            })
            .collect(),
    };
    OsString::from_vec(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn values_become_names_inside_their_directory() {
        let name = |v: &[u8]| file_name(v).as_bytes().to_vec();
        assert_eq!(name(b"b/c"), b"b\\_c");
        assert_eq!(name(b"x\\y"), b"x\\\\y");
        assert_eq!(name(b".."), b"\\.\\.");
        assert_eq!(name(b"."), b"\\.");
        assert_eq!(name(b""), b"\\e");
        assert_eq!(name(b"d e"), b"d e");
    }
}
