//! A fork-based snapshot of an in-memory key-value store, as databases take them: the store is a
//! vector of 256-byte records keyed by index, about `--mib` MiB, filled deterministically. The
//! parent checksums it and forks; the child streams every record through a pipe, followed by
//! its own checksum of what it sent, while the parent keeps updating records (`--updates` per
//! 16 KiB chunk it reads) and checksums the stream. Checks: stream checksum == checksum at fork
//! == the child's checksum, and the parent's store afterwards holds exactly the updates it made.
//!
//! Tessera controls (prctl; Linux answers EINVAL and they are skipped): `--folio 4k|64k` sets the
//! folio size before the store is allocated, `--fork copy|share` the fork mode; the copy-on-write
//! counters are read before the fork and after the child is reaped.

use std::io::Write;
use std::process::exit;

const PR_SET_FORK_MODE: libc::c_int = 0x5445_5301;
const PR_GET_FORK_MODE: libc::c_int = 0x5445_5302;
const PR_SET_FOLIO: libc::c_int = 0x5445_5303;
const PR_MEM_COUNTERS: libc::c_int = 0x5445_5304;

const WORDS: usize = 32;
const RECORD_BYTES: usize = WORDS * 8;
const CHUNK_RECORDS: usize = 64;
const CHUNK_BYTES: usize = CHUNK_RECORDS * RECORD_BYTES;

type Record = [u64; WORDS];

struct Options {
    mib: usize,
    folio: Option<&'static str>,
    fork: Option<&'static str>,
    updates: usize,
}

fn usage() -> ! {
    eprintln!("usage: kvsnap [--mib N] [--folio 4k|64k] [--fork copy|share] [--updates K]");
    exit(2);
}

fn parse_options() -> Options {
    let mut o = Options { mib: 64, folio: None, fork: None, updates: 8 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match (a.as_str(), v.as_str()) {
            ("--mib", n) => o.mib = n.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| usage()),
            ("--updates", n) => o.updates = n.parse().unwrap_or_else(|_| usage()),
            ("--folio", "4k") => o.folio = Some("4k"),
            ("--folio", "64k") => o.folio = Some("64k"),
            ("--fork", "copy") => o.fork = Some("copy"),
            ("--fork", "share") => o.fork = Some("share"),
            _ => usage(),
        }
    }
    o
}

fn fail(what: &str) -> ! {
    let e = std::io::Error::last_os_error();
    eprintln!("kvsnap: FAILED: {what} ({e})");
    exit(1);
}

/// A Tessera prctl: `Some(answer)`, or `None` where the kernel does not know it (EINVAL).
fn tessera_prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Option<libc::c_int> {
    let r = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r >= 0 {
        return Some(r);
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        return None;
    }
    fail("prctl");
}

/// The process's memory counters (see the prctl), or `None` outside Tessera.
fn counters() -> Option<[u64; 8]> {
    let mut c = [0u64; 8];
    let n = tessera_prctl(PR_MEM_COUNTERS, c.as_mut_ptr() as libc::c_ulong, 64)?;
    if n < 7 {
        eprintln!("kvsnap: FAILED: only {n} memory counters");
        exit(1);
    }
    Some(c)
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Word `j` of record `key` at `version` (0: the initial fill).
fn word(key: u64, j: u64, version: u64) -> u64 {
    let mut x = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (j << 56) ^ version.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

fn record(key: u64, version: u64) -> Record {
    std::array::from_fn(|j| word(key, j as u64, version))
}

/// An order-dependent checksum over a stream of words.
#[derive(Clone, Copy)]
struct Checksum(u64);

impl Checksum {
    fn new() -> Checksum {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 29;
    }
    fn add_records(&mut self, records: &[Record]) {
        for r in records {
            for &w in r {
                self.add(w);
            }
        }
    }
    fn add_bytes(&mut self, bytes: &[u8]) {
        for b in bytes.chunks_exact(8) {
            self.add(u64::from_ne_bytes(b.try_into().unwrap()));
        }
    }
}

/// The sequence of updated keys: xorshift64*.
struct Keys(u64);

impl Keys {
    fn next(&mut self, n: usize) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 16) % n as u64
    }
}

