//! Where a run's jobs come from: records from standard input or `--input`,
//! values after `:::`, files after `::::`, combined as GNU parallel
//! combines them (every combination, or paired with `--link`), split into
//! columns with `--colsep`, and grouped several to a command with `-n`,
//! `-m` or `-X`.
//!
//! The first source streams: it is read record by record as jobs are
//! made, so input of any length runs in flat memory. The other sources
//! (and with `--link` every source) are read whole before the first job,
//! as each of their values is used many times.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::{AsyncBufRead, BufReader};

use crate::input::{Records, ThreadInput};

/// One job's values: what its replacement strings stand for.
pub type Values = Vec<Vec<u8>>;

/// A job's values as people read them: joined by spaces (as GNU parallel's
/// `{}` and `--tag` show several values).
pub fn shown(values: &[Vec<u8>]) -> Vec<u8> {
    values.join(&b' ')
}

/// A source named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// The values after `:::`.
    Values(Vec<Vec<u8>>),
    /// A file after `::::` (`-` is standard input).
    File(PathBuf),
}

/// Splits COMMAND at its first `:::` or `::::` into the command and the
/// sources that follow it.
///
/// # Errors
///
/// No command before the first separator, or GNU parallel's `:::+` and
/// `::::+`, which are not supported.
pub fn split_command(words: &[OsString]) -> Result<(Vec<OsString>, Vec<Spec>), String> {
    let is_separator = |w: &OsString| matches!(w.as_bytes(), b":::" | b"::::" | b":::+" | b"::::+");
    let Some(at) = words.iter().position(is_separator) else {
        return Ok((words.to_vec(), Vec::new()));
    };
    if at == 0 {
        return Err(format!(
            "no command before `{}`: write the command first, as in `workpool run echo {{}} ::: a b`",
            words[0].to_string_lossy()
        ));
    }
    let mut specs = Vec::new();
    // After `::::`: files until the next separator, at least one.
    let (mut files, mut want_file) = (false, false);
    for word in &words[at..] {
        let separator = is_separator(word);
        if separator && want_file {
            return Err("no file after `::::`".into());
        }
        match word.as_bytes() {
            b":::" => {
                files = false;
                specs.push(Spec::Values(Vec::new()));
            }
            b"::::" => (files, want_file) = (true, true),
            b":::+" | b"::::+" => {
                return Err(format!(
                    "`{}` is not supported: use --link to pair every source",
                    word.to_string_lossy()
                ));
            }
            _ if files => {
                want_file = false;
                specs.push(Spec::File(PathBuf::from(word)));
            }
            value => {
                if let Some(Spec::Values(values)) = specs.last_mut() {
                    values.push(value.to_vec());
                }
            }
        }
    }
    if want_file {
        return Err("no file after `::::`".into());
    }
    Ok((words[..at].to_vec(), specs))
}

/// `--colsep`: a literal separator, read as the plain part of a regular
/// expression (GNU parallel takes one): `\t` is a tab and `\` before a
/// punctuation character makes it plain.
///
/// # Errors
///
/// Regular-expression syntax (`\s`, `[,;]`, `+`…), which is not supported,
/// or an empty separator.
pub fn parse_colsep(s: &str) -> Result<ColumnSeparator, String> {
    let refuse = || {
        format!(
            "invalid --colsep `{s}`: give the separator as plain text (`,` `\\t` `\\|`); regular expressions are not supported"
        )
    };
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('t') => out.push(b'\t'),
                Some(p) if p.is_ascii_punctuation() => out.push(p as u8),
                _ => return Err(refuse()),
            },
            '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '{' | '}' | '^' | '$' | '|' => {
                return Err(refuse());
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if out.is_empty() {
        return Err(format!("invalid --colsep `{s}`: it is empty"));
    }
    Ok(ColumnSeparator(out))
}

/// The bytes that separate columns (`--colsep`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSeparator(pub Vec<u8>);

type Input = Pin<Box<dyn AsyncBufRead + Send>>;

