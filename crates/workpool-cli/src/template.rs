//! The command template and GNU parallel's replacement strings: `{}`,
//! `{.}`, `{/}`, `{//}`, `{/.}`, `{#}`, `{%}`, and the positional `{1}`,
//! `{2.}`, `{3/}`… that pick one of a job's values.
//!
//! A job has one value per input record in the common case, several with
//! `::: a ::: b` (one per source), `--colsep` (one per column) or `-n`
//! (one per record of the group). Words are expanded as GNU parallel's shell
//! would split them: a word holding `{}` gets the values spliced in (the
//! first joined to what comes before, the last to what follows, one word
//! each in between), or with `-X` the whole word repeated once per value.
//! A value never spills into a word of its own unless `{}` stands for
//! several values: nothing in a record can add or split arguments.

use std::borrow::Cow;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// What a replacement string does to the value it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Modifier {
    /// `{}`: the value.
    Whole,
    /// `{.}`: without its extension.
    NoExtension,
    /// `{/}`: its basename.
    Basename,
    /// `{//}`: its dirname.
    Dirname,
    /// `{/.}`: its basename without extension.
    BasenameNoExtension,
}

/// The modifiers after `{` or `{N`, longest first (so that `{/.}` is not
/// read as `{/}` followed by `.`).
const MODIFIERS: [(&[u8], Modifier); 5] = [
    (b"//}", Modifier::Dirname),
    (b"/.}", Modifier::BasenameNoExtension),
    (b"}", Modifier::Whole),
    (b".}", Modifier::NoExtension),
    (b"/}", Modifier::Basename),
];

/// One piece of a word of the template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    /// Every value of the job (`{}` and its modified forms).
    All(Modifier),
    /// One value, counted from 1 (`{1}`, `{2.}`…); empty if there is none.
    Nth(usize, Modifier),
    /// `{#}`: the job's sequence number.
    Seq,
    /// `{%}`: the job slot.
    Slot,
}

/// What a replacement string stands for, for one job.
#[derive(Clone, Copy, Debug)]
pub struct Slots {
    /// The job's sequence number, from 1 (`{#}`).
    pub seq: u64,
    /// The job slot, from 1 to -j (`{%}`).
    pub slot: usize,
}

/// How a word holding `{}` takes several values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Spread {
    /// The values spliced in (GNU parallel's `-m`, and `-n` alone).
    #[default]
    Splice,
    /// The word repeated once per value (`-X`, "context replace").
    Repeat,
}

/// The command line with its replacement strings parsed.
#[derive(Clone, Debug)]
pub struct Template {
    words: Vec<Vec<Piece>>,
    has_placeholder: bool,
    spread: Spread,
}

impl Template {
    pub fn new(args: &[OsString], spread: Spread) -> Self {
        let words: Vec<Vec<Piece>> = args.iter().map(|a| parse(a.as_bytes())).collect();
        let has_placeholder = words.iter().flatten().any(|p| !matches!(p, Piece::Text(_)));
        Template {
            words,
            has_placeholder,
            spread,
        }
    }

    /// The argv for one job: every replacement string filled in, or, with
    /// none in the template, the values appended one argument each.
    pub fn argv(&self, values: &[Vec<u8>], slots: Slots) -> Vec<OsString> {
        let mut argv = Vec::with_capacity(self.words.len() + 1);
        for word in &self.words {
            let spreads = values.len() != 1 && word.iter().any(|p| matches!(p, Piece::All(_)));
            match (spreads, self.spread) {
                (true, Spread::Repeat) => {
                    for v in values {
                        argv.push(bytes(fill_one(word, v, values, slots)));
                    }
                }
                (true, Spread::Splice) => {
                    argv.extend(splice(word, values, slots).into_iter().map(bytes))
                }
                (false, _) => {
                    let first = values.first().map_or(&[][..], Vec::as_slice);
                    argv.push(bytes(fill_one(word, first, values, slots)));
                }
            }
        }
        if !self.has_placeholder {
            argv.extend(values.iter().map(|v| bytes(v.clone())));
        }
        argv
    }

