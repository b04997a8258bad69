//! The address-space policies one by one.

use super::*;
use crate::vma::{MapAlign, Placement, VmProt, VmaKind};
use crate::{CONT_PTES, CONT_SIZE};

const BASE: u64 = 0x10_0000_0000;
const KB64: u64 = 64 << 10;

fn private() -> VmaKind<Shm> {
    VmaKind::AnonPrivate
}

/// Maps `len` private bytes at `va`.
fn map(m: &mut TestMachine<'_>, s: &mut Space, va: u64, len: u64, prot: VmProt, big: bool) {
    let align = if big { MapAlign::Size64K } else { MapAlign::Page };
    let at = s
        .mmap(m, Placement::Fixed(VirtAddr(va)), len, prot, private(), align)
        .unwrap();
    assert_eq!(at, VirtAddr(va));
}

fn pa_of(m: &TestMachine<'_>, s: &Space, va: u64) -> Option<u64> {
    s.peek(m, VirtAddr(va)).pa().map(|p| p.0)
}

#[test]
fn parent_and_child_write_the_same_address() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, 4 * KB64, VmProt::RW, true);
        map(m, &mut p, BASE + 8 * KB64, 3 * PAGE_SIZE, VmProt::RW, false);
        for va in [BASE + 100, BASE + KB64 + 5, BASE + 8 * KB64 + 7] {
            write(m, &mut p, va, b"original").unwrap();
        }
        let mut c = fork(m, &mut p).unwrap();
        check(m, &[&p, &c]);
        for va in [BASE + 100, BASE + KB64 + 5, BASE + 8 * KB64 + 7] {
            write(m, &mut p, va, b"parent!!").unwrap();
            write(m, &mut c, va, b"child!!!").unwrap();
            check(m, &[&p, &c]);
            assert_eq!(read(m, &mut p, va, 8).unwrap(), b"parent!!");
            assert_eq!(read(m, &mut c, va, 8).unwrap(), b"child!!!");
            assert_ne!(pa_of(m, &p, va), pa_of(m, &c, va));
        }
        // Untouched bytes of the written pages kept their values in both.
        assert_eq!(read(m, &mut p, BASE + 108, 4).unwrap(), [0; 4]);
        assert_eq!(read(m, &mut c, BASE + KB64, 5).unwrap(), [0; 5]);
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn cow_reuses_an_exclusive_page_without_copying() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, PAGE_SIZE, VmProt::RW, false);
        write(m, &mut p, BASE, b"x").unwrap();
        let pa = pa_of(m, &p, BASE);
        let c = fork(m, &mut p).unwrap();
        c.exit(m);
        let out = m.frames_out();
        let f = write(m, &mut p, BASE, b"y").unwrap();
        assert_eq!(f.n, 1, "one permission fault");
        assert_eq!(pa_of(m, &p, BASE), pa, "reused in place");
        assert_eq!(m.frames_out(), out, "nothing allocated");
        assert_eq!(p.stats().cow_reuse_4k, 1);
        assert_eq!(p.stats().cow_copy_4k + p.stats().cow_copy_64k, 0);
        check(m, &[&p]);

        // A 64 KiB folio: the whole block is reused in one fault and stays folded.
        map(m, &mut p, BASE + KB64, KB64, VmProt::RW, true);
        write(m, &mut p, BASE + KB64, b"z").unwrap();
        let pa = pa_of(m, &p, BASE + KB64);
        let c = fork(m, &mut p).unwrap();
        assert!(folded(m, &p, BASE + KB64));
        c.exit(m);
        let before = *p.root.stats();
        let f = write(m, &mut p, BASE + KB64 + 3 * PAGE_SIZE, b"w").unwrap();
        assert_eq!(f.n, 1);
        assert_eq!(p.stats().cow_reuse_64k, 1);
        let s = p.root.stats().since(&before);
        assert_eq!(
            (s.bbm, s.folds, s.unfolds),
            (0, 0, 0),
            "a permission change in place"
        );
        assert_eq!(s.desc_writes, CONT_PTES as u64);
        assert_eq!(pa_of(m, &p, BASE + KB64), pa);
        for i in 0..CONT_PTES as u64 {
            let va = BASE + KB64 + i * PAGE_SIZE;
            assert!(folded(m, &p, va));
            let f = write(m, &mut p, va, b"v").unwrap();
            assert_eq!(f.n, 0, "the whole block is writable");
        }
        check(m, &[&p]);
        teardown(m, vec![p]);
    });
}

