//! Allocation failure injected at every allocation point (table frames and folios counted
//! together) of fault, COW, fork, pin, file creation and file copy-on-write: the operation
//! fails with nothing changed or succeeds by a documented fallback; nothing leaks; every
//! space stays consistent and keeps its data.

use super::*;
use crate::vma::{MapAlign, Placement, VmProt, VmaKind};

const BASE: u64 = 0x20_0000_0000;
const KB64: u64 = 64 << 10;

/// Bytes written at an address.
type Writes = Vec<(u64, Vec<u8>)>;

fn expect(m: &mut TestMachine<'_>, s: &mut Space, writes: &Writes) {
    for (va, data) in writes {
        assert_eq!(
            &read(m, s, *va, data.len()).unwrap(),
            data,
            "data at {va:#x} in {:?}",
            s.id()
        );
    }
}

fn pins_total(m: &TestMachine<'_>) -> u32 {
    m.mem().folios().map(|f| f.pincount()).sum()
}

/// Runs `scenario(m, n, persistent)` for n = 1, 2, … with the n-th allocation of its
/// operation failing — once (a transient failure: fallbacks are taken) and from then on
/// (memory exhausted: fallbacks fail too) — until an attempt completes without reaching the
/// n-th allocation. The scenario arms the failure with [`TestMachine::arm`] around its
/// operations and returns whether one was injected. Returns how many allocation points were
/// exercised.
fn every_point(mut scenario: impl FnMut(&mut TestMachine<'_>, u64, bool) -> bool) -> u64 {
    for n in 1.. {
        let once = with_machine(|m| scenario(m, n, false));
        let persistent = with_machine(|m| scenario(m, n, true));
        assert_eq!(once, persistent, "the n-th allocation is reached either way");
        if !once {
            return n - 1;
        }
        assert!(n < 200, "no end to the allocations");
    }
    unreachable!()
}

/// A parent with: a 64 KiB-folio region (three blocks written, one of them only in part), a
/// page-granular region, a pinned page, a shared region and a PROT_NONE page with contents.
fn parent(m: &mut TestMachine<'_>) -> (Space, Writes, PinHandle) {
    let mut p = new_space(m);
    let fixed = |va| Placement::Fixed(VirtAddr(va));
    p.mmap(
        m,
        fixed(BASE),
        4 * KB64,
        VmProt::RW,
        VmaKind::AnonPrivate,
        MapAlign::Size64K,
    )
    .unwrap();
    p.mmap(
        m,
        fixed(BASE + 8 * KB64),
        6 * PAGE_SIZE,
        VmProt::RW,
        VmaKind::AnonPrivate,
        MapAlign::Page,
    )
    .unwrap();
    let obj = Shm::new();
    p.mmap(
        m,
        fixed(BASE + 16 * KB64),
        2 * KB64,
        VmProt::RW,
        VmaKind::Shared { obj, offset: 0 },
        MapAlign::Size64K,
    )
    .unwrap();
    let mut w: Writes = Vec::new();
    for (i, va) in [
        BASE + 1,
        BASE + KB64 + 7 * PAGE_SIZE,
        BASE + 3 * KB64 + 15 * PAGE_SIZE + 9,
        BASE + 8 * KB64 + 2,
        BASE + 8 * KB64 + 3 * PAGE_SIZE,
        BASE + 8 * KB64 + 5 * PAGE_SIZE + 100,
        BASE + 16 * KB64 + 17,
    ]
    .into_iter()
    .enumerate()
    {
        let data = format!("data{i}").into_bytes();
        write(m, &mut p, va, &data).unwrap();
        w.push((va, data));
    }
    // Drop part of the last block.
    p.madvise_dontneed(m, VirtAddr(BASE + 3 * KB64), 8 * PAGE_SIZE)
        .unwrap();
    // Pin one page of the second block.
    let pin = p.pin(m, VirtAddr(BASE + KB64 + 7 * PAGE_SIZE), 1, true).unwrap();
    // PROT_NONE with contents.
    p.mprotect(
        m,
        VirtAddr(BASE + 8 * KB64 + 5 * PAGE_SIZE),
        PAGE_SIZE,
        VmProt::NONE,
    )
    .unwrap();
    // Not readable any more (checked separately).
    w.remove(5);
    (p, w, pin)
}

#[test]
fn fork_fails_cleanly_at_every_allocation() {
    let points = every_point(|m, n, persistent| {
        let (mut p, w, pin) = parent(m);
        check(m, &[&p]);
        m.arm(n, persistent);
        let r = fork(m, &mut p);
        let failed = m.failed;
        m.fail_nth(None);
        match r {
            Ok(mut c) => {
                assert!(!failed, "fork succeeded although an allocation failed");
                check(m, &[&p, &c]);
                expect(m, &mut c, &w);
                expect(m, &mut p, &w);
                // Copy-on-write works both ways.
                write(m, &mut c, BASE + 1, b"child").unwrap();
                expect(m, &mut p, &w);
                check(m, &[&p, &c]);
                c.exit(m);
            }
            Err(e) => {
                assert!(failed);
                assert_eq!(e, SpaceError::OutOfMemory);
                check(m, &[&p]);
                expect(m, &mut p, &w);
            }
        }
        // The pin still reaches the parent's page.
        m.write_bytes(pin.pages()[0], b"DMA");
        let got = read(m, &mut p, BASE + KB64 + 7 * PAGE_SIZE, 3).unwrap();
        assert_eq!(got, b"DMA");
        p.unpin(m, pin);
        // PROT_NONE contents survived.
        p.mprotect(
            m,
            VirtAddr(BASE + 8 * KB64 + 5 * PAGE_SIZE),
            PAGE_SIZE,
            VmProt::READ,
        )
        .unwrap();
        assert_eq!(
            read(m, &mut p, BASE + 8 * KB64 + 5 * PAGE_SIZE + 100, 5).unwrap(),
            b"data5"
        );
        check(m, &[&p]);
        teardown(m, vec![p]);
        failed
    });
    assert!(points >= 8, "only {points} allocation points in fork");
}

#[test]
fn faults_fail_cleanly_at_every_allocation() {
    // Translation faults in an empty space: a 64 KiB block, a page, a shared page.
    let points = every_point(|m, n, persistent| {
        let mut s = new_space(m);
        let fixed = |va| Placement::Fixed(VirtAddr(va));
        s.mmap(
            m,
            fixed(BASE),
            KB64,
            VmProt::RW,
            VmaKind::AnonPrivate,
            MapAlign::Size64K,
        )
        .unwrap();
        s.mmap(
            m,
            fixed(BASE + (4 << 20)),
            PAGE_SIZE,
            VmProt::RW,
            VmaKind::AnonPrivate,
            MapAlign::Page,
        )
        .unwrap();
        s.mmap(
            m,
            fixed(BASE + (1 << 30)),
            KB64,
            VmProt::RW,
            VmaKind::Shared {
                obj: Shm::new(),
                offset: 0,
            },
            MapAlign::Size64K,
        )
        .unwrap();
        let mut failed = false;
        for va in [BASE + 5, BASE + (4 << 20) + 5, BASE + (1 << 30) + 5] {
            let out = m.frames_out();
            let tables = m.model.live_frames();
            let before = m.model.snapshot();
            m.arm(n, persistent);
            let r = write(m, &mut s, va, b"v");
            let f = m.failed;
            m.fail_nth(None);
            failed |= f;
            match r {
                Ok(_) => {}
                Err(e) => {
                    assert!(f);
                    assert_eq!(e, FaultError::Oom);
                    assert_eq!(m.frames_out(), out, "a folio leaked");
                    assert_eq!(m.model.live_frames(), tables, "a table leaked");
                    assert_eq!(m.model.snapshot(), before, "the tables changed");
                    write(m, &mut s, va, b"v").unwrap();
                }
            }
            check(m, &[&s]);
            assert_eq!(read(m, &mut s, va, 1).unwrap(), b"v");
        }
        teardown(m, vec![s]);
        failed
    });
    assert!(points >= 4, "only {points} allocation points");
}

#[test]
fn cow_fails_cleanly_at_every_allocation() {
    let points = every_point(|m, n, persistent| {
        let mut p = new_space(m);
        p.mmap(
            m,
            Placement::Fixed(VirtAddr(BASE)),
            KB64 + PAGE_SIZE,
            VmProt::RW,
            VmaKind::AnonPrivate,
            MapAlign::Size64K,
        )
        .unwrap();
        write(m, &mut p, BASE + 3, b"old").unwrap();
        write(m, &mut p, BASE + KB64, b"tail").unwrap();
        let mut c = fork(m, &mut p).unwrap();
        let mut failed = false;
        for (s, va) in [(0, BASE + PAGE_SIZE), (0, BASE + KB64), (1, BASE + 3)] {
            let sp = if s == 0 { &mut p } else { &mut c };
            let out = m.frames_out();
            m.arm(n, persistent);
            let r = write(m, sp, va, b"new");
            let f = m.failed;
            m.fail_nth(None);
            failed |= f;
            if let Err(e) = r {
                assert!(f);
                assert_eq!(e, FaultError::Oom);
                assert_eq!(m.frames_out(), out);
                check(m, &[&p, &c]);
                write(m, if s == 0 { &mut p } else { &mut c }, va, b"new").unwrap();
            }
            check(m, &[&p, &c]);
        }
        assert_eq!(read(m, &mut p, BASE + 3, 3).unwrap(), b"old");
        assert_eq!(read(m, &mut c, BASE + 3, 3).unwrap(), b"new");
        assert_eq!(read(m, &mut c, BASE + PAGE_SIZE, 3).unwrap(), [0; 3]);
        assert_eq!(read(m, &mut c, BASE + KB64, 4).unwrap(), b"tail");
        assert_eq!(read(m, &mut p, BASE + KB64, 4).unwrap(), b"newl");
        teardown(m, vec![p, c]);
        failed
    });
    assert!(points >= 1, "only {points} allocation points");
}

#[test]
fn pin_fails_cleanly_at_every_allocation() {
    let points = every_point(|m, n, persistent| {
        let mut p = new_space(m);
        p.mmap(
            m,
            Placement::Fixed(VirtAddr(BASE)),
            4 * PAGE_SIZE + KB64,
            VmProt::RW,
            VmaKind::AnonPrivate,
            MapAlign::Page,
        )
        .unwrap();
        write(m, &mut p, BASE, b"a").unwrap();
        write(m, &mut p, BASE + 2 * PAGE_SIZE, b"b").unwrap();
        let c = fork(m, &mut p).unwrap();
        // Pages 0 and 2 are shared with the child (unshare by copy), 1 and 3 missing.
        m.arm(n, persistent);
        let r = p.pin(m, VirtAddr(BASE), 4 * PAGE_SIZE, n % 2 == 0);
        let failed = m.failed;
        m.fail_nth(None);
        match r {
            Ok(h) => {
                assert!(!failed);
                assert_eq!(h.len(), 4);
                assert_eq!(pins_total(m), 4);
                h.release(m);
            }
            Err(e) => {
                assert!(failed);
                assert_eq!(e, FaultError::Oom);
            }
        }
        assert_eq!(pins_total(m), 0, "a failed pin left pins behind");
        check(m, &[&p, &c]);
        assert_eq!(read(m, &mut p, BASE, 1).unwrap(), b"a");
        assert_eq!(read(m, &mut p, BASE + 2 * PAGE_SIZE, 1).unwrap(), b"b");
        teardown(m, vec![p, c]);
        failed
    });
    assert!(points >= 4, "only {points} allocation points");
}

/// File contents for the file tests: one 64 KiB folio and a partial tail.
fn file_data() -> Vec<u8> {
    (0..KB64 as usize + 3 * KB4 + 5)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// The page of `d` at byte `off`, zero-padded.
fn file_page(d: &[u8], off: usize) -> Vec<u8> {
    let mut p = vec![0; KB4];
    let end = (off + KB4).min(d.len());
    p[..end - off].copy_from_slice(&d[off..end]);
    p
}

#[test]
fn file_creation_fails_cleanly_at_every_allocation() {
    let d = file_data();
    let points = every_point(|m, n, persistent| {
        m.arm(n, persistent);
        let r = Shm::file(m, &d);
        let failed = m.failed;
        m.fail_nth(None);
        match r {
            Ok(obj) => {
                // A transient failure of the 64 KiB folio falls back to 4 KiB ones.
                let first = obj.lookup(0).unwrap().2;
                assert_eq!(first == FolioOrder::SMALL, failed);
                for off in (0..d.len()).step_by(KB4) {
                    let (pa, _, _) = obj.lookup(off as u64).unwrap();
                    let mut b = vec![0; KB4];
                    m.read_bytes(pa, &mut b);
                    assert_eq!(b, file_page(&d, off), "page at {off:#x}");
                }
                assert!(obj.release(m));
            }
            Err(e) => {
                assert!(failed);
                assert_eq!(e, SpaceError::OutOfMemory);
            }
        }
        assert_eq!(m.frames_out(), 0, "a folio leaked");
        failed
    });
    assert_eq!(points, 5, "one 64 KiB folio and four pages");
}

#[test]
fn file_cow_fails_cleanly_at_every_allocation() {
    let d = file_data();
    let points = every_point(|m, n, persistent| {
        let obj = Shm::file(m, &d).unwrap();
        let mut s = new_space(m);
        let private = |offset| VmaKind::FilePrivate {
            obj: obj.clone(),
            offset,
        };
        s.mmap(
            m,
            Placement::Fixed(VirtAddr(BASE)),
            KB64,
            VmProt::RW,
            private(0),
            MapAlign::Page,
        )
        .unwrap();
        s.mmap(
            m,
            Placement::Fixed(VirtAddr(BASE + (1 << 30))),
            KB64,
            VmProt::RW,
            private(KB64),
            MapAlign::Page,
        )
        .unwrap();
        read(m, &mut s, BASE + PAGE_SIZE, 1).unwrap();
        let mut failed = false;
        // A page mapped read-only from the file, a missing page, a missing page whose
        // tables are missing too.
        for (va, off) in [
            (BASE + PAGE_SIZE + 3, PAGE_SIZE + 3),
            (BASE + 2 * PAGE_SIZE, 2 * PAGE_SIZE),
            (BASE + (1 << 30) + 5, KB64 + 5),
        ] {
            let out = m.frames_out();
            let tables = m.model.live_frames();
            let before = m.model.snapshot();
            m.arm(n, persistent);
            let r = write(m, &mut s, va, b"v");
            let f = m.failed;
            m.fail_nth(None);
            failed |= f;
            if let Err(e) = r {
                assert!(f);
                assert_eq!(e, FaultError::Oom);
                assert_eq!(m.frames_out(), out, "the destination leaked");
                assert_eq!(m.model.live_frames(), tables, "a table leaked");
                assert_eq!(m.model.snapshot(), before, "the tables changed");
                check(m, &[&s]);
                write(m, &mut s, va, b"v").unwrap();
            }
            check(m, &[&s]);
            let page = va & !(PAGE_SIZE - 1);
            let mut want = file_page(&d, (off & !(PAGE_SIZE - 1)) as usize);
            want[(va - page) as usize] = b'v';
            assert_eq!(read(m, &mut s, page, KB4).unwrap(), want);
            let (pa, _, _) = obj.lookup(off).unwrap();
            let mut b = vec![0; KB4];
            m.read_bytes(pa, &mut b);
            assert_eq!(b, file_page(&d, (off & !(PAGE_SIZE - 1)) as usize), "the file");
        }
        assert!(!obj.release(m));
        teardown(m, vec![s]);
        failed
    });
    assert_eq!(points, 3, "the destination page and two tables");
}
