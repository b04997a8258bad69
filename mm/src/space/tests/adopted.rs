//! Files made of frames that already hold their bytes (`Shm::from_frames`): the frames are
//! mapped in place — shared read-only in several spaces, read through private mappings, across
//! fork — a private write copies into a frame of the frame source, and no adopted frame is ever
//! given to the frame source.

use super::*;
use crate::folio::FolioError;
use crate::vma::{MapAlign, Placement, VmProt, VmaKind};

const BASE: u64 = 0x30_0000_0000;
const KB64: u64 = 64 << 10;
/// The "image": 256 KiB of frames held outside the frame source.
const IMAGE: FolioOrder = match FolioOrder::new(6) {
    Some(o) => o,
    None => panic!("order 6"),
};

/// File contents: a pattern that differs per byte and per page.
fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ (i >> 12) as u8 ^ 0x3c)
        .collect()
}

fn map(m: &mut TestMachine<'_>, s: &mut Space, va: u64, len: u64, prot: VmProt, kind: VmaKind<Shm>) {
    s.mmap(m, Placement::Fixed(VirtAddr(va)), len, prot, kind, MapAlign::Page)
        .unwrap();
}

fn pa_of(m: &TestMachine<'_>, s: &Space, va: u64) -> Option<u64> {
    s.peek(m, VirtAddr(va)).pa().map(|p| p.0)
}

/// Carves the image, writes `d` at `image + at` with bytes that are not the file's around it,
/// and a zero-tailed copy of the last partial page into a carved tail page. Returns (image,
/// tail).
fn lay_out(m: &mut TestMachine<'_>, at: u64, d: &[u8]) -> (PhysAddr, Option<PhysAddr>) {
    let image = m.carve(IMAGE);
    m.write_bytes(image, &vec![0xEE; IMAGE.bytes() as usize]);
    m.write_bytes(PhysAddr(image.0 + at), d);
    let whole = d.len() & !(KB4 - 1);
    let tail = (whole != d.len()).then(|| {
        let t = m.carve(FolioOrder::SMALL);
        let mut page = vec![0; KB4];
        page[..d.len() - whole].copy_from_slice(&d[whole..]);
        m.write_bytes(t, &page);
        t
    });
    (image, tail)
}

#[test]
fn an_adopted_file_is_mapped_in_place_everywhere_and_never_freed() {
    with_machine(|m| {
        let size = 3 * KB64 as usize + 5 * KB4 + 100;
        let d = data(size);
        let (image, tail) = lay_out(m, 0, &d);
        let buddy = m.buddy_free();
        // SAFETY: the frames are carved out of the buddy for this test, hold the file and are
        // written by nothing else until they are given back, after the object is gone.
        let obj = unsafe { Shm::from_frames(m, size as u64, image, tail) }.unwrap();
        assert!(obj.is_read_only());
        assert_eq!(obj.size(), Some(size as u64));
        assert_eq!(
            obj.folios(),
            3 + 5 + 1,
            "64 KiB where aligned, then pages, then the tail"
        );
        assert_eq!(obj.lookup(0).unwrap().2, FolioOrder::CONT);
        assert_eq!(obj.lookup(3 * KB64).unwrap().2, FolioOrder::SMALL);
        for off in (0..3 * KB64 + 5 * KB4 as u64).step_by(KB4) {
            assert_eq!(obj.lookup(off).unwrap().0, PhysAddr(image.0 + off), "in place");
        }
        assert_eq!(obj.lookup(3 * KB64 + 5 * KB4 as u64).unwrap().0, tail.unwrap());
        assert!(m.mem().folio(image).unwrap().is_adopted());
        assert_eq!((m.frames_out(), m.buddy_free()), (0, buddy), "nothing allocated");

        // Two spaces map the file shared read-only: both reach the image frames themselves.
        let len = 4 * KB64;
        let mut a = new_space(m);
        let mut b = new_space(m);
        for s in [&mut a, &mut b] {
            let kind = VmaKind::Shared {
                obj: obj.clone(),
                offset: 0,
            };
            map(m, s, BASE, len, VmProt::READ | VmProt::EXEC, kind);
            for n in 0..size.div_ceil(KB4) {
                let va = BASE + (n * KB4) as u64;
                let want = &d[n * KB4..((n + 1) * KB4).min(size)];
                assert_eq!(read(m, s, va, want.len()).unwrap(), want, "page {n}");
            }
            assert!(folded(m, s, BASE + KB64), "a 64 KiB image folio is mapped folded");
            assert!(write(m, s, BASE, b"x").is_err(), "read-only");
        }
        for off in [0, KB64 + 3 * KB4 as u64, 3 * KB64 + 4 * KB4 as u64] {
            assert_eq!(pa_of(m, &a, BASE + off), Some(image.0 + off));
            assert_eq!(pa_of(m, &b, BASE + off), Some(image.0 + off));
        }
        // The tail page reads zero after the file's end, not the image's bytes.
        let end = BASE + size as u64;
        assert_eq!(read(m, &mut a, end, 16).unwrap(), [0; 16]);
        check(m, &[&a, &b]);
        assert_eq!(m.mem().folio(image).unwrap().mapcount(), 2 * 16);

        // A private mapping reads the image in place; a write copies one page into a frame
        // of the frame source, and the image is untouched.
        let mut c = new_space(m);
        let kind = VmaKind::FilePrivate {
            obj: obj.clone(),
            offset: 0,
        };
        map(m, &mut c, BASE, len, VmProt::RW, kind);
        assert_eq!(
            read(m, &mut c, BASE + 2 * KB4 as u64, 8).unwrap(),
            d[2 * KB4..2 * KB4 + 8]
        );
        assert_eq!(
            pa_of(m, &c, BASE + 2 * KB4 as u64),
            Some(image.0 + 2 * KB4 as u64)
        );
        write(m, &mut c, BASE + 2 * KB4 as u64, b"private").unwrap();
        assert_eq!(c.stats().file_cow, 1);
        let copy = pa_of(m, &c, BASE + 2 * KB4 as u64).unwrap();
        assert!(copy < image.0 || copy >= image.0 + IMAGE.bytes());
        assert_eq!(m.frames_out(), 1);
        let mut img = vec![0; 7];
        m.read_bytes(PhysAddr(image.0 + 2 * KB4 as u64), &mut img);
        assert_eq!(img, d[2 * KB4..2 * KB4 + 7]);
        assert_eq!(
            read(m, &mut a, BASE + 2 * KB4 as u64, 7).unwrap(),
            d[2 * KB4..2 * KB4 + 7]
        );
        check(m, &[&a, &b, &c]);

        // Fork: the child shares the image pages and the parent's copy.
        let mut child = fork(m, &mut c).unwrap();
        assert_eq!(pa_of(m, &child, BASE), Some(image.0));
        assert_eq!(read(m, &mut child, BASE + 2 * KB4 as u64, 7).unwrap(), b"private");
        write(m, &mut child, BASE + 5 * KB4 as u64, b"child").unwrap();
        assert_eq!(child.stats().file_cow, 1);
        check(m, &[&a, &b, &c, &child]);

        // Everything exits and the object goes: the copies return, the image frames do not
        // (the test frame source refuses frames it never handed out), their metadata is free.
        assert!(!obj.release(m), "the regions still hold the object");
        for s in [a, b, c, child] {
            s.exit(m);
        }
        assert_eq!(m.buddy_free(), buddy, "no adopted frame reached the frame source");
        assert!(m.mem().is_free(image) && m.mem().is_free(tail.unwrap()));
        check(m, &[]);
        m.uncarve(tail.unwrap(), FolioOrder::SMALL);
        m.uncarve(image, IMAGE);
        teardown(m, vec![]);
    });
}