#[test]
fn one_fault_makes_a_whole_64k_block_private() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, 2 * KB64, VmProt::RW, true);
        let f = write(m, &mut p, BASE, b"a").unwrap();
        assert_eq!(f.n, 1);
        assert_eq!(p.stats().anon_64k, 1);
        for i in 0..CONT_PTES as u64 {
            write(m, &mut p, BASE + i * PAGE_SIZE + 1, &[i as u8]).unwrap();
        }
        assert!((0..16).all(|i| folded(m, &p, BASE + i * PAGE_SIZE)));
        let old = pa_of(m, &p, BASE).unwrap();
        let mut c = fork(m, &mut p).unwrap();
        assert!(folded(m, &c, BASE), "the child's copy is folded too");

        let f = write(m, &mut p, BASE + 5 * PAGE_SIZE, b"P").unwrap();
        assert_eq!(f.n, 1);
        assert_eq!(p.stats().cow_copy_64k, 1);
        let new = pa_of(m, &p, BASE).unwrap();
        assert_ne!(new, old);
        assert_eq!(new % KB64, 0);
        for i in 0..CONT_PTES as u64 {
            let va = BASE + i * PAGE_SIZE;
            assert_eq!(pa_of(m, &p, va), Some(new + i * PAGE_SIZE));
            assert!(folded(m, &p, va));
            let f = write(m, &mut p, va + 2, b"q").unwrap();
            assert_eq!(f.n, 0, "no further fault in the block");
            assert_eq!(read(m, &mut p, va + 1, 1).unwrap(), [i as u8]);
        }
        check(m, &[&p, &c]);
        // The child is now the only user of the old folio: it reuses it whole.
        let f = write(m, &mut c, BASE + 5 * PAGE_SIZE, b"C").unwrap();
        assert_eq!(
            f.n, 1,
            "one fault, whatever the MMU reports first (AF is clear too)"
        );
        assert_eq!(c.stats().cow_reuse_64k, 1);
        assert_eq!(pa_of(m, &c, BASE), Some(old));
        assert_eq!(read(m, &mut c, BASE + 5 * PAGE_SIZE, 2).unwrap(), b"C\x05");
        assert_eq!(read(m, &mut p, BASE + 5 * PAGE_SIZE, 3).unwrap(), b"P\x05q");
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn partially_mapped_block_copies_one_page() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, KB64, VmProt::RW, true);
        write(m, &mut p, BASE, b"a").unwrap();
        let mut c = fork(m, &mut p).unwrap();
        // The child drops half the block: the parent's block is no longer a whole candidate
        // for reuse (its pages are shared), but it is for a copy; the child's half is not.
        c.madvise_dontneed(m, VirtAddr(BASE + 8 * PAGE_SIZE), 8 * PAGE_SIZE)
            .unwrap();
        write(m, &mut c, BASE, b"c").unwrap();
        assert_eq!(c.stats().cow_copy_4k, 1, "the child copies one page");
        assert!(!folded(m, &c, BASE));
        write(m, &mut p, BASE + PAGE_SIZE, b"p").unwrap();
        assert_eq!(p.stats().cow_copy_64k, 1, "the parent still maps the whole block");
        check(m, &[&p, &c]);
        assert_eq!(read(m, &mut c, BASE + 8 * PAGE_SIZE, 1).unwrap(), [0]);
        assert_eq!(read(m, &mut p, BASE, 1).unwrap(), b"a");
        teardown(m, vec![p, c]);
    });
}

