//! VMSAv8-64 stage-1 descriptors for the 4 KiB granule.
//!
//! ```text
//!  63   62:61    60     59    58:55  54   53   52   51   50:48  47:12        11  10  9:8  7:6  5   4:2      1   0
//! NSTbl APTable UXNTbl PXNTbl  SW   UXN  PXN  Cont DBM  (res) OA/next-table nG  AF  SH   AP   NS  AttrIndx type valid
//! ```
//!
//! Bits 0 and 1 select the kind: `x0` invalid; `01` block (levels 1 and 2 only; reserved, i.e.
//! faulting, at levels 0 and 3); `11` table at levels 0..=2 and *page* at level 3. The
//! upper/lower attribute fields (bits 2..=11 and 51..=58) apply to blocks and pages; the
//! hierarchical fields (59..=63) apply to table descriptors only and are ignored elsewhere.
//! [`Descriptor`] is a plain `u64` with a named accessor and a `with_*` setter per field;
//! [`Descriptor::kind`] decodes it for a given [`Level`].

use core::fmt;

use crate::addr::{Level, PhysAddr};

/// One translation table entry, as stored in memory.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Descriptor(pub u64);

/// What a descriptor is, given the level of the table it sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorKind {
    /// Translation fault on access (also the reserved encodings: block at level 0 or 3).
    Invalid,
    /// Points to the next-level table.
    Table {
        /// Physical address of the next-level table.
        next: PhysAddr,
    },
    /// A 1 GiB (level 1) or 2 MiB (level 2) leaf.
    Block {
        /// Output address of the first byte of the block.
        oa: PhysAddr,
    },
    /// A 4 KiB leaf at level 3.
    Page {
        /// Output address of the page.
        oa: PhysAddr,
    },
}

impl DescriptorKind {
    /// Whether this is a block or a page.
    pub const fn is_leaf(self) -> bool {
        matches!(self, DescriptorKind::Block { .. } | DescriptorKind::Page { .. })
    }
}

/// The data access permissions `AP[2:1]` (bits 7:6) of a block or page.
///
/// AP\[1\] grants EL0 access; AP\[2\] makes the mapping read-only at every EL. EL1 can always
/// read a valid mapping (stage 1 has no "EL1 no access" encoding; PAN is a separate control).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AccessPerm {
    /// EL1 read/write, EL0 no access.
    El1Rw = 0b00,
    /// EL1 read/write, EL0 read/write. Such pages are implicitly PXN for EL1.
    El1RwEl0Rw = 0b01,
    /// EL1 read-only, EL0 no access.
    El1Ro = 0b10,
    /// EL1 read-only, EL0 read-only.
    El1RoEl0Ro = 0b11,
}

impl AccessPerm {
    /// Decodes the two-bit field.
    pub const fn from_bits(bits: u64) -> AccessPerm {
        match bits & 0b11 {
            0b00 => AccessPerm::El1Rw,
            0b01 => AccessPerm::El1RwEl0Rw,
            0b10 => AccessPerm::El1Ro,
            _ => AccessPerm::El1RoEl0Ro,
        }
    }
    /// Whether EL0 may read (and write, if also writable).
    pub const fn el0_access(self) -> bool {
        (self as u8) & 0b01 != 0
    }
    /// Whether the mapping is writable (at EL1, and at EL0 if [`Self::el0_access`]).
    pub const fn writable(self) -> bool {
        (self as u8) & 0b10 == 0
    }
}

/// The shareability field `SH[1:0]` (bits 9:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Shareability {
    /// Non-shareable.
    Non = 0b00,
    /// Reserved encoding (CONSTRAINED UNPREDICTABLE); never written by the engine.
    Reserved = 0b01,
    /// Outer Shareable.
    Outer = 0b10,
    /// Inner Shareable: what the engine always writes (and what Device / Normal-NC are treated
    /// as regardless of the field).
    Inner = 0b11,
}

impl Shareability {
    /// Decodes the two-bit field.
    pub const fn from_bits(bits: u64) -> Shareability {
        match bits & 0b11 {
            0b00 => Shareability::Non,
            0b01 => Shareability::Reserved,
            0b10 => Shareability::Outer,
            _ => Shareability::Inner,
        }
    }
}

