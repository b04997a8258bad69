//! Address newtypes, translation levels and the walker's boundary arithmetic.

use core::fmt;

/// log2 of the translation granule (4 KiB).
pub const PAGE_SHIFT: u32 = 12;
/// The translation granule and the size of every table frame.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Entries in a contiguous level-3 block (CONTPTE).
pub const CONT_PTES: usize = 16;
/// Bytes mapped by a contiguous level-3 block (CONTPTE).
pub const CONT_SIZE: u64 = CONT_PTES as u64 * PAGE_SIZE;
/// Descriptors per table (4 KiB / 8 bytes).
pub const ENTRIES: usize = 512;
/// Virtual address bits per half (`TnSZ = 16`).
pub const VA_BITS: u32 = 48;
/// Exclusive end of the lower, TTBR0 half: `[0, 2^48)`.
pub const USER_END: u64 = 1 << VA_BITS;
/// First address of the upper, TTBR1 half: `[0xFFFF_0000_0000_0000, 2^64)`.
pub const KERNEL_BASE: u64 = !(USER_END - 1);
/// Output address bits the descriptors can hold (bits 47:12).
pub const PA_BITS: u32 = 48;
/// Exclusive end of the output address space.
pub const PA_END: u64 = 1 << PA_BITS;

/// A physical (output) address.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

/// A virtual (input) address, full 64 bits: upper-half addresses carry their `0xFFFF` prefix.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(pub u64);

macro_rules! addr_common {
    ($t:ident, $tag:literal) => {
        impl $t {
            /// Wraps a raw address.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }
            /// The raw address.
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
            /// `self + by`, or `None` on overflow of 64 bits.
            pub const fn checked_add(self, by: u64) -> Option<Self> {
                match self.0.checked_add(by) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($tag, "({:#x})"), self.0)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
        impl fmt::LowerHex for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}
addr_common!(PhysAddr, "PA");
addr_common!(VirtAddr, "VA");

impl VirtAddr {
    /// Whether the address belongs to the upper (TTBR1, kernel) half.
    pub const fn is_upper_half(self) -> bool {
        self.0 >= KERNEL_BASE
    }
}

/// A translation table level in Arm numbering: 0 is the top (one entry maps 512 GiB),
/// 3 is the bottom (one entry maps a 4 KiB page).
///
/// | level | entry maps | leaf kind at this level |
/// |-------|-----------|--------------------------|
/// | 0     | 512 GiB   | none (4 KiB granule, no FEAT_LPA2) |
/// | 1     | 1 GiB     | block                    |
/// | 2     | 2 MiB     | block                    |
/// | 3     | 4 KiB     | page                     |
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(u8);

impl Level {
    /// The top level, the one TTBRn points to.
    pub const L0: Level = Level(0);
    /// 1 GiB entries.
    pub const L1: Level = Level(1);
    /// 2 MiB entries.
    pub const L2: Level = Level(2);
    /// 4 KiB entries (pages).
    pub const L3: Level = Level(3);

    /// The level numbered `n`, if `n <= 3`.
    pub const fn new(n: u8) -> Option<Level> {
        if n <= 3 {
            Some(Level(n))
        } else {
            None
        }
    }
    /// The Arm level number, 0..=3.
    pub const fn number(self) -> u8 {
        self.0
    }
    /// The VA bit at which this level's index field starts (39, 30, 21, 12).
    pub const fn shift(self) -> u32 {
        PAGE_SHIFT + 9 * (3 - self.0 as u32)
    }
    /// Bytes of VA space one entry of a table at this level maps.
    pub const fn entry_size(self) -> u64 {
        1 << self.shift()
    }
    /// Bytes of VA space a whole table at this level maps (512 entries).
    /// For level 0 that is one half of the address space, 2^48.
    pub const fn table_span(self) -> u64 {
        1 << (self.shift() + 9)
    }
    /// The index of the entry mapping `va` in a table at this level.
    pub const fn index_of(self, va: u64) -> usize {
        ((va >> self.shift()) as usize) & (ENTRIES - 1)
    }
    /// The next level down, `None` at level 3.
    pub const fn next(self) -> Option<Level> {
        if self.0 < 3 {
            Some(Level(self.0 + 1))
        } else {
            None
        }
    }
    /// Whether a block descriptor is allowed here (levels 1 and 2 with the 4 KiB granule).
    pub const fn allows_block(self) -> bool {
        self.0 == 1 || self.0 == 2
    }
    /// Whether this is the page level (3).
    pub const fn is_page_level(self) -> bool {
        self.0 == 3
    }

    /// The end of the walk step that starts at `addr`: the next entry boundary at this level,
    /// or `end` if that comes first (Linux's `pXd_addr_end`).
    ///
    /// Ranges are half-open `[addr, end)` in *wrapping* 64-bit arithmetic: `end == 0` means
    /// 2^64, the end of the upper half. The comparison is done on `x - 1` so that a boundary
    /// that wraps to 0 (the entry that ends at 2^64) compares as the largest value rather than
    /// the smallest:
    ///
    /// ```text
    /// boundary = align_down(addr, size) + size        (may wrap to 0)
    /// return if boundary - 1 < end - 1 { boundary } else { end }
    /// ```
    ///
    /// The caller loops `addr = addr_end(addr, end)` until `addr == end`; every step is
    /// non-empty and no sum ever overflows into a wrong answer. `addr` must be in `[start, end)`.
    pub const fn addr_end(self, addr: u64, end: u64) -> u64 {
        let size = self.entry_size();
        let boundary = (addr & !(size - 1)).wrapping_add(size);
        if boundary.wrapping_sub(1) < end.wrapping_sub(1) {
            boundary
        } else {
            end
        }
    }
}

impl fmt::Debug for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level {}", self.0)
    }
}

/// Whether `[start, end)` (wrapping end, see [`Level::addr_end`]) is exactly one whole entry at
/// `level`.
pub(crate) const fn covers_entry(level: Level, start: u64, end: u64) -> bool {
    let size = level.entry_size();
    start & (size - 1) == 0 && end.wrapping_sub(start) == size
}