#[test]
fn whole_copy_falls_back_to_a_page_without_64k_memory() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, KB64, VmProt::RW, true);
        write(m, &mut p, BASE, b"a").unwrap();
        let c = fork(m, &mut p).unwrap();
        m.fail_nth(Some(1));
        write(m, &mut p, BASE + PAGE_SIZE, b"b").unwrap();
        assert!(m.failed);
        m.fail_nth(None);
        assert_eq!(p.stats().cow_copy_4k, 1);
        assert_eq!(p.stats().cow_copy_64k, 0);
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn pinned_page_is_copied_for_the_child_at_fork() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, 2 * KB64, VmProt::RW, true);
        write(m, &mut p, BASE + 3 * PAGE_SIZE, b"before fork").unwrap();
        write(m, &mut p, BASE + KB64, b"other block").unwrap();
        let pin = p.pin(m, VirtAddr(BASE + 3 * PAGE_SIZE), 16, true).unwrap();
        let pinned = pin.pages()[0];
        assert_eq!(pin.len(), 1);
        assert_eq!(Some(pinned.0), pa_of(m, &p, BASE + 3 * PAGE_SIZE));

        let mut c = fork(m, &mut p).unwrap();
        check(m, &[&p, &c]);
        // Every page of the pinned 64 KiB folio was exclusive: all copied for the child.
        assert_eq!(p.stats().fork_copies, 16);
        assert_eq!(p.stats().fork_dup_batches, 1, "the other folio, in one batch");
        assert_eq!(pa_of(m, &p, BASE + 3 * PAGE_SIZE), Some(pinned.0));
        let child_pa = pa_of(m, &c, BASE + 3 * PAGE_SIZE).unwrap();
        assert_ne!(child_pa, pinned.0);
        assert_eq!(read(m, &mut c, BASE + 3 * PAGE_SIZE, 11).unwrap(), b"before fork");

        // The device writes through the pin: the parent sees it, the child does not.
        m.write_bytes(pinned, b"DMA");
        assert_eq!(read(m, &mut p, BASE + 3 * PAGE_SIZE, 11).unwrap(), b"DMAore fork");
        assert_eq!(read(m, &mut c, BASE + 3 * PAGE_SIZE, 11).unwrap(), b"before fork");
        // The parent's pinned page stayed writable: no fault, no copy.
        let f = write(m, &mut p, BASE + 3 * PAGE_SIZE + 20, b"w").unwrap();
        assert_eq!(f.n, 0);
        assert_eq!(pa_of(m, &p, BASE + 3 * PAGE_SIZE), Some(pinned.0));
        check(m, &[&p, &c]);
        p.unpin(m, pin);
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn a_pinned_folio_is_never_copied_away_whole() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, KB64, VmProt::RW, true);
        for i in 0..16 {
            write(m, &mut p, BASE + i * PAGE_SIZE, &[i as u8]).unwrap();
        }
        let folio_pa = pa_of(m, &p, BASE).unwrap();
        // Fork and exit: the folio's pages are the parent's only, but not exclusive.
        fork(m, &mut p).unwrap().exit(m);
        // With the block split between two regions, a write pin of page 2 reuses that page
        // alone; then the regions merge back.
        p.mprotect(m, VirtAddr(BASE + KB64 / 2), KB64 / 2, VmProt::READ)
            .unwrap();
        let pin = p.pin(m, VirtAddr(BASE + 2 * PAGE_SIZE), 1, true).unwrap();
        assert_eq!(pin.pages()[0].0, folio_pa + 2 * PAGE_SIZE);
        p.mprotect(m, VirtAddr(BASE + KB64 / 2), KB64 / 2, VmProt::RW)
            .unwrap();
        assert_eq!(p.regions().len(), 1);
        // Fork: the pinned page is copied for the child, the others are shared.
        let mut c = fork(m, &mut p).unwrap();
        assert_eq!(p.stats().fork_copies, 1);
        check(m, &[&p, &c]);
        // A write to a shared page of the block must not copy the whole (pinned) folio.
        write(m, &mut p, BASE + 5 * PAGE_SIZE, b"x").unwrap();
        assert_eq!(p.stats().cow_copy_64k, 0);
        assert_eq!(p.stats().cow_copy_4k, 1);
        assert_eq!(pa_of(m, &p, BASE + 2 * PAGE_SIZE), Some(pin.pages()[0].0));
        m.write_bytes(pin.pages()[0], b"D");
        assert_eq!(read(m, &mut p, BASE + 2 * PAGE_SIZE, 1).unwrap(), b"D");
        assert_eq!(read(m, &mut c, BASE + 2 * PAGE_SIZE, 1).unwrap(), [2]);
        check(m, &[&p, &c]);
        p.unpin(m, pin);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn read_pin_unshares_a_cow_page() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, 2 * PAGE_SIZE, VmProt::RW, false);
        write(m, &mut p, BASE, b"shared").unwrap();
        let old = pa_of(m, &p, BASE).unwrap();
        let mut c = fork(m, &mut p).unwrap();
        let pin = p.pin(m, VirtAddr(BASE), 1, false).unwrap();
        assert_eq!(p.stats().unshares, 1);
        assert_eq!(p.stats().cow_copy_4k, 1, "unshared by copying");
        let new = pin.pages()[0].0;
        assert_ne!(new, old);
        assert_eq!(pa_of(m, &p, BASE), Some(new));
        assert_eq!(pa_of(m, &c, BASE), Some(old));
        check(m, &[&p, &c]);
        // Still read-only, but exclusive: the write fault reuses it.
        let f = write(m, &mut p, BASE, b"S").unwrap();
        assert_eq!(f.n, 1);
        assert_eq!(p.stats().cow_reuse_4k, 1);
        assert_eq!(pa_of(m, &p, BASE), Some(new));
        assert_eq!(read(m, &mut c, BASE, 6).unwrap(), b"shared");
        // A read pin of the child's page, now only the child's: reused, not copied.
        let pin2 = c.pin(m, VirtAddr(BASE), PAGE_SIZE, false).unwrap();
        assert_eq!(pin2.pages()[0].0, old);
        assert_eq!(c.stats().cow_copy_4k, 0);
        check(m, &[&p, &c]);
        pin.release(m);
        c.unpin(m, pin2);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn segmentation_faults() {
    with_machine(|m| {
        let mut s = new_space(m);
        map(m, &mut s, BASE, PAGE_SIZE, VmProt::READ, false);
        map(m, &mut s, BASE + 2 * PAGE_SIZE, PAGE_SIZE, VmProt::RW, false);
        let segv = |va: u64, cause| FaultError::Segv {
            va: VirtAddr(va),
            cause,
        };
        let unmapped = SegvCause::Unmapped;
        let access = SegvCause::Access;
        assert_eq!(
            read(m, &mut s, BASE + PAGE_SIZE, 1),
            Err(segv(BASE + PAGE_SIZE, unmapped))
        );
        assert_eq!(write(m, &mut s, BASE, b"x"), Err(segv(BASE, access)));
        assert_eq!(read(m, &mut s, BASE, 1).unwrap(), [0], "readable");
        assert_eq!(write(m, &mut s, BASE, b"x"), Err(segv(BASE, access)));
        let mut f = Faults::default();
        assert_eq!(
            translate(m, &mut s, BASE + 2 * PAGE_SIZE, Access::Exec, &mut f),
            Err(segv(BASE + 2 * PAGE_SIZE, access))
        );
        for va in [0, 0x1000, USER_END, USER_END + 5, u64::MAX] {
            assert_eq!(
                s.handle_fault(m, VirtAddr(va), Access::Read, El::El0, FaultKind::Translation),
                Err(segv(va, unmapped))
            );
        }
        // PROT_NONE: contents kept, every access refused, back after mprotect.
        write(m, &mut s, BASE + 2 * PAGE_SIZE, b"kept").unwrap();
        s.mprotect(m, VirtAddr(BASE + 2 * PAGE_SIZE), PAGE_SIZE, VmProt::NONE)
            .unwrap();
        check(m, &[&s]);
        let va = BASE + 2 * PAGE_SIZE;
        assert_eq!(read(m, &mut s, va, 1), Err(segv(va, access)));
        assert_eq!(write(m, &mut s, va, b"y"), Err(segv(va, access)));
        for k in [FaultKind::AccessFlag, FaultKind::Permission] {
            assert_eq!(
                s.handle_fault(m, VirtAddr(va), Access::Read, El::El1, k),
                Err(segv(va, access))
            );
        }
        s.mprotect(m, VirtAddr(va), PAGE_SIZE, VmProt::READ).unwrap();
        assert_eq!(read(m, &mut s, va, 4).unwrap(), b"kept");
        assert_eq!(write(m, &mut s, va, b"y"), Err(segv(va, access)));
        s.mprotect(m, VirtAddr(va), PAGE_SIZE, VmProt::RW).unwrap();
        let f = write(m, &mut s, va, b"K").unwrap();
        assert_eq!(f.n, 0, "an exclusive page becomes writable at mprotect");
        assert_eq!(read(m, &mut s, va, 4).unwrap(), b"Kept");
        assert!(s.stats().segv >= 8);
        // Pins fail like faults, changing nothing.
        assert_eq!(s.pin(m, VirtAddr(BASE), 1, true).unwrap_err(), segv(BASE, access));
        assert!(s.pin(m, VirtAddr(BASE), 3 * PAGE_SIZE, false).is_err());
        check(m, &[&s]);
        teardown(m, vec![s]);
    });
}

