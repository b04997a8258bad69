//! ASID allocation with generation rollover (the scheme of Linux's
//! `arch/arm64/mm/context.c`, written afresh); described in docs/mm.md ("ASIDs").

/// An address space identifier (the ASID field of TTBR0_EL1 and of TLB entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Asid(pub u16);

impl Asid {
    /// ASID 0, never allocated.
    pub const RESERVED: Asid = Asid(0);
}

/// An address space's claim on an ASID: `generation << 16 | asid`, 0 for "none yet".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsidContext(u64);

impl AsidContext {
    /// A context that has never been activated.
    pub const fn new() -> AsidContext {
        AsidContext(0)
    }
    /// The ASID last assigned (possibly of an old generation), if any.
    pub const fn asid(self) -> Option<Asid> {
        if self.0 == 0 {
            None
        } else {
            Some(Asid(self.0 as u16))
        }
    }
    /// The generation the ASID was assigned in (0: never).
    pub const fn generation(self) -> u64 {
        self.0 >> 16
    }
}

const fn pack(generation: u64, asid: u16) -> u64 {
    (generation << 16) | asid as u64
}

/// Result of [`AsidAllocator::activate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activation {
    /// The ASID to program into TTBR0_EL1 (and into the root, for TLB maintenance).
    pub asid: Asid,
    /// The address space got a different ASID than it had.
    pub changed: bool,
    /// A rollover happened since this CPU last activated: flush this CPU's non-global TLB
    /// entries before running with `asid`.
    pub flush_tlb: bool,
}

/// Bitmap words for the widest (16-bit) ASID space.
const WORDS: usize = (1 << 16) / 64;

/// The allocator, for up to `CPUS` CPUs.
pub struct AsidAllocator<const CPUS: usize> {
    bits: u8,
    generation: u64,
    map: [u64; WORDS],
    cursor: u32,
    active: [u64; CPUS],
    reserved: [u64; CPUS],
    flush_pending: [bool; CPUS],
    rollovers: u64,
}

impl<const CPUS: usize> AsidAllocator<CPUS> {
    /// An allocator for `bits`-wide ASIDs (8 or 16 on hardware, per ID_AA64MMFR0_EL1.ASIDBits
    /// and TCR_EL1.AS; smaller widths are accepted to test rollover).
    ///
    /// # Panics
    /// If `bits` is 0 or above 16, or leaves no ASID free after reserving one per CPU
    /// (`2^bits - 1 <= CPUS`).
    pub const fn new(bits: u8) -> Self {
        assert!(bits >= 1 && bits <= 16, "ASID width must be 1..=16 bits");
        assert!(
            (1usize << bits) - 1 > CPUS,
            "ASID space too small for the number of CPUs"
        );
        let mut map = [0u64; WORDS];
        map[0] = 1; // ASID 0
        AsidAllocator {
            bits,
            generation: 1,
            map,
            cursor: 1,
            active: [0; CPUS],
            reserved: [0; CPUS],
            flush_pending: [false; CPUS],
            rollovers: 0,
        }
    }

    /// ASID width.
    pub const fn bits(&self) -> u8 {
        self.bits
    }
    /// The current generation (starts at 1).
    pub const fn generation(&self) -> u64 {
        self.generation
    }
    /// How many rollovers happened.
    pub const fn rollovers(&self) -> u64 {
        self.rollovers
    }
    /// The ASID `cpu` currently runs with, if any (after a rollover and before the CPU's next
    /// activation this is the reserved one).
    pub fn running(&self, cpu: usize) -> Option<Asid> {
        let id = if self.active[cpu] != 0 {
            self.active[cpu]
        } else {
            self.reserved[cpu]
        };
        AsidContext(id).asid()
    }

    /// Switches `cpu` to the address space owning `ctx`, assigning it an ASID of the current
    /// generation if it has none.
    ///
    /// # Panics
    /// If `cpu >= CPUS`.
    pub fn activate(&mut self, cpu: usize, ctx: &mut AsidContext) -> Activation {
        let old = ctx.0;
        let current = old != 0 && ctx.generation() == self.generation;
        if !current {
            ctx.0 = self.new_context(old);
        }
        self.active[cpu] = ctx.0;
        let flush_tlb = core::mem::take(&mut self.flush_pending[cpu]);
        Activation {
            asid: Asid(ctx.0 as u16),
            changed: (old as u16) != (ctx.0 as u16),
            flush_tlb,
        }
    }

    fn new_context(&mut self, old: u64) -> u64 {
        if old != 0 {
            let asid = old as u16;
            let renewed = pack(self.generation, asid);
            // Running somewhere across the rollover: keep the number, already marked in use.
            if self.update_reserved(old, renewed) {
                return renewed;
            }
            // Still free in this generation: keep the number.
            if !self.test_and_set(asid) {
                return renewed;
            }
        }
        let asid = match self.find_free(self.cursor) {
            Some(a) => a,
            None => {
                self.rollover();
                self.find_free(1).expect("ASID space exhausted by reserved ASIDs")
            }
        };
        self.test_and_set(asid);
        self.cursor = asid as u32;
        pack(self.generation, asid)
    }

    fn rollover(&mut self) {
        self.generation += 1;
        self.rollovers += 1;
        let words = self.words();
        self.map[..words].fill(0);
        self.map[0] = 1;
        for cpu in 0..CPUS {
            let mut id = core::mem::take(&mut self.active[cpu]);
            if id == 0 {
                // No switch since the previous rollover: it still runs the reserved one.
                id = self.reserved[cpu];
            }
            if id != 0 {
                self.test_and_set(id as u16);
            }
            self.reserved[cpu] = id;
            self.flush_pending[cpu] = true;
        }
        self.cursor = 1;
    }

    fn update_reserved(&mut self, old: u64, new: u64) -> bool {
        let mut hit = false;
        for r in self.reserved.iter_mut() {
            if *r == old {
                *r = new;
                hit = true;
            }
        }
        hit
    }

    fn words(&self) -> usize {
        (1usize << self.bits).div_ceil(64)
    }

    /// Sets the bit for `asid`, returning whether it was already set.
    fn test_and_set(&mut self, asid: u16) -> bool {
        let (w, b) = (asid as usize / 64, asid as usize % 64);
        let was = self.map[w] & (1 << b) != 0;
        self.map[w] |= 1 << b;
        was
    }

    /// The first clear bit at or after `from`, without wrapping.
    fn find_free(&self, from: u32) -> Option<u16> {
        let limit = 1u32 << self.bits;
        let mut a = from;
        while a < limit {
            let (w, b) = (a as usize / 64, a % 64);
            let word = self.map[w] >> b;
            if word == u64::MAX >> b {
                a = (w as u32 + 1) * 64;
                continue;
            }
            let found = a + (!word).trailing_zeros();
            return if found < limit { Some(found as u16) } else { None };
        }
        None
    }
}
