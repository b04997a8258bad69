//! Copy-on-write page tables (`ForkMode::ShareTables`): what fork shares, what breaks the
//! sharing, how the accounting follows, and what running out of memory does.

use super::*;
use crate::vma::{MapAlign, Placement, VmProt, VmaConfig, VmaError, VmaKind};
use crate::PTE_TABLE_SPAN;

const SPAN: u64 = PTE_TABLE_SPAN;
/// 2 MiB aligned, so that regions line up with level-3 tables.
const BASE: u64 = 0x40_0000_0000;
const KB64: u64 = 64 << 10;

fn map(m: &mut TestMachine<'_>, s: &mut Space, va: u64, len: u64, prot: VmProt) {
    s.mmap(
        m,
        Placement::Fixed(VirtAddr(va)),
        len,
        prot,
        VmaKind::AnonPrivate,
        MapAlign::Size64K,
    )
    .unwrap();
}

fn pa_of(m: &TestMachine<'_>, s: &Space, va: u64) -> Option<u64> {
    s.peek(m, VirtAddr(va)).pa().map(|p| p.0)
}

/// A parent with two full spans of written 64 KiB folios plus a page in a third span.
fn parent(m: &mut TestMachine<'_>) -> Space {
    let mut p = new_space(m);
    map(m, &mut p, BASE, 2 * SPAN + PAGE_SIZE, VmProt::RW);
    for i in 0..(2 * SPAN / KB64) {
        write(m, &mut p, BASE + i * KB64 + 3, &[i as u8 + 1]).unwrap();
    }
    write(m, &mut p, BASE + 2 * SPAN, b"third").unwrap();
    p.set_fork_mode(ForkMode::ShareTables);
    p
}

fn share_fork(m: &mut TestMachine<'_>, p: &mut Space) -> Space {
    let c = fork(m, p).unwrap();
    assert_eq!(c.fork_mode(), ForkMode::ShareTables, "the mode is inherited");
    c
}

