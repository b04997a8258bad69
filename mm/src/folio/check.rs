//! The invariant checker: recomputes every folio's counters from the live mappings and
//! compares them with the stored ones. Portable (`alloc` only): usable from host tests and
//! from boot-time tests on the target.

use alloc::collections::BTreeMap;
use core::fmt;
use core::sync::atomic::Ordering;

use super::meta::{flag, head, PageMeta};
use super::{Folio, FolioOrder, MemMap, SpaceId};
use crate::{Leaf, Level, PhysAddr, VirtAddr, PAGE_SIZE};

/// One live leaf mapping of one address space, as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedLeaf {
    /// The address space.
    pub space: SpaceId,
    /// First virtual address (for messages).
    pub va: VirtAddr,
    /// First physical address.
    pub pa: PhysAddr,
    /// Bytes mapped by the descriptor.
    pub size: u64,
    /// Level of the descriptor.
    pub level: Level,
}

impl MappedLeaf {
    /// The leaf `leaf` (from [`Root::leaves`](crate::Root::leaves)) of `space`.
    pub fn new(space: SpaceId, leaf: &Leaf) -> MappedLeaf {
        MappedLeaf {
            space,
            va: leaf.va,
            pa: leaf.pa,
            size: leaf.size,
            level: leaf.level,
        }
    }
}

/// What the checker looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckSummary {
    /// Allocated folios.
    pub folios: usize,
    /// Frames in allocated folios.
    pub allocated_frames: usize,
    /// Free frames (all clean).
    pub free_frames: usize,
    /// Leaves that map covered memory and were counted.
    pub leaves: usize,
    /// Leaves outside the memory map (device memory, ...), ignored.
    pub ignored_leaves: usize,
}