/// Opens a file (or standard input, for `-` or `None`) to read on a thread
/// of its own; a bad path is a usage error before anything runs.
pub fn open(path: Option<&Path>, what: &str) -> Result<Input, String> {
    let source: Box<dyn std::io::Read + Send> = match path {
        Some(path) if path.as_os_str() != "-" => {
            let fail = |e: std::io::Error| format!("cannot read {what} {}: {e}", path.display());
            let meta = std::fs::metadata(path).map_err(fail)?;
            if meta.is_dir() {
                return Err(format!(
                    "cannot read {what} {}: it is a directory",
                    path.display()
                ));
            }
            Box::new(std::fs::File::open(path).map_err(fail)?)
        }
        _ => Box::new(std::io::stdin()),
    };
    let input = ThreadInput::spawn(source)
        .map_err(|e| format!("cannot start the thread that reads the input: {e}"))?;
    Ok(Box::pin(BufReader::new(input)))
}

/// Opens every source: `input` (standard input or `--input`) alone when
/// the command names none, otherwise `--input` (if given) and then the
/// command's.
///
/// # Errors
///
/// A file that cannot be read, or standard input named twice.
pub fn open_all(input: Option<&Path>, specs: Vec<Spec>) -> Result<Vec<Source>, String> {
    if specs.is_empty() {
        return Ok(vec![Source::Stream(open(input, "--input")?)]);
    }
    let mut sources = Vec::new();
    let mut stdin_used = false;
    let mut stdin = |path: Option<&Path>| -> Result<(), String> {
        if path.is_none_or(|p| p.as_os_str() == "-") {
            if stdin_used {
                return Err("standard input (`-`) is named as a source twice".into());
            }
            stdin_used = true;
        }
        Ok(())
    };
    if let Some(path) = input {
        stdin(Some(path))?;
        sources.push(Source::Stream(open(Some(path), "--input")?));
    }
    for spec in specs {
        match spec {
            Spec::Values(v) => sources.push(Source::List(v.into())),
            Spec::File(path) => {
                stdin(Some(&path))?;
                sources.push(Source::Stream(open(Some(&path), "::::")?));
            }
        }
    }
    Ok(sources)
}

/// One source of values.
pub enum Source {
    /// Records read as they come; empty records are skipped.
    Stream(Input),
    /// Values given on the command line, empty ones included.
    List(VecDeque<Vec<u8>>),
}

/// How records are grouped into one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// One input (one record, or one combination of sources) per job.
    One,
    /// Up to N inputs per job (`-n N`).
    Count(usize),
    /// As many as fit in [`FILL_BYTES`] (`-m`, `-X` without `-n`); an input
    /// that fits in one command is spread evenly over the job slots.
    Fill { slots: usize },
}

/// The most bytes of values `-m` and `-X` put in one command without `-n`
/// (xargs's default for a command line).
pub const FILL_BYTES: usize = 128 * 1024;

/// Turns the sources into one job's values at a time.
pub struct Jobs {
    sources: Vec<Reader>,
    colsep: Option<Vec<u8>>,
    link: bool,
    group: Group,
    /// The sources after the first (all of them with --link), read whole.
    rest: Option<Vec<Vec<Values>>>,
    /// The first source's current input and where the others stand in its
    /// combinations (the last one turns fastest).
    current: Option<Values>,
    odometer: Vec<usize>,
    /// --link: the next position.
    linked: usize,
    /// Grouped jobs made and not yet taken; an input read past a group's end.
    ready: VecDeque<Values>,
    pending: Option<Values>,
    made_any: bool,
}

enum Reader {
    Stream(Records<Input>),
    List(VecDeque<Vec<u8>>),
}

impl Reader {
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        match self {
            Reader::List(values) => Ok(values.pop_front()),
            Reader::Stream(records) => loop {
                match records.next().await? {
                    Some(r) if r.is_empty() => continue,
                    other => return Ok(other),
                }
            },
        }
    }

    async fn read_all(&mut self) -> std::io::Result<Vec<Vec<u8>>> {
        let mut all = Vec::new();
        while let Some(v) = self.next().await? {
            all.push(v);
        }
        Ok(all)
    }
}

impl Jobs {
    pub fn new(
        sources: Vec<Source>,
        separator: u8,
        colsep: Option<Vec<u8>>,
        link: bool,
        group: Group,
    ) -> Self {
        let sources = sources
            .into_iter()
            .map(|s| match s {
                Source::Stream(input) => Reader::Stream(Records::new(input, separator)),
                Source::List(values) => Reader::List(values),
            })
            .collect();
        Jobs {
            sources,
            colsep,
            link,
            group,
            rest: None,
            current: None,
            odometer: Vec::new(),
            linked: 0,
            ready: VecDeque::new(),
            pending: None,
            made_any: false,
        }
    }

