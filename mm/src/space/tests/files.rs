//! Memory-backed files: read-only objects mapped shared (read-only) or private (writes copy
//! through the object's fault handler), past-EOF bus errors, fork, pins, and the private
//! mapping of an anonymous shared-memory object.

use super::*;
use crate::vma::{MapAlign, Placement, VmProt, VmaKind};
use crate::CONT_PTES;

const BASE: u64 = 0x30_0000_0000;
const KB64: u64 = 64 << 10;

/// File contents: a pattern that differs per byte and per page.
fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ (i >> 12) as u8 ^ 0x5a)
        .collect()
}

fn shared(obj: &Shm, offset: u64) -> VmaKind<Shm> {
    VmaKind::Shared {
        obj: obj.clone(),
        offset,
    }
}

fn private(obj: &Shm, offset: u64) -> VmaKind<Shm> {
    VmaKind::FilePrivate {
        obj: obj.clone(),
        offset,
    }
}

fn map(
    m: &mut TestMachine<'_>,
    s: &mut Space,
    va: u64,
    len: u64,
    prot: VmProt,
    kind: VmaKind<Shm>,
) -> Result<VirtAddr, SpaceError> {
    s.mmap(
        m,
        Placement::Fixed(VirtAddr(va)),
        len,
        prot,
        kind,
        MapAlign::Size64K,
    )
}

fn pa_of(m: &TestMachine<'_>, s: &Space, va: u64) -> Option<u64> {
    s.peek(m, VirtAddr(va)).pa().map(|p| p.0)
}

/// The object's page holding byte `off`.
fn obj_page(obj: &Shm, off: u64) -> u64 {
    obj.lookup(off).expect("object page").0 .0
}

/// The bytes of the object page at `off` in RAM.
fn obj_bytes(m: &TestMachine<'_>, obj: &Shm, off: u64) -> Vec<u8> {
    let mut b = vec![0; KB4];
    m.read_bytes(PhysAddr(obj_page(obj, off)), &mut b);
    b
}

fn page(d: &[u8], n: usize) -> Vec<u8> {
    let mut p = vec![0; KB4];
    let from = (n * KB4).min(d.len());
    let to = ((n + 1) * KB4).min(d.len());
    p[..to - from].copy_from_slice(&d[from..to]);
    p
}

#[test]
fn a_file_object_holds_its_data_in_large_folios_where_aligned() {
    with_machine(|m| {
        let d = data(20 * KB4 + 100);
        let obj = Shm::file(m, &d).unwrap();
        assert!(obj.is_read_only());
        assert_eq!(obj.size(), Some(d.len() as u64));
        let anon = Shm::new();
        assert_eq!(anon.size(), None);
        assert!(!anon.is_read_only());
        assert!(anon.release(m));
        // One 64 KiB folio, then 4 KiB ones up to the last (partial) page.
        assert_eq!(obj.folios(), 1 + 5);
        assert_eq!(obj.lookup(0).unwrap().2, FolioOrder::CONT);
        assert_eq!(obj.lookup(16 * PAGE_SIZE).unwrap().2, FolioOrder::SMALL);
        assert_eq!(m.frames_out(), 21);
        for n in 0..21 {
            assert_eq!(obj_bytes(m, &obj, n as u64 * PAGE_SIZE), page(&d, n), "page {n}");
        }
        assert!(!obj.past_eof(20 * PAGE_SIZE + 4095));
        assert!(obj.past_eof(21 * PAGE_SIZE));
        assert!(obj.lookup(21 * PAGE_SIZE).is_none());
        assert!(format!("{obj:?}").contains("file of 82020 bytes"));
        // An empty file has no page.
        let empty = Shm::file(m, &[]).unwrap();
        assert_eq!(empty.folios(), 0);
        assert!(empty.past_eof(0));
        assert!(empty.release(m));
        assert!(obj.release(m));
        assert_eq!(m.frames_out(), 0);
    });
}

