//! Descriptors and what they name: the console (descriptors 0, 1 and 2 of the first process)
//! and pipes. There is no file system: paths name nothing.

use super::super::errno::*;
use super::super::task::{sig, File, FileKind, PipeEnd, Wait};
use super::super::uaccess;
use super::{Action, Call, Return};
use crate::files::{FdError, Pipe, PipeWrite, PIPE_BUF};
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

const O_WRONLY: i64 = 0o1;
const O_RDWR: i64 = 0o2;
const O_NONBLOCK: u64 = 0o4000;
const O_CLOEXEC: u64 = 0o2000000;

/// The console as an open file (the first process's descriptors 0, 1 and 2).
pub fn console_file() -> Arc<File> {
    File::new(FileKind::Console, false)
}

fn fd_errno(e: FdError) -> i64 {
    match e {
        FdError::BadFd => -EBADF,
        FdError::Invalid => -EINVAL,
        FdError::TooMany => -EMFILE,
    }
}

fn file(c: &mut Call, fd: u64) -> Result<Arc<File>, i64> {
    c.fds().get(fd as i64).cloned().map_err(fd_errno)
}

/// Drops files taken out of a descriptor table and wakes whoever waited on a pipe end that
/// may have closed with them.
pub(super) fn release(c: &mut Call, files: impl IntoIterator<Item = Arc<File>>) {
    let mut pipes = false;
    for f in files {
        pipes |= f.pipe_id().is_some();
        drop(f);
    }
    if pipes {
        c.sys.wake_all_pipes();
    }
}

pub fn getcwd(_c: &mut Call, a: &[u64; 6]) -> Action {
    if a[1] < 2 {
        return Return(-ERANGE);
    }
    Return(uaccess::write(a[0], b"/\0").map_or_else(|e| e, |_| 2))
}

pub fn dup(c: &mut Call, a: &[u64; 6]) -> Action {
    let f = match file(c, a[0]) {
        Ok(f) => f,
        Err(e) => return Return(e),
    };
    Return(c.fds().install(f, false, 0).unwrap_or_else(fd_errno))
}

pub fn dup3(c: &mut Call, a: &[u64; 6]) -> Action {
    if a[2] & !O_CLOEXEC != 0 {
        return Return(-EINVAL);
    }
    match c.fds().dup3(a[0] as i64, a[1] as i64, a[2] != 0) {
        Ok(old) => {
            release(c, old);
            Return(a[1] as i64)
        }
        Err(e) => Return(fd_errno(e)),
    }
}

pub fn fcntl(c: &mut Call, a: &[u64; 6]) -> Action {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const FD_CLOEXEC: u64 = 1;
    let fd = a[0] as i64;
    let f = match file(c, a[0]) {
        Ok(f) => f,
        Err(e) => return Return(e),
    };
    let fds = &mut c.fds();
    Return(match a[1] {
        F_GETFD => fds.cloexec(fd).map_or_else(fd_errno, i64::from),
        F_SETFD => fds
            .set_cloexec(fd, a[2] & FD_CLOEXEC != 0)
            .map_or_else(fd_errno, |_| 0),
        F_GETFL => {
            let mode = match &f.kind {
                FileKind::Console => O_RDWR,
                FileKind::Pipe(end) if end.write => O_WRONLY,
                FileKind::Pipe(_) => 0,
            };
            mode | if f.nonblocking() { O_NONBLOCK as i64 } else { 0 }
        }
        F_SETFL => {
            f.nonblock
                .store(a[2] & O_NONBLOCK != 0, core::sync::atomic::Ordering::Relaxed);
            0
        }
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let min = usize::try_from(a[2]).unwrap_or(usize::MAX);
            fds.install(f, a[1] == F_DUPFD_CLOEXEC, min)
                .unwrap_or_else(fd_errno)
        }
        _ => -EINVAL,
    })
}

pub fn ioctl(c: &mut Call, a: &[u64; 6]) -> Action {
    Return(match file(c, a[0]) {
        Ok(_) => -ENOTTY,
        Err(e) => e,
    })
}

/// `openat`, `faccessat`, `readlinkat`: the path is checked, then names nothing (nothing is a
/// link either, `/proc/self/exe` included).
pub fn no_such_path(_c: &mut Call, a: &[u64; 6]) -> Action {
    Return(match uaccess::read(a[1], 1) {
        Ok(_) => -ENOENT,
        Err(e) => e,
    })
}

pub fn close(c: &mut Call, a: &[u64; 6]) -> Action {
    match c.fds().close(a[0] as i64) {
        Ok(f) => {
            release(c, Some(f));
            Return(0)
        }
        Err(e) => Return(fd_errno(e)),
    }
}