    /// The next job's values; `None` when the sources are exhausted.
    pub async fn next(&mut self) -> std::io::Result<Option<Values>> {
        match self.group {
            Group::One => self.next_input().await,
            Group::Count(n) => {
                let mut values = Vec::new();
                for _ in 0..n {
                    match self.next_input().await? {
                        Some(v) => values.extend(v),
                        None => break,
                    }
                }
                Ok((!values.is_empty()).then_some(values))
            }
            Group::Fill { slots } => self.next_filled(slots).await,
        }
    }

    /// `-m`/`-X` without `-n`: inputs up to [`FILL_BYTES`]; if the whole
    /// input fits in the first command, it is spread over the job slots.
    async fn next_filled(&mut self, slots: usize) -> std::io::Result<Option<Values>> {
        if let Some(ready) = self.ready.pop_front() {
            return Ok(Some(ready));
        }
        let mut inputs: Vec<Values> = Vec::new();
        let mut bytes = 0;
        let mut ended = false;
        loop {
            let next = match self.pending.take() {
                Some(p) => Some(p),
                None => self.next_input().await?,
            };
            let Some(input) = next else {
                ended = true;
                break;
            };
            let size: usize = input.iter().map(|v| v.len() + 1).sum();
            if !inputs.is_empty() && bytes + size > FILL_BYTES {
                self.pending = Some(input);
                break;
            }
            bytes += size;
            inputs.push(input);
        }
        if inputs.is_empty() {
            return Ok(None);
        }
        let parts = if ended && !self.made_any {
            slots.clamp(1, inputs.len())
        } else {
            1
        };
        self.made_any = true;
        // Contiguous parts, the larger ones first (10 over 4 slots: 3 3 2 2).
        let (each, extra) = (inputs.len() / parts, inputs.len() % parts);
        let mut inputs = inputs.into_iter();
        for part in 0..parts {
            let take = each + usize::from(part < extra);
            self.ready
                .push_back(inputs.by_ref().take(take).flatten().collect());
        }
        Ok(self.ready.pop_front())
    }

    /// The next input: one record (split into columns with --colsep), or
    /// the next combination of the sources' values.
    async fn next_input(&mut self) -> std::io::Result<Option<Values>> {
        if self.sources.len() == 1 {
            let record = self.sources[0].next().await?;
            return Ok(record.map(|r| self.columns(r)));
        }
        if self.rest.is_none() {
            self.read_rest().await?;
        }
        let rest = self.rest.as_ref().expect("read above");
        if rest.iter().any(Vec::is_empty) {
            // One empty source: no combination (and nothing to pair).
            return Ok(None);
        }
        if self.link {
            let longest = rest.iter().map(Vec::len).max().unwrap_or(0);
            if self.linked >= longest {
                return Ok(None);
            }
            let at = self.linked;
            self.linked += 1;
            // Shorter sources start over, as in GNU parallel.
            return Ok(Some(
                rest.iter().flat_map(|s| s[at % s.len()].clone()).collect(),
            ));
        }
        if self.current.is_none() {
            let Some(record) = self.sources[0].next().await? else {
                return Ok(None);
            };
            self.current = Some(self.columns(record));
            self.odometer = vec![0; rest.len()];
        }
        let mut values = self.current.clone().expect("set above");
        for (source, &at) in rest.iter().zip(&self.odometer) {
            values.extend(source[at].iter().cloned());
        }
        // Turn the odometer; past its last position, the next record.
        let mut wrapped = true;
        for (at, source) in self.odometer.iter_mut().zip(rest).rev() {
            *at += 1;
            if *at < source.len() {
                wrapped = false;
                break;
            }
            *at = 0;
        }
        if wrapped {
            self.current = None;
        }
        Ok(Some(values))
    }

    /// Reads whole the sources that are used more than once.
    async fn read_rest(&mut self) -> std::io::Result<()> {
        let skip = usize::from(!self.link);
        let mut rest = Vec::new();
        for i in skip..self.sources.len() {
            let values = self.sources[i].read_all().await?;
            rest.push(values.into_iter().map(|v| self.columns(v)).collect());
        }
        self.rest = Some(rest);
        Ok(())
    }