/// The first inconsistency found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// A leaf of a shape that cannot map folio memory: a level-1 block, a level-2 block not
    /// exactly covering an order-9 folio, a leaf whose size does not match its level, or a
    /// leaf straddling the edge of the memory map.
    BadLeaf(MappedLeaf),
    /// A leaf maps a free frame.
    LeafOnFreeFrame(MappedLeaf),
    /// Stored PTE mapcount of a page differs from the number of level-3 leaves mapping it.
    PteMapcount {
        /// The folio.
        folio: PhysAddr,
        /// Page index.
        page: usize,
        /// Stored.
        stored: u32,
        /// Recomputed.
        actual: u32,
    },
    /// Stored entire mapcount differs from the number of level-2 leaves mapping the folio.
    EntireMapcount {
        /// The folio.
        folio: PhysAddr,
        /// Stored.
        stored: u32,
        /// Recomputed.
        actual: u32,
    },
    /// Stored total mapcount differs from the number of leaves mapping the folio.
    TotalMapcount {
        /// The folio.
        folio: PhysAddr,
        /// Stored.
        stored: u32,
        /// Recomputed.
        actual: u32,
    },
    /// `refcount < mapcount + pincount`, or an allocated folio with refcount 0.
    Refcount {
        /// The folio.
        folio: PhysAddr,
        /// Stored refcount.
        refcount: u32,
        /// Recomputed total mapcount.
        mapcount: u32,
        /// Stored pincount.
        pincount: u32,
    },
    /// A tracking slot is malformed: occupied with count 0, free with a count, duplicated,
    /// or counting more mappings than its address space has.
    Slot {
        /// The folio.
        folio: PhysAddr,
        /// Slot index.
        slot: usize,
        /// Stored id (0: free).
        space: u32,
        /// Stored count.
        stored: u32,
        /// Mappings the space has.
        actual: u32,
    },
    /// The stored "maybe mapped shared" flag is not what the slots and the total imply.
    SharedFlag {
        /// The folio.
        folio: PhysAddr,
        /// Stored.
        stored: bool,
    },
    /// The folio claims to be mapped by one address space but more map it.
    SharedUnsound {
        /// The folio.
        folio: PhysAddr,
        /// Recomputed number of address spaces mapping it.
        spaces: usize,
    },
    /// An anon-exclusive page that is not mapped exactly once, or in a file folio.
    Exclusive {
        /// The folio.
        folio: PhysAddr,
        /// Page index.
        page: usize,
        /// Recomputed page mapcount (PTE + entire).
        mapcount: u32,
    },
    /// Malformed head / tail metadata at `pa`.
    BadMeta {
        /// The frame.
        pa: PhysAddr,
        /// What is wrong.
        what: &'static str,
    },
    /// A free frame whose metadata is not all zero.
    DirtyFreeFrame(PhysAddr),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::BadLeaf(l) => write!(f, "leaf cannot map folio memory: {l:?}"),
            CheckError::LeafOnFreeFrame(l) => write!(f, "leaf maps a free frame: {l:?}"),
            CheckError::PteMapcount {
                folio,
                page,
                stored,
                actual,
            } => write!(
                f,
                "folio {folio} page {page}: PTE mapcount {stored}, mapped by {actual} pages"
            ),
            CheckError::EntireMapcount {
                folio,
                stored,
                actual,
            } => {
                write!(
                    f,
                    "folio {folio}: entire mapcount {stored}, mapped by {actual} blocks"
                )
            }
            CheckError::TotalMapcount {
                folio,
                stored,
                actual,
            } => {
                write!(
                    f,
                    "folio {folio}: total mapcount {stored}, mapped by {actual} leaves"
                )
            }
            CheckError::Refcount {
                folio,
                refcount,
                mapcount,
                pincount,
            } => write!(
                f,
                "folio {folio}: refcount {refcount} < mapcount {mapcount} + pincount {pincount} (or 0)"
            ),
            CheckError::Slot {
                folio,
                slot,
                space,
                stored,
                actual,
            } => write!(
                f,
                "folio {folio} slot {slot}: space {space} count {stored}, but it has {actual} mappings"
            ),
            CheckError::SharedFlag { folio, stored } => {
                write!(f, "folio {folio}: shared flag {stored} disagrees with the slots")
            }
            CheckError::SharedUnsound { folio, spaces } => {
                write!(
                    f,
                    "folio {folio}: not marked shared but mapped by {spaces} spaces"
                )
            }
            CheckError::Exclusive {
                folio,
                page,
                mapcount,
            } => write!(
                f,
                "folio {folio} page {page}: anon-exclusive with mapcount {mapcount} (or file)"
            ),
            CheckError::BadMeta { pa, what } => write!(f, "frame {pa}: {what}"),
            CheckError::DirtyFreeFrame(pa) => write!(f, "free frame {pa} has dirty metadata"),
        }
    }
}

#[derive(Default)]
struct Recount {
    /// Frame index → level-3 leaves.
    pte: BTreeMap<usize, u32>,
    /// Head index → level-2 leaves.
    entire: BTreeMap<usize, u32>,
    /// (head index, space) → leaves.
    per_space: BTreeMap<(usize, u32), u32>,
}

