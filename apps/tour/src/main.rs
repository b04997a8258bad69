//! The README's quick tour of processes: the code between the `tour` markers is the README's
//! example, word for word (a host test compares them).

#![no_std]
#![no_main]

libos::main!(main);

// tour: begin
use libos::mm::space::ForkMode;
use libos::mm::vma::{VmProt, VmaKind};
use libos::println;
use libos::process::{Error, Process};

fn main() -> Result<(), Error> {
    let mut p = Process::new()?;
    let va = p.mmap(1 << 20, VmProt::RW, VmaKind::AnonPrivate)?.as_u64();
    // SAFETY: `va` is mapped read-write in `p`, which `run` switches to; faults are resolved on demand.
    p.run(|| unsafe { core::ptr::write_volatile(va as *mut u8, 1) })?;
    p.set_fork_mode(ForkMode::ShareTables); // forks share the page tables until the first write
    let mut child = p.fork()?;
    // SAFETY: the child maps `va` as `p` does, with its own copy-on-write view of the page.
    let seen = child.run(|| unsafe { core::ptr::read_volatile(va as *const u8) })?;
    let free = libos::runtime::frame_counts().0;
    child.exit();
    p.exit();
    let returned = libos::runtime::frame_counts().0 - free;
    println!("the child reads {seen} at {va:#x}; exit returned {returned} frames");
    Ok(())
}
// tour: end