#[test]
fn reads_map_the_file_pages_themselves() {
    with_machine(|m| {
        let d = data(KB64 as usize + 3 * KB4 + 10);
        let obj = Shm::file(m, &d).unwrap();
        let out = m.frames_out();
        let mut s = new_space(m);
        map(m, &mut s, BASE, 2 * KB64, VmProt::READ, shared(&obj, 0)).unwrap();
        map(m, &mut s, BASE + 4 * KB64, 2 * KB64, VmProt::RW, private(&obj, 0)).unwrap();
        for base in [BASE, BASE + 4 * KB64] {
            for n in [0, 5, 16, 19] {
                let va = base + n as u64 * PAGE_SIZE;
                assert_eq!(read(m, &mut s, va, KB4).unwrap(), page(&d, n));
                assert_eq!(
                    pa_of(m, &s, va),
                    Some(obj_page(&obj, n as u64 * PAGE_SIZE)),
                    "the object's page is mapped, not a copy"
                );
                check(m, &[&s]);
            }
            // The 64 KiB file folio is mapped whole, folded (read-only in the private one).
            assert!(folded(m, &s, base + 7 * PAGE_SIZE));
            let d = s.root().pte_get(m, VirtAddr(base)).unwrap();
            assert!(!d.writable());
        }
        assert_eq!(m.frames_out(), out, "reads allocate no page");
        assert_eq!(s.stats().file_cow, 0);
        assert_eq!(s.stats().shm_pages_mapped, 2 * (CONT_PTES as u64 + 2));
        // The tail of the last page reads as zero.
        let last = BASE + 19 * PAGE_SIZE;
        assert_eq!(read(m, &mut s, last + 10, 4).unwrap(), [0; 4]);
        check(m, &[&s]);
        assert!(!obj.release(m), "the regions still hold the file");
        teardown(m, vec![s]);
    });
}

#[test]
fn a_private_write_copies_the_page_once_and_changes_nothing_else() {
    with_machine(|m| {
        let d = data(KB64 as usize + 4 * KB4);
        let obj = Shm::file(m, &d).unwrap();
        let mut s = new_space(m);
        let mut o = new_space(m);
        map(m, &mut s, BASE, 2 * KB64, VmProt::RW, private(&obj, 0)).unwrap();
        map(
            m,
            &mut s,
            BASE + 4 * KB64,
            2 * KB64,
            VmProt::READ,
            shared(&obj, 0),
        )
        .unwrap();
        map(m, &mut o, BASE, 2 * KB64, VmProt::RW, private(&obj, 0)).unwrap();
        read(m, &mut o, BASE + 17 * PAGE_SIZE, 1).unwrap();
        read(m, &mut s, BASE + 4 * KB64, 1).unwrap();

        // A write to a page never touched: one fault, one copy, nothing mapped first.
        let out = m.frames_out();
        let f = write(m, &mut s, BASE + 17 * PAGE_SIZE + 8, b"private").unwrap();
        assert_eq!(f.n, 1, "one fault");
        assert_eq!(s.stats().file_cow, 1);
        assert_eq!(s.stats().shm_pages_mapped, CONT_PTES as u64, "not map-then-copy");
        assert_eq!(m.frames_out(), out + 1, "one page");
        let new = pa_of(m, &s, BASE + 17 * PAGE_SIZE).unwrap();
        assert_ne!(new, obj_page(&obj, 17 * PAGE_SIZE));
        let mut want = page(&d, 17);
        want[8..15].copy_from_slice(b"private");
        assert_eq!(read(m, &mut s, BASE + 17 * PAGE_SIZE, KB4).unwrap(), want);
        check(m, &[&s, &o]);

        // A write to a page mapped read-only from the file (inside the folded block).
        let file_folio = m.mem().folio(PhysAddr(obj_page(&obj, 0))).unwrap();
        let mapped = file_folio.mapcount();
        read(m, &mut s, BASE + 3 * PAGE_SIZE, 1).unwrap();
        assert!(folded(m, &s, BASE));
        assert_eq!(file_folio.mapcount(), mapped + CONT_PTES as u32);
        let f = write(m, &mut s, BASE + 3 * PAGE_SIZE, b"W").unwrap();
        assert_eq!(f.n, 1);
        assert_eq!(s.stats().file_cow, 2);
        assert_eq!(
            file_folio.mapcount(),
            mapped + CONT_PTES as u32 - 1,
            "the old mapping is gone"
        );
        assert!(!folded(m, &s, BASE), "the block is no longer one folio");
        for n in [0, 2, 4, 15] {
            let va = BASE + n as u64 * PAGE_SIZE;
            assert_eq!(pa_of(m, &s, va), Some(obj_page(&obj, n as u64 * PAGE_SIZE)));
        }
        let f = write(m, &mut s, BASE + 3 * PAGE_SIZE + 1, b"X").unwrap();
        assert_eq!(f.n, 0, "writable now");
        check(m, &[&s, &o]);

        // The file, the shared mapping and the other space still see the file's data.
        for n in [3, 17] {
            let off = n as u64 * PAGE_SIZE;
            assert_eq!(obj_bytes(m, &obj, off), page(&d, n));
            assert_eq!(read(m, &mut s, BASE + 4 * KB64 + off, KB4).unwrap(), page(&d, n));
            assert_eq!(read(m, &mut o, BASE + off, KB4).unwrap(), page(&d, n));
        }
        // The copies are ordinary private anon pages: exclusive, writable.
        let (folio, idx) = m
            .mem()
            .folio_page(PhysAddr(pa_of(m, &s, BASE + 3 * PAGE_SIZE).unwrap()))
            .unwrap();
        assert!(folio.is_anon() && folio.is_anon_exclusive(idx));
        // DONTNEED drops the copies: the file's data again.
        s.madvise_dontneed(m, VirtAddr(BASE), 2 * KB64).unwrap();
        assert_eq!(read(m, &mut s, BASE + 3 * PAGE_SIZE, KB4).unwrap(), page(&d, 3));
        assert_eq!(m.frames_out(), out);
        check(m, &[&s, &o]);
        obj.release(m);
        teardown(m, vec![s, o]);
    });
}

