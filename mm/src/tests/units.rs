//! Unit tests: addresses, descriptors, attributes, TLB policy and single engine operations.

use super::super::model::{Access, El, Event, FaultKind, ModelRoot};
use super::super::tlb::{plan_flush, range_ops, FlushRequest, TlbScope};
use super::super::*;
use super::{Env, USER_ASID};

const KB4: u64 = 4 << 10;
const MB2: u64 = 2 << 20;
const GB1: u64 = 1 << 30;
const GB512: u64 = 512 << 30;
/// Simulated RAM the tests map (data pages are not simulated; only addresses matter).
const RAM: u64 = 0x4000_0000;

// ---------------------------------------------------------------------------------------
// Addresses and levels.

#[test]
fn level_geometry() {
    let want = [(39, GB512), (30, GB1), (21, MB2), (12, KB4)];
    for (n, (shift, size)) in want.into_iter().enumerate() {
        let l = Level::new(n as u8).unwrap();
        assert_eq!(l.shift(), shift);
        assert_eq!(l.entry_size(), size);
        assert_eq!(l.table_span(), size * 512);
        assert_eq!(l.index_of(size * 5 + 7), 5);
        assert_eq!(l.index_of(KERNEL_BASE | (size * 511)), 511);
    }
    assert_eq!(Level::new(4), None);
    assert_eq!(Level::L3.next(), None);
    assert_eq!(Level::L0.next(), Some(Level::L1));
    assert!(Level::L1.allows_block() && Level::L2.allows_block());
    assert!(!Level::L0.allows_block() && !Level::L3.allows_block());
    assert_eq!(KERNEL_BASE, 0xFFFF_0000_0000_0000);
    assert!(VirtAddr(KERNEL_BASE).is_upper_half() && !VirtAddr(USER_END - 1).is_upper_half());
}

#[test]
fn addr_end_steps() {
    // Inside one entry: clamps to end.
    assert_eq!(Level::L2.addr_end(0x1000, 0x5000), 0x5000);
    // Crosses: stops at the boundary.
    assert_eq!(Level::L2.addr_end(0x1000, 0x40_0000), 0x20_0000);
    assert_eq!(Level::L1.addr_end(GB1 - KB4, GB1 + KB4), GB1);
    // Top of the user half: end = 2^48 exactly.
    assert_eq!(Level::L0.addr_end(USER_END - GB512, USER_END), USER_END);
    assert_eq!(Level::L0.addr_end(USER_END - KB4, USER_END), USER_END);
}

#[test]
fn addr_end_at_top_of_address_space() {
    // The last entry of every level ends at 2^64, i.e. wraps to 0, and end = 0 means 2^64.
    for l in [Level::L0, Level::L1, Level::L2, Level::L3] {
        let last_entry = 0u64.wrapping_sub(l.entry_size());
        assert_eq!(l.addr_end(last_entry, 0), 0, "{l:?}");
        assert_eq!(l.addr_end(!0xFFFu64, 0), 0, "{l:?}");
        // With an end below the top the step must not wrap past it.
        assert_eq!(
            l.addr_end(last_entry, u64::MAX - 0xFFF),
            u64::MAX - 0xFFF,
            "{l:?}"
        );
    }
    // A full walk of the kernel half at level 0 takes exactly 512 steps and terminates.
    let (mut addr, end, mut steps) = (KERNEL_BASE, 0u64, 0);
    loop {
        let next = Level::L0.addr_end(addr, end);
        assert_ne!(next, addr);
        steps += 1;
        addr = next;
        if addr == end {
            break;
        }
    }
    assert_eq!(steps, 512);
}

// ---------------------------------------------------------------------------------------
// Descriptors and attributes.

#[test]
fn descriptor_fields_round_trip() {
    let d = Descriptor::leaf(Level::L3, PhysAddr(0x1234_5000))
        .with_attr_index(5)
        .with_ns(true)
        .with_ap(AccessPerm::El1RoEl0Ro)
        .with_sh(Shareability::Outer)
        .with_af(true)
        .with_ng(true)
        .with_dbm(true)
        .with_contiguous(true)
        .with_pxn(true)
        .with_uxn(true)
        .with_sw(0b1010);
    assert_eq!(
        d.0,
        0b11 | 5 << 2
            | 1 << 5
            | 0b11 << 6
            | 0b10 << 8
            | 1 << 10
            | 1 << 11
            | 0x1234_5000
            | 1 << 51
            | 1 << 52
            | 1 << 53
            | 1 << 54
            | 0b1010 << 55
    );
    assert_eq!(d.attr_index(), 5);
    assert!(d.ns() && d.af() && d.ng() && d.dbm() && d.contiguous() && d.pxn() && d.uxn());
    assert_eq!(d.ap(), AccessPerm::El1RoEl0Ro);
    assert_eq!(d.sh(), Shareability::Outer);
    assert_eq!(d.sw(), 0b1010);
    assert_eq!(d.output_address(Level::L3), PhysAddr(0x1234_5000));
    // Clearing every field gives back the bare page.
    let bare = d
        .with_attr_index(0)
        .with_ns(false)
        .with_ap(AccessPerm::El1Rw)
        .with_sh(Shareability::Non)
        .with_af(false)
        .with_ng(false)
        .with_dbm(false)
        .with_contiguous(false)
        .with_pxn(false)
        .with_uxn(false)
        .with_sw(0);
    assert_eq!(bare, Descriptor::leaf(Level::L3, PhysAddr(0x1234_5000)));

    let t = Descriptor::table(PhysAddr(0x8_0000_3000))
        .with_ap_table(ApTable::NoWriteNoEl0)
        .with_pxn_table(true)
        .with_uxn_table(true)
        .with_ns_table(true);
    assert_eq!(
        t.0,
        0b11 | 0x8_0000_3000 | 0b11 << 61 | 1 << 59 | 1 << 60 | 1 << 63
    );
    assert_eq!(t.ap_table(), ApTable::NoWriteNoEl0);
    assert!(t.ap_table().denies_el0() && t.ap_table().denies_write());
    assert!(t.pxn_table() && t.uxn_table() && t.ns_table());
    assert_eq!(t.next_table(), PhysAddr(0x8_0000_3000));
    assert_eq!(t.with_address(PhysAddr(0x5000)).next_table(), PhysAddr(0x5000));
}