/// The hierarchical access permission limit `APTable[1:0]` (bits 62:61) of a table descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ApTable {
    /// No limit on the subsequent levels.
    NoEffect = 0b00,
    /// EL0 access not permitted below.
    NoEl0 = 0b01,
    /// Writes not permitted below, at any EL.
    NoWrite = 0b10,
    /// Both limits.
    NoWriteNoEl0 = 0b11,
}

impl ApTable {
    /// Decodes the two-bit field.
    pub const fn from_bits(bits: u64) -> ApTable {
        match bits & 0b11 {
            0b00 => ApTable::NoEffect,
            0b01 => ApTable::NoEl0,
            0b10 => ApTable::NoWrite,
            _ => ApTable::NoWriteNoEl0,
        }
    }
    /// Whether EL0 access is removed below this table descriptor.
    pub const fn denies_el0(self) -> bool {
        (self as u8) & 0b01 != 0
    }
    /// Whether write access is removed below this table descriptor.
    pub const fn denies_write(self) -> bool {
        (self as u8) & 0b10 != 0
    }
}

/// Raw bit positions and masks, for code that must build descriptors by hand (the hardware
/// model and negative tests). Prefer the typed accessors.
pub mod bits {
    /// Valid bit.
    pub const VALID: u64 = 1 << 0;
    /// Table (levels 0..=2) / page (level 3) when set; block when clear.
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    /// AttrIndx\[2:0\], index into MAIR_EL1.
    pub const ATTR_INDX_SHIFT: u32 = 2;
    /// Mask of AttrIndx.
    pub const ATTR_INDX: u64 = 0b111 << ATTR_INDX_SHIFT;
    /// Non-secure (only meaningful in Secure state).
    pub const NS: u64 = 1 << 5;
    /// AP\[2:1\] shift.
    pub const AP_SHIFT: u32 = 6;
    /// Mask of AP\[2:1\].
    pub const AP: u64 = 0b11 << AP_SHIFT;
    /// AP\[1\]: EL0 access.
    pub const AP_EL0: u64 = 1 << AP_SHIFT;
    /// AP\[2\]: read-only at every EL. With DBM set it is the *dirty state* of a writable
    /// entry: set while clean, cleared by the first write (by FEAT_HAFDBS hardware, or by the
    /// write-fault handler through `set_access_flags`).
    pub const AP_RO: u64 = 1 << (AP_SHIFT + 1);
    /// SH\[1:0\] shift.
    pub const SH_SHIFT: u32 = 8;
    /// Mask of SH\[1:0\].
    pub const SH: u64 = 0b11 << SH_SHIFT;
    /// Access flag.
    pub const AF: u64 = 1 << 10;
    /// Not global: the TLB entry is tagged with the current ASID.
    pub const NG: u64 = 1 << 11;
    /// Output address / next-level table address, bits 47:12.
    pub const ADDR: u64 = 0x0000_FFFF_FFFF_F000;
    /// Dirty bit modifier (FEAT_HAFDBS).
    pub const DBM: u64 = 1 << 51;
    /// Contiguous hint.
    pub const CONTIGUOUS: u64 = 1 << 52;
    /// Privileged execute-never.
    pub const PXN: u64 = 1 << 53;
    /// Unprivileged execute-never (XN).
    pub const UXN: u64 = 1 << 54;
    /// Software-defined bits 58:55 shift.
    pub const SW_SHIFT: u32 = 55;
    /// Mask of the software bits.
    pub const SW: u64 = 0xF << SW_SHIFT;
    /// Software bit 55: *dirty*, the page was (or may have been) written even though the
    /// entry no longer lets the hardware write it (see [`crate::Descriptor::dirty`]).
    pub const SW_DIRTY: u64 = 1 << SW_SHIFT;
    /// Table descriptor: PXN for everything below.
    pub const PXN_TABLE: u64 = 1 << 59;
    /// Table descriptor: UXN for everything below.
    pub const UXN_TABLE: u64 = 1 << 60;
    /// Table descriptor: APTable\[1:0\] shift.
    pub const AP_TABLE_SHIFT: u32 = 61;
    /// Mask of APTable.
    pub const AP_TABLE: u64 = 0b11 << AP_TABLE_SHIFT;
    /// Table descriptor: NSTable.
    pub const NS_TABLE: u64 = 1 << 63;
}