/// Checks every invariant of the folio metadata in `mem` against the live mappings
/// `leaves` (every leaf of every live address space — e.g. `Root::leaves` of each, through
/// [`MappedLeaf::new`] — and nothing else: not the kernel's linear map).
///
/// For every allocated folio it recomputes each page's PTE mapcount, the entire and total
/// mapcounts and the mappings per address space, and requires:
/// * the stored counts equal the recomputed ones;
/// * `refcount >= mapcount + pincount` and `refcount >= 1`;
/// * each occupied tracking slot holds `1 ..= (that space's mappings)`, slots are distinct,
///   a free slot holds 0; the shared flag equals "mapped and no slot holds the total"; and
///   if the flag is clear at most one address space maps the folio;
/// * an anon-exclusive page is in an anon folio and has page mapcount exactly 1;
/// * head and tail metadata are consistent (order, alignment, unused words zero), and an
///   adopted folio is a file folio.
///
/// Every frame not in a folio must have all-zero metadata. The map must be quiescent (no
/// concurrent operations).
pub fn check(
    mem: &MemMap<'_>,
    leaves: impl IntoIterator<Item = MappedLeaf>,
) -> Result<CheckSummary, CheckError> {
    let mut sum = CheckSummary::default();
    let mut rc = Recount::default();
    for leaf in leaves {
        count_leaf(mem, &leaf, &mut rc, &mut sum)?;
    }
    let pages = mem.pages();
    let mut i = 0;
    while i < pages.len() {
        let pa = mem.pa_of(i);
        let fl = pages[i].flags.load(Ordering::Acquire);
        if fl & (flag::HEAD | flag::TAIL) == 0 {
            if !pages[i].is_clean() {
                return Err(CheckError::DirtyFreeFrame(pa));
            }
            sum.free_frames += 1;
            i += 1;
            continue;
        }
        if fl & flag::TAIL != 0 {
            return Err(CheckError::BadMeta {
                pa,
                what: "tail frame without its head",
            });
        }
        let folio = mem
            .folio_page(pa)
            .filter(|(f, _)| f.pa() == pa)
            .map(|(f, _)| f)
            .ok_or(CheckError::BadMeta {
                pa,
                what: "head misaligned or past the end of the map",
            })?;
        check_folio(folio, &pages[i..i + folio.nr_pages()], i, &rc)?;
        sum.folios += 1;
        sum.allocated_frames += folio.nr_pages();
        i += folio.nr_pages();
    }
    Ok(sum)
}

fn count_leaf(
    mem: &MemMap<'_>,
    leaf: &MappedLeaf,
    rc: &mut Recount,
    sum: &mut CheckSummary,
) -> Result<(), CheckError> {
    let last = PhysAddr(leaf.pa.0.wrapping_add(leaf.size.wrapping_sub(1)));
    if leaf.pa >= mem.end() || last < mem.base() {
        sum.ignored_leaves += 1;
        return Ok(());
    }
    if !(mem.contains(leaf.pa) && mem.contains(last)) || leaf.size == 0 {
        return Err(CheckError::BadLeaf(*leaf));
    }
    let index = |pa| mem.index(pa).expect("covered");
    let folio_of = |pa: PhysAddr| match mem.folio(pa) {
        Some(f) => Ok(f),
        None if mem.is_free(pa) => Err(CheckError::LeafOnFreeFrame(*leaf)),
        None => Err(CheckError::BadMeta {
            pa: pa.align_down(PAGE_SIZE),
            what: "frame does not lead to a folio head",
        }),
    };
    if leaf.level == Level::L3 && leaf.size == PAGE_SIZE {
        let folio = folio_of(leaf.pa)?;
        *rc.pte.entry(index(leaf.pa)).or_default() += 1;
        *rc.per_space
            .entry((index(folio.pa()), leaf.space.get()))
            .or_default() += 1;
    } else if leaf.level == Level::L2 && leaf.size == FolioOrder::PMD.bytes() {
        let folio = folio_of(leaf.pa)?;
        if folio.pa() != leaf.pa || folio.order() != FolioOrder::PMD {
            return Err(CheckError::BadLeaf(*leaf));
        }
        let h = index(folio.pa());
        *rc.entire.entry(h).or_default() += 1;
        *rc.per_space.entry((h, leaf.space.get())).or_default() += 1;
    } else {
        return Err(CheckError::BadLeaf(*leaf));
    }
    sum.leaves += 1;
    Ok(())
}