#[test]
fn an_unaligned_body_is_adopted_page_by_page() {
    with_machine(|m| {
        // The file starts 4 KiB into the image: no 64 KiB block of it is 64 KiB aligned in both
        // the file and physical memory. A whole number of pages has no tail.
        let size = 2 * KB64 as usize;
        let d = data(size);
        let (image, tail) = lay_out(m, KB4 as u64, &d);
        assert_eq!(tail, None);
        let body = PhysAddr(image.0 + KB4 as u64);
        // SAFETY: carved frames holding the file, untouched until given back.
        let obj = unsafe { Shm::from_frames(m, size as u64, body, None) }.unwrap();
        assert_eq!(obj.folios(), 32);
        let mut s = new_space(m);
        let kind = VmaKind::Shared {
            obj: obj.clone(),
            offset: 0,
        };
        map(m, &mut s, BASE, 2 * KB64, VmProt::READ, kind);
        assert_eq!(
            read(m, &mut s, BASE + KB64 + 10, 4).unwrap(),
            d[KB64 as usize + 10..][..4]
        );
        assert_eq!(pa_of(m, &s, BASE + KB64), Some(body.0 + KB64));
        check(m, &[&s]);
        obj.release(m);
        s.exit(m);
        assert!(m.mem().is_free(body));
        m.uncarve(image, IMAGE);
        teardown(m, vec![]);
    });
}

#[test]
fn adopting_frames_in_use_is_refused_and_changes_nothing() {
    with_machine(|m| {
        let size = KB64 as usize + 3 * KB4;
        let d = data(size);
        let (image, _) = lay_out(m, 0, &d);
        // SAFETY: carved frames holding the file, untouched until given back.
        let obj = unsafe { Shm::from_frames(m, size as u64, image, None) }.unwrap();
        // The same frames again: the first folio is taken, nothing is adopted.
        // SAFETY: as above; the call is refused before it adopts anything.
        let again = unsafe { Shm::from_frames(m, size as u64, image, None) };
        assert_eq!(again.unwrap_err(), FolioError::BadFrame(image));
        // A body whose second page is a folio already: the first page is adopted, then given
        // back.
        let two = FolioOrder::new(1).unwrap();
        let region = m.carve(two);
        let second = PhysAddr(region.0 + KB4 as u64);
        let taken = m.mem().adopt_folio(second, FolioOrder::SMALL).unwrap();
        // SAFETY: refused (the second frame is in a folio); it never maps anything.
        let r = unsafe { Shm::from_frames(m, 2 * KB4 as u64, region, None) };
        assert_eq!(r.unwrap_err(), FolioError::BadFrame(second));
        assert!(m.mem().is_free(region), "the first page was given back");
        assert!(
            taken.put(m),
            "an adopted folio's last reference frees its metadata only"
        );
        assert!(m.mem().is_free(second));
        m.uncarve(region, two);
        check(m, &[]);
        assert!(obj.release(m));
        assert!(m.mem().is_free(image));
        m.uncarve(image, IMAGE);
        assert_eq!(m.frames_out(), 0);
        assert_eq!(m.buddy_free(), FRAMES);
    });
}

#[test]
#[should_panic(expected = "a tail page is given exactly for a partial last page")]
fn a_partial_last_page_needs_its_tail() {
    with_machine(|m| {
        let image = m.carve(IMAGE);
        // SAFETY: refused (panics) before anything is adopted.
        let _ = unsafe { Shm::from_frames(m, 100, image, None) };
    });
}