/// The kernel never executes user memory: an instruction fetch at EL1 from a user page is
/// a segmentation fault (access) at its first fault, whether the page is missing or mapped
/// and whatever the region allows. EL0 fetches from executable regions work.
#[test]
fn el1_fetches_from_user_pages_are_refused_at_once() {
    with_machine(|m| {
        let mut s = new_space(m);
        map(m, &mut s, BASE, 4 * PAGE_SIZE, VmProt::RX, false);
        map(
            m,
            &mut s,
            BASE + 4 * PAGE_SIZE,
            PAGE_SIZE,
            VmProt::from_bits_truncate(7),
            false,
        );
        read(m, &mut s, BASE + PAGE_SIZE, 1).unwrap();
        write(m, &mut s, BASE + 4 * PAGE_SIZE, b"w").unwrap();
        let segv = |va: u64| FaultError::Segv {
            va: VirtAddr(va),
            cause: SegvCause::Access,
        };
        m.el = El::El1;
        // A missing page, a mapped one (permission fault), a writable executable one.
        for va in [BASE, BASE + PAGE_SIZE, BASE + 4 * PAGE_SIZE] {
            let mut f = Faults::default();
            let r = translate(m, &mut s, va, Access::Exec, &mut f);
            assert_eq!((r, f.n), (Err(segv(va)), 1), "fetch at {va:#x}");
        }
        for kind in [
            FaultKind::Translation,
            FaultKind::AccessFlag,
            FaultKind::Permission,
        ] {
            let r = s.handle_fault(m, VirtAddr(BASE + 7), Access::Exec, El::El1, kind);
            assert_eq!(r, Err(segv(BASE + 7)));
            let r = s.handle_fault(m, VirtAddr(BASE - 1), Access::Exec, El::El1, kind);
            let unmapped = FaultError::Segv {
                va: VirtAddr(BASE - 1),
                cause: SegvCause::Unmapped,
            };
            assert_eq!(r, Err(unmapped));
        }
        assert_eq!(read(m, &mut s, BASE + 3, 1).unwrap(), [0], "EL1 reads still work");
        m.el = El::El0;
        let mut f = Faults::default();
        translate(m, &mut s, BASE + 2 * PAGE_SIZE, Access::Exec, &mut f).unwrap();
        translate(m, &mut s, BASE, Access::Exec, &mut f).unwrap();
        check(m, &[&s]);
        teardown(m, vec![s]);
    });
}