#[test]
fn descriptor_kind_per_level() {
    let table = Descriptor::table(PhysAddr(0x7000));
    let block = Descriptor(0x4000_0000 | 0b01);
    for l in [Level::L0, Level::L1, Level::L2] {
        assert_eq!(
            table.kind(l),
            DescriptorKind::Table {
                next: PhysAddr(0x7000)
            }
        );
    }
    assert_eq!(
        table.kind(Level::L3),
        DescriptorKind::Page { oa: PhysAddr(0x7000) }
    );
    assert_eq!(
        block.kind(Level::L0),
        DescriptorKind::Invalid,
        "no level-0 blocks"
    );
    assert_eq!(
        block.kind(Level::L1),
        DescriptorKind::Block {
            oa: PhysAddr(0x4000_0000)
        }
    );
    assert_eq!(
        block.kind(Level::L2),
        DescriptorKind::Block {
            oa: PhysAddr(0x4000_0000)
        }
    );
    assert_eq!(
        block.kind(Level::L3),
        DescriptorKind::Invalid,
        "reserved at level 3"
    );
    assert_eq!(
        Descriptor(0x4000_0000 | 0b10).kind(Level::L1),
        DescriptorKind::Invalid
    );
    assert_eq!(Descriptor::INVALID.kind(Level::L2), DescriptorKind::Invalid);
    // Block output addresses are truncated to the block size.
    assert_eq!(
        Descriptor(0x4020_0000 | 1).kind(Level::L1),
        DescriptorKind::Block {
            oa: PhysAddr(0x4000_0000)
        }
    );
}

#[test]
fn attrs_encoding() {
    let k = Descriptor(Attrs::KERNEL_RW.descriptor_bits());
    assert_eq!(k.attr_index(), 1);
    assert_eq!(k.ap(), AccessPerm::El1Rw);
    assert_eq!(k.sh(), Shareability::Inner);
    assert!(k.af() && !k.ng() && k.pxn() && k.uxn());
    let x = Descriptor(Attrs::KERNEL_RX.descriptor_bits());
    assert!(!x.pxn() && x.uxn() && x.ap() == AccessPerm::El1Ro);
    let u = Descriptor(Attrs::USER_RX.descriptor_bits());
    assert!(u.ng() && u.pxn() && !u.uxn() && u.ap() == AccessPerm::El1RoEl0Ro);
    let urw = Descriptor(Attrs::USER_RW.descriptor_bits());
    assert_eq!(urw.ap(), AccessPerm::El1RwEl0Rw);
    assert_eq!(Descriptor(Attrs::DEVICE.descriptor_bits()).attr_index(), 0);
    let nc = Attrs::new(Prot::READ, MemType::NonCacheable, true);
    assert_eq!(Descriptor(nc.descriptor_bits()).attr_index(), 2);
    assert_eq!(MAIR_EL1_VALUE, 0x0044_FF04);

    // Every encodable combination decodes back to itself.
    let mut n = 0;
    for bits in 0..32u8 {
        let prot = [
            Prot::READ,
            Prot::WRITE,
            Prot::USER,
            Prot::EXEC_KERNEL,
            Prot::EXEC_USER,
        ]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(Prot::empty(), |a, (_, p)| a | p);
        for mem in [MemType::Device, MemType::Normal, MemType::NonCacheable] {
            for global in [false, true] {
                let a = Attrs::new(prot, mem, global);
                if a.validate().is_ok() {
                    let d = a.leaf(Level::L3, PhysAddr(0x9000));
                    assert_eq!(Attrs::from_descriptor(d), a);
                    n += 1;
                }
            }
        }
    }
    assert!(n > 30);
}

#[test]
fn attrs_validation() {
    let rw_user_kx = Prot::READ | Prot::WRITE | Prot::USER | Prot::EXEC_KERNEL;
    assert_eq!(
        Attrs::new(Prot::WRITE, MemType::Normal, true).validate(),
        Err(AttrsError::NotReadable)
    );
    assert_eq!(
        Attrs::new(rw_user_kx, MemType::Normal, false).validate(),
        Err(AttrsError::UserWritableKernelExec)
    );
    assert_eq!(
        Attrs::new(Prot::READ | Prot::EXEC_KERNEL, MemType::Device, true).validate(),
        Err(AttrsError::ExecutableDevice)
    );
    assert_eq!(
        Attrs::new(Prot::READ, MemType::Other(5), true).validate(),
        Err(AttrsError::UnknownMemType)
    );
    assert_eq!(MemType::from_attr_index(6), MemType::Other(6));
}

// ---------------------------------------------------------------------------------------
// TLB policy.

fn plan(req: FlushRequest, range: bool) -> Vec<TlbOp> {
    let mut v = Vec::new();
    plan_flush(&req, range, |op| v.push(op));
    v
}

