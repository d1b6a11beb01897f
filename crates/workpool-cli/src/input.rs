//! Splitting input into records: lines, or NUL-terminated with `-0`.
//!
//! Records are bytes. The separator is removed; nothing else is touched.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Reads one record at a time, so input of any length streams in flat memory.
pub struct Records<R> {
    reader: R,
    separator: u8,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> Records<R> {
    pub fn new(reader: R, separator: u8) -> Self {
        Records {
            reader,
            separator,
            buf: Vec::new(),
        }
    }

    /// The next record, without its separator; `None` at the end of input.
    /// A last record without a separator still counts.
    pub async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(self.separator, &mut self.buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&self.separator) {
            self.buf.pop();
        }
        Ok(Some(std::mem::take(&mut self.buf)))
    }
}

/// The same split on a byte slice: the model the reader is checked against.
#[cfg(test)]
fn split(input: &[u8], separator: u8) -> Vec<&[u8]> {
    let mut records: Vec<&[u8]> = input.split(|b| *b == separator).collect();
    if input.last() == Some(&separator) || input.is_empty() {
        records.pop();
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(input: &[u8], sep: u8) -> Vec<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = Records::new(input, sep);
            let mut out = Vec::new();
            while let Some(rec) = r.next().await.unwrap() {
                out.push(rec);
            }
            out
        })
    }

    #[test]
    fn lines_and_a_last_line_without_newline() {
        assert_eq!(
            read_all(b"a\nb\n\nc", b'\n'),
            [b"a".to_vec(), b"b".to_vec(), vec![], b"c".to_vec()]
        );
        assert_eq!(read_all(b"", b'\n'), Vec::<Vec<u8>>::new());
        assert_eq!(read_all(b"x\0y z\0", 0), [b"x".to_vec(), b"y z".to_vec()]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn reader_and_split_agree_and_rejoin_to_the_input(input in prop::collection::vec(any::<u8>(), 0..300), nul in any::<bool>()) {
            let sep = if nul { 0 } else { b'\n' };
            let streamed = read_all(&input, sep);
            let split: Vec<Vec<u8>> = split(&input, sep).into_iter().map(|r| r.to_vec()).collect();
            prop_assert_eq!(&streamed, &split);
            let mut rejoined = streamed.join(&sep);
            if input.last() == Some(&sep) {
                rejoined.push(sep);
            }
            prop_assert_eq!(rejoined, input);
        }
    }
}