    /// The template filled in as one string, the words joined by spaces
    /// (for a `--results` path).
    pub fn joined(&self, values: &[Vec<u8>], slots: Slots) -> Vec<u8> {
        let words: Vec<Vec<u8>> = self
            .argv(values, slots)
            .into_iter()
            .map(OsString::into_vec)
            .collect();
        words.join(&b' ')
    }

    /// Whether any replacement string appears.
    pub fn has_placeholder(&self) -> bool {
        self.has_placeholder
    }
}

fn bytes(v: Vec<u8>) -> OsString {
    OsString::from_vec(v)
}

/// A word split into text and replacement strings.
fn parse(word: &[u8]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut rest = word;
    while let Some(&first) = rest.first() {
        match replacement(rest) {
            Some((piece, len)) => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
                rest = &rest[len..];
            }
            None => {
                text.push(first);
                rest = &rest[1..];
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// The replacement string `s` starts with, and its length.
fn replacement(s: &[u8]) -> Option<(Piece, usize)> {
    let after = s.strip_prefix(b"{")?;
    if after.starts_with(b"#}") {
        return Some((Piece::Seq, 3));
    }
    if after.starts_with(b"%}") {
        return Some((Piece::Slot, 3));
    }
    let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, after) = after.split_at(digits);
    let (tail, modifier) = MODIFIERS.iter().find(|(m, _)| after.starts_with(m))?;
    let len = 1 + digits + tail.len();
    if digits == 0 {
        return Some((Piece::All(*modifier), len));
    }
    // `{0}` and numbers too large to be a position are text, as in GNU parallel.
    let n: usize = std::str::from_utf8(number).ok()?.parse().ok()?;
    (n >= 1).then_some((Piece::Nth(n, *modifier), len))
}

/// The word with `{}` standing for `value` (and `{N}` for the Nth value).
fn fill_one(word: &[Piece], value: &[u8], values: &[Vec<u8>], slots: Slots) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in word {
        match piece {
            Piece::All(m) => out.extend_from_slice(&modify(value, *m)),
            other => out.extend_from_slice(&single(other, values, slots)),
        }
    }
    out
}

/// The word with every value spliced in at each `{}`: a new word starts
/// before each value but the first, as a shell splits `x{}y` with `a b`
/// into `xa by`.
fn splice(word: &[Piece], values: &[Vec<u8>], slots: Slots) -> Vec<Vec<u8>> {
    let mut words = vec![Vec::new()];
    for piece in word {
        match piece {
            Piece::All(m) => {
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        words.push(Vec::new());
                    }
                    words.last_mut().unwrap().extend_from_slice(&modify(v, *m));
                }
            }
            other => words
                .last_mut()
                .unwrap()
                .extend_from_slice(&single(other, values, slots)),
        }
    }
    words
}

/// What a piece other than `{}` stands for.
fn single<'a>(piece: &'a Piece, values: &'a [Vec<u8>], slots: Slots) -> Cow<'a, [u8]> {
    match piece {
        Piece::Text(t) => Cow::Borrowed(t),
        Piece::Nth(n, m) => values
            .get(n - 1)
            .map_or(Cow::Borrowed(&[][..]), |v| modify(v, *m)),
        Piece::Seq => Cow::Owned(slots.seq.to_string().into_bytes()),
        Piece::Slot => Cow::Owned(slots.slot.to_string().into_bytes()),
        Piece::All(m) => values
            .first()
            .map_or(Cow::Borrowed(&[][..]), |v| modify(v, *m)),
    }
}

fn modify(value: &[u8], m: Modifier) -> Cow<'_, [u8]> {
    match m {
        Modifier::Whole => Cow::Borrowed(value),
        Modifier::NoExtension => Cow::Borrowed(without_extension(value)),
        Modifier::Basename => Cow::Borrowed(basename(value)),
        Modifier::Dirname => Cow::Owned(dirname(value)),
        Modifier::BasenameNoExtension => Cow::Borrowed(without_extension(basename(value))),
    }
}

/// What follows the last `/` (all of it if there is none).
fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Without the last `.` and what follows, if no `/` follows it.
fn without_extension(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'.') {
        Some(i) if !path[i..].contains(&b'/') => &path[..i],
        _ => path,
    }
}