pub fn pipe2(c: &mut Call, a: &[u64; 6]) -> Action {
    if a[1] & !(O_CLOEXEC | O_NONBLOCK) != 0 {
        return Return(-EINVAL);
    }
    let cloexec = a[1] & O_CLOEXEC != 0;
    let nonblock = a[1] & O_NONBLOCK != 0;
    let pipe = Arc::new(Mutex::new(Pipe::new()));
    let r = File::new(
        FileKind::Pipe(PipeEnd {
            pipe: pipe.clone(),
            write: false,
        }),
        nonblock,
    );
    let w = File::new(FileKind::Pipe(PipeEnd { pipe, write: true }), nonblock);
    let fds = &mut c.fds();
    let rfd = match fds.install(r, cloexec, 0) {
        Ok(fd) => fd,
        Err(e) => return Return(fd_errno(e)),
    };
    let wfd = match fds.install(w, cloexec, 0) {
        Ok(fd) => fd,
        Err(e) => {
            let r = fds.close(rfd).ok();
            release(c, r);
            return Return(fd_errno(e));
        }
    };
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(rfd as i32).to_le_bytes());
    out[4..].copy_from_slice(&(wfd as i32).to_le_bytes());
    match uaccess::write(a[0], &out) {
        Ok(()) => Return(0),
        Err(e) => {
            let fds = &mut c.fds();
            let closed = [fds.close(rfd).ok(), fds.close(wfd).ok()];
            release(c, closed.into_iter().flatten());
            Return(e)
        }
    }
}

pub fn lseek(c: &mut Call, a: &[u64; 6]) -> Action {
    Return(match file(c, a[0]) {
        Ok(_) => -ESPIPE,
        Err(e) => e,
    })
}

/// Reads an iovec array: (base, len) pairs.
fn iovecs(iov: u64, count: u64) -> Result<Vec<(u64, u64)>, i64> {
    if count > 1024 {
        return Err(-EINVAL);
    }
    let raw = uaccess::read(iov, count as usize * 16)?;
    let v: Vec<(u64, u64)> = raw
        .chunks(16)
        .map(|c| {
            let w = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
            (w(0), w(8))
        })
        .collect();
    let mut total: u64 = 0;
    for &(_, len) in &v {
        total = total
            .checked_add(len)
            .filter(|&t| t <= i64::MAX as u64)
            .ok_or(-EINVAL)?;
    }
    Ok(v)
}

pub fn read(c: &mut Call, a: &[u64; 6]) -> Action {
    if a[1] == 0 && a[2] != 0 {
        // A null buffer for a non-empty read is refused before anything is consumed.
        return match file(c, a[0]) {
            Ok(_) => Return(-EFAULT),
            Err(e) => Return(e),
        };
    }
    read_into(c, a[0], &[(a[1], a[2])])
}

pub fn readv(c: &mut Call, a: &[u64; 6]) -> Action {
    if let Err(e) = file(c, a[0]) {
        return Return(e);
    }
    match iovecs(a[1], a[2]) {
        Ok(v) => read_into(c, a[0], &v),
        Err(e) => Return(e),
    }
}

pub fn write(c: &mut Call, a: &[u64; 6]) -> Action {
    write_from(c, a[0], &[(a[1], a[2])])
}

pub fn writev(c: &mut Call, a: &[u64; 6]) -> Action {
    if let Err(e) = file(c, a[0]) {
        return Return(e);
    }
    match iovecs(a[1], a[2]) {
        Ok(v) => write_from(c, a[0], &v),
        Err(e) => Return(e),
    }
}