#[test]
fn a_read_only_file_is_never_mapped_shared_and_writable() {
    with_machine(|m| {
        let d = data(3 * KB4);
        let obj = Shm::file(m, &d).unwrap();
        let mut s = new_space(m);
        // Something already mapped where the refused mapping would go: it must survive.
        map(m, &mut s, BASE, KB64, VmProt::RW, VmaKind::AnonPrivate).unwrap();
        write(m, &mut s, BASE, b"anon").unwrap();
        for prot in [VmProt::RW, VmProt::WRITE, VmProt::from_bits_truncate(7)] {
            assert_eq!(
                map(m, &mut s, BASE, KB64, prot, shared(&obj, 0)),
                Err(SpaceError::ReadOnly)
            );
        }
        assert_eq!(read(m, &mut s, BASE, 4).unwrap(), b"anon");
        assert_eq!(s.regions().len(), 1);
        // Read-only (and executable) shared mappings are fine, so are writable private ones.
        map(m, &mut s, BASE + KB64, KB64, VmProt::READ, shared(&obj, 0)).unwrap();
        map(m, &mut s, BASE + 2 * KB64, KB64, VmProt::RX, shared(&obj, 0)).unwrap();
        map(m, &mut s, BASE + 3 * KB64, KB64, VmProt::RW, private(&obj, 0)).unwrap();
        read(m, &mut s, BASE + KB64, 1).unwrap();
        // A write to the shared mapping is a segmentation fault, not a write to the file.
        let e = write(m, &mut s, BASE + KB64 + 5, b"x").unwrap_err();
        assert_eq!(
            e,
            FaultError::Segv {
                va: VirtAddr(BASE + KB64 + 5),
                cause: SegvCause::Access
            }
        );
        // mprotect cannot add WRITE to any part of it, alone or with other regions.
        let regions: Vec<_> = s.regions().iter().cloned().collect();
        for (va, len) in [
            (BASE + KB64, PAGE_SIZE),
            (BASE + KB64 + PAGE_SIZE, KB64 - PAGE_SIZE),
            (BASE, 2 * KB64),
            (BASE + KB64, 3 * KB64),
            // Partly unmapped: still refused for the file first.
            (BASE + KB64, 8 * KB64),
        ] {
            assert_eq!(
                s.mprotect(m, VirtAddr(va), len, VmProt::RW),
                Err(SpaceError::ReadOnly),
                "{va:#x}+{len:#x}"
            );
            assert_eq!(s.regions().iter().cloned().collect::<Vec<_>>(), regions);
        }
        drop(regions);
        assert_eq!(read(m, &mut s, BASE + KB64 + 5, 1).unwrap(), [d[5]]);
        check(m, &[&s]);
        s.mprotect(m, VirtAddr(BASE + KB64), KB64, VmProt::NONE).unwrap();
        s.mprotect(m, VirtAddr(BASE + KB64), KB64, VmProt::RX).unwrap();
        s.mprotect(m, VirtAddr(BASE + 3 * KB64), KB64, VmProt::READ)
            .unwrap();
        s.mprotect(m, VirtAddr(BASE + 3 * KB64), KB64, VmProt::RW)
            .unwrap();
        write(m, &mut s, BASE + 3 * KB64, b"mine").unwrap();
        assert_eq!(obj_bytes(m, &obj, 0), page(&d, 0));
        assert_eq!(
            SpaceError::ReadOnly.to_string(),
            "a read-only file cannot be mapped shared and writable"
        );
        check(m, &[&s]);
        obj.release(m);
        teardown(m, vec![s]);
    });
}

