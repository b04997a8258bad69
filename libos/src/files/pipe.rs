//! A pipe: a bounded byte queue between writers and readers, with Linux's rules for end of
//! file, broken pipes and atomic small writes.

use alloc::boxed::Box;
use alloc::vec;

/// The capacity of a pipe (Linux's default: sixteen pages).
pub const PIPE_CAPACITY: usize = 64 << 10;
/// Writes of at most this many bytes are atomic: they go in whole or wait (POSIX `PIPE_BUF`).
pub const PIPE_BUF: usize = 4096;

/// What a read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeRead {
    /// This many bytes were read (at least one).
    Data(usize),
    /// Empty and no writer is left: end of file.
    Eof,
    /// Empty, but a writer may still write: the reader waits.
    Empty,
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeWrite {
    /// This many bytes were queued (at least one).
    Wrote(usize),
    /// No room (for an atomic write: not room for all of it): the writer waits.
    Full,
    /// No reader is left (`EPIPE`, and `SIGPIPE` for the writer).
    Broken,
}

/// A pipe's buffer and how many read and write ends are open.
pub struct Pipe {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
    readers: usize,
    writers: usize,
}

impl Pipe {
    /// An empty pipe with one read end and one write end open.
    pub fn new() -> Pipe {
        Pipe {
            buf: vec![0; PIPE_CAPACITY].into_boxed_slice(),
            head: 0,
            len: 0,
            readers: 1,
            writers: 1,
        }
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    pub fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Open read ends.
    pub fn readers(&self) -> usize {
        self.readers
    }

    /// Open write ends.
    pub fn writers(&self) -> usize {
        self.writers
    }

    /// A read end was closed (its last descriptor).
    pub fn close_reader(&mut self) {
        self.readers -= 1;
    }

    /// A write end was closed (its last descriptor).
    pub fn close_writer(&mut self) {
        self.writers -= 1;
    }

    /// Whether a reader would not wait: data queued, or end of file.
    pub fn readable(&self) -> bool {
        self.len > 0 || self.writers == 0
    }

    /// Whether a writer of `n` bytes would not wait: room for them (all of them for an atomic
    /// write, one byte otherwise), or no reader left.
    pub fn writable(&self, n: usize) -> bool {
        let need = if n <= PIPE_BUF { n.max(1) } else { 1 };
        self.free() >= need || self.readers == 0
    }

    /// Reads up to `out.len()` bytes.
    pub fn read(&mut self, out: &mut [u8]) -> PipeRead {
        if self.len == 0 {
            return if self.writers == 0 {
                PipeRead::Eof
            } else {
                PipeRead::Empty
            };
        }
        let n = self.peek(out);
        self.consume(n);
        PipeRead::Data(n)
    }

    /// Copies up to `out.len()` queued bytes into `out` without taking them; returns how many.
    pub fn peek(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        let cap = self.buf.len();
        let first = n.min(cap - self.head);
        out[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
        out[first..n].copy_from_slice(&self.buf[..n - first]);
        n
    }

    /// Takes `n` queued bytes (after [`peek`](Pipe::peek) delivered them).
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len, "consuming more than is queued");
        self.head = (self.head + n) % self.buf.len();
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Writes `data`: all of it if it is at most [`PIPE_BUF`] bytes and fits, else as much as
    /// fits. An empty write does nothing and returns `Wrote(0)`.
    pub fn write(&mut self, data: &[u8]) -> PipeWrite {
        if self.readers == 0 {
            return PipeWrite::Broken;
        }
        if data.is_empty() {
            return PipeWrite::Wrote(0);
        }
        if !self.writable(data.len()) {
            return PipeWrite::Full;
        }
        let n = data.len().min(self.free());
        let cap = self.buf.len();
        let tail = (self.head + self.len) % cap;
        let first = n.min(cap - tail);
        self.buf[tail..tail + first].copy_from_slice(&data[..first]);
        self.buf[..n - first].copy_from_slice(&data[first..n]);
        self.len += n;
        PipeWrite::Wrote(n)
    }
}

impl Default for Pipe {
    fn default() -> Self {
        Pipe::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn end_of_file_only_without_writers() {
        let mut p = Pipe::new();
        let mut b = [0u8; 8];
        assert_eq!(p.read(&mut b), PipeRead::Empty);
        assert_eq!(p.write(b"abc"), PipeWrite::Wrote(3));
        p.close_writer();
        assert_eq!(
            p.read(&mut b),
            PipeRead::Data(3),
            "queued bytes are read before end of file"
        );
        assert_eq!(&b[..3], b"abc");
        assert_eq!(p.read(&mut b), PipeRead::Eof);
    }

    #[test]
    fn broken_without_readers() {
        let mut p = Pipe::new();
        p.close_reader();
        assert_eq!(p.write(b"x"), PipeWrite::Broken);
        assert!(
            p.writable(1),
            "a writer must not wait for a reader that cannot come"
        );
    }

    #[test]
    fn small_writes_are_atomic_large_ones_partial() {
        let mut p = Pipe::new();
        let big = vec![1u8; PIPE_CAPACITY - 100];
        assert_eq!(p.write(&big), PipeWrite::Wrote(PIPE_CAPACITY - 100));
        assert_eq!(
            p.write(&[2u8; 200]),
            PipeWrite::Full,
            "200 bytes do not fit in 100: wait"
        );
        assert_eq!(
            p.write(&[3u8; 5000]),
            PipeWrite::Wrote(100),
            "a large write takes what fits"
        );
        assert_eq!(p.write(&[3u8; 5000]), PipeWrite::Full);
    }

    proptest! {
        /// Against a `VecDeque`: bytes come out in order, never more than the capacity is held.
        #[test]
        fn fifo_against_a_reference(ops in proptest::collection::vec((any::<bool>(), 1usize..9000), 1..200)) {
            let mut p = Pipe::new();
            let mut r: VecDeque<u8> = VecDeque::new();
            let mut next = 0u8;
            for (write, n) in ops {
                if write {
                    let data: Vec<u8> = (0..n).map(|_| { next = next.wrapping_add(7); next }).collect();
                    let free = PIPE_CAPACITY - r.len();
                    match p.write(&data) {
                        PipeWrite::Wrote(k) => {
                            let want = if n <= PIPE_BUF { n } else { n.min(free) };
                            prop_assert_eq!(k, want);
                            r.extend(&data[..k]);
                        }
                        PipeWrite::Full => {
                            let must_wait = if n <= PIPE_BUF { free < n } else { free == 0 };
                            prop_assert!(must_wait);
                        }
                        PipeWrite::Broken => prop_assert!(false),
                    }
                } else {
                    let mut out = vec![0u8; n];
                    match p.read(&mut out) {
                        PipeRead::Data(k) => {
                            prop_assert_eq!(k, n.min(r.len()));
                            let want: Vec<u8> = r.drain(..k).collect();
                            prop_assert_eq!(&out[..k], &want[..]);
                        }
                        PipeRead::Empty => prop_assert!(r.is_empty()),
                        PipeRead::Eof => prop_assert!(false),
                    }
                }
                prop_assert_eq!(p.len(), r.len());
                prop_assert!(p.len() <= PIPE_CAPACITY);
            }
        }
    }
}