    /// A record split at --colsep (as it is without one).
    fn columns(&self, record: Vec<u8>) -> Values {
        let Some(sep) = &self.colsep else {
            return vec![record];
        };
        let mut columns = Vec::new();
        let mut rest = &record[..];
        while let Some(i) = rest.windows(sep.len()).position(|w| w == &sep[..]) {
            columns.push(rest[..i].to_vec());
            rest = &rest[i + sep.len()..];
        }
        columns.push(rest.to_vec());
        columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn list(v: &[&str]) -> Source {
        Source::List(v.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    fn stream(s: &'static str) -> Source {
        Source::Stream(Box::pin(s.as_bytes()))
    }

    fn all(sources: Vec<Source>, colsep: Option<&str>, link: bool, group: Group) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let colsep = colsep.map(|c| parse_colsep(c).unwrap().0);
            let mut jobs = Jobs::new(sources, b'\n', colsep, link, group);
            let mut out = Vec::new();
            while let Some(v) = jobs.next().await.unwrap() {
                let parts: Vec<String> = v
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                out.push(parts.join("|"));
            }
            out
        })
    }

    #[test]
    fn the_command_ends_at_the_first_separator() {
        let (cmd, specs) = split_command(&os(&[
            "echo", "{}", ":::", "a", "b", "::::", "f", "-", ":::", "c",
        ]))
        .unwrap();
        assert_eq!(cmd, os(&["echo", "{}"]));
        assert_eq!(
            specs,
            vec![
                Spec::Values(vec![b"a".to_vec(), b"b".to_vec()]),
                Spec::File("f".into()),
                Spec::File("-".into()),
                Spec::Values(vec![b"c".to_vec()]),
            ]
        );
        assert!(split_command(&os(&[":::", "a"])).is_err());
        assert!(split_command(&os(&["echo", ":::+", "a"])).is_err());
        assert!(split_command(&os(&["echo", "::::"])).is_err());
        let (cmd, specs) = split_command(&os(&["echo", "a:::b"])).unwrap();
        assert_eq!((cmd.len(), specs.len()), (2, 0));
    }

    #[test]
    fn sources_combine_first_slowest_or_pair_with_link() {
        let got = all(
            vec![list(&["a", "b"]), stream("1\n2\n")],
            None,
            false,
            Group::One,
        );
        assert_eq!(got, ["a|1", "a|2", "b|1", "b|2"]);
        let got = all(
            vec![stream("a\n\nb\nc\n"), list(&["1", "2"])],
            None,
            true,
            Group::One,
        );
        assert_eq!(got, ["a|1", "b|2", "c|1"]);
        let empty = all(vec![list(&["a"]), list(&[])], None, false, Group::One);
        assert!(empty.is_empty());
    }

    #[test]
    fn columns_and_groups() {
        let got = all(vec![stream("a,b\nc\n")], Some(","), false, Group::One);
        assert_eq!(got, ["a|b", "c"]);
        let got = all(
            vec![stream("1\n2\n3\n4\n5\n")],
            None,
            false,
            Group::Count(2),
        );
        assert_eq!(got, ["1|2", "3|4", "5"]);
        let got = all(
            vec![stream("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n")],
            None,
            false,
            Group::Fill { slots: 4 },
        );
        assert_eq!(got, ["1|2|3", "4|5|6", "7|8", "9|10"]);
    }

    #[test]
    fn filling_stops_at_the_byte_limit_and_spreads_only_what_fits_once() {
        let record = "x".repeat(1000);
        let input: String = (0..300).map(|_| format!("{record}\n")).collect();
        let input: &'static str = Box::leak(input.into_boxed_str());
        let got = all(vec![stream(input)], None, false, Group::Fill { slots: 2 });
        let sizes: Vec<usize> = got.iter().map(|g| g.split('|').count()).collect();
        assert_eq!(sizes, [130, 130, 40]);
    }

    #[test]
    fn colsep_is_plain_text() {
        assert_eq!(parse_colsep(",").unwrap().0, b",");
        assert_eq!(parse_colsep("\\t").unwrap().0, b"\t");
        assert_eq!(parse_colsep("\\|").unwrap().0, b"|");
        assert_eq!(parse_colsep("::").unwrap().0, b"::");
        for bad in ["\\s+", "[,;]", "|", "", "a*"] {
            assert!(parse_colsep(bad).is_err(), "{bad}");
        }
    }
}