/// A refused writable shared mapping of a read-only file, given the file's last handle,
/// releases the file: every one of its frames comes back.
#[test]
fn a_refused_mapping_of_the_last_handle_releases_the_file() {
    with_machine(|m| {
        let obj = Shm::file(m, &[1u8; 2 * KB4]).unwrap();
        assert_eq!(m.frames_out(), 2);
        let mut s = new_space(m);
        let kind = VmaKind::Shared { obj, offset: 0 };
        let r = s.mmap(m, Placement::Any, PAGE_SIZE, VmProt::RW, kind, MapAlign::Page);
        assert_eq!(r, Err(SpaceError::ReadOnly));
        assert_eq!(m.frames_out(), 0, "the refused mapping released the file");
        // The same for a refusal of the region layer.
        let obj = Shm::file(m, &[2u8; KB4]).unwrap();
        let kind = VmaKind::FilePrivate { obj, offset: 1 };
        let r = s.mmap(m, Placement::Any, PAGE_SIZE, VmProt::RW, kind, MapAlign::Page);
        assert_eq!(r, Err(SpaceError::Vma(crate::vma::VmaError::BadOffset)));
        assert_eq!(m.frames_out(), 0, "the refused mapping released the file");
        check(m, &[&s]);
        teardown(m, vec![s]);
    });
}

