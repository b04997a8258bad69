//! TLB maintenance for the EL1&0 translation regime, broadcast to the Inner Shareable domain.
//!
//! Each TLBI function ([`by_va`], [`by_va_all_asids`], [`range`], [`by_asid`], [`all`],
//! [`all_local`]) issues exactly one instruction and **no barrier**. A batch is bracketed by
//! [`dsb_ishst`] (descriptor writes before it are complete, i.e. visible to every PE's table
//! walker, before any invalidation starts) and [`dsb_ish_isb`] (`DSB ISH`: the invalidations
//! have completed on every PE of the Inner Shareable domain; `ISB`: this PE discards
//! instructions fetched with the old translations). [`batch`] brackets a closure.
//! [`publish`] (`DSB ISHST; ISB`) is for descriptor updates that need no invalidation
//! (invalid → valid, linking a new table).
//!
//! The functions take plain integers so that this crate knows nothing of the memory manager's
//! types: `ttl_level` is the level (1..=3) of the leaf entries being invalidated, or 0 for
//! "unknown / not only leaves" (see `libos::mm::TlbOp` for when the engine gives one).
//!
//! Operands (Arm ARM DDI 0487, "TLB maintenance instructions", 4 KiB granule):
//!
//! ```text
//! by VA:    ASID[63:48] | TTL[47:44]                                       | VA[55:12] in [43:0]
//!           TTL = 0b01 (4K granule) : level, or 0 = no hint; only with FEAT_TTL, else RES0
//! by range: ASID[63:48] | TG[47:46]=0b01 | SCALE[45:44] | NUM[43:39] | TTL[38:37] | BaseADDR[36:0] = VA[48:12]
//!           covers (NUM + 1) << (5 * SCALE + 1) pages from BaseADDR; TTL = level (1..=3) or 0
//! ```
//!
//! The range forms (FEAT_TLBIRANGE, Armv8.4) are written as their `SYS #0, C8, C2, #op2, Xt`
//! aliases so that the assembler needs no `+tlb-rmi` feature; they must only be executed when
//! [`has_tlbi_range`] is true (they are UNDEFINED otherwise).

/// `ID_AA64ISAR0_EL1.TLB` (bits 59:56) value meaning "outer-shareable and range TLBIs".
pub const ISAR0_TLB_RANGE: u64 = 0b0010;

/// The TTL field of a by-VA operand: `0b01xx` (4 KiB granule, level `xx`) for levels 1..=3,
/// 0 (no hint) otherwise.
pub const fn ttl_field(ttl_level: u8) -> u64 {
    if matches!(ttl_level, 1..=3) {
        0b0100 | ttl_level as u64
    } else {
        0
    }
}

/// The operand of `TLBI VAE1IS / VALE1IS / VAAE1IS / VAALE1IS`. `ttl_level` must be 0 when
/// FEAT_TTL is absent (the field is RES0 then): [`by_va`] takes care of that.
pub const fn va_operand(va: u64, asid: u16, ttl_level: u8) -> u64 {
    ((asid as u64) << 48) | (ttl_field(ttl_level) << 44) | ((va >> 12) & ((1 << 44) - 1))
}

/// The operand of `TLBI RVAE1IS / RVALE1IS / RVAAE1IS / RVAALE1IS` with a 4 KiB granule.
/// `asid` is ignored by the all-ASID forms (pass 0).
pub const fn range_operand(base: u64, asid: u16, scale: u8, num: u8, ttl_level: u8) -> u64 {
    let ttl = if ttl_level <= 3 { ttl_level as u64 } else { 0 };
    ((asid as u64) << 48)
        | (0b01 << 46)
        | (((scale & 0b11) as u64) << 44)
        | (((num & 0b1_1111) as u64) << 39)
        | (ttl << 37)
        | ((base >> 12) & ((1 << 37) - 1))
}

/// Pages covered by a range operation.
pub const fn range_pages(scale: u8, num: u8) -> u64 {
    ((num as u64 & 0b1_1111) + 1) << (5 * (scale as u32 & 0b11) + 1)
}

/// One range TLBI: [`range_pages`]`(scale, num)` 4 KiB pages from `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeOperand {
    /// First virtual address (page aligned; bits 63:49 are not encoded).
    pub base: u64,
    /// `SCALE`, 0..=3.
    pub scale: u8,
    /// `NUM`, 0..=31.
    pub num: u8,
    /// `Some(asid)`: `RVAE1IS`/`RVALE1IS`; `None`: all ASIDs, `RVAAE1IS`/`RVAALE1IS`.
    pub asid: Option<u16>,
    /// Last-level (`RVAL*`) form.
    pub leaf_only: bool,
    /// Level of the leaves (1..=3), 0 for no hint.
    pub ttl: u8,
}

