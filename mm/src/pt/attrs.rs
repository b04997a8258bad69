//! Mapping permissions and memory types, and how they map to descriptor bits.
//!
//! ## MAIR contract
//! The engine writes AttrIndx assuming MAIR_EL1 is programmed as [`MAIR_EL1_VALUE`]:
//!
//! | AttrIndx | MAIR byte | memory type |
//! |----------|-----------|-------------|
//! | 0        | `0x04`    | Device-nGnRE |
//! | 1        | `0xFF`    | Normal, Inner/Outer Write-Back, Read/Write-Allocate, non-transient |
//! | 2        | `0x44`    | Normal, Inner/Outer Non-cacheable |
//!
//! Every leaf is written Inner Shareable (Device and Normal-NC are Outer Shareable whatever the
//! field says), with AF set (no access-flag faults are used for aging yet).

use core::fmt;
use core::ops::BitOr;

use super::desc::{bits, AccessPerm, Descriptor, Shareability};

/// The MAIR_EL1 value the AttrIndx assignment in [`MemType`] assumes.
pub const MAIR_EL1_VALUE: u64 = 0x04 | (0xFF << 8) | (0x44 << 16);

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Device-nGnRE (MMIO). Never executable.
    Device,
    /// Normal write-back cacheable memory.
    Normal,
    /// Normal non-cacheable memory (e.g. buffers shared with non-coherent DMA).
    NonCacheable,
    /// A MAIR slot outside the contract (3..=7): only ever *read* from tables the engine did
    /// not write; rejected by [`Attrs::validate`].
    Other(u8),
}

impl MemType {
    /// The MAIR_EL1 slot for this type.
    pub const fn attr_index(self) -> u8 {
        match self {
            MemType::Device => 0,
            MemType::Normal => 1,
            MemType::NonCacheable => 2,
            MemType::Other(i) => i & 7,
        }
    }
    /// The type in MAIR_EL1 slot `idx & 7`.
    pub const fn from_attr_index(idx: u8) -> MemType {
        match idx & 7 {
            0 => MemType::Device,
            1 => MemType::Normal,
            2 => MemType::NonCacheable,
            i => MemType::Other(i),
        }
    }
}

/// Access permissions, as a small set of flags.
///
/// `READ` must always be present: stage 1 cannot express a valid mapping that EL1 cannot read
/// (an inaccessible page is simply not mapped). `USER` grants EL0 the data access (read, plus
/// write if `WRITE`). The two execute flags are independent (clearing them sets PXN / UXN).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Prot(u8);

impl Prot {
    /// Data read (EL1; and EL0 with [`Prot::USER`]).
    pub const READ: Prot = Prot(1 << 0);
    /// Data write (EL1; and EL0 with [`Prot::USER`]).
    pub const WRITE: Prot = Prot(1 << 1);
    /// EL0 data access.
    pub const USER: Prot = Prot(1 << 2);
    /// EL1 may execute (PXN clear).
    pub const EXEC_KERNEL: Prot = Prot(1 << 3);
    /// EL0 may execute (UXN clear).
    pub const EXEC_USER: Prot = Prot(1 << 4);