fn req(
    scope: TlbScope,
    start: u64,
    pages: u64,
    stride: u64,
    leaf_only: bool,
    level: Option<Level>,
) -> FlushRequest {
    FlushRequest {
        scope,
        start,
        last: start + pages * stride - 1,
        stride,
        leaf_only,
        level,
    }
}

#[test]
fn policy_small_ranges_use_per_va_ops() {
    let s = TlbScope::Asid(Asid(3));
    let ops = plan(req(s, 0x10_0000, 1, KB4, true, Some(Level::L3)), true);
    assert_eq!(
        ops,
        [TlbOp::Va {
            va: VirtAddr(0x10_0000),
            asid: Asid(3),
            leaf_only: true,
            level: Some(Level::L3)
        }]
    );
    let ops = plan(req(s, 0x10_0000, MAX_TLBI_OPS, KB4, true, Some(Level::L3)), false);
    assert_eq!(ops.len() as u64, MAX_TLBI_OPS);
    assert!(ops.iter().all(|o| matches!(o, TlbOp::Va { leaf_only: true, .. })));
    // Kernel: all-ASID forms, non-leaf without hint.
    let ops = plan(
        req(TlbScope::AllAsids, KERNEL_BASE, 3, MB2, false, Some(Level::L2)),
        false,
    );
    assert_eq!(ops.len(), 3);
    assert!(ops.iter().all(|o| matches!(
        o,
        TlbOp::VaAllAsids {
            leaf_only: false,
            level: None,
            ..
        }
    )));
    assert_eq!(
        ops[2],
        TlbOp::VaAllAsids {
            va: VirtAddr(KERNEL_BASE + 2 * MB2),
            leaf_only: false,
            level: None
        }
    );
}

#[test]
fn policy_large_ranges_fall_back() {
    let ops = plan(
        req(TlbScope::Asid(Asid(3)), 0, MAX_TLBI_OPS + 1, KB4, true, None),
        false,
    );
    assert_eq!(ops, [TlbOp::Asid(Asid(3))]);
    let ops = plan(
        req(TlbScope::AllAsids, KERNEL_BASE, MAX_TLBI_OPS + 1, KB4, true, None),
        false,
    );
    assert_eq!(ops, [TlbOp::All]);
    // With range support: a handful of range ops instead.
    let ops = plan(
        req(TlbScope::Asid(Asid(3)), 0, 1000, KB4, true, Some(Level::L3)),
        true,
    );
    assert!(
        ops.len() <= 5
            && ops
                .iter()
                .all(|o| matches!(o, TlbOp::Range(r) if r.asid == Some(Asid(3)) && r.leaf_only))
    );
    // Beyond what range ops encode: by ASID again.
    let ops = plan(
        req(TlbScope::Asid(Asid(3)), 0, MAX_TLBI_RANGE_PAGES, KB4, true, None),
        true,
    );
    assert_eq!(ops, [TlbOp::Asid(Asid(3))]);
    // Blocks count by stride: 100 × 2 MiB is 100 ops > 64 without range.
    let ops = plan(
        req(TlbScope::Asid(Asid(3)), 0, 40, MB2, true, Some(Level::L2)),
        false,
    );
    assert_eq!(ops.len(), 40);
}

#[test]
fn range_decomposition_is_exact() {
    let check = |start: u64, pages: u64| {
        let mut addr = start;
        let mut n = 0;
        range_ops(start, pages, |base, r| {
            assert_eq!(base, addr, "pieces must be contiguous");
            let covered = match r {
                None => 1,
                Some((scale, num)) => {
                    assert!(scale <= 3 && num <= 31);
                    (num as u64 + 1) << (5 * scale as u32 + 1)
                }
            };
            addr = addr.wrapping_add(covered * KB4);
            n += 1;
        });
        assert_eq!(addr, start.wrapping_add(pages * KB4), "{pages} pages");
        assert!(n <= 5, "{pages} pages took {n} ops");
    };
    for pages in 1..3000 {
        check(0x4000_0000, pages);
    }
    for pages in [
        MAX_TLBI_RANGE_PAGES - 1,
        MAX_TLBI_RANGE_PAGES - 2,
        65536,
        65537,
        1 << 20,
    ] {
        check(KERNEL_BASE, pages);
        // Ranges ending exactly at 2^64.
        check(0u64.wrapping_sub(pages * KB4), pages);
    }
    for pages in 1..600 {
        check(0u64.wrapping_sub(pages * KB4), pages);
    }
}

// ---------------------------------------------------------------------------------------
// Engine operations.

fn ka(off: u64) -> VirtAddr {
    VirtAddr(KERNEL_BASE + off)
}

/// Checks `va` translates to `pa` with `attrs` in the engine and through the model MMU.
fn expect_mapped(e: &mut Env, kernel: bool, va: VirtAddr, pa: u64, attrs: Attrs) {
    let (m, r) = e.split(kernel);
    let t = r.translate(m, va).unwrap_or_else(|| panic!("{va:?} not mapped"));
    assert_eq!(t.pa, PhysAddr(pa), "{va:?}");
    assert_eq!(t.attrs, attrs, "{va:?}");
    let asid = r.asid().map_or(0, |a| a.0);
    let w = m.translate_cached(r.pa(), asid, va).unwrap();
    assert_eq!(w.pa(va.0), PhysAddr(pa));
}

fn expect_unmapped(e: &mut Env, kernel: bool, va: VirtAddr) {
    let (m, r) = e.split(kernel);
    assert_eq!(r.translate(m, va), None, "{va:?} still mapped");
    assert_eq!(
        m.table_walk(r.pa(), va).map_err(|f| f.kind),
        Err(FaultKind::Translation)
    );
}

