//! Counters of what the engine did, per root.

use super::hal::TlbOp;

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
}

impl Stats {
    /// Zeroes every counter.
    pub fn reset(&mut self) {
        *self = Stats::default();
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
