//! The smallest Tessera app: greets, reports how long the boot took, and exits with status 0.

#![no_std]
#![no_main]

use libos::println;

libos::main!(main);

fn main() {
    let cfg = libos::boot_config();
    println!("Hello from Tessera on {}!", cfg.board);
    let (free, total) = libos::runtime::frame_counts();
    // Counter time from reset to `main`: instructions under `-icount shift=0` (cargo xtask bench boot).
    println!(
        "boot to main: {} ns, RAM {} MiB, {} of {} frames free",
        libos::runtime::boot_to_main_ns(),
        cfg.ram.iter().map(|r| r.size).sum::<u64>() >> 20,
        free,
        total
    );
}
