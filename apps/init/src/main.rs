//! The built-in init: runs the program `init=NAME` names, from the image's program archive, with
//! the words after ` -- ` on the kernel command line as its arguments (`argv[0]` is `NAME`), and
//! leaves the machine with the program's exit status (128 + the signal for a program a fault
//! killed, 127 for a program that could not be started). `cargo xtask run --program PATH -- ARGS`
//! boots it.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libos::exec::cpio::Archive;
use libos::println;
use libos::user::Exit;

libos::main!(main);

/// The environment programs start with (as Linux gives its first process).
const ENVIRONMENT: [&str; 2] = ["HOME=/", "TERM=linux"];

fn main() -> u32 {
    let line = libos::boot_config().bootargs.as_str();
    let args: Vec<&str> = match line.split_once(" -- ") {
        Some((_, rest)) => rest.split_whitespace().collect(),
        None => Vec::new(),
    };
    let Some(name) = libos::boot_config().bootargs.get("init") else {
        println!("init: no program to run: give one with `cargo xtask run --program PATH` (init=NAME)");
        return 127;
    };
    let archive = match Archive::new(libos::programs::archive()) {
        Ok(a) => a,
        Err(e) => {
            println!("init: the image's program archive is damaged: {e}");
            return 127;
        }
    };
    let Some(entry) = archive.find(name) else {
        let names: Vec<&str> = archive.entries().map(|e| e.name).collect();
        println!(
            "init: no program '{name}' in the image (it holds: {})",
            names.join(", ")
        );
        return 127;
    };
    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(name);
    argv.extend(args);
    match libos::user::run(entry.data, &argv, &ENVIRONMENT) {
        Ok(Exit::Code(status)) => u32::from(status),
        Ok(Exit::Signal { signal, .. }) => 128 + u32::from(signal),
        Ok(Exit::PowerOff) => 0,
        Err(e) => {
            println!("init: cannot run '{name}': {e:?}");
            127
        }
    }
}