/// Address spaces get their ids from the memory map and their ASIDs from the machine: no
/// two live spaces share either; an exited space gives both back (its id is not reused at
/// once).
#[test]
fn live_spaces_never_share_an_id_or_an_asid() {
    with_machine(|m| {
        let asid = |s: &Space| s.root().asid().unwrap();
        let mut a = new_space(m);
        let b = new_space(m);
        let c = fork(m, &mut a).unwrap();
        let ids = [a.id(), b.id(), c.id()];
        assert_eq!(m.mem().live_space_ids(), ids);
        let asids = [asid(&a), asid(&b), asid(&c)];
        assert!(asids[0] != asids[1] && asids[1] != asids[2] && asids[0] != asids[2]);
        let (b_id, b_asid) = (b.id(), asid(&b));
        b.exit(m);
        let d = new_space(m);
        assert!(!ids.contains(&d.id()), "ids are not reused at once");
        assert_eq!(asid(&d), b_asid, "the free ASID is reused");
        assert_eq!(m.mem().live_space_ids(), [a.id(), c.id(), d.id()]);
        assert_ne!(d.id(), b_id);
        teardown(m, vec![a, c, d]);
    });
}

/// `check_spaces` must be given every live space, once: it says so rather than report the
/// folio counts that would not add up.
#[test]
fn check_spaces_wants_every_live_space_once() {
    with_machine(|m| {
        let mut a = new_space(m);
        map(m, &mut a, BASE, KB64, VmProt::RW, true);
        write(m, &mut a, BASE, b"a").unwrap();
        let c = fork(m, &mut a).unwrap();
        assert_eq!(check_spaces(m, &[&a]), Err(SpaceCheckError::MissingSpace(c.id())));
        assert_eq!(check_spaces(m, &[&c]), Err(SpaceCheckError::MissingSpace(a.id())));
        let twice = check_spaces(m, &[&a, &c, &a]);
        assert_eq!(twice, Err(SpaceCheckError::UnknownSpace(a.id())));
        assert_eq!(check_spaces(m, &[&c, &a]), Ok(()));
        teardown(m, vec![a, c]);
    });
}

/// Dropping a space without `exit` fails the test that does it (it leaks every page, table
/// and its id).
#[test]
#[should_panic(expected = "dropped without exit")]
fn a_space_dropped_without_exit_fails_the_test() {
    with_machine(|m| {
        let mut s = new_space(m);
        map(m, &mut s, BASE, PAGE_SIZE, VmProt::RW, false);
        write(m, &mut s, BASE, b"x").unwrap();
        drop(s);
    });
}