/// `peek` tells a page that reads as zero from one past the end of a file, and both from an
/// address no region contains.
#[test]
fn peek_tells_zero_pages_from_pages_past_the_end() {
    with_machine(|m| {
        let file = Shm::file(m, &data(KB4 + 10)).unwrap();
        let anon = Shm::new();
        let mut s = new_space(m);
        map(m, &mut s, BASE, KB64, VmProt::READ, shared(&file, 0)).unwrap();
        map(m, &mut s, BASE + KB64, KB64, VmProt::RW, private(&file, 0)).unwrap();
        map(m, &mut s, BASE + 2 * KB64, KB64, VmProt::RW, shared(&anon, 0)).unwrap();
        map(m, &mut s, BASE + 3 * KB64, KB64, VmProt::RW, VmaKind::AnonPrivate).unwrap();
        let peek = |m: &TestMachine<'_>, s: &Space, va: u64| s.peek(m, VirtAddr(va));
        let page1 = PhysAddr(obj_page(&file, PAGE_SIZE) + 5);
        for base in [BASE, BASE + KB64] {
            assert_eq!(peek(m, &s, base + PAGE_SIZE + 5), Peek::Page(page1));
            assert_eq!(peek(m, &s, base + 2 * PAGE_SIZE), Peek::PastEof);
        }
        assert_eq!(peek(m, &s, BASE + 2 * KB64 + 9), Peek::Zero, "no object page yet");
        assert_eq!(peek(m, &s, BASE + 3 * KB64), Peek::Zero, "never touched");
        write(m, &mut s, BASE + 3 * KB64, b"x").unwrap();
        assert!(matches!(peek(m, &s, BASE + 3 * KB64), Peek::Page(_)));
        s.madvise_dontneed(m, VirtAddr(BASE + 3 * KB64), PAGE_SIZE)
            .unwrap();
        assert_eq!(peek(m, &s, BASE + 3 * KB64), Peek::Zero, "dropped");
        for va in [BASE - 1, BASE + 4 * KB64, USER_END, u64::MAX] {
            assert_eq!(peek(m, &s, va), Peek::Unmapped, "{va:#x}");
        }
        assert_eq!(Peek::Page(page1).pa(), Some(page1));
        assert_eq!(Peek::PastEof.pa(), None);
        check(m, &[&s]);
        file.release(m);
        anon.release(m);
        teardown(m, vec![s]);
    });
}

#[test]
fn past_the_end_of_a_file_is_a_bus_error() {
    with_machine(|m| {
        let d = data(KB4 + 10);
        let obj = Shm::file(m, &d).unwrap();
        let mut s = new_space(m);
        map(m, &mut s, BASE, KB64, VmProt::READ, shared(&obj, 0)).unwrap();
        map(m, &mut s, BASE + KB64, KB64, VmProt::RW, private(&obj, 0)).unwrap();
        // A mapping starting past the end.
        map(m, &mut s, BASE + 2 * KB64, KB64, VmProt::RW, private(&obj, KB64)).unwrap();
        let out = m.frames_out();
        // Inside the last page: data, then zeroes.
        assert_eq!(
            read(m, &mut s, BASE + KB4 as u64 + 8, 4).unwrap(),
            [d[KB4 + 8], d[KB4 + 9], 0, 0]
        );
        for base in [BASE, BASE + KB64] {
            let va = base + 2 * PAGE_SIZE + 77;
            assert_eq!(read(m, &mut s, va, 1), Err(FaultError::Bus { va: VirtAddr(va) }));
            assert_eq!(s.peek(m, VirtAddr(va)), Peek::PastEof);
        }
        let before = m.model.snapshot();
        let va = BASE + KB64 + 5 * PAGE_SIZE + 1;
        assert_eq!(
            write(m, &mut s, va, b"x"),
            Err(FaultError::Bus { va: VirtAddr(va) })
        );
        assert_eq!(
            write(m, &mut s, BASE + 2 * KB64, b"x"),
            Err(FaultError::Bus {
                va: VirtAddr(BASE + 2 * KB64)
            })
        );
        assert_eq!(m.frames_out(), out, "the destination pages went back");
        assert_eq!(m.model.snapshot(), before, "the tables did not change");
        // A pin fails at the first page past the end (releasing the pins it took).
        assert_eq!(
            s.pin(m, VirtAddr(BASE + KB64), 3 * PAGE_SIZE, false).unwrap_err(),
            FaultError::Bus {
                va: VirtAddr(BASE + KB64 + 2 * PAGE_SIZE)
            }
        );
        assert_eq!(m.frames_out(), out);
        assert_eq!(s.stats().bus, 5);
        assert_eq!(s.stats().file_cow, 0);
        assert_eq!(
            FaultError::Bus { va: VirtAddr(0x1000) }.to_string(),
            "bus error at 0x1000: past the end of the file"
        );
        // The pages before the end still work, privately too.
        write(m, &mut s, BASE + KB64 + PAGE_SIZE + 9, b"ok").unwrap();
        assert_eq!(read(m, &mut s, BASE + PAGE_SIZE + 9, 1).unwrap(), [d[KB4 + 9]]);
        check(m, &[&s]);
        obj.release(m);
        teardown(m, vec![s]);
    });
}

