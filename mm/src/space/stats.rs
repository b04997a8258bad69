//! The counters of what an address space did.

/// Counters of what an address space did, cumulative. Fork counters are the parent's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Calls of [`Space::handle_fault`](super::Space::handle_fault) (and internal faults of `pin`), by reported kind.
    pub faults_translation: u64,
    /// Permission faults.
    pub faults_permission: u64,
    /// Access-flag faults.
    pub faults_access_flag: u64,
    /// Faults answered with `Segv`.
    pub segv: u64,
    /// Faults answered with `Bus` (past the end of a file).
    pub bus: u64,
    /// Faults with nothing to do (spurious, or resolved by someone else).
    pub spurious: u64,
    /// Access flags set by faults.
    pub young_set: u64,
    /// Fresh anonymous folios mapped: 4 KiB.
    pub anon_4k: u64,
    /// Fresh anonymous folios mapped: 64 KiB.
    pub anon_64k: u64,
    /// Shared-object folios allocated: 4 KiB.
    pub shm_4k: u64,
    /// Shared-object folios allocated: 64 KiB.
    pub shm_64k: u64,
    /// Object pages mapped by faults (pages, not calls): in shared regions, and read-only in
    /// private object mappings.
    pub shm_pages_mapped: u64,
    /// Private copies of object pages made by an object's fault handler (writes to private
    /// object mappings).
    pub file_cow: u64,
    /// COW faults answered by reusing one page.
    pub cow_reuse_4k: u64,
    /// COW faults answered by reusing a whole 64 KiB block.
    pub cow_reuse_64k: u64,
    /// COW faults answered by copying one page.
    pub cow_copy_4k: u64,
    /// COW faults answered by copying a whole 64 KiB folio.
    pub cow_copy_64k: u64,
    /// Of the COW decisions above, those made for an unshare (pin) rather than a write.
    pub unshares: u64,
    /// Fork: `try_dup_anon_ptes` calls (runs).
    pub fork_dup_batches: u64,
    /// Fork: pages shared with the child through them.
    pub fork_dup_pages: u64,
    /// Fork: pages of pinned folios copied for the child.
    pub fork_copies: u64,
    /// Fork: `add_file_ptes` calls (runs of object pages in private object mappings).
    pub fork_file_batches: u64,
    /// Fork: level-3 table passes that write-protected entries of the parent (one
    /// invalidation batch each).
    pub fork_wrprotects: u64,
    /// Pages pinned.
    pub pins: u64,
    /// Fork (`ShareTables`): level-3 tables linked into the child instead of copied.
    pub fork_tables_shared: u64,
    /// Fork (`ShareTables`): 2 MiB spans copied entry by entry (pinned pages there).
    pub fork_tables_copied: u64,
    /// Shared level-3 tables this space copied to change something under them.
    pub table_breaks: u64,
    /// Formerly shared level-3 tables this space took over as their last holder.
    pub table_takeovers: u64,
    /// Shared level-3 tables this space stopped linking without copying (whole-span unmap).
    pub table_drops: u64,
}