/// Dropping a pin without releasing it fails the test that does it.
#[test]
#[should_panic(expected = "dropped without release")]
fn a_pin_dropped_without_release_fails_the_test() {
    with_machine(|m| {
        let mut s = new_space(m);
        map(m, &mut s, BASE, PAGE_SIZE, VmProt::RW, false);
        let pin = s.pin(m, VirtAddr(BASE), PAGE_SIZE, true).unwrap();
        drop(pin);
        s.exit(m);
    });
}

/// Dropping the last handle of an object without releasing it fails the test that does it,
/// even when the object holds no folio yet; other handles may be dropped.
#[test]
#[should_panic(expected = "dropped without release")]
fn the_last_handle_of_an_object_dropped_without_release_fails_the_test() {
    with_machine(|_| {
        let obj = Shm::new();
        drop(obj.clone());
        drop(obj);
    });
}

#[test]
fn fork_is_batched_per_folio() {
    with_machine(|m| {
        let mut p = new_space(m);
        const MB1: u64 = 1 << 20;
        map(m, &mut p, BASE, MB1, VmProt::RW, true);
        for off in (0..MB1).step_by(PAGE_SIZE as usize) {
            write(m, &mut p, BASE + off, &[1]).unwrap();
        }
        assert_eq!(p.stats().anon_64k, 16);
        let before = *p.root().stats();
        let c = fork(m, &mut p).unwrap();
        let cost = p.root().stats().since(&before);
        assert_eq!(p.stats().fork_dup_batches, 16, "one dup per 64 KiB folio");
        assert_eq!(p.stats().fork_dup_pages, 256);
        assert_eq!(p.stats().fork_wrprotects, 1, "one write-protect for the range");
        assert_eq!(cost.tlbi_batches, 1, "one invalidation batch in the parent");
        assert_eq!(cost.unfolds, 0, "the parent's blocks stay folded");
        assert_eq!(c.root().stats().cont_blocks_mapped, 16);
        assert_eq!(
            c.root().stats().tlbi_batches,
            0,
            "the child is filled from invalid"
        );
        for off in (0..MB1).step_by(PAGE_SIZE as usize) {
            assert!(folded(m, &p, BASE + off) && folded(m, &c, BASE + off));
        }
        check(m, &[&p, &c]);

        // Small folios: one batch each.
        map(m, &mut p, BASE + MB1, 8 * PAGE_SIZE, VmProt::RW, false);
        for i in 0..8 {
            write(m, &mut p, BASE + MB1 + i * PAGE_SIZE, &[2]).unwrap();
        }
        let before = *p.stats();
        let c2 = fork(m, &mut p).unwrap();
        assert_eq!(p.stats().fork_dup_batches - before.fork_dup_batches, 16 + 8);
        assert_eq!(p.stats().fork_wrprotects - before.fork_wrprotects, 1);
        check(m, &[&p, &c, &c2]);
        teardown(m, vec![p, c, c2]);
    });
}

#[test]
fn translation_faults_pick_the_folio_size() {
    with_machine(|m| {
        let mut s = new_space(m);
        // 64 KiB aligned region of 3 blocks + 2 pages: whole blocks get 64 KiB folios, the
        // tail gets pages.
        map(m, &mut s, BASE, 3 * KB64 + 2 * PAGE_SIZE, VmProt::RW, true);
        read(m, &mut s, BASE + 7 * PAGE_SIZE, 1).unwrap();
        assert_eq!(s.stats().anon_64k, 1);
        assert!(folded(m, &s, BASE));
        write(m, &mut s, BASE + 3 * KB64 + PAGE_SIZE, b"t").unwrap();
        assert_eq!(s.stats().anon_4k, 1);
        // A block with a page already mapped gets pages.
        s.madvise_dontneed(m, VirtAddr(BASE + KB64), KB64).unwrap();
        write(m, &mut s, BASE + KB64, b"x").unwrap();
        assert_eq!(s.stats().anon_64k, 2);
        s.madvise_dontneed(m, VirtAddr(BASE + KB64 + PAGE_SIZE), 15 * PAGE_SIZE)
            .unwrap();
        assert!(!folded(m, &s, BASE + KB64));
        write(m, &mut s, BASE + KB64 + PAGE_SIZE, b"y").unwrap();
        assert_eq!((s.stats().anon_64k, s.stats().anon_4k), (2, 2));
        // No 64 KiB memory: pages.
        m.fail_nth(Some(1));
        write(m, &mut s, BASE + 2 * KB64, b"z").unwrap();
        m.fail_nth(None);
        assert_eq!((s.stats().anon_64k, s.stats().anon_4k), (2, 3));
        // A page-aligned region never gets 64 KiB folios.
        map(m, &mut s, BASE + 4 * KB64, KB64, VmProt::RW, false);
        write(m, &mut s, BASE + 4 * KB64, b"p").unwrap();
        assert_eq!(s.stats().anon_4k, 4);
        check(m, &[&s]);
        teardown(m, vec![s]);
    });
}