#[test]
fn fork_shares_file_pages_and_private_copies_stay_copy_on_write() {
    with_machine(|m| {
        let d = data(2 * KB64 as usize);
        let obj = Shm::file(m, &d).unwrap();
        let mut p = new_space(m);
        map(m, &mut p, BASE, 2 * KB64, VmProt::RW, private(&obj, 0)).unwrap();
        // The first block mapped from the file (folded), one page of the second copied.
        read(m, &mut p, BASE, 1).unwrap();
        write(m, &mut p, BASE + KB64 + 2 * PAGE_SIZE, b"parent").unwrap();
        let copy = pa_of(m, &p, BASE + KB64 + 2 * PAGE_SIZE).unwrap();
        let mut c = fork(m, &mut p).unwrap();
        check(m, &[&p, &c]);
        assert_eq!(p.stats().fork_file_batches, 1, "one run: the folded block");
        assert!(folded(m, &c, BASE), "the child maps the file folio folded too");
        for n in [0, 9] {
            let va = BASE + n as u64 * PAGE_SIZE;
            assert_eq!(pa_of(m, &c, va), Some(obj_page(&obj, n as u64 * PAGE_SIZE)));
            assert!(!c.root().pte_get(m, VirtAddr(va)).unwrap().writable());
        }
        assert_eq!(pa_of(m, &c, BASE + KB64 + 2 * PAGE_SIZE), Some(copy));
        assert_eq!(
            read(m, &mut c, BASE + KB64 + 2 * PAGE_SIZE, 6).unwrap(),
            b"parent"
        );
        // The child writes a file page: its own copy. The parent's view is unchanged.
        write(m, &mut c, BASE + 9 * PAGE_SIZE, b"child").unwrap();
        assert_eq!(c.stats().file_cow, 1);
        assert_eq!(read(m, &mut p, BASE + 9 * PAGE_SIZE, KB4).unwrap(), page(&d, 9));
        check(m, &[&p, &c]);
        // The private copy made before fork is anon copy-on-write as usual.
        write(m, &mut c, BASE + KB64 + 2 * PAGE_SIZE, b"CHILD").unwrap();
        assert_eq!(c.stats().cow_copy_4k, 1);
        assert_eq!(
            read(m, &mut p, BASE + KB64 + 2 * PAGE_SIZE, 6).unwrap(),
            b"parent"
        );
        write(m, &mut p, BASE + KB64 + 2 * PAGE_SIZE, b"P").unwrap();
        assert_eq!(p.stats().cow_reuse_4k, 1, "the parent's copy is its own again");
        assert_eq!(pa_of(m, &p, BASE + KB64 + 2 * PAGE_SIZE), Some(copy));
        check(m, &[&p, &c]);
        // Exits in either order leave the file intact.
        c.exit(m);
        check(m, &[&p]);
        assert_eq!(obj_bytes(m, &obj, 9 * PAGE_SIZE), page(&d, 9));
        assert_eq!(read(m, &mut p, BASE + 9 * PAGE_SIZE, KB4).unwrap(), page(&d, 9));
        obj.release(m);
        teardown(m, vec![p]);
    });
}