impl RangeOperand {
    /// The `Xt` operand.
    pub const fn encode(&self) -> u64 {
        let asid = match self.asid {
            Some(a) => a,
            None => 0,
        };
        range_operand(self.base, asid, self.scale, self.num, self.ttl)
    }
    /// Pages covered.
    pub const fn pages(&self) -> u64 {
        range_pages(self.scale, self.num)
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use core::arch::asm;
    use core::sync::atomic::{AtomicU8, Ordering};

    use aarch64_cpu::registers::{ID_AA64ISAR0_EL1, ID_AA64MMFR2_EL1};
    use tock_registers::interfaces::Readable;

    use super::{va_operand, RangeOperand, ISAR0_TLB_RANGE};

    /// `DSB ISHST`.
    #[inline(always)]
    pub fn dsb_ishst() {
        // SAFETY: a barrier only orders memory accesses; it has no other architectural effect.
        // Not `nomem`, so it is also a compiler barrier for the descriptor stores before it.
        unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
    }

    /// `DSB ISH; ISB`.
    #[inline(always)]
    pub fn dsb_ish_isb() {
        // SAFETY: barriers only; they wait for the preceding TLBIs to complete everywhere and
        // resynchronise this PE's instruction stream.
        unsafe { asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
    }

    /// `ISB`.
    #[inline(always)]
    pub fn isb() {
        // SAFETY: a context synchronisation event; no other effect.
        unsafe { asm!("isb", options(nostack, preserves_flags)) };
    }

    /// `DSB ISHST; ISB`.
    #[inline(always)]
    pub fn publish() {
        // SAFETY: barriers only; they make prior descriptor writes visible to the table walker.
        unsafe { asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
    }

    // Every TLBI below only discards cached translations of the EL1&0 regime: afterwards the
    // MMU re-walks the (already updated) tables. That cannot break memory safety by itself;
    // what must be correct is the table contents, which are the caller's responsibility. They
    // must run at EL1 (they are UNDEFINED at EL0), which is where this kernel runs.

    /// `TLBI VALE1IS` (`leaf_only`) or `TLBI VAE1IS`.
    #[inline]
    pub fn by_va(va: u64, asid: u16, leaf_only: bool, ttl_level: u8) {
        let op = va_operand(va, asid, if has_ttl() { ttl_level } else { 0 });
        if leaf_only {
            // SAFETY: TLB invalidation only (see above).
            unsafe { asm!("tlbi vale1is, {}", in(reg) op, options(nostack, preserves_flags)) };
        } else {
            // SAFETY: TLB invalidation only (see above).
            unsafe { asm!("tlbi vae1is, {}", in(reg) op, options(nostack, preserves_flags)) };
        }
    }

    /// `TLBI VAALE1IS` (`leaf_only`) or `TLBI VAAE1IS`: any ASID (the ASID field is ignored).
    #[inline]
    pub fn by_va_all_asids(va: u64, leaf_only: bool, ttl_level: u8) {
        let op = va_operand(va, 0, if has_ttl() { ttl_level } else { 0 });
        if leaf_only {
            // SAFETY: TLB invalidation only (see above).
            unsafe { asm!("tlbi vaale1is, {}", in(reg) op, options(nostack, preserves_flags)) };
        } else {
            // SAFETY: TLB invalidation only (see above).
            unsafe { asm!("tlbi vaae1is, {}", in(reg) op, options(nostack, preserves_flags)) };
        }
    }

    /// The range forms: `asid = Some(a)`: `RVALE1IS` / `RVAE1IS`; `None`: `RVAALE1IS` /
    /// `RVAAE1IS`.
    ///
    /// # Panics
    /// If FEAT_TLBIRANGE is absent (the instruction would be UNDEFINED).
    #[inline]
    pub fn range(r: RangeOperand) {
        assert!(has_tlbi_range(), "range TLBI without FEAT_TLBIRANGE");
        let op = r.encode();
        let (asid, leaf_only) = (r.asid, r.leaf_only);
        // The op2 of `SYS #0, C8, C2, #op2` selects R{VA,VAA,VAL,VAAL}E1IS = 1, 3, 5, 7.
        match (asid.is_some(), leaf_only) {
            (true, false) => {
                // SAFETY: TLB invalidation only (see above); FEAT_TLBIRANGE checked above.
                unsafe { asm!("sys #0, c8, c2, #1, {}", in(reg) op, options(nostack, preserves_flags)) }
            }
            (false, false) => {
                // SAFETY: TLB invalidation only (see above); FEAT_TLBIRANGE checked above.
                unsafe { asm!("sys #0, c8, c2, #3, {}", in(reg) op, options(nostack, preserves_flags)) }
            }
            (true, true) => {
                // SAFETY: TLB invalidation only (see above); FEAT_TLBIRANGE checked above.
                unsafe { asm!("sys #0, c8, c2, #5, {}", in(reg) op, options(nostack, preserves_flags)) }
            }
            (false, true) => {
                // SAFETY: TLB invalidation only (see above); FEAT_TLBIRANGE checked above.
                unsafe { asm!("sys #0, c8, c2, #7, {}", in(reg) op, options(nostack, preserves_flags)) }
            }
        }
    }

    /// `TLBI ASIDE1IS`: every non-global entry (leaf and walk cache) of `asid`.
    #[inline]
    pub fn by_asid(asid: u16) {
        let op = (asid as u64) << 48;
        // SAFETY: TLB invalidation only (see above).
        unsafe { asm!("tlbi aside1is, {}", in(reg) op, options(nostack, preserves_flags)) };
    }

    /// `TLBI VMALLE1IS`: every EL1&0 entry, global or not.
    #[inline]
    pub fn all() {
        // SAFETY: TLB invalidation only (see above).
        unsafe { asm!("tlbi vmalle1is", options(nostack, preserves_flags)) };
    }

    /// `TLBI VMALLE1` (this PE only), for the per-CPU flush after an ASID rollover.
    #[inline]
    pub fn all_local() {
        // SAFETY: TLB invalidation only (see above).
        unsafe { asm!("tlbi vmalle1", options(nostack, preserves_flags)) };
    }

    const KNOWN: u8 = 1 << 0;
    const RANGE: u8 = 1 << 1;
    const TTL: u8 = 1 << 2;
    static FEATURES: AtomicU8 = AtomicU8::new(0);

    fn features() -> u8 {
        let f = FEATURES.load(Ordering::Relaxed);
        if f & KNOWN != 0 {
            return f;
        }
        // aarch64-cpu 11 does not name ID_AA64ISAR0_EL1.TLB: read the raw field (59:56).
        let tlb = (ID_AA64ISAR0_EL1.get() >> 56) & 0xF;
        let mut f = KNOWN;
        if tlb >= ISAR0_TLB_RANGE {
            f |= RANGE;
        }
        if ID_AA64MMFR2_EL1.read(ID_AA64MMFR2_EL1::TTL) != 0 {
            f |= TTL;
        }
        FEATURES.store(f, Ordering::Relaxed);
        f
    }

    /// Whether the range TLBIs exist (FEAT_TLBIRANGE: `ID_AA64ISAR0_EL1.TLB == 0b0010`).
    pub fn has_tlbi_range() -> bool {
        features() & RANGE != 0
    }

    /// Whether the by-VA forms honour a TTL hint (FEAT_TTL: `ID_AA64MMFR2_EL1.TTL != 0`).
    pub fn has_ttl() -> bool {
        features() & TTL != 0
    }
}

#[cfg(target_arch = "aarch64")]
pub use imp::*;

/// Runs `f` (a sequence of TLBIs) between [`dsb_ishst`] and [`dsb_ish_isb`].
#[cfg(target_arch = "aarch64")]
#[inline]
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    dsb_ishst();
    let r = f();
    dsb_ish_isb();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn va_operand_layout() {
        assert_eq!(va_operand(0x1234_5000, 7, 0), (7 << 48) | 0x12345);
        assert_eq!(va_operand(0x1234_5fff, 0, 3), (0b0111 << 44) | 0x12345);
        assert_eq!(
            va_operand(0x4000_0000, 1, 2),
            (1 << 48) | (0b0110 << 44) | 0x40000
        );
        // Kernel addresses keep VA[55:12]; bits 63:56 are dropped.
        assert_eq!(va_operand(0xFFFF_8000_0000_0000, 0, 0), 0xFF_8000_0000_0000 >> 12);
        assert_eq!(ttl_field(0), 0);
        assert_eq!(ttl_field(4), 0);
    }

    #[test]
    fn range_operand_layout() {
        let op = range_operand(0xFFFF_0000_0040_0000, 3, 2, 17, 3);
        assert_eq!(op >> 48, 3);
        assert_eq!((op >> 46) & 3, 0b01, "TG = 4K");
        assert_eq!((op >> 44) & 3, 2);
        assert_eq!((op >> 39) & 31, 17);
        assert_eq!((op >> 37) & 3, 3);
        // BaseADDR = VA[48:12]: bit 48 set for the upper half.
        assert_eq!(op & ((1 << 37) - 1), (1 << 36) | 0x400);
        assert_eq!(range_pages(0, 0), 2);
        // Hand-computed vectors (also checked on the real MMU by a libos/src/vm.rs boot test).
        let op = RangeOperand {
            base: 0x1234_5000,
            scale: 1,
            num: 3,
            asid: Some(0x42),
            leaf_only: true,
            ttl: 3,
        };
        assert_eq!(op.encode(), 0x0042_51E0_0001_2345);
        let op = RangeOperand {
            base: 0x0000_FFFF_FFFF_F000,
            scale: 3,
            num: 31,
            asid: None,
            leaf_only: false,
            ttl: 0,
        };
        assert_eq!(op.encode(), 0x0000_7F8F_FFFF_FFFF);
        assert_eq!(op.pages(), 1 << 21);
        assert_eq!(range_pages(3, 31), 1 << 21);
    }
}