#[test]
fn child_pages_start_old_and_take_access_flag_faults() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, KB64, VmProt::RW, true);
        write(m, &mut p, BASE, b"r").unwrap();
        let mut c = fork(m, &mut p).unwrap();
        let f = Faults::default();
        let mut f2 = f;
        translate(m, &mut c, BASE + PAGE_SIZE, Access::Read, &mut f2).unwrap();
        assert_eq!(f2.n, 1);
        assert_eq!(c.stats().faults_access_flag, 1);
        assert_eq!(c.stats().young_set, 1);
        assert!(folded(m, &c, BASE), "setting AF keeps the block folded");
        // The whole block is young now.
        let mut f3 = Faults::default();
        translate(m, &mut c, BASE + 9 * PAGE_SIZE, Access::Read, &mut f3).unwrap();
        assert_eq!(f3.n, 0);
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn shared_memory_is_shared_across_fork() {
    with_machine(|m| {
        let mut p = new_space(m);
        let obj = Shm::new();
        let kind = VmaKind::Shared {
            obj: obj.clone(),
            offset: 0,
        };
        p.mmap(
            m,
            Placement::Fixed(VirtAddr(BASE)),
            2 * KB64,
            VmProt::RW,
            kind,
            MapAlign::Size64K,
        )
        .unwrap();
        write(m, &mut p, BASE + 5, b"hello").unwrap();
        assert_eq!(p.stats().shm_64k, 1);
        assert!(folded(m, &p, BASE));
        let mut c = fork(m, &mut p).unwrap();
        assert_eq!(read(m, &mut c, BASE + 5, 5).unwrap(), b"hello");
        assert!(folded(m, &c, BASE), "the child maps the object's folio whole");
        write(m, &mut c, BASE + KB64 + 3, b"from child").unwrap();
        assert_eq!(read(m, &mut p, BASE + KB64 + 3, 10).unwrap(), b"from child");
        assert_eq!(pa_of(m, &p, BASE + KB64), pa_of(m, &c, BASE + KB64));
        // DONTNEED keeps shared pages in the object.
        p.madvise_dontneed(m, VirtAddr(BASE), 2 * KB64).unwrap();
        assert_eq!(read(m, &mut p, BASE + 5, 5).unwrap(), b"hello");
        check(m, &[&p, &c]);
        // A second object mapping in the same space, at an offset.
        let kind = VmaKind::Shared {
            obj: obj.clone(),
            offset: KB64,
        };
        p.mmap(
            m,
            Placement::Fixed(VirtAddr(BASE + 4 * KB64)),
            KB64,
            VmProt::READ,
            kind,
            MapAlign::Size64K,
        )
        .unwrap();
        assert_eq!(read(m, &mut p, BASE + 4 * KB64 + 3, 10).unwrap(), b"from child");
        check(m, &[&p, &c]);
        p.exit(m);
        assert_eq!(obj.folios(), 2, "the child still maps the object");
        assert!(!obj.release(m), "the child's regions still hold the object");
        check(m, &[&c]);
        teardown(m, vec![c]);
    });
}

#[test]
fn munmap_mprotect_and_fixed_replacement_release_pages() {
    with_machine(|m| {
        let mut s = new_space(m);
        map(m, &mut s, BASE, 4 * KB64, VmProt::RW, true);
        for i in 0..4 {
            write(m, &mut s, BASE + i * KB64, b"abc").unwrap();
        }
        assert_eq!(m.frames_out(), 64);
        // Part of a block: the block unfolds, the rest stays.
        s.munmap(m, VirtAddr(BASE + 4 * PAGE_SIZE), 4 * PAGE_SIZE)
            .unwrap();
        assert!(!folded(m, &s, BASE));
        assert_eq!(m.frames_out(), 64, "the folio is still partly mapped");
        check(m, &[&s]);
        s.munmap(m, VirtAddr(BASE), KB64).unwrap();
        assert_eq!(m.frames_out(), 48);
        // mprotect read-only keeps the blocks folded.
        s.mprotect(m, VirtAddr(BASE + KB64), KB64, VmProt::READ).unwrap();
        assert!(folded(m, &s, BASE + KB64));
        assert_eq!(read(m, &mut s, BASE + KB64, 3).unwrap(), b"abc");
        check(m, &[&s]);
        // A fixed mapping over two blocks replaces them.
        map(m, &mut s, BASE + 2 * KB64, 2 * KB64, VmProt::RW, true);
        assert_eq!(m.frames_out(), 16);
        assert_eq!(read(m, &mut s, BASE + 2 * KB64, 3).unwrap(), [0; 3]);
        // Bad arguments change nothing.
        let snapshot = m.model.snapshot();
        assert!(s.munmap(m, VirtAddr(BASE + 1), PAGE_SIZE).is_err());
        assert!(s.mprotect(m, VirtAddr(BASE), 2 * KB64, VmProt::READ).is_err());
        assert!(s.madvise_dontneed(m, VirtAddr(BASE), KB64).is_err());
        assert!(s
            .mmap(
                m,
                Placement::Fixed(VirtAddr(BASE + PAGE_SIZE)),
                KB64,
                VmProt::RW,
                private(),
                MapAlign::Size64K
            )
            .is_err());
        assert_eq!(m.model.snapshot(), snapshot);
        check(m, &[&s]);
        teardown(m, vec![s]);
    });
}