/// Copies `bytes` into the pieces of a user buffer in order; returns how many landed before the
/// first piece that faulted (`Err` if none did).
fn scatter(pieces: &[(u64, u64)], bytes: &[u8]) -> Result<usize, i64> {
    let mut done = 0usize;
    for &(base, len) in pieces {
        if done == bytes.len() {
            break;
        }
        let n = (len as usize).min(bytes.len() - done);
        if let Err(e) = uaccess::write(base, &bytes[done..done + n]) {
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        done += n;
    }
    Ok(done)
}

/// Reads `len` bytes of the user stream `pieces` starting `skip` bytes in.
fn gather(pieces: &[(u64, u64)], skip: u64, len: usize) -> Result<Vec<u8>, i64> {
    let mut out = Vec::with_capacity(len);
    let mut pos = 0u64;
    for &(base, plen) in pieces {
        if out.len() == len {
            break;
        }
        let (start, end) = (pos, pos + plen);
        pos = end;
        if end <= skip {
            continue;
        }
        let from = skip.max(start) - start;
        let n = ((plen - from) as usize).min(len - out.len());
        out.extend_from_slice(&uaccess::read(base + from, n)?);
    }
    Ok(out)
}

fn read_into(c: &mut Call, fd: u64, pieces: &[(u64, u64)]) -> Action {
    let f = match file(c, fd) {
        Ok(f) => f,
        Err(e) => return Return(e),
    };
    let total: u64 = pieces.iter().map(|p| p.1).sum();
    match &f.kind {
        FileKind::Console => {
            if total == 0 {
                return Return(0);
            }
            let mut buf = alloc::vec![0u8; total.min(4096) as usize];
            let n = crate::console::read_available(&mut buf);
            if n == 0 {
                return if f.nonblocking() {
                    Return(-EAGAIN)
                } else {
                    c.block(Wait::Console, 0)
                };
            }
            Return(scatter(pieces, &buf[..n]).map_or_else(|e| e, |n| n as i64))
        }
        FileKind::Pipe(end) if end.write => Return(-EBADF),
        FileKind::Pipe(end) => {
            if total == 0 {
                return Return(0);
            }
            let id = f.pipe_id().expect("a pipe");
            let mut pipe = end.pipe.lock();
            if pipe.is_empty() {
                return if pipe.writers() == 0 {
                    Return(0)
                } else if f.nonblocking() {
                    Return(-EAGAIN)
                } else {
                    c.block(Wait::PipeRead(id), 0)
                };
            }
            let mut buf = alloc::vec![0u8; (total as usize).min(pipe.len())];
            let n = pipe.peek(&mut buf);
            match scatter(pieces, &buf[..n]) {
                Ok(done) => {
                    pipe.consume(done);
                    drop(pipe);
                    c.sys.wake_pipe(id);
                    Return(done as i64)
                }
                Err(e) => Return(e),
            }
        }
    }
}

fn write_from(c: &mut Call, fd: u64, pieces: &[(u64, u64)]) -> Action {
    let f = match file(c, fd) {
        Ok(f) => f,
        Err(e) => return Return(e),
    };
    match &f.kind {
        FileKind::Console => Return(console_write(pieces)),
        FileKind::Pipe(end) if !end.write => Return(-EBADF),
        FileKind::Pipe(end) => {
            let id = f.pipe_id().expect("a pipe");
            let total: u64 = pieces.iter().map(|p| p.1).sum();
            let mut done = c.resumed().unwrap_or(0);
            let mut pipe = end.pipe.lock();
            let mut progressed = false;
            let outcome = loop {
                let left = total - done;
                if left == 0 {
                    break Ok(());
                }
                if pipe.readers() == 0 {
                    break Err(PipeWrite::Broken);
                }
                let atomic = left as usize <= PIPE_BUF;
                if !pipe.writable(left as usize) {
                    break Err(PipeWrite::Full);
                }
                let n = if atomic {
                    left as usize
                } else {
                    (left as usize).min(pipe.free())
                };
                let bytes = match gather(pieces, done, n) {
                    Ok(b) => b,
                    // A bad buffer ends the write: what was written counts, else EFAULT.
                    Err(_) if done > 0 => break Err(PipeWrite::Wrote(0)),
                    Err(e) => return Return(e),
                };
                match pipe.write(&bytes) {
                    PipeWrite::Wrote(k) => {
                        done += k as u64;
                        progressed = true;
                    }
                    other => break Err(other),
                }
            };
            drop(pipe);
            if progressed {
                c.sys.wake_pipe(id);
            }
            match outcome {
                Ok(()) | Err(PipeWrite::Wrote(_)) => Return(done as i64),
                Err(PipeWrite::Full) if f.nonblocking() => {
                    Return(if done > 0 { done as i64 } else { -EAGAIN })
                }
                Err(PipeWrite::Full) => c.block(Wait::PipeWrite(id), done),
                Err(PipeWrite::Broken) if done > 0 => Return(done as i64),
                Err(PipeWrite::Broken) => broken_pipe(c),
            }
        }
    }
}

/// A write to a pipe without readers: `SIGPIPE` to the writer (whose default action ends it on
/// the way out), and `EPIPE`.
fn broken_pipe(c: &mut Call) -> Action {
    let info = crate::signals::SigInfo {
        signo: sig::SIGPIPE,
        code: crate::signals::SI_USER,
        pid: c.pid,
        ..Default::default()
    };
    c.sys.post_signal(c.pid, info);
    Return(-EPIPE)
}

fn console_write(pieces: &[(u64, u64)]) -> i64 {
    let mut total = 0i64;
    for &(base, len) in pieces {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(4096);
            match uaccess::read(base + done, n as usize) {
                Ok(bytes) => crate::console::write_bytes(&bytes),
                // Linux reports what was written before the bad piece, else -EFAULT.
                Err(e) => return if total > 0 { total } else { e },
            }
            done += n;
            total += n as i64;
        }
    }
    total
}