#[test]
fn pins_of_private_file_mappings() {
    with_machine(|m| {
        let d = data(4 * KB4);
        let obj = Shm::file(m, &d).unwrap();
        let mut s = new_space(m);
        map(m, &mut s, BASE, 4 * PAGE_SIZE, VmProt::RW, private(&obj, 0)).unwrap();
        // A read pin pins the file's page itself; a write pin makes a private copy first.
        let r = s.pin(m, VirtAddr(BASE), PAGE_SIZE, false).unwrap();
        assert_eq!(r.pages()[0].0, obj_page(&obj, 0));
        let w = s.pin(m, VirtAddr(BASE + PAGE_SIZE), PAGE_SIZE, true).unwrap();
        assert_ne!(w.pages()[0].0, obj_page(&obj, PAGE_SIZE));
        assert_eq!(s.stats().file_cow, 1);
        check(m, &[&s]);
        // Writing the read-pinned page copies it away from the pin (the file is not
        // written), as after a read pin of any private file page.
        write(m, &mut s, BASE, b"x").unwrap();
        assert_eq!(m.page_data(r.pages()[0].0).unwrap()[..], page(&d, 0)[..]);
        r.release(m);
        w.release(m);
        check(m, &[&s]);
        obj.release(m);
        teardown(m, vec![s]);
    });
}

#[test]
fn private_mapping_of_a_shared_memory_object() {
    with_machine(|m| {
        let obj = Shm::new();
        let mut a = new_space(m);
        let mut b = new_space(m);
        map(m, &mut a, BASE, KB64, VmProt::RW, shared(&obj, 0)).unwrap();
        map(m, &mut b, BASE, 3 * KB64, VmProt::RW, private(&obj, 0)).unwrap();
        write(m, &mut a, BASE, b"hello").unwrap();
        // The private mapping reads the object's page until it writes.
        assert_eq!(read(m, &mut b, BASE, 5).unwrap(), b"hello");
        assert_eq!(pa_of(m, &b, BASE), pa_of(m, &a, BASE));
        write(m, &mut a, BASE, b"world").unwrap();
        assert_eq!(read(m, &mut b, BASE, 5).unwrap(), b"world");
        write(m, &mut b, BASE + 1, b"O").unwrap();
        assert_eq!(b.stats().file_cow, 1);
        write(m, &mut a, BASE, b"again").unwrap();
        assert_eq!(read(m, &mut b, BASE, 5).unwrap(), b"wOrld");
        check(m, &[&a, &b]);
        // A read of a page the object does not have allocates it there (zeroed) and maps
        // it read-only; a write to one copies zeroes without allocating it.
        let folios = obj.folios();
        write(m, &mut b, BASE + KB64 + 6 * PAGE_SIZE, b"z").unwrap();
        assert_eq!(obj.folios(), folios, "a write copies from nothing");
        assert_eq!(read(m, &mut b, BASE + KB64 + 6 * PAGE_SIZE, 2).unwrap(), b"z\0");
        let block = BASE + 2 * KB64;
        assert_eq!(read(m, &mut b, block + 3, 1).unwrap(), [0]);
        assert_eq!(obj.folios(), folios + 1);
        assert!(folded(m, &b, block), "a fresh 64 KiB object folio, mapped whole");
        assert!(!b.root().pte_get(m, VirtAddr(block)).unwrap().writable());
        write(m, &mut a, BASE + KB64 - 1, b"!").unwrap();
        check(m, &[&a, &b]);
        obj.release(m);
        teardown(m, vec![a, b]);
    });
}

#[test]
fn check_notices_a_writable_file_page_in_a_private_mapping() {
    with_machine(|m| {
        let d = data(KB4);
        let obj = Shm::file(m, &d).unwrap();
        let mut s = new_space(m);
        map(m, &mut s, BASE, PAGE_SIZE, VmProt::RW, private(&obj, 0)).unwrap();
        read(m, &mut s, BASE, 1).unwrap();
        check(m, &[&s]);
        // Make the file page writable behind the fault handler's back.
        ptes::update(&mut s.root, m, BASE, crate::AccessUpdate::MADE_WRITABLE);
        assert_eq!(s.check(m), Err(SpaceCheckError::Backing(VirtAddr(BASE))));
        s.madvise_dontneed(m, VirtAddr(BASE), PAGE_SIZE).unwrap();
        check(m, &[&s]);
        obj.release(m);
        teardown(m, vec![s]);
    });
}