#[test]
fn map_single_page() {
    let mut e = Env::new(false);
    e.u.map(
        &mut e.m,
        VirtAddr(0x40_1000),
        PhysAddr(RAM),
        KB4,
        Attrs::USER_RW,
        true,
    )
    .unwrap();
    e.check();
    expect_mapped(&mut e, false, VirtAddr(0x40_1000), RAM, Attrs::USER_RW);
    expect_mapped(&mut e, false, VirtAddr(0x40_1abc), RAM + 0xabc, Attrs::USER_RW);
    expect_unmapped(&mut e, false, VirtAddr(0x40_2000));
    let t = e.u.translate(&e.m, VirtAddr(0x40_1000)).unwrap();
    assert_eq!(t.level, Level::L3);
    let s = *e.u.stats();
    assert_eq!(s.tables_allocated, 4, "root + L1 + L2 + L3");
    assert_eq!(s.desc_writes, 4, "three table links and the page");
    assert_eq!(s.tlbi_total(), 0, "invalid -> valid needs no TLBI");
    assert!(s.publishes >= 1);
    assert_eq!(e.m.tables_under(e.u.pa()), 4);
    // Access permissions through the model MMU.
    let va = VirtAddr(0x40_1000);
    assert!(e
        .m
        .access(e.u.pa(), USER_ASID.0, va, El::El0, Access::Write)
        .is_ok());
    let f =
        e.m.access(e.u.pa(), USER_ASID.0, va, El::El0, Access::Exec)
            .unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::Permission, Level::L3));
    e.teardown();
}

#[test]
fn map_uses_blocks_when_aligned() {
    let mut e = Env::new(false);
    // 1 GiB block: VA and PA 1 GiB aligned.
    e.u.map(&mut e.m, VirtAddr(GB1), PhysAddr(GB1), GB1, Attrs::USER_RW, true)
        .unwrap();
    assert_eq!(
        e.u.translate(&e.m, VirtAddr(GB1 + 0x1234)).unwrap().level,
        Level::L1
    );
    // 2 MiB + 8 KiB starting 4 KiB below a 2 MiB boundary, PA congruent: page, block, page.
    let va = 4 * GB1 + MB2 - KB4;
    e.u.map(
        &mut e.m,
        VirtAddr(va),
        PhysAddr(RAM + MB2 - KB4),
        MB2 + 2 * KB4,
        Attrs::USER_RO,
        true,
    )
    .unwrap();
    let levels: Vec<(u64, Level)> = e.u.leaves(&e.m).map(|l| (l.va.0, l.level)).collect();
    assert_eq!(
        levels,
        [
            (GB1, Level::L1),
            (va, Level::L3),
            (va + KB4, Level::L2),
            (va + KB4 + MB2, Level::L3)
        ]
    );
    // PA not congruent: pages only.
    e.u.map(
        &mut e.m,
        VirtAddr(8 * GB1),
        PhysAddr(RAM + KB4),
        MB2,
        Attrs::USER_RO,
        true,
    )
    .unwrap();
    assert_eq!(e.u.translate(&e.m, VirtAddr(8 * GB1)).unwrap().level, Level::L3);
    // Blocks not allowed: pages only.
    e.u.map(
        &mut e.m,
        VirtAddr(9 * GB1),
        PhysAddr(RAM),
        MB2,
        Attrs::USER_RO,
        false,
    )
    .unwrap();
    assert_eq!(e.u.translate(&e.m, VirtAddr(9 * GB1)).unwrap().level, Level::L3);
    e.check();
    for (va, pa) in [
        (GB1, GB1),
        (GB1 + GB1 - KB4, 2 * GB1 - KB4),
        (va + 5 * KB4, RAM + MB2 + 4 * KB4),
    ] {
        let attrs = if va < 2 * GB1 {
            Attrs::USER_RW
        } else {
            Attrs::USER_RO
        };
        expect_mapped(&mut e, false, VirtAddr(va), pa, attrs);
    }
    e.teardown();
}