#[test]
fn mprotect_never_makes_cow_pages_writable() {
    with_machine(|m| {
        let mut p = new_space(m);
        map(m, &mut p, BASE, KB64 + 2 * PAGE_SIZE, VmProt::RW, true);
        write(m, &mut p, BASE, b"block").unwrap();
        write(m, &mut p, BASE + KB64, b"page").unwrap();
        let mut c = fork(m, &mut p).unwrap();
        write(m, &mut p, BASE + KB64 + PAGE_SIZE, b"own").unwrap();
        for prot in [VmProt::READ, VmProt::NONE, VmProt::RW] {
            p.mprotect(m, VirtAddr(BASE), KB64 + 2 * PAGE_SIZE, prot).unwrap();
            check(m, &[&p, &c]);
        }
        // The shared pages are still read-only: writing copies them.
        let f = write(m, &mut p, BASE + KB64, b"PAGE").unwrap();
        assert_eq!(f.n, 1);
        assert_eq!(p.stats().cow_copy_4k, 1);
        let f = write(m, &mut p, BASE, b"BLOCK").unwrap();
        assert_eq!(f.n, 1);
        assert_eq!(p.stats().cow_copy_64k, 1);
        // The exclusive page became writable again at mprotect (its access flag, cleared for
        // PROT_NONE, costs one fault but no COW decision); its data survived PROT_NONE.
        let before = *p.stats();
        let f = write(m, &mut p, BASE + KB64 + PAGE_SIZE + 3, b"!").unwrap();
        assert_eq!(f.n, 1);
        assert_eq!(p.stats().young_set, before.young_set + 1);
        assert_eq!(p.stats().cow_reuse_4k, before.cow_reuse_4k);
        assert_eq!(read(m, &mut p, BASE + KB64 + PAGE_SIZE, 4).unwrap(), b"own!");
        assert_eq!(read(m, &mut c, BASE, 5).unwrap(), b"block");
        assert_eq!(read(m, &mut c, BASE + KB64, 4).unwrap(), b"page");
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn exit_with_outstanding_pins_frees_on_unpin() {
    with_machine(|m| {
        let mut s = new_space(m);
        map(m, &mut s, BASE, KB64, VmProt::RW, true);
        let pin = s.pin(m, VirtAddr(BASE), KB64, true).unwrap();
        assert_eq!(pin.len(), 16);
        assert_eq!(s.stats().anon_64k, 1);
        s.exit(m);
        assert_eq!(m.frames_out(), 16, "the pinned folio outlives the space");
        pin.release(m);
        teardown(m, vec![]);
        let _ = CONT_SIZE;
    });
}

#[test]
fn munmap_of_a_sparse_range_larger_than_one_zap_piece() {
    with_machine(|m| {
        let mut p = new_space(m);
        let len = 300 << 20;
        map(m, &mut p, BASE, len, VmProt::RW, true);
        // Pages 100 MiB apart: three pieces of the unmap, the empty stretches skipped.
        for i in 0..3u64 {
            write(m, &mut p, BASE + i * (100 << 20) + 5, b"x").unwrap();
        }
        let tables = m.model.live_frames();
        p.munmap(m, VirtAddr(BASE), len).unwrap();
        assert!(m.model.live_frames() < tables, "emptied tables freed");
        assert_eq!(m.frames_out(), 0, "every folio released");
        check(m, &[&p]);
        teardown(m, vec![p]);
    });
}