fn as_bytes(records: &[Record]) -> &[u8] {
    unsafe { std::slice::from_raw_parts(records.as_ptr() as *const u8, std::mem::size_of_val(records)) }
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let n = unsafe { libc::write(fd, bytes.as_ptr() as *const libc::c_void, bytes.len()) };
        if n <= 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Reads exactly `buf.len()` bytes; false at an early end of file or an error.
fn read_exact(fd: libc::c_int, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr() as *mut libc::c_void, buf.len() - done) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// The child: streams the snapshot, then the checksum of what it sent, and exits.
fn stream_snapshot(store: &[Record], fd: libc::c_int) -> ! {
    let mut sum = Checksum::new();
    for chunk in store.chunks(CHUNK_RECORDS) {
        sum.add_records(chunk);
        if !write_all(fd, as_bytes(chunk)) {
            unsafe { libc::_exit(2) };
        }
    }
    let ok = write_all(fd, &sum.0.to_ne_bytes());
    unsafe { libc::_exit(if ok { 0 } else { 3 }) }
}

fn main() {
    let o = parse_options();
    if let Some(f) = o.folio {
        tessera_prctl(PR_SET_FOLIO, if f == "4k" { 4096 } else { 65536 }, 0);
    }
    if let Some(m) = o.fork {
        tessera_prctl(PR_SET_FORK_MODE, (m == "share") as libc::c_ulong, 0);
    }
    let fork_mode = match tessera_prctl(PR_GET_FORK_MODE, 0, 0) {
        Some(1) => "share",
        Some(_) => "copy",
        None => o.fork.unwrap_or("copy"),
    };
    println!("kvsnap: {} MiB, folio {}, fork {fork_mode}", o.mib, o.folio.unwrap_or("64k"));

    let n = o.mib * (1 << 20) / RECORD_BYTES;
    let mut store: Vec<Record> = (0..n as u64).map(|k| record(k, 0)).collect();
    let mut at_fork = Checksum::new();
    at_fork.add_records(&store);

    let mut p = [0 as libc::c_int; 2];
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        fail("pipe");
    }
    std::io::stdout().flush().unwrap();
    let before = counters();
    let t0 = now_ns();
    let pid = unsafe { libc::fork() };
    let fork_ns = now_ns() - t0;
    if pid < 0 {
        fail("fork");
    }
    if pid == 0 {
        unsafe { libc::close(p[0]) };
        stream_snapshot(&store, p[1]);
    }
    unsafe { libc::close(p[1]) };

    let mut keys = Keys(0x2545_f491_4f6c_dd1d);
    let mut version = 0u64;
    let mut received = Checksum::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut left = n * RECORD_BYTES;
    while left > 0 {
        let len = left.min(CHUNK_BYTES);
        if !read_exact(p[0], &mut buf[..len]) {
            eprintln!("kvsnap: FAILED: the stream ended {left} bytes early");
            exit(1);
        }
        received.add_bytes(&buf[..len]);
        left -= len;
        for _ in 0..o.updates {
            let k = keys.next(n);
            version += 1;
            store[k as usize] = record(k, version);
        }
    }
    let mut tail = [0u8; 8];
    if !read_exact(p[0], &mut tail) {
        eprintln!("kvsnap: FAILED: no checksum from the child");
        exit(1);
    }
    let child_sum = u64::from_ne_bytes(tail);
    let mut extra = [0u8; 1];
    if unsafe { libc::read(p[0], extra.as_mut_ptr() as *mut libc::c_void, 1) } != 0 {
        eprintln!("kvsnap: FAILED: more bytes than the snapshot");
        exit(1);
    }
    unsafe { libc::close(p[0]) };
    let mut st = 0;
    if unsafe { libc::waitpid(pid, &mut st, 0) } != pid {
        fail("waitpid");
    }
    if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
        eprintln!("kvsnap: FAILED: child status {st:#x}");
        exit(1);
    }
    let after = counters();

    if received.0 != at_fork.0 || child_sum != at_fork.0 {
        eprintln!(
            "kvsnap: FAILED: checksums differ: at fork {:#x}, received {:#x}, child {child_sum:#x}",
            at_fork.0, received.0
        );
        exit(1);
    }
    println!("kvsnap: snapshot checksum ok ({:#x})", at_fork.0);

    // Replays the update sequence: each key's last version.
    let mut versions = vec![0u64; n];
    let mut replay = Keys(0x2545_f491_4f6c_dd1d);
    for v in 1..=version {
        versions[replay.next(n) as usize] = v;
    }
    for (k, r) in store.iter().enumerate() {
        if *r != record(k as u64, versions[k]) {
            eprintln!("kvsnap: FAILED: record {k} is not at version {}", versions[k]);
            exit(1);
        }
    }
    println!("kvsnap: {version} updates ok");
    println!("kvsnap: fork latency {fork_ns} ns");
    match (before, after) {
        (Some(b), Some(a)) => {
            let faults: u64 = (1..=4).map(|i| a[i] - b[i]).sum();
            println!("kvsnap: cow faults {faults}, bytes copied {}", a[6] - b[6]);
        }
        _ => println!("kvsnap: cow faults n/a, bytes copied n/a"),
    }
    println!("kvsnap: ok");
}