#[test]
fn map_errors_change_nothing() {
    let mut e = Env::new(false);
    e.u.map(
        &mut e.m,
        VirtAddr(0x20_0000),
        PhysAddr(RAM),
        4 * KB4,
        Attrs::USER_RW,
        true,
    )
    .unwrap();
    e.k.map(&mut e.m, ka(0), PhysAddr(RAM), KB4, Attrs::KERNEL_RW, true)
        .unwrap();
    let before = e.m.snapshot();
    let counters = e.m.counters;
    let a = Attrs::USER_RW;
    let cases: Vec<(bool, u64, u64, u64, Attrs, MapError)> = vec![
        (false, 0x1000, RAM, 0, a, MapError::ZeroLength),
        (
            false,
            0x1001,
            RAM,
            KB4,
            a,
            MapError::UnalignedVa(VirtAddr(0x1001)),
        ),
        (
            false,
            0x1000,
            RAM + 1,
            KB4,
            a,
            MapError::UnalignedPa(PhysAddr(RAM + 1)),
        ),
        (false, 0x1000, RAM, 100, a, MapError::UnalignedLen(100)),
        (
            true,
            !0xFFFu64,
            RAM,
            2 * KB4,
            Attrs::KERNEL_RW,
            MapError::VaOverflow,
        ),
        (
            false,
            USER_END - KB4,
            RAM,
            2 * KB4,
            a,
            MapError::OutOfRange {
                va: VirtAddr(USER_END - KB4),
                len: 2 * KB4,
            },
        ),
        (
            false,
            KERNEL_BASE,
            RAM,
            KB4,
            a,
            MapError::OutOfRange {
                va: VirtAddr(KERNEL_BASE),
                len: KB4,
            },
        ),
        (
            true,
            KERNEL_BASE - KB4,
            RAM,
            KB4,
            Attrs::KERNEL_RW,
            MapError::OutOfRange {
                va: VirtAddr(KERNEL_BASE - KB4),
                len: KB4,
            },
        ),
        (
            false,
            0x1000,
            PA_END - KB4,
            2 * KB4,
            a,
            MapError::PaOutOfRange(PhysAddr(PA_END - KB4)),
        ),
        (
            false,
            0x1000,
            RAM,
            KB4,
            Attrs::KERNEL_RW,
            MapError::BadAttrs(AttrsError::GlobalInUserSpace),
        ),
        (
            false,
            0x1000,
            RAM,
            KB4,
            Attrs::new(Prot::WRITE, MemType::Normal, false),
            MapError::BadAttrs(AttrsError::NotReadable),
        ),
        // Overlaps the existing mapping: reports the first mapped page.
        (
            false,
            0x1F_E000,
            RAM,
            4 * KB4,
            a,
            MapError::AlreadyMapped(VirtAddr(0x20_0000)),
        ),
        (
            false,
            0x20_2000,
            RAM,
            MB2,
            a,
            MapError::AlreadyMapped(VirtAddr(0x20_2000)),
        ),
        (
            true,
            0,
            RAM,
            KB4,
            Attrs::KERNEL_RW,
            MapError::OutOfRange {
                va: VirtAddr(0),
                len: KB4,
            },
        ),
        (
            true,
            KERNEL_BASE,
            RAM,
            2 * MB2,
            Attrs::KERNEL_RW,
            MapError::AlreadyMapped(VirtAddr(KERNEL_BASE)),
        ),
    ];
    for (kernel, va, pa, len, attrs, want) in cases {
        let (m, r) = e.split(kernel);
        assert_eq!(r.map(m, VirtAddr(va), PhysAddr(pa), len, attrs, true), Err(want));
    }
    // Unmap/protect validate the same way.
    assert_eq!(
        e.u.unmap(&mut e.m, VirtAddr(0x1000), 0),
        Err(MapError::ZeroLength)
    );
    assert_eq!(
        e.u.protect(&mut e.m, VirtAddr(0), KB4, Attrs::DEVICE),
        Err(MapError::BadAttrs(AttrsError::GlobalInUserSpace))
    );
    assert_eq!(e.m.snapshot(), before, "a refused operation wrote something");
    assert_eq!(
        e.m.counters, counters,
        "a refused operation allocated or invalidated"
    );
    e.teardown();
}

#[test]
fn top_of_kernel_half() {
    let mut e = Env::new(false);
    let last_page = VirtAddr(!0xFFFu64);
    e.k.map(&mut e.m, last_page, PhysAddr(RAM), KB4, Attrs::KERNEL_RW, true)
        .unwrap();
    expect_mapped(&mut e, true, VirtAddr(u64::MAX), RAM + 0xFFF, Attrs::KERNEL_RW);
    // The last 1 GiB minus that page... is taken; map the GiB below as a block.
    let gb = VirtAddr(0u64.wrapping_sub(2 * GB1));
    e.k.map(&mut e.m, gb, PhysAddr(GB1), GB1, Attrs::KERNEL_RO, true)
        .unwrap();
    assert_eq!(e.k.translate(&e.m, gb).unwrap().level, Level::L1);
    let leaves: Vec<_> = e.k.leaves(&e.m).map(|l| (l.va, l.level)).collect();
    assert_eq!(leaves, [(gb, Level::L1), (last_page, Level::L3)]);
    e.check();
    // Unmap a range ending exactly at 2^64 through the block's end.
    e.m.fill_all();
    e.k.unmap(&mut e.m, VirtAddr(0u64.wrapping_sub(GB1 + MB2)), GB1 + MB2)
        .unwrap();
    e.check();
    expect_unmapped(&mut e, true, last_page);
    expect_mapped(&mut e, true, gb, GB1, Attrs::KERNEL_RO);
    assert_eq!(e.k.translate(&e.m, VirtAddr(0u64.wrapping_sub(GB1 + MB2))), None);
    // The block was split (break-before-make) to unmap its last 2 MiB.
    assert_eq!(e.k.stats().splits, 1);
    // The whole half, at once.
    e.m.fill_all();
    e.k.unmap(&mut e.m, VirtAddr(KERNEL_BASE), 0u64.wrapping_sub(KERNEL_BASE))
        .unwrap();
    e.check();
    assert_eq!(e.k.leaves(&e.m).count(), 0);
    assert_eq!(e.m.tables_under(e.k.pa()), 1);
    // Mapping the very last 1 GiB as a block.
    let top = VirtAddr(0u64.wrapping_sub(GB1));
    e.k.map(&mut e.m, top, PhysAddr(GB1), GB1, Attrs::KERNEL_RW, true)
        .unwrap();
    expect_mapped(&mut e, true, VirtAddr(u64::MAX), 2 * GB1 - 1, Attrs::KERNEL_RW);
    e.teardown();
}