fn check_folio(folio: Folio<'_>, pages: &[PageMeta], h: usize, rc: &Recount) -> Result<(), CheckError> {
    let pa = folio.pa();
    let order = folio.order().get() as u32;
    let n = pages.len();
    // Head / tail shape.
    let hf = pages[0].flags.load(Ordering::Acquire);
    if hf & !flag::ALL != 0 || hf & flag::TAIL != 0 {
        return Err(CheckError::BadMeta {
            pa,
            what: "head has unknown or tail flags",
        });
    }
    if hf & flag::LOCK != 0 {
        return Err(CheckError::BadMeta {
            pa,
            what: "folio lock held while quiescent",
        });
    }
    if hf & flag::ADOPTED != 0 && hf & flag::ANON != 0 {
        return Err(CheckError::BadMeta {
            pa,
            what: "adopted frames in an anon folio",
        });
    }
    for (j, p) in pages.iter().enumerate().skip(1) {
        let tpa = PhysAddr(pa.0 + j as u64 * PAGE_SIZE);
        let tf = p.flags.load(Ordering::Acquire) & !flag::ANON_EXCLUSIVE;
        if tf != flag::TAIL | (order << flag::ORDER_SHIFT) {
            return Err(CheckError::BadMeta {
                pa: tpa,
                what: "tail flags do not match the head",
            });
        }
        let used = if j == 1 { 2 } else { 0 };
        if p.w[used..].iter().any(|w| w.load(Ordering::Relaxed) != 0) {
            return Err(CheckError::BadMeta {
                pa: tpa,
                what: "unused tail word is not zero",
            });
        }
    }
    // Mapcounts.
    let mut total = 0u32;
    for j in 0..n {
        let actual = rc.pte.get(&(h + j)).copied().unwrap_or(0);
        let stored = folio.pte_mapcount(j);
        if stored != actual {
            return Err(CheckError::PteMapcount {
                folio: pa,
                page: j,
                stored,
                actual,
            });
        }
        total += actual;
    }
    let entire = rc.entire.get(&h).copied().unwrap_or(0);
    if folio.entire_mapcount() != entire {
        return Err(CheckError::EntireMapcount {
            folio: pa,
            stored: folio.entire_mapcount(),
            actual: entire,
        });
    }
    total += entire;
    if folio.mapcount() != total {
        return Err(CheckError::TotalMapcount {
            folio: pa,
            stored: folio.mapcount(),
            actual: total,
        });
    }
    // References.
    let (refcount, pincount) = (folio.refcount(), folio.pincount());
    if refcount == 0 || (refcount as u64) < total as u64 + pincount as u64 {
        return Err(CheckError::Refcount {
            folio: pa,
            refcount,
            mapcount: total,
            pincount,
        });
    }
    // Address spaces.
    let spaces_of = |space: u32| rc.per_space.get(&(h, space)).copied().unwrap_or(0);
    let nspaces = rc.per_space.range((h, 0)..=(h, u32::MAX)).count();
    let raw = |k: usize| pages[0].w[k].load(Ordering::Relaxed);
    let slots = [0, 1].map(|s| (raw(head::SLOT_ID + 2 * s), raw(head::SLOT_COUNT + 2 * s)));
    for (s, &(id, count)) in slots.iter().enumerate() {
        let actual = if id == 0 { 0 } else { spaces_of(id) };
        let bad = if id == 0 {
            count != 0
        } else {
            count == 0 || count > actual || (s == 1 && slots[0].0 == id)
        };
        if bad {
            return Err(CheckError::Slot {
                folio: pa,
                slot: s,
                space: id,
                stored: count,
                actual,
            });
        }
    }
    let shared = hf & flag::SHARED != 0;
    let expect_shared = total != 0 && !slots.iter().any(|&(id, c)| id != 0 && c == total);
    if shared != expect_shared {
        return Err(CheckError::SharedFlag {
            folio: pa,
            stored: shared,
        });
    }
    if !shared && nspaces > 1 {
        return Err(CheckError::SharedUnsound {
            folio: pa,
            spaces: nspaces,
        });
    }
    // Anon-exclusive pages.
    for (j, p) in pages.iter().enumerate() {
        if p.flags.load(Ordering::Relaxed) & flag::ANON_EXCLUSIVE != 0 {
            let mapcount = rc.pte.get(&(h + j)).copied().unwrap_or(0) + entire;
            if hf & flag::ANON == 0 || mapcount != 1 {
                return Err(CheckError::Exclusive {
                    folio: pa,
                    page: j,
                    mapcount,
                });
            }
        }
    }
    Ok(())
}