/// The directory part, as POSIX `dirname` (and Perl's) gives it.
fn dirname(path: &[u8]) -> Vec<u8> {
    let trimmed = match path.iter().rposition(|b| *b != b'/') {
        Some(i) => &path[..=i],
        None if path.is_empty() => return b".".to_vec(),
        None => return b"/".to_vec(),
    };
    let Some(slash) = trimmed.iter().rposition(|b| *b == b'/') else {
        return b".".to_vec();
    };
    match trimmed[..slash].iter().rposition(|b| *b != b'/') {
        Some(i) => trimmed[..=i].to_vec(),
        None => b"/".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn vals(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    const S: Slots = Slots { seq: 7, slot: 2 };

    fn t(args: &[&str]) -> Template {
        Template::new(&os(args), Spread::Splice)
    }

    #[test]
    fn placeholders_are_replaced_inside_arguments() {
        let t = t(&["cp", "{}", "backup/{}.bak"]);
        assert_eq!(
            t.argv(&vals(&["a b"]), S),
            os(&["cp", "a b", "backup/a b.bak"])
        );
    }

    /// The same as GNU parallel 20221122 prints for these inputs.
    #[test]
    fn replacement_strings_as_gnu_parallel_reads_them() {
        let t = t(&["[{}] [{.}] [{/}] [{//}] [{/.}] [{#}] [{%}]"]);
        for (input, expected) in [
            ("a/b/c.txt", "[a/b/c.txt] [a/b/c] [c.txt] [a/b] [c] [7] [2]"),
            ("c.txt", "[c.txt] [c] [c.txt] [.] [c] [7] [2]"),
            ("/c", "[/c] [/c] [c] [/] [c] [7] [2]"),
            ("dir/", "[dir/] [dir/] [] [.] [] [7] [2]"),
            ("a.b.c", "[a.b.c] [a.b] [a.b.c] [.] [a.b] [7] [2]"),
            (".hidden", "[.hidden] [] [.hidden] [.] [] [7] [2]"),
            ("a/.h", "[a/.h] [a/] [.h] [a] [] [7] [2]"),
        ] {
            assert_eq!(t.argv(&vals(&[input]), S), os(&[expected]), "{input}");
        }
    }

    #[test]
    fn positional_strings_pick_one_value_with_its_modifier() {
        let t = t(&["{2}-{1}", "{1.}", "{2/}", "{3}", "{0}", "{x}"]);
        assert_eq!(
            t.argv(&vals(&["a.txt", "d/e"]), S),
            os(&["d/e-a.txt", "a", "e", "", "{0}", "{x}"])
        );
    }

    #[test]
    fn several_values_are_spliced_or_repeated_as_gnu_parallel_does() {
        let v = vals(&["a", "b", "c"]);
        assert_eq!(
            t(&["echo", "x{}y"]).argv(&v, S),
            os(&["echo", "xa", "b", "cy"])
        );
        let repeat = Template::new(&os(&["echo", "x{}y", "{#}"]), Spread::Repeat);
        assert_eq!(repeat.argv(&v, S), os(&["echo", "xay", "xby", "xcy", "7"]));
        assert_eq!(t(&["echo"]).argv(&v, S), os(&["echo", "a", "b", "c"]));
        assert_eq!(t(&["{}-{}"]).argv(&v, S), os(&["a", "b", "c-a", "b", "c"]));
    }

    #[test]
    fn without_placeholder_the_record_is_appended() {
        assert_eq!(
            t(&["echo", "-n"]).argv(&vals(&["x"]), S),
            os(&["echo", "-n", "x"])
        );
    }

    #[test]
    fn a_record_is_one_argument_whatever_it_holds() {
        let evil = b"$(touch pwned); rm -rf x {} {1}";
        let argv = t(&["printf", "%s", "{}"]).argv(&[evil.to_vec()], S);
        assert_eq!(argv.len(), 3);
        assert_eq!(argv[2].as_bytes(), evil);
    }

    #[test]
    fn invalid_utf8_passes_through() {
        assert_eq!(
            t(&["cat", "{}"]).argv(&[b"\xff\xfe".to_vec()], S)[1].as_bytes(),
            b"\xff\xfe"
        );
    }

    #[test]
    fn joined_fills_a_path() {
        let t = t(&["out/{1}/{#}.txt"]);
        assert_eq!(t.joined(&vals(&["a", "b"]), S), b"out/a/7.txt");
    }
}