#[test]
fn top_of_user_half_and_level0_boundary() {
    let mut e = Env::new(false);
    // The last 2 MiB of the user half as a block, and a range crossing a level-0 boundary.
    e.u.map(
        &mut e.m,
        VirtAddr(USER_END - MB2),
        PhysAddr(RAM),
        MB2,
        Attrs::USER_RW,
        true,
    )
    .unwrap();
    e.u.map(
        &mut e.m,
        VirtAddr(GB512 - 2 * KB4),
        PhysAddr(RAM),
        4 * KB4,
        Attrs::USER_RO,
        true,
    )
    .unwrap();
    e.check();
    expect_mapped(
        &mut e,
        false,
        VirtAddr(USER_END - 1),
        RAM + MB2 - 1,
        Attrs::USER_RW,
    );
    expect_mapped(
        &mut e,
        false,
        VirtAddr(GB512 + KB4),
        RAM + 3 * KB4,
        Attrs::USER_RO,
    );
    assert!(e.m.read(e.u.pa(), 0).is_table(Level::L0) && e.m.read(e.u.pa(), 1).is_table(Level::L0));
    e.m.fill_all();
    e.u.unmap(&mut e.m, VirtAddr(USER_END - KB4), KB4).unwrap();
    e.check();
    expect_unmapped(&mut e, false, VirtAddr(USER_END - KB4));
    expect_mapped(
        &mut e,
        false,
        VirtAddr(USER_END - 2 * KB4),
        RAM + MB2 - 2 * KB4,
        Attrs::USER_RW,
    );
    e.m.fill_all();
    e.u.unmap(&mut e.m, VirtAddr(GB512 - KB4), 2 * KB4).unwrap();
    e.check();
    let vas: Vec<u64> =
        e.u.leaves(&e.m)
            .filter(|l| l.va.0 < GB512 * 2)
            .map(|l| l.va.0)
            .collect();
    assert_eq!(vas, [GB512 - 2 * KB4, GB512 + KB4]);
    e.teardown();
}

#[test]
fn unmap_splits_blocks_and_frees_empty_tables() {
    let mut e = Env::new(false);
    e.u.map(&mut e.m, VirtAddr(GB1), PhysAddr(GB1), GB1, Attrs::USER_RW, true)
        .unwrap();
    e.m.fill_all();
    e.u.reset_stats();
    // One page in the middle of the 1 GiB block: L1 block -> L2 table (511 blocks + 1 table)
    // -> the 2 MiB block around the page -> L3 table.
    let hole = GB1 + 300 * MB2 + 17 * KB4;
    e.u.unmap(&mut e.m, VirtAddr(hole), KB4).unwrap();
    e.check();
    let s = *e.u.stats();
    assert_eq!(s.splits, 2);
    assert_eq!(s.tables_allocated, 2);
    assert_eq!(
        s.bbm, 1,
        "only the live L1 block needs BBM; the L2 split happens unlinked"
    );
    assert_eq!(
        s.tlbi_total(),
        1,
        "one TLBI for the block; the page was never live as a page"
    );
    expect_unmapped(&mut e, false, VirtAddr(hole));
    expect_mapped(&mut e, false, VirtAddr(hole - KB4), hole - KB4, Attrs::USER_RW);
    expect_mapped(&mut e, false, VirtAddr(hole + KB4), hole + KB4, Attrs::USER_RW);
    expect_mapped(&mut e, false, VirtAddr(GB1), GB1, Attrs::USER_RW);
    assert_eq!(e.u.translate(&e.m, VirtAddr(GB1)).unwrap().level, Level::L2);
    assert_eq!(
        e.u.translate(&e.m, VirtAddr(hole + KB4)).unwrap().level,
        Level::L3
    );
    // Unmap everything: every table but the root goes.
    e.m.fill_all();
    e.u.unmap(&mut e.m, VirtAddr(GB1), GB1).unwrap();
    e.check();
    assert_eq!(e.m.tables_under(e.u.pa()), 1);
    assert_eq!(e.m.live_frames(), 2);
    e.teardown();
}

#[test]
fn unmap_of_a_whole_subtree_is_one_write() {
    let mut e = Env::new(false);
    e.u.map(
        &mut e.m,
        VirtAddr(0x4000_0000),
        PhysAddr(RAM),
        MB2,
        Attrs::USER_RW,
        false,
    )
    .unwrap();
    e.m.fill_all();
    e.u.reset_stats();
    e.u.unmap(&mut e.m, VirtAddr(0x4000_0000), MB2).unwrap();
    e.check();
    let s = *e.u.stats();
    // L2 entry (covers the L3 table) detached; then L1 and L0 entries of emptied tables.
    assert_eq!(s.desc_writes, 3);
    assert_eq!(s.tables_freed, 3);
    assert_eq!(s.tlbi_total(), 1, "512 pages > MAX_TLBI_OPS: one ASID flush");
    assert_eq!(s.tlbi_asid, 1);
    e.teardown();
}

