//! Splitting input into records: lines, or NUL-terminated with `-0`.
//!
//! Records are bytes. The separator is removed; nothing else is touched.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, ReadBuf};
use tokio::sync::mpsc;

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

/// Input read on a plain thread of its own, started before anything runs:
/// tokio's own stdin and files read on its blocking pool, whose threads are
/// started when needed, and a pool that cannot start one (a process limit
/// reached) panics there. This thread either starts at once or is a clear
/// error.
pub struct ThreadInput {
    chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl ThreadInput {
    /// Starts reading `source` on a new thread.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn spawn(mut source: Box<dyn Read + Send>) -> std::io::Result<Self> {
        let (tx, chunks) = mpsc::channel(4);
        std::thread::Builder::new()
            .name("workpool-input".into())
            .spawn(move || {
                loop {
                    let mut chunk = vec![0; 64 * 1024];
                    let sent = match source.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            chunk.truncate(n);
                            tx.blocking_send(Ok(chunk))
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            break;
                        }
                    };
                    if sent.is_err() {
                        break; // nobody reads any more
                    }
                }
            })?;
        Ok(ThreadInput {
            chunks,
            current: Vec::new(),
            at: 0,
        })
    }
}

impl AsyncRead for ThreadInput {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while this.at == this.current.len() {
            match this.chunks.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // The thread is done: the end of the input.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(chunk))) => {
                    this.current = chunk;
                    this.at = 0;
                }
            }
        }
        let n = buf.remaining().min(this.current.len() - this.at);
        buf.put_slice(&this.current[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
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
    fn a_thread_input_streams_what_its_source_holds() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes: Vec<u8> = (0..200_000u32)
            .map(|i| if i % 7 == 0 { b'\n' } else { b'x' })
            .collect();
        let source = std::io::Cursor::new(bytes.clone());
        let got = rt.block_on(async {
            let input = ThreadInput::spawn(Box::new(source)).unwrap();
            let mut r = Records::new(tokio::io::BufReader::new(input), b'\n');
            let mut out = Vec::new();
            while let Some(rec) = r.next().await.unwrap() {
                out.push(rec);
            }
            out
        });
        let expected: Vec<Vec<u8>> = split(&bytes, b'\n')
            .into_iter()
            .map(|r| r.to_vec())
            .collect();
        assert_eq!(got, expected);
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
