//! Folios mapped through real translation tables: `Root` over the hardware model, with the
//! checker fed from `Root::leaves`. The folio calls follow what the engine did to the
//! tables (block map, fork copy, block split by a partial unmap, COW reuse, teardown).

use crate::fixture::{quiet_model, user_root};
use crate::model::Model;
use crate::{Asid, Attrs, Root};

use super::*;

const VA: u64 = 0x40_0000_0000;
const MB2: u64 = 2 << 20;
const KB64: u64 = 64 << 10;

struct Space {
    id: SpaceId,
    root: Root,
}

fn space(m: &mut Model, id: u32) -> Space {
    let root = user_root(m, Asid(id as u16));
    Space { id: sp(id), root }
}

fn leaves(m: &Model, spaces: &[&Space]) -> Vec<MappedLeaf> {
    spaces
        .iter()
        .flat_map(|s| s.root.leaves(m).map(|l| MappedLeaf::new(s.id, &l)))
        .collect()
}

#[test]
fn folios_through_real_page_tables() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let mut m = quiet_model();
    let mut a = space(&mut m, 1);
    let mut b = space(&mut m, 2);
    let chk = |m: &Model, a: &Space, b: &Space| {
        m.check_all();
        check(&mem, leaves(m, &[a, b])).unwrap()
    };

    // A: an order-9 anon folio behind one 2 MiB block; an order-4 file folio behind 16
    // pages, also mapped in B.
    let f9 = mem
        .alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::Anon)
        .unwrap();
    a.root
        .map(&mut m, VirtAddr(VA), f9.pa(), MB2, Attrs::USER_RW, true)
        .unwrap();
    f9.add_anon_entire(a.id, true).unwrap();
    let f4 = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::File)
        .unwrap();
    for s in [&mut a, &mut b] {
        s.root
            .map(
                &mut m,
                VirtAddr(VA + 2 * MB2),
                f4.pa(),
                KB64,
                Attrs::USER_RO,
                true,
            )
            .unwrap();
        f4.add_file_ptes(s.id, 0, 16).unwrap();
    }
    let sum = chk(&m, &a, &b);
    assert_eq!((sum.folios, sum.leaves), (2, 1 + 32));

    // Fork A's block into B: the dup in the copy callback, then write-protect the parent.
    let copied = a
        .root
        .copy_range(&mut m, &mut b.root, VirtAddr(VA), MB2, |leaf| {
            assert_eq!((leaf.pa, leaf.size), (f9.pa(), MB2));
            f9.try_dup_anon_entire(b.id).ok()?;
            Some((leaf.pa, Attrs::USER_RO))
        })
        .unwrap();
    assert_eq!(copied, 1);
    a.root.protect(&mut m, VirtAddr(VA), MB2, Attrs::USER_RO).unwrap();
    assert!(f9.maybe_mapped_shared() && f9.entire_mapcount() == 2);
    chk(&m, &a, &b);

    // B unmaps 64 KiB in the middle of its block: the engine splits the block into pages
    // and removes 16 of them; the folio converts B's entire mapping into 512 PTE mappings
    // and removes the hole. References come back only after the unmap (and its TLBI).
    b.root.unmap(&mut m, VirtAddr(VA + MB2 / 2), KB64).unwrap();
    let mut u = f9.split_entire(b.id, 0, 512).unwrap();
    u.merge(f9.remove_ptes(b.id, 256, 16).unwrap());
    let sum = chk(&m, &a, &b);
    assert_eq!(sum.leaves, 1 + 496 + 32);
    assert_eq!(
        (
            f9.entire_mapcount(),
            f9.mapcount(),
            f9.pte_mapcount(0),
            f9.pte_mapcount(256)
        ),
        (1, 497, 1, 0)
    );
    assert_eq!(u.refs(), 17);
    assert!(!u.release(&mut fr));
    assert_eq!(f9.refcount(), 1 + 497);

    // A write fault in A: shared with B, so no reuse (a copy would be made).
    assert!(!f9.try_reuse_anon_entire(a.id, 1));
    // B exits its mapping: then A's block is reusable in place.
    b.root.unmap(&mut m, VirtAddr(VA), MB2).unwrap();
    let mut u = f9.remove_ptes(b.id, 0, 256).unwrap();
    u.merge(f9.remove_ptes(b.id, 272, 240).unwrap());
    assert!(!u.release(&mut fr));
    assert!(!f9.maybe_mapped_shared());
    assert!(f9.try_reuse_anon_entire(a.id, 1));
    a.root.protect(&mut m, VirtAddr(VA), MB2, Attrs::USER_RW).unwrap();
    chk(&m, &a, &b);

    // Teardown: unmap everything, release after the unmaps, drop the owners' references.
    a.root.unmap(&mut m, VirtAddr(VA), 3 * MB2).unwrap();
    b.root.unmap(&mut m, VirtAddr(VA), 3 * MB2).unwrap();
    let pending = [
        f9.remove_entire(a.id).unwrap(),
        f4.remove_ptes(a.id, 0, 16).unwrap(),
        f4.remove_ptes(b.id, 0, 16).unwrap(),
    ];
    assert_eq!(fr.frames_out(), 512 + 16);
    for u in pending {
        assert!(!u.release(&mut fr));
    }
    chk(&m, &a, &b);
    assert!(f9.put(&mut fr) && f4.put(&mut fr));
    for s in [a, b] {
        m.retire_root(s.root.pa());
        s.root.destroy(&mut m);
    }
    m.check_all();
    assert_eq!(m.live_frames(), 0);
    assert!(check(&mem, []).is_ok());
    fr.assert_all_back();
}