#[test]
fn unmap_small_range_uses_leaf_tlbis_with_level_hint() {
    let mut e = Env::new(false);
    e.u.map(
        &mut e.m,
        VirtAddr(0x4000_0000),
        PhysAddr(RAM),
        16 * KB4,
        Attrs::USER_RW,
        true,
    )
    .unwrap();
    e.m.fill_all();
    e.m.clear_log();
    e.u.unmap(&mut e.m, VirtAddr(0x4000_2000), 3 * KB4).unwrap();
    e.check();
    let ops: Vec<TlbOp> =
        e.m.log
            .iter()
            .filter_map(|ev| match ev {
                Event::Maintenance(ops) => Some(ops.clone()),
                _ => None,
            })
            .flatten()
            .collect();
    let want: Vec<TlbOp> = (0..3)
        .map(|i| TlbOp::Va {
            va: VirtAddr(0x4000_2000 + i * KB4),
            asid: USER_ASID,
            leaf_only: true,
            level: Some(Level::L3),
        })
        .collect();
    assert_eq!(ops, want);
    // Unmapping the rest frees the L3 table: non-leaf TLBIs, no hint.
    e.m.fill_all();
    e.m.clear_log();
    e.u.unmap(&mut e.m, VirtAddr(0x4000_0000), 16 * KB4).unwrap();
    e.check();
    let ops: Vec<TlbOp> =
        e.m.log
            .iter()
            .filter_map(|ev| match ev {
                Event::Maintenance(o) => Some(o.clone()),
                _ => None,
            })
            .flatten()
            .collect();
    assert!(
        !ops.is_empty()
            && ops.iter().all(|o| matches!(
                o,
                TlbOp::Va {
                    leaf_only: false,
                    level: None,
                    ..
                }
            )),
        "{ops:?}"
    );
    e.teardown();
}

#[test]
fn range_tlbi_when_available() {
    let mut e = Env::new(true);
    e.k.map(&mut e.m, ka(0), PhysAddr(RAM), 300 * KB4, Attrs::KERNEL_RW, true)
        .unwrap();
    e.m.fill_all();
    e.k.reset_stats();
    e.k.protect(&mut e.m, ka(0), 300 * KB4, Attrs::KERNEL_RO).unwrap();
    e.check();
    let s = *e.k.stats();
    assert_eq!(s.bbm, 0, "a permission change is done in place");
    assert!(s.tlbi_range >= 1 && s.tlbi_total() <= 5, "{s:?}");
    assert_eq!(s.tlbi_all, 0);
    expect_mapped(&mut e, true, ka(299 * KB4), RAM + 299 * KB4, Attrs::KERNEL_RO);
    e.teardown();
}

#[test]
fn protect_in_place_and_with_bbm() {
    let mut e = Env::new(false);
    e.u.map(
        &mut e.m,
        VirtAddr(0x10_0000),
        PhysAddr(RAM),
        8 * KB4,
        Attrs::USER_RW,
        true,
    )
    .unwrap();
    e.m.fill_all();
    e.u.reset_stats();
    // Permission only: in place, one batch of leaf TLBIs.
    e.u.protect(&mut e.m, VirtAddr(0x10_0000), 8 * KB4, Attrs::USER_RO)
        .unwrap();
    e.check();
    let s = *e.u.stats();
    assert_eq!((s.bbm, s.desc_writes, s.tlbi_va, s.tlbi_batches), (0, 8, 8, 1));
    // A write through the TLB now faults.
    let f =
        e.m.access(e.u.pa(), USER_ASID.0, VirtAddr(0x10_0000), El::El0, Access::Write)
            .unwrap_err();
    assert_eq!(f.kind, FaultKind::Permission);
    // Same permissions again: nothing to do.
    e.u.reset_stats();
    e.u.protect(&mut e.m, VirtAddr(0x10_0000), 8 * KB4, Attrs::USER_RO)
        .unwrap();
    assert_eq!(e.u.stats().desc_writes + e.u.stats().tlbi_total(), 0);
    // Memory type: break-before-make for each page.
    e.m.fill_all();
    let nc = Attrs::new(Prot::READ | Prot::USER, MemType::NonCacheable, false);
    e.u.protect(&mut e.m, VirtAddr(0x10_0000), 8 * KB4, nc).unwrap();
    e.check();
    assert_eq!(e.u.stats().bbm, 8);
    expect_mapped(&mut e, false, VirtAddr(0x10_7000), RAM + 0x7000, nc);
    // Holes are skipped.
    e.u.protect(&mut e.m, VirtAddr(0), MB2, Attrs::USER_RX).unwrap();
    e.check();
    expect_mapped(&mut e, false, VirtAddr(0x10_3000), RAM + 0x3000, Attrs::USER_RX);
    expect_unmapped(&mut e, false, VirtAddr(0x10_8000));
    e.teardown();
}

#[test]
fn protect_part_of_a_block_splits_it() {
    let mut e = Env::new(false);
    e.k.map(&mut e.m, ka(GB1), PhysAddr(GB1), GB1, Attrs::KERNEL_RW, true)
        .unwrap();
    e.m.fill_all();
    e.k.reset_stats();
    // A 2 MiB-aligned piece plus some pages: 1 GiB -> 2 MiB blocks, one of them -> pages.
    let start = GB1 + 10 * MB2;
    e.k.protect(&mut e.m, ka(start), MB2 + 3 * KB4, Attrs::KERNEL_RO)
        .unwrap();
    e.check();
    assert_eq!(e.k.stats().splits, 2);
    assert_eq!(e.k.stats().bbm, 1);
    expect_mapped(&mut e, true, ka(start - KB4), start - KB4, Attrs::KERNEL_RW);
    expect_mapped(&mut e, true, ka(start), start, Attrs::KERNEL_RO);
    assert_eq!(e.k.translate(&e.m, ka(start)).unwrap().level, Level::L2);
    expect_mapped(
        &mut e,
        true,
        ka(start + MB2 + 2 * KB4),
        start + MB2 + 2 * KB4,
        Attrs::KERNEL_RO,
    );
    expect_mapped(
        &mut e,
        true,
        ka(start + MB2 + 3 * KB4),
        start + MB2 + 3 * KB4,
        Attrs::KERNEL_RW,
    );
    assert_eq!(e.k.translate(&e.m, ka(start + MB2)).unwrap().level, Level::L3);
    e.teardown();
}