macro_rules! flag {
    ($(#[$m:meta])* $get:ident, $with:ident, $bit:expr) => {
        $(#[$m])*
        pub const fn $get(self) -> bool {
            self.0 & $bit != 0
        }
        #[doc = concat!("Returns a copy with the flag read by [`Self::", stringify!($get), "`] set to `on`.")]
        #[must_use]
        pub const fn $with(self, on: bool) -> Self {
            if on {
                Self(self.0 | $bit)
            } else {
                Self(self.0 & !$bit)
            }
        }
    };
}

impl Descriptor {
    /// The all-zero invalid descriptor the engine writes to unmap.
    pub const INVALID: Descriptor = Descriptor(0);

    /// A table descriptor pointing at `next` with no hierarchical limits.
    pub const fn table(next: PhysAddr) -> Descriptor {
        Descriptor((next.0 & bits::ADDR) | bits::TABLE_OR_PAGE | bits::VALID)
    }

    /// A leaf at `level` (block at 1/2, page at 3) for `oa` with no attributes set (AF clear);
    /// combine with [`crate::Attrs::descriptor_bits`] or the `with_*` setters.
    ///
    /// # Panics
    /// If `level` is 0, where the 4 KiB granule has no block descriptor.
    pub const fn leaf(level: Level, oa: PhysAddr) -> Descriptor {
        assert!(level.number() != 0, "no block descriptors at level 0");
        let ty = if level.is_page_level() {
            bits::TABLE_OR_PAGE | bits::VALID
        } else {
            bits::VALID
        };
        Descriptor((oa.0 & bits::ADDR) | ty)
    }

    /// The raw value.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether bit 0 is set. Note that a "valid" block encoding at level 0 or 3 still faults:
    /// use [`Self::kind`] for what the MMU does.
    pub const fn is_valid(self) -> bool {
        self.0 & bits::VALID != 0
    }

    /// Decodes the descriptor as the MMU would in a table at `level`.
    pub const fn kind(self, level: Level) -> DescriptorKind {
        if self.0 & bits::VALID == 0 {
            return DescriptorKind::Invalid;
        }
        let addr = PhysAddr(self.0 & bits::ADDR);
        let table_or_page = self.0 & bits::TABLE_OR_PAGE != 0;
        match (level.number(), table_or_page) {
            (3, true) => DescriptorKind::Page { oa: addr },
            (_, true) => DescriptorKind::Table { next: addr },
            (1 | 2, false) => DescriptorKind::Block {
                oa: PhysAddr(addr.0 & !(level.entry_size() - 1)),
            },
            _ => DescriptorKind::Invalid,
        }
    }

    /// Whether this is a table descriptor at `level`.
    pub const fn is_table(self, level: Level) -> bool {
        matches!(self.kind(level), DescriptorKind::Table { .. })
    }

    /// Whether this is a block or page at `level`.
    pub const fn is_leaf(self, level: Level) -> bool {
        self.kind(level).is_leaf()
    }

    /// The address field, bits 47:12 (output address of a page, next table of a table).
    pub const fn address(self) -> PhysAddr {
        PhysAddr(self.0 & bits::ADDR)
    }

    /// Returns a copy with the address field replaced.
    #[must_use]
    pub const fn with_address(self, pa: PhysAddr) -> Descriptor {
        Descriptor((self.0 & !bits::ADDR) | (pa.0 & bits::ADDR))
    }

    /// The output address of a leaf at `level` (the address field truncated to the block size).
    pub const fn output_address(self, level: Level) -> PhysAddr {
        PhysAddr(self.0 & bits::ADDR & !(level.entry_size() - 1))
    }

    /// The next-level table address of a table descriptor.
    pub const fn next_table(self) -> PhysAddr {
        self.address()
    }

    /// AttrIndx, the MAIR_EL1 slot (0..=7).
    pub const fn attr_index(self) -> u8 {
        ((self.0 & bits::ATTR_INDX) >> bits::ATTR_INDX_SHIFT) as u8
    }

    /// Returns a copy with AttrIndx set to `idx & 7`.
    #[must_use]
    pub const fn with_attr_index(self, idx: u8) -> Descriptor {
        Descriptor((self.0 & !bits::ATTR_INDX) | (((idx & 7) as u64) << bits::ATTR_INDX_SHIFT))
    }

    /// AP\[2:1\].
    pub const fn ap(self) -> AccessPerm {
        AccessPerm::from_bits(self.0 >> bits::AP_SHIFT)
    }

    /// Returns a copy with AP\[2:1\] replaced.
    #[must_use]
    pub const fn with_ap(self, ap: AccessPerm) -> Descriptor {
        Descriptor((self.0 & !bits::AP) | ((ap as u64) << bits::AP_SHIFT))
    }

    /// SH\[1:0\].
    pub const fn sh(self) -> Shareability {
        Shareability::from_bits(self.0 >> bits::SH_SHIFT)
    }

    /// Returns a copy with SH\[1:0\] replaced.
    #[must_use]
    pub const fn with_sh(self, sh: Shareability) -> Descriptor {
        Descriptor((self.0 & !bits::SH) | ((sh as u64) << bits::SH_SHIFT))
    }

    flag!(
        /// NS: the output address is in the Non-secure PA space (ignored in Non-secure state).
        ns, with_ns, bits::NS
    );
    flag!(
        /// AF, the access flag: an access through a leaf with AF clear takes an Access flag fault
        /// (no hardware AF management is assumed).
        af, with_af, bits::AF
    );
    flag!(
        /// nG: not global; the TLB entry is tagged with the ASID.
        ng, with_ng, bits::NG
    );
    flag!(
        /// DBM, dirty bit modifier (hardware dirty state management).
        dbm, with_dbm, bits::DBM
    );
    flag!(
        /// The Contiguous hint: this entry is one of 16 adjacent entries mapping a contiguous,
        /// aligned output range with identical attributes.
        contiguous, with_contiguous, bits::CONTIGUOUS
    );
    flag!(
        /// PXN, privileged (EL1) execute-never.
        pxn, with_pxn, bits::PXN
    );
    flag!(
        /// UXN, unprivileged (EL0) execute-never.
        uxn, with_uxn, bits::UXN
    );
    flag!(
        /// PXNTable (table descriptors): no EL1 execution anywhere below.
        pxn_table, with_pxn_table, bits::PXN_TABLE
    );
    flag!(
        /// UXNTable (table descriptors): no EL0 execution anywhere below.
        uxn_table, with_uxn_table, bits::UXN_TABLE
    );
    flag!(
        /// NSTable (table descriptors): subsequent levels are Non-secure.
        ns_table, with_ns_table, bits::NS_TABLE
    );

    /// The four software-defined bits 58:55.
    pub const fn sw(self) -> u8 {
        ((self.0 & bits::SW) >> bits::SW_SHIFT) as u8
    }

    /// Returns a copy with the software bits set to `v & 0xF`.
    #[must_use]
    pub const fn with_sw(self, v: u8) -> Descriptor {
        Descriptor((self.0 & !bits::SW) | (((v & 0xF) as u64) << bits::SW_SHIFT))
    }

    /// Whether the page has been accessed since its access flag was last cleared (AF).
    pub const fn young(self) -> bool {
        self.af()
    }

    /// Returns a copy with AF set to `on`.
    #[must_use]
    pub const fn with_young(self, on: bool) -> Descriptor {
        self.with_af(on)
    }

    /// Logical write permission: AP grants writes, or DBM marks a writable entry that is still
    /// clean (AP\[2\] set until the first write).
    ///
    /// # The write / dirty convention
    /// Linux's arm64 scheme, which works with and without FEAT_HAFDBS:
    ///
    /// | state                 | DBM | AP\[2\] | SW_DIRTY |
    /// |-----------------------|-----|---------|----------|
    /// | read-only, clean      | 0   | 1       | 0        |
    /// | read-only, dirty      | 0   | 1       | 1        |
    /// | writable, clean       | 1   | 1       | 0        |
    /// | writable, dirty       | 1   | 0       | any      |
    /// | writable (legacy)     | 0   | 0       | any      |
    ///
    /// A writable clean entry is read-only to the hardware: the first write either faults
    /// (no hardware dirty management: the handler marks it dirty with `set_access_flags`) or
    /// is recorded by the hardware clearing AP\[2\] (DBM with `TCR_EL1.HD`). An entry the
    /// hardware can write through (AP\[2\] clear) is always considered dirty, whatever
    /// SW_DIRTY says. Write-protecting a dirty entry moves the dirty state into SW_DIRTY.
    /// [`crate::Root::map`] and [`crate::Root::protect`] write writable entries in the legacy
    /// form (AP\[2\] clear, DBM clear): writable and dirty from the start.
    pub const fn writable(self) -> bool {
        self.ap().writable() || self.dbm()
    }

    /// Whether the page is dirty: SW_DIRTY, or writable by the hardware (AP\[2\] clear). See
    /// [`Self::writable`] for the convention.
    pub const fn dirty(self) -> bool {
        self.0 & bits::SW_DIRTY != 0 || self.ap().writable()
    }

    /// Returns a copy marked dirty (`on`) or clean, keeping the write permission: dirty clears
    /// AP\[2\] of a writable entry and sets SW_DIRTY on a read-only one (and changes nothing if
    /// already dirty); clean clears SW_DIRTY and, if writable, sets AP\[2\] and DBM (so the
    /// first write is noticed).
    #[must_use]
    pub const fn with_dirty(self, on: bool) -> Descriptor {
        let w = self.writable();
        let mut d = self.0;
        if on {
            if w {
                d &= !bits::AP_RO;
            } else {
                d |= bits::SW_DIRTY;
            }
        } else {
            d &= !bits::SW_DIRTY;
            if w {
                d |= bits::AP_RO | bits::DBM;
            }
        }
        Descriptor(d)
    }

    /// Returns a copy with the logical write permission set to `on`, keeping the dirty state:
    /// granting sets DBM and clears AP\[2\] only if already dirty; revoking sets AP\[2\],
    /// clears DBM and records a hardware-dirty state in SW_DIRTY. AP\[1\] (EL0 access) is
    /// unchanged.
    #[must_use]
    pub const fn with_writable(self, on: bool) -> Descriptor {
        let dirty = self.dirty();
        let mut d = self.0;
        if on {
            d |= bits::DBM;
            if dirty {
                d &= !bits::AP_RO;
            } else {
                d |= bits::AP_RO;
            }
        } else {
            if dirty {
                d |= bits::SW_DIRTY;
            }
            d = (d | bits::AP_RO) & !bits::DBM;
        }
        Descriptor(d)
    }

    /// The descriptor with the access and dirty state of `other` added (logical OR of AF and
    /// of [`Self::dirty`]): how the state of a contiguous block is gathered.
    #[must_use]
    pub const fn gather_young_dirty(self, other: Descriptor) -> Descriptor {
        let young = self.young() || other.young();
        let dirty = self.dirty() || other.dirty();
        self.with_young(young).with_dirty(dirty)
    }

    /// The bits two entries must share to be foldable into one contiguous block: everything
    /// but the output address, the Contiguous bit, AF and the dirty state (a writable entry is
    /// compared in its clean form, so the legacy encoding and DBM-clean compare equal).
    pub const fn fold_key(self) -> u64 {
        let d = self.with_dirty(false).with_young(false);
        d.0 & !(bits::ADDR | bits::CONTIGUOUS)
    }

    /// APTable (table descriptors).
    pub const fn ap_table(self) -> ApTable {
        ApTable::from_bits(self.0 >> bits::AP_TABLE_SHIFT)
    }

    /// Returns a copy with APTable replaced.
    #[must_use]
    pub const fn with_ap_table(self, ap: ApTable) -> Descriptor {
        Descriptor((self.0 & !bits::AP_TABLE) | ((ap as u64) << bits::AP_TABLE_SHIFT))
    }
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Descriptor({:#018x})", self.0)
    }
}

impl fmt::LowerHex for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}
