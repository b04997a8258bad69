//! Counters of what the engine did, per root.

use super::platform::TlbOp;

/// What a root's operations cost, cumulatively since creation or [`Stats::reset`].
///
/// Tests cross-check these against the hardware model's own log; the benchmark reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Descriptor writes into translation tables (live or not yet linked).
    pub desc_writes: u64,
    /// Bookkeeping writes into spare frames held in a reservation (not translation entries).
    pub scratch_writes: u64,
    /// Table frames obtained from the platform (including the root).
    pub tables_allocated: u64,
    /// Table frames returned to the platform.
    pub tables_freed: u64,
    /// `TLBI VAE1IS` / `VALE1IS`.
    pub tlbi_va: u64,
    /// `TLBI VAAE1IS` / `VAALE1IS`.
    pub tlbi_va_all_asids: u64,
    /// Range TLBIs.
    pub tlbi_range: u64,
    /// `TLBI ASIDE1IS`.
    pub tlbi_asid: u64,
    /// `TLBI VMALLE1IS`.
    pub tlbi_all: u64,
    /// Barrier-bracketed maintenance batches (`DSB ISHST … DSB ISH; ISB`).
    pub tlbi_batches: u64,
    /// `DSB ISHST; ISB` without maintenance.
    pub publishes: u64,
    /// Break-before-make sequences (break, TLBI, make).
    pub bbm: u64,
    /// Blocks split into a next-level table.
    pub splits: u64,
    /// 64 KiB blocks folded: 16 live entries rewritten with the Contiguous bit by
    /// break-before-make (`contpte_try_fold`). Also counted in `bbm`.
    pub folds: u64,
    /// 64 KiB blocks unfolded: 16 live entries rewritten without the Contiguous bit by
    /// break-before-make, before a change that covers only part of the block. Also counted in
    /// `bbm`.
    pub unfolds: u64,
    /// 64 KiB blocks written folded directly, from invalid (no break-before-make needed).
    pub cont_blocks_mapped: u64,
    /// Folded 64 KiB blocks removed whole (no unfold needed).
    pub cont_blocks_unmapped: u64,
}

impl Stats {
    /// Zeroes every counter.
    pub fn reset(&mut self) {
        *self = Stats::default();
    }

    /// The counters accumulated since `earlier` (a copy taken from the same root before):
    /// `self - earlier`, field by field (saturating, so a [`Stats::reset`] in between gives
    /// zeroes rather than a panic).
    #[must_use]
    pub fn since(&self, earlier: &Stats) -> Stats {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Stats {
            desc_writes: d(self.desc_writes, earlier.desc_writes),
            scratch_writes: d(self.scratch_writes, earlier.scratch_writes),
            tables_allocated: d(self.tables_allocated, earlier.tables_allocated),
            tables_freed: d(self.tables_freed, earlier.tables_freed),
            tlbi_va: d(self.tlbi_va, earlier.tlbi_va),
            tlbi_va_all_asids: d(self.tlbi_va_all_asids, earlier.tlbi_va_all_asids),
            tlbi_range: d(self.tlbi_range, earlier.tlbi_range),
            tlbi_asid: d(self.tlbi_asid, earlier.tlbi_asid),
            tlbi_all: d(self.tlbi_all, earlier.tlbi_all),
            tlbi_batches: d(self.tlbi_batches, earlier.tlbi_batches),
            publishes: d(self.publishes, earlier.publishes),
            bbm: d(self.bbm, earlier.bbm),
            splits: d(self.splits, earlier.splits),
            folds: d(self.folds, earlier.folds),
            unfolds: d(self.unfolds, earlier.unfolds),
            cont_blocks_mapped: d(self.cont_blocks_mapped, earlier.cont_blocks_mapped),
            cont_blocks_unmapped: d(self.cont_blocks_unmapped, earlier.cont_blocks_unmapped),
        }
    }

    /// Total TLBI instructions issued.
    pub fn tlbi_total(&self) -> u64 {
        self.tlbi_va + self.tlbi_va_all_asids + self.tlbi_range + self.tlbi_asid + self.tlbi_all
    }

    /// Table frames currently owned by the root.
    pub fn tables_live(&self) -> u64 {
        self.tables_allocated - self.tables_freed
    }

    pub(crate) fn count_tlbi(&mut self, ops: &[TlbOp]) {
        self.tlbi_batches += 1;
        for op in ops {
            match op {
                TlbOp::Va { .. } => self.tlbi_va += 1,
                TlbOp::VaAllAsids { .. } => self.tlbi_va_all_asids += 1,
                TlbOp::Range(_) => self.tlbi_range += 1,
                TlbOp::Asid(_) => self.tlbi_asid += 1,
                TlbOp::All => self.tlbi_all += 1,
            }
        }
    }
}