pub fn ppoll(c: &mut Call, a: &[u64; 6]) -> Action {
    const POLLIN: u16 = 0x1;
    const POLLOUT: u16 = 0x4;
    const POLLERR: u16 = 0x8;
    const POLLHUP: u16 = 0x10;
    const POLLNVAL: u16 = 0x20;
    let (fds, nfds, timeout) = (a[0], a[1], a[2]);
    if nfds > 1024 {
        return Return(-EINVAL);
    }
    let deadline = match c.resumed() {
        Some(d) => (d != u64::MAX).then_some(d),
        None if timeout == 0 => None,
        None => match uaccess::read_timespec_ns(timeout) {
            Ok(ns) => Some(arch::timer::now_ns().saturating_add(ns)),
            Err(e) => return Return(e),
        },
    };
    let Ok(mut raw) = uaccess::read(fds, nfds as usize * 8) else {
        return Return(-EFAULT);
    };
    let mut ready = 0;
    for p in raw.chunks_mut(8) {
        let fd = i32::from_le_bytes(p[0..4].try_into().expect("4"));
        let events = u16::from_le_bytes(p[4..6].try_into().expect("2"));
        let revents = if fd < 0 {
            0
        } else {
            match c.fds().get(i64::from(fd)) {
                Err(_) => POLLNVAL,
                Ok(f) => match &f.kind {
                    FileKind::Console => {
                        let input = if crate::console::input_ready() { POLLIN } else { 0 };
                        events & (POLLOUT | input)
                    }
                    FileKind::Pipe(end) => {
                        let pipe = end.pipe.lock();
                        if end.write {
                            let err = if pipe.readers() == 0 { POLLERR } else { 0 };
                            (events & if pipe.writable(1) { POLLOUT } else { 0 }) | err
                        } else {
                            let hup = if pipe.writers() == 0 { POLLHUP } else { 0 };
                            (events & if pipe.is_empty() { 0 } else { POLLIN }) | hup
                        }
                    }
                },
            }
        };
        p[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    // No deadline: wait as long as it takes.
    let wait = deadline.is_none_or(|d| arch::timer::now_ns() < d);
    if ready == 0 && wait {
        return c.block(Wait::Poll(deadline), deadline.unwrap_or(u64::MAX));
    }
    Return(match uaccess::write(fds, &raw) {
        Ok(()) => ready,
        Err(e) => e,
    })
}

fn stat_of(f: &File) -> [u8; 128] {
    // struct stat (asm-generic, 128 bytes).
    const S_IFCHR: u32 = 0o020000;
    const S_IFIFO: u32 = 0o010000;
    let mut st = [0u8; 128];
    match &f.kind {
        FileKind::Console => {
            st[0..8].copy_from_slice(&0x16u64.to_le_bytes()); // st_dev
            st[16..20].copy_from_slice(&(S_IFCHR | 0o620).to_le_bytes()); // st_mode
            st[32..40].copy_from_slice(&((4u64 << 8) | 64).to_le_bytes()); // st_rdev: ttyS0
            st[56..60].copy_from_slice(&1024u32.to_le_bytes()); // st_blksize
        }
        FileKind::Pipe(_) => {
            st[0..8].copy_from_slice(&0xcu64.to_le_bytes()); // st_dev: pipefs
            st[16..20].copy_from_slice(&(S_IFIFO | 0o600).to_le_bytes());
            st[56..60].copy_from_slice(&4096u32.to_le_bytes());
        }
    }
    st[20..24].copy_from_slice(&1u32.to_le_bytes()); // st_nlink
    st
}

pub fn fstat(c: &mut Call, a: &[u64; 6]) -> Action {
    let f = match file(c, a[0]) {
        Ok(f) => f,
        Err(e) => return Return(e),
    };
    Return(uaccess::write(a[1], &stat_of(&f)).map_or_else(|e| e, |_| 0))
}

pub fn newfstatat(c: &mut Call, a: &[u64; 6]) -> Action {
    const AT_EMPTY_PATH: u64 = 0x1000;
    match uaccess::read(a[1], 1) {
        Err(e) => Return(e),
        Ok(p) if p[0] == 0 && a[3] & AT_EMPTY_PATH != 0 => fstat(c, &[a[0], a[2], 0, 0, 0, 0]),
        Ok(_) => Return(-ENOENT),
    }
}
