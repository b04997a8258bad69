//! Random numbers for programs (`getrandom`) and the initial stack's `AT_RANDOM`: the CPU's
//! `RNDR` where it exists, else the board's generator when the firmware's device tree lists one,
//! else a ChaCha20 generator seeded from the entropy the firmware or loader passed in
//! `/chosen/rng-seed` (or `kaslr-seed`) together with the counter at first use. With none of these
//! the machine has no entropy, and callers get an error rather than a made-up number.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use spin::Mutex;

/// This machine has no source of entropy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoEntropy;

static SEEDED: Mutex<Option<ChaCha20Rng>> = Mutex::new(None);

fn seeded() -> Result<u64, NoEntropy> {
    let mut g = SEEDED.lock();
    if g.is_none() {
        let dt = crate::boot_config().dt.as_ref().ok_or(NoEntropy)?;
        if dt.rng_seed.len() < 16 {
            return Err(NoEntropy);
        }
        let mut seed = [0u8; 32];
        for (i, b) in dt.rng_seed.iter().enumerate() {
            seed[i % 32] ^= b;
        }
        for (i, b) in arch::timer::ticks().to_le_bytes().iter().enumerate() {
            seed[24 + i] ^= b;
        }
        *g = Some(ChaCha20Rng::from_seed(seed));
    }
    Ok(g.as_mut().expect("seeded").next_u64())
}

/// 64 random bits.
pub fn u64() -> Result<u64, NoEntropy> {
    if let Some(v) = arch::rng::cpu_u64() {
        return Ok(v);
    }
    if crate::boot_config().dt.as_ref().is_some_and(|d| d.rng.is_some()) {
        if let Some(v) = arch::rng::board_u64() {
            return Ok(v);
        }
    }
    seeded()
}

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), NoEntropy> {
    for chunk in buf.chunks_mut(8) {
        let v = u64()?.to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    Ok(())
}