#[test]
fn fork_links_tables_without_touching_entries() {
    with_machine(|m| {
        let mut p = parent(m);
        let writes = m.model.counters.writes;
        let frames = m.frames_out();
        let c = share_fork(m, &mut p);
        // Three level-3 tables shared; written: three APTable changes in the parent, and in
        // the child three level-2 links plus the links of its new level-1/2 tables (and two
        // bookkeeping words of the reservation that holds those frames).
        assert_eq!(p.stats().fork_tables_shared, 3);
        assert_eq!(p.stats().fork_dup_batches, 0, "no entry copied");
        let written = m.model.counters.writes - writes;
        assert!(written <= 3 + 3 + 2 + 2, "fork wrote {written} descriptors");
        assert_eq!(m.frames_out(), frames, "no folio allocated");
        assert_eq!(p.shared_tables(), 3);
        assert_eq!(c.shared_tables(), 3);
        for i in [0, 5, 63] {
            let va = BASE + i * KB64 + 3;
            assert_eq!(pa_of(m, &p, va), pa_of(m, &c, va), "same frame");
        }
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn reads_share_and_writes_break_one_table() {
    with_machine(|m| {
        let mut p = parent(m);
        let mut c = share_fork(m, &mut p);
        // Reads go through the shared tables without a fault.
        for i in 0..4 {
            let va = BASE + i * KB64 + 3;
            let f = read(m, &mut c, va, 1).unwrap();
            assert_eq!(f, [i as u8 + 1]);
        }
        assert_eq!(c.stats().table_breaks, 0);
        // The child's first write copies the first table (not the second), then COWs.
        write(m, &mut c, BASE + 3, b"C").unwrap();
        assert_eq!(c.stats().table_breaks, 1);
        assert_eq!(c.shared_tables(), 2);
        check(m, &[&p, &c]);
        assert_eq!(read(m, &mut p, BASE + 3, 1).unwrap(), [1]);
        assert_eq!(read(m, &mut c, BASE + 3, 1).unwrap(), b"C");
        assert_ne!(pa_of(m, &p, BASE), pa_of(m, &c, BASE));
        // Still the same frame one 64 KiB block further.
        assert_eq!(pa_of(m, &p, BASE + KB64), pa_of(m, &c, BASE + KB64));
        // The parent, last holder of that table, takes it over; its pages are shared with
        // the child's copy, so its write copies too.
        write(m, &mut p, BASE + KB64 + 3, b"P").unwrap();
        assert_eq!(p.stats().table_takeovers, 1);
        assert_eq!(p.stats().table_breaks, 0);
        check(m, &[&p, &c]);
        assert_eq!(read(m, &mut c, BASE + KB64 + 3, 1).unwrap(), [2]);
        assert_eq!(read(m, &mut p, BASE + KB64 + 3, 1).unwrap(), b"P");
        // The parent writes into the second span: it breaks that one.
        write(m, &mut p, BASE + SPAN + 3, b"Q").unwrap();
        assert_eq!(p.stats().table_breaks, 1);
        assert_eq!(read(m, &mut c, BASE + SPAN + 3, 1).unwrap(), [33]);
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn owner_exit_hands_the_accounting_over() {
    with_machine(|m| {
        let mut p = parent(m);
        let mut c = share_fork(m, &mut p);
        let pa = pa_of(m, &c, BASE);
        p.exit(m);
        check(m, &[&c]);
        // The child is the only one left: it takes the table and reuses its pages in place
        // (they were exclusive to the table, which only it links now).
        let frames = m.frames_out();
        write(m, &mut c, BASE + 3, b"c").unwrap();
        assert_eq!(c.stats().table_takeovers, 1);
        assert_eq!(pa_of(m, &c, BASE), pa, "written in place");
        assert_eq!(m.frames_out(), frames, "nothing copied");
        check(m, &[&c]);
        teardown(m, vec![c]);
    });
}

#[test]
fn child_exit_leaves_the_parent_writing_in_place() {
    with_machine(|m| {
        let mut p = parent(m);
        let c = share_fork(m, &mut p);
        let pa = pa_of(m, &p, BASE);
        c.exit(m);
        let frames = m.frames_out();
        write(m, &mut p, BASE + 3, b"p").unwrap();
        assert_eq!(pa_of(m, &p, BASE), pa);
        assert_eq!(m.frames_out(), frames);
        assert_eq!(p.stats().cow_copy_4k + p.stats().cow_copy_64k, 0);
        check(m, &[&p]);
        teardown(m, vec![p]);
    });
}

#[test]
fn unmapping_a_whole_span_drops_a_reference_and_part_of_one_breaks_it() {
    with_machine(|m| {
        let mut p = parent(m);
        let mut c = share_fork(m, &mut p);
        let out = m.model.live_frames();
        c.munmap(m, VirtAddr(BASE), SPAN).unwrap();
        assert_eq!(c.stats().table_drops, 1);
        assert_eq!(c.stats().table_breaks, 0);
        assert_eq!(m.model.live_frames(), out, "nothing freed, nothing copied");
        check(m, &[&p, &c]);
        c.munmap(m, VirtAddr(BASE + SPAN), PAGE_SIZE).unwrap();
        assert_eq!(c.stats().table_breaks, 1);
        check(m, &[&p, &c]);
        assert_eq!(read(m, &mut p, BASE + SPAN, 4).unwrap(), [0, 0, 0, 33]);
        assert!(matches!(
            read(m, &mut c, BASE + SPAN, 1),
            Err(FaultError::Segv { .. })
        ));
        assert_eq!(read(m, &mut c, BASE + SPAN + KB64 + 3, 1).unwrap(), [34]);
        // mprotect and madvise break too.
        c.mprotect(m, VirtAddr(BASE + 2 * SPAN), PAGE_SIZE, VmProt::READ)
            .unwrap();
        assert_eq!(c.stats().table_breaks, 2);
        check(m, &[&p, &c]);
        assert_eq!(read(m, &mut c, BASE + 2 * SPAN, 5).unwrap(), b"third");
        p.madvise_dontneed(m, VirtAddr(BASE + SPAN + KB64), KB64).unwrap();
        check(m, &[&p, &c]);
        assert_eq!(read(m, &mut p, BASE + SPAN + KB64 + 3, 1).unwrap(), [0]);
        assert_eq!(read(m, &mut c, BASE + SPAN + KB64 + 3, 1).unwrap(), [34]);
        teardown(m, vec![p, c]);
    });
}

#[test]
fn three_generations_share_one_table() {
    with_machine(|m| {
        let mut p = parent(m);
        let mut c = share_fork(m, &mut p);
        let mut g = share_fork(m, &mut c);
        assert_eq!(g.shared_tables(), 3);
        check(m, &[&p, &c, &g]);
        write(m, &mut c, BASE + 3, b"c").unwrap();
        check(m, &[&p, &c, &g]);
        p.exit(m);
        check(m, &[&c, &g]);
        write(m, &mut g, BASE + SPAN + 3, b"g").unwrap();
        check(m, &[&c, &g]);
        assert_eq!(read(m, &mut g, BASE + 3, 1).unwrap(), [1]);
        assert_eq!(read(m, &mut c, BASE + 3, 1).unwrap(), b"c");
        assert_eq!(read(m, &mut c, BASE + SPAN + 3, 1).unwrap(), [33]);
        assert_eq!(read(m, &mut g, BASE + SPAN + 3, 1).unwrap(), b"g");
        teardown(m, vec![c, g]);
    });
}

#[test]
fn copy_fork_from_a_shared_table_leaves_it_untouched() {
    with_machine(|m| {
        let mut p = parent(m);
        let mut c = share_fork(m, &mut p);
        c.set_fork_mode(ForkMode::Copy);
        let mut g = fork(m, &mut c).unwrap();
        assert!(g.stats().fork_dup_batches == 0 && c.stats().fork_dup_batches > 0);
        check(m, &[&p, &c, &g]);
        for (s, b) in [(&mut g, b"g"), (&mut c, b"c"), (&mut p, b"p")] {
            write(m, s, BASE + 3, b).unwrap();
        }
        check(m, &[&p, &c, &g]);
        assert_eq!(read(m, &mut g, BASE + 3, 1).unwrap(), b"g");
        assert_eq!(read(m, &mut c, BASE + 3, 1).unwrap(), b"c");
        assert_eq!(read(m, &mut p, BASE + 3, 1).unwrap(), b"p");
        teardown(m, vec![p, c, g]);
    });
}

#[test]
fn pinned_spans_are_copied_and_pins_never_go_through_a_shared_table() {
    with_machine(|m| {
        let mut p = parent(m);
        let pin = p.pin(m, VirtAddr(BASE + SPAN), 8, true).unwrap();
        let mut c = share_fork(m, &mut p);
        assert_eq!(p.stats().fork_tables_shared, 2);
        assert_eq!(p.stats().fork_tables_copied, 1);
        check(m, &[&p, &c]);
        write(m, &mut p, BASE + SPAN, b"dma").unwrap();
        assert_eq!(pa_of(m, &p, BASE + SPAN), Some(pin.pages()[0].0));
        assert_ne!(pa_of(m, &c, BASE + SPAN), Some(pin.pages()[0].0));
        // A read pin in the child of a page in a shared table breaks the table first, and
        // unshares the page: the parent keeps its frame.
        let before = pa_of(m, &p, BASE);
        let pin2 = c.pin(m, VirtAddr(BASE), 8, false).unwrap();
        assert_eq!(c.stats().table_breaks, 1);
        assert_ne!(Some(pin2.pages()[0].0), before);
        assert_eq!(pa_of(m, &p, BASE), before);
        check(m, &[&p, &c]);
        // The child's pinned span is not shared with a grandchild.
        let g = share_fork(m, &mut c);
        assert_eq!(c.stats().fork_tables_copied, 1);
        check(m, &[&p, &c, &g]);
        pin.release(m);
        pin2.release(m);
        teardown(m, vec![p, c, g]);
    });
}

#[test]
fn out_of_memory_while_breaking_changes_nothing() {
    with_machine(|m| {
        let mut p = parent(m);
        let mut c = share_fork(m, &mut p);
        let (frames, tables) = (m.frames_out(), m.model.live_frames());
        m.arm(1, true);
        assert_eq!(write(m, &mut c, BASE + 3, b"x"), Err(FaultError::Oom));
        assert_eq!(
            c.munmap(m, VirtAddr(BASE + PAGE_SIZE), PAGE_SIZE),
            Err(SpaceError::OutOfMemory)
        );
        assert_eq!(
            c.mprotect(m, VirtAddr(BASE), PAGE_SIZE, VmProt::READ),
            Err(SpaceError::OutOfMemory)
        );
        assert_eq!(
            c.madvise_dontneed(m, VirtAddr(BASE), PAGE_SIZE),
            Err(SpaceError::OutOfMemory)
        );
        m.fail_nth(None);
        assert_eq!((m.frames_out(), m.model.live_frames()), (frames, tables));
        assert_eq!(c.shared_tables(), 3);
        check(m, &[&p, &c]);
        assert_eq!(read(m, &mut c, BASE + 3, 1).unwrap(), [1]);
        assert_eq!(read(m, &mut c, BASE + PAGE_SIZE, 1).unwrap(), [0]);
        write(m, &mut c, BASE + 3, b"x").unwrap();
        assert_eq!(read(m, &mut p, BASE + 3, 1).unwrap(), [1]);
        check(m, &[&p, &c]);
        teardown(m, vec![p, c]);
    });
}

/// Calls with invalid arguments in spaces that share a table change nothing, not even the
/// sharing, and report the argument error even when no memory is left: the arguments are
/// validated before any table is copied.
#[test]
fn invalid_arguments_break_no_share_even_without_memory() {
    const AT: u64 = 0x1000_0000;
    let fixed = |va: u64| Placement::Fixed(VirtAddr(va));
    let anon = || VmaKind::AnonPrivate;
    fn err<T>(e: VmaError) -> Result<T, SpaceError> {
        Err(SpaceError::Vma(e))
    }
    for no_memory in [false, true] {
        with_machine(|m| {
            // One region at most: any split is refused.
            let config = VmaConfig {
                max_mappings: 1,
                ..VmaConfig::default()
            };
            let mut p = Space::with_config(m, config).unwrap();
            p.mmap(m, fixed(AT), 16 * PAGE_SIZE, VmProt::RW, anon(), MapAlign::Page)
                .unwrap();
            write(m, &mut p, AT, b"x").unwrap();
            p.set_fork_mode(ForkMode::ShareTables);
            let c = fork(m, &mut p).unwrap();
            assert_eq!((p.shared_tables(), c.shared_tables()), (1, 1));
            let (frames, tables) = (m.frames_out(), m.model.live_frames());
            if no_memory {
                m.arm(1, true);
            }
            let (page, hole) = (AT + 4 * PAGE_SIZE, AT + 15 * PAGE_SIZE);
            assert_eq!(p.munmap(m, VirtAddr(AT + 1), PAGE_SIZE), err(VmaError::Unaligned));
            assert_eq!(p.munmap(m, VirtAddr(AT), 0), err(VmaError::ZeroLength));
            assert_eq!(
                p.munmap(m, VirtAddr(page), PAGE_SIZE),
                err(VmaError::TooManyMappings)
            );
            assert_eq!(
                p.madvise_dontneed(m, VirtAddr(AT), PAGE_SIZE + 1),
                err(VmaError::Unaligned)
            );
            assert_eq!(
                p.madvise_dontneed(m, VirtAddr(hole), 2 * PAGE_SIZE),
                err(VmaError::NotMapped)
            );
            assert_eq!(
                p.mprotect(m, VirtAddr(AT + 1), PAGE_SIZE, VmProt::READ),
                err(VmaError::Unaligned)
            );
            assert_eq!(
                p.mprotect(m, VirtAddr(hole), 2 * PAGE_SIZE, VmProt::READ),
                err(VmaError::NotMapped)
            );
            assert_eq!(
                p.mprotect(m, VirtAddr(page), PAGE_SIZE, VmProt::READ),
                err(VmaError::TooManyMappings)
            );
            let r = p.mmap(m, fixed(AT + 1), PAGE_SIZE, VmProt::RW, anon(), MapAlign::Page);
            assert_eq!(r, err(VmaError::Unaligned));
            let r = p.mmap(m, fixed(page), KB64, VmProt::RW, anon(), MapAlign::Size64K);
            assert_eq!(r, err(VmaError::FixedMisaligned));
            let r = p.mmap(m, fixed(page), PAGE_SIZE, VmProt::READ, anon(), MapAlign::Page);
            assert_eq!(r, err(VmaError::TooManyMappings));
            m.fail_nth(None);
            assert_eq!((p.shared_tables(), c.shared_tables()), (1, 1), "nothing broken");
            assert_eq!((m.frames_out(), m.model.live_frames()), (frames, tables));
            assert_eq!(p.stats().table_breaks, 0);
            check(m, &[&p, &c]);
            assert_eq!(read(m, &mut p, AT, 1).unwrap(), b"x");
            teardown(m, vec![p, c]);
        });
    }
}

#[test]
fn out_of_memory_during_a_sharing_fork_leaves_no_child() {
    for n in 1.. {
        let injected = with_machine(|m| {
            let mut p = parent(m);
            // Spans far apart, so that the child needs level-1 and level-2 tables for each.
            map(m, &mut p, 0x80_0000_0000, PAGE_SIZE, VmProt::RW);
            write(m, &mut p, 0x80_0000_0000, b"far").unwrap();
            let (frames, tables) = (m.frames_out(), m.model.live_frames());
            m.arm(n, true);
            let r = fork(m, &mut p);
            let injected = m.failed;
            m.fail_nth(None);
            match r {
                Ok(c) => {
                    assert!(!injected);
                    teardown(m, vec![p, c]);
                }
                Err(e) => {
                    assert_eq!(e, SpaceError::OutOfMemory);
                    assert_eq!((m.frames_out(), m.model.live_frames()), (frames, tables));
                    assert_eq!(p.shared_tables(), 0);
                    check(m, &[&p]);
                    assert_eq!(read(m, &mut p, 0x80_0000_0000, 3).unwrap(), b"far");
                    write(m, &mut p, BASE + 3, b"w").unwrap();
                    check(m, &[&p]);
                    teardown(m, vec![p]);
                }
            }
            injected
        });
        if !injected {
            assert!(n > 2, "the fork allocates child tables");
            break;
        }
    }
}
