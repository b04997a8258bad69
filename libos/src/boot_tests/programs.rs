//! Boot tests that run unmodified static Linux programs from the image's archive at EL0 (the
//! examples in `programs/`, which `cargo xtask test` puts into the selftest image): their output
//! must be what they print on Linux (`qemu-aarch64`), and faulting or misbehaving programs must end
//! as Linux ends them while the kernel goes on and every frame comes back (the runner's leak check
//! covers each test).
//!
//! An image built without programs has an empty archive; these tests then have nothing to run and
//! pass. One that has an archive must hold every program named here.

pub(super) use crate::programs::for_test as program;
use crate::user::{self, signal, Exit};
use alloc::string::String;

/// Runs `name` with `args`, capturing what it prints.
pub(super) fn run(name: &str, args: &[&str]) -> Option<(Result<Exit, user::ExecError>, String)> {
    let image = program(name)?;
    let mut argv = alloc::vec![name];
    argv.extend_from_slice(args);
    let mut result = None;
    let out = crate::console::capture(|| result = Some(user::run(image, &argv, &["HOME=/"])));
    Some((result.expect("ran"), out))
}

crate::boot_test! {
    /// A Rust `std` program (collections, heap growth, formatting, arguments) prints exactly what
    /// it prints on Linux and exits 0.
    fn rust_std_program_runs_unmodified() {
        let Some((exit, out)) = run("rust-hello", &["one", "two"]) else { return };
        assert_eq!(exit, Ok(Exit::Code(0)), "{out}");
        assert_eq!(
            out,
            "rust-hello: hello from EL0\n\
             rust-hello: 1000 squares, sum 332833500\n\
             rust-hello: words brown=1 dog=1 end=1 fox=1 jumps=1 lazy=1 over=1 quick=1 the=3\n\
             rust-hello: 2 args [\"one\", \"two\"]\n\
             rust-hello:    3.143 0xbeef 00000101\n\
             rust-hello: done\n"
        );
    }
}

crate::boot_test! {
    /// A static glibc C program prints what it prints on Linux and exits 0.
    fn c_program_runs_unmodified() {
        let Some((exit, out)) = run("c-hello", &[]) else { return };
        assert_eq!(exit, Ok(Exit::Code(0)), "{out}");
        assert_eq!(
            out,
            "c-hello: hello from EL0\n\
             c-hello: 1000 squares, sum 332833500\n\
             c-hello: grown and reallocated\n\
             c-hello: 0 args\n\
             c-hello: done\n"
        );
    }
}

crate::boot_test! {
    /// Bad pointers, lengths and flags to every implemented call get Linux's errno (the program
    /// checks each and exits 0 only if all held).
    fn bad_system_call_arguments_get_linux_errnos() {
        let unknown = user::unknown_calls();
        let Some((exit, out)) = run("bad-args", &[]) else { return };
        assert!(out.contains("bad-args: 44 checks, 0 failed"), "{out}");
        assert_eq!(exit, Ok(Exit::Code(0)), "{out}");
        // Its call of an unknown number is counted (glibc's start-up makes one more: rseq).
        assert!(user::unknown_calls() > unknown, "the ENOSYS answer was not counted");
    }
}

crate::boot_test! {
    /// `abort()` ends the program with SIGABRT, as on Linux, after what it printed.
    fn abort_ends_with_sigabrt() {
        let Some((exit, out)) = run("abort", &[]) else { return };
        assert_eq!(out, "abort: calling abort()\ntessera: program killed by signal 6\n");
        assert_eq!(exit, Ok(Exit::Signal { signal: 6, address: 0 }), "{out}");
    }
}

crate::boot_test! {
    /// A write to a kernel address kills the program with SIGSEGV at that address.
    fn writing_kernel_memory_is_a_segfault() {
        let Some((exit, out)) = run("write-kernel", &[]) else { return };
        assert_eq!(exit, Ok(Exit::Signal { signal: signal::SIGSEGV, address: 0xffff_0000_4020_0000 }), "{out}");
    }
}

crate::boot_test! {
    /// A jump into kernel text kills the program with SIGSEGV.
    fn executing_kernel_text_is_a_segfault() {
        let Some((exit, out)) = run("jump-kernel", &[]) else { return };
        assert!(
            matches!(exit, Ok(Exit::Signal { signal: signal::SIGSEGV, .. })),
            "{exit:?}\n{out}"
        );
    }
}

crate::boot_test! {
    /// A program that touches memory until none is left is killed (SIGKILL, as by Linux's OOM
    /// killer); the kernel goes on and gets every frame back.
    #[timeout_ms = 120_000]
    fn exhausting_memory_kills_only_the_program() {
        let Some((exit, out)) = run("oom", &[]) else { return };
        assert_eq!(exit.map(|e| matches!(e, Exit::Signal { signal: signal::SIGKILL, .. })), Ok(true), "{out}");
        // The kernel still allocates.
        let v: alloc::vec::Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}

crate::boot_test! {
    /// EL0 reads the virtual counter directly, gets the physical counter and the cache type through
    /// the emulation Linux also does, and dies with SIGILL reading a kernel system register.
    fn el0_reaches_only_the_counters_it_may() {
        let Some((exit, out)) = run("counters", &[]) else { return };
        assert!(out.contains("counters: virtual ok, physical ok, cache type ok\n"), "{out}");
        assert!(!out.contains("SCTLR_EL1 ="), "{out}");
        assert!(matches!(exit, Ok(Exit::Signal { signal: signal::SIGILL, .. })), "{exit:?}\n{out}");
    }
}

crate::boot_test! {
    /// With tracing on, every system call is logged with its arguments and result, and the
    /// program's own output is unchanged.
    fn strace_logs_every_system_call() {
        let Some(image) = program("c-hello") else { return };
        let mut result = None;
        let out = crate::console::capture(|| result = Some(user::run_traced(image, &["c-hello"], &[], true)));
        assert_eq!(result, Some(Ok(Exit::Code(0))), "{out}");
        assert!(out.contains("c-hello: done\n"), "{out}");
        assert!(out.contains("[strace] set_tid_address("), "{out}");
        assert!(out.contains("[strace] brk("), "{out}");
        assert!(out.contains("[strace] exit_group(0x0) = ?"), "{out}");
        let writes = out.lines().filter(|l| l.starts_with("[strace] write(0x1,")).count();
        assert!(writes >= 1, "{out}");
    }
}

crate::boot_test! {
    /// `reboot(LINUX_REBOOT_CMD_POWER_OFF)` with the magic numbers ends the program with a
    /// request to power the machine off (which the init app carries out); wrong magic is `EINVAL`.
    fn reboot_power_off_is_reported() {
        let Some((exit, out)) = run("poweroff", &[]) else { return };
        assert!(out.contains("poweroff: bad magic refused with errno 22\n"), "{out}");
        assert_eq!(exit, Ok(Exit::PowerOff), "{out}");
    }
}

crate::boot_test! {
    /// A program that does not exist, or is not an ELF, is refused with a clear error.
    fn a_bad_image_is_refused() {
        assert!(matches!(
            user::run(b"#!/bin/sh\necho hi\n", &["script"], &[]),
            Err(user::ExecError::Elf(_))
        ));
    }
}