#[test]
fn copy_range_between_address_spaces() {
    let mut e = Env::new(false);
    e.u.map(&mut e.m, VirtAddr(0), PhysAddr(0), 2 * MB2, Attrs::USER_RW, true)
        .unwrap();
    e.u.map(
        &mut e.m,
        VirtAddr(4 * MB2),
        PhysAddr(RAM),
        5 * KB4,
        Attrs::USER_RX,
        true,
    )
    .unwrap();
    let mut dst = Root::new_user(&mut e.m, Asid(9)).unwrap();
    e.m.add_root(dst.pa(), ModelRoot::User { asid: Asid(9) });
    // Copy [1 MiB, 4 MiB + 3 pages): half a block, a whole block, three pages; skip the RX
    // page at 4 MiB + 1 page; make everything read-only in the copy.
    let mut seen = Vec::new();
    let n =
        e.u.copy_range(
            &mut e.m,
            &mut dst,
            VirtAddr(MB2 / 2),
            4 * MB2 - MB2 / 2 + 3 * KB4,
            |l| {
                seen.push((l.va.0, l.size, l.level));
                (l.va.0 != 4 * MB2 + KB4).then_some((l.pa, l.attrs.with_prot(Prot::READ | Prot::USER)))
            },
        )
        .unwrap();
    assert_eq!(
        seen,
        [
            (MB2 / 2, MB2 / 2, Level::L2),
            (MB2, MB2, Level::L2),
            (4 * MB2, KB4, Level::L3),
            (4 * MB2 + KB4, KB4, Level::L3),
            (4 * MB2 + 2 * KB4, KB4, Level::L3),
        ]
    );
    assert_eq!(n, 4);
    e.check();
    let ro = Attrs::USER_RO;
    let t = dst.translate(&e.m, VirtAddr(MB2 + 5)).unwrap();
    assert_eq!((t.pa, t.attrs, t.level), (PhysAddr(MB2 + 5), ro, Level::L2));
    assert_eq!(dst.translate(&e.m, VirtAddr(MB2 / 2)).unwrap().level, Level::L3);
    assert_eq!(dst.translate(&e.m, VirtAddr(MB2 / 2 - KB4)), None);
    assert_eq!(dst.translate(&e.m, VirtAddr(4 * MB2 + KB4)), None);
    assert_eq!(
        dst.translate(&e.m, VirtAddr(4 * MB2 + 2 * KB4)).unwrap().pa,
        PhysAddr(RAM + 2 * KB4)
    );
    assert_eq!(dst.translate(&e.m, VirtAddr(4 * MB2 + 3 * KB4)), None);
    // The destination must be empty in the range.
    assert_eq!(
        e.u.copy_range(&mut e.m, &mut dst, VirtAddr(0), 2 * MB2, |l| Some((
            l.pa, l.attrs
        ))),
        Err(MapError::AlreadyMapped(VirtAddr(MB2 / 2)))
    );
    let tables = e.m.tables_under(dst.pa());
    e.m.retire_root(dst.pa());
    assert_eq!(dst.destroy(&mut e.m), tables);
    e.teardown();
}

#[test]
fn stats_agree_with_the_model() {
    let mut e = Env::new(false);
    let base = e.m.counters;
    e.u.map(&mut e.m, VirtAddr(GB1), PhysAddr(GB1), GB1, Attrs::USER_RW, true)
        .unwrap();
    e.u.map(
        &mut e.m,
        VirtAddr(0x1000),
        PhysAddr(RAM),
        40 * KB4,
        Attrs::USER_RW,
        true,
    )
    .unwrap();
    e.m.fill_all();
    e.u.unmap(&mut e.m, VirtAddr(GB1 + MB2 + KB4), 3 * MB2).unwrap();
    e.u.protect(&mut e.m, VirtAddr(0x3000), 10 * KB4, Attrs::USER_RO)
        .unwrap();
    e.u.unmap(&mut e.m, VirtAddr(0x1000), 40 * KB4).unwrap();
    e.check();
    let s = *e.u.stats();
    let c = e.m.counters;
    assert_eq!(s.desc_writes + s.scratch_writes, c.writes - base.writes);
    assert_eq!(
        s.tables_allocated - 1,
        c.allocs - base.allocs,
        "root allocated before `base`"
    );
    assert_eq!(s.tables_freed, c.frees - base.frees);
    assert_eq!(s.tlbi_va, c.tlbi_va - base.tlbi_va);
    assert_eq!(s.tlbi_asid, c.tlbi_asid - base.tlbi_asid);
    assert_eq!(s.tlbi_batches, c.batches - base.batches);
    assert_eq!(s.publishes, c.publishes - base.publishes);
    assert_eq!(s.tables_live() as usize, e.m.tables_under(e.u.pa()));
    e.teardown();
}

#[test]
fn many_frees_flush_in_batches() {
    // Unmapping 40 separate L3 tables' worth of pages exceeds the gather's free batch.
    let mut e = Env::new(false);
    for i in 0..40 {
        e.u.map(
            &mut e.m,
            VirtAddr(i * MB2),
            PhysAddr(RAM),
            KB4,
            Attrs::USER_RW,
            true,
        )
        .unwrap();
    }
    e.m.fill_all();
    e.u.reset_stats();
    e.u.unmap(&mut e.m, VirtAddr(0), 40 * MB2).unwrap();
    e.check();
    assert_eq!(e.u.stats().tables_freed, 42, "40 L3 + L2 + L1");
    assert!(e.u.stats().tlbi_batches >= 3);
    e.teardown();
}