    /// No permissions.
    pub const fn empty() -> Prot {
        Prot(0)
    }
    /// The raw flag bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Union.
    pub const fn union(self, other: Prot) -> Prot {
        Prot(self.0 | other.0)
    }
    /// Whether every flag of `other` is in `self`.
    pub const fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` without the flags of `other`.
    pub const fn without(self, other: Prot) -> Prot {
        Prot(self.0 & !other.0)
    }
}

impl BitOr for Prot {
    type Output = Prot;
    fn bitor(self, rhs: Prot) -> Prot {
        self.union(rhs)
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Prot::READ, "R"),
            (Prot::WRITE, "W"),
            (Prot::USER, "U"),
            (Prot::EXEC_KERNEL, "Xk"),
            (Prot::EXEC_USER, "Xu"),
        ];
        let mut first = true;
        for (p, n) in names {
            if self.contains(p) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// Everything a mapping says about its pages apart from the output address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// Access permissions.
    pub prot: Prot,
    /// Memory type.
    pub mem: MemType,
    /// Global (nG clear): valid in every address space. Kernel-half mappings are normally
    /// global; user mappings must not be (they are tagged with the address space's ASID).
    pub global: bool,
}

/// Why an [`Attrs`] value cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrsError {
    /// `Prot::READ` missing: stage 1 cannot express it.
    NotReadable,
    /// Writable at EL0 and executable at EL1: the architecture treats EL0-writable memory as
    /// PXN, so the request would silently not do what it says.
    UserWritableKernelExec,
    /// Executable Device memory.
    ExecutableDevice,
    /// A global mapping in a user (TTBR0, ASID-tagged) address space.
    GlobalInUserSpace,
    /// [`MemType::Other`]: not part of the MAIR contract.
    UnknownMemType,
}

impl fmt::Display for AttrsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttrsError::NotReadable => "mapping without READ cannot be expressed",
            AttrsError::UserWritableKernelExec => "EL0-writable memory is never executable at EL1",
            AttrsError::ExecutableDevice => "Device memory must not be executable",
            AttrsError::GlobalInUserSpace => "user mappings must be non-global (nG)",
            AttrsError::UnknownMemType => "memory type outside the MAIR contract",
        })
    }
}

impl Attrs {
    /// Kernel data: EL1 read/write, never executable, Normal, global.
    pub const KERNEL_RW: Attrs = Attrs::new(Prot::READ.union(Prot::WRITE), MemType::Normal, true);
    /// Kernel read-only data.
    pub const KERNEL_RO: Attrs = Attrs::new(Prot::READ, MemType::Normal, true);
    /// Kernel text.
    pub const KERNEL_RX: Attrs = Attrs::new(Prot::READ.union(Prot::EXEC_KERNEL), MemType::Normal, true);
    /// Kernel MMIO.
    pub const DEVICE: Attrs = Attrs::new(Prot::READ.union(Prot::WRITE), MemType::Device, true);
    /// User data.
    pub const USER_RW: Attrs = Attrs::new(
        Prot::READ.union(Prot::WRITE).union(Prot::USER),
        MemType::Normal,
        false,
    );
    /// User read-only data.
    pub const USER_RO: Attrs = Attrs::new(Prot::READ.union(Prot::USER), MemType::Normal, false);
    /// User text.
    pub const USER_RX: Attrs = Attrs::new(
        Prot::READ.union(Prot::USER).union(Prot::EXEC_USER),
        MemType::Normal,
        false,
    );

    /// Builds an attribute set.
    pub const fn new(prot: Prot, mem: MemType, global: bool) -> Attrs {
        Attrs { prot, mem, global }
    }

    /// Returns a copy with other permissions.
    #[must_use]
    pub const fn with_prot(self, prot: Prot) -> Attrs {
        Attrs { prot, ..self }
    }

    /// Checks the combination is encodable and means what it says.
    pub const fn validate(self) -> Result<(), AttrsError> {
        let p = self.prot;
        if let MemType::Other(_) = self.mem {
            return Err(AttrsError::UnknownMemType);
        }
        if !p.contains(Prot::READ) {
            return Err(AttrsError::NotReadable);
        }
        if p.contains(Prot::WRITE) && p.contains(Prot::USER) && p.contains(Prot::EXEC_KERNEL) {
            return Err(AttrsError::UserWritableKernelExec);
        }
        if matches!(self.mem, MemType::Device)
            && (p.contains(Prot::EXEC_KERNEL) || p.contains(Prot::EXEC_USER))
        {
            return Err(AttrsError::ExecutableDevice);
        }
        Ok(())
    }

    /// The access permission field for these permissions.
    pub const fn ap(self) -> AccessPerm {
        match (self.prot.contains(Prot::WRITE), self.prot.contains(Prot::USER)) {
            (true, false) => AccessPerm::El1Rw,
            (true, true) => AccessPerm::El1RwEl0Rw,
            (false, false) => AccessPerm::El1Ro,
            (false, true) => AccessPerm::El1RoEl0Ro,
        }
    }

    /// The attribute bits of a leaf descriptor (everything but the address and the type bits):
    /// AttrIndx, AP, SH = Inner, AF = 1, nG, PXN, UXN. NS, DBM, Contiguous and the software bits
    /// are zero.
    pub const fn descriptor_bits(self) -> u64 {
        let d = Descriptor(0)
            .with_attr_index(self.mem.attr_index())
            .with_ap(self.ap())
            .with_sh(Shareability::Inner)
            .with_af(true)
            .with_ng(!self.global)
            .with_pxn(!self.prot.contains(Prot::EXEC_KERNEL))
            .with_uxn(!self.prot.contains(Prot::EXEC_USER));
        d.0
    }

    /// The leaf descriptor at `level` mapping `oa` with these attributes.
    pub const fn leaf(self, level: crate::Level, oa: crate::PhysAddr) -> Descriptor {
        Descriptor(Descriptor::leaf(level, oa).0 | self.descriptor_bits())
    }

    /// Decodes the attributes of a leaf descriptor. `WRITE` is the logical write permission
    /// ([`Descriptor::writable`]: AP, or DBM for a writable entry that is still clean). Bits
    /// outside the model (SH, NS, AF, the dirty state, Contiguous, software bits) are not
    /// represented.
    pub const fn from_descriptor(d: Descriptor) -> Attrs {
        let mem = MemType::from_attr_index(d.attr_index());
        let ap = d.ap();
        let mut prot = Prot::READ;
        if d.writable() {
            prot = prot.union(Prot::WRITE);
        }
        if ap.el0_access() {
            prot = prot.union(Prot::USER);
        }
        if !d.pxn() {
            prot = prot.union(Prot::EXEC_KERNEL);
        }
        if !d.uxn() {
            prot = prot.union(Prot::EXEC_USER);
        }
        Attrs {
            prot,
            mem,
            global: !d.ng(),
        }
    }
}

/// The leaf `d` with its attributes replaced by `attrs`: what [`crate::Root::protect`] writes.
///
/// Keeps the output address, the type bits, AF, the Contiguous bit and the software bits. A
/// writable result is written hardware-writable (AP\[2\] clear, DBM clear: the legacy form,
/// writable and dirty, as [`crate::Root::map`] writes it); a read-only result records in
/// SW_DIRTY that the old entry was dirty, so that write-protection never loses a dirty state.
/// Idempotent: `reprotect(reprotect(d, a), a) == reprotect(d, a)`.
pub(crate) const fn reprotect(d: Descriptor, attrs: Attrs) -> Descriptor {
    let keep =
        d.0 & (bits::ADDR | bits::VALID | bits::TABLE_OR_PAGE | bits::AF | bits::CONTIGUOUS | bits::SW);
    let mut new = keep | (attrs.descriptor_bits() & !bits::AF);
    if !attrs.prot.contains(Prot::WRITE) && d.dirty() {
        new |= bits::SW_DIRTY;
    }
    Descriptor(new)
}

/// Leaf bits that may change on a live entry without break-before-make: permissions (AP, PXN,
/// UXN), AF, DBM and the software bits. A change to any other bit (address, AttrIndx, SH, NS,
/// nG, Contiguous, or the type bits) needs break-before-make.
pub(crate) const IN_PLACE_MASK: u64 = bits::AP | bits::PXN | bits::UXN | bits::AF | bits::DBM | bits::SW;

/// Whether replacing the live valid leaf `old` with the valid leaf `new` requires
/// break-before-make (ARM DDI 0487, "Translation table entry changes that require BBM").
pub(crate) const fn leaf_change_needs_bbm(old: Descriptor, new: Descriptor) -> bool {
    (old.0 ^ new.0) & !IN_PLACE_MASK != 0
}
