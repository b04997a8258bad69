//! Boot tests of processes that run together: fork trees, copy-on-write between parent and
//! child, pipes, vfork and exec, waiting, preemption, the process limit and fork under memory
//! pressure, all through real programs from `programs/` (their expected output is what they
//! print on Linux under `qemu-aarch64`). The runner's leak check proves every frame returns.

use super::programs::run;
use crate::user::{signal, Exit};
use alloc::string::String;

/// Runs `name` and expects exit status 0 and `want` as its whole output.
fn expect_output(name: &str, args: &[&str], want: &str) {
    let Some((exit, out)) = run(name, args) else {
        return;
    };
    assert_eq!(exit, Ok(Exit::Code(0)), "{out}");
    assert_eq!(out, want);
}

/// Runs `name`, expects exit status 0 and every line of `want` in its output.
fn expect_lines(name: &str, args: &[&str], want: &[&str]) -> Option<String> {
    let (exit, out) = run(name, args)?;
    assert_eq!(exit, Ok(Exit::Code(0)), "{out}");
    for line in want {
        assert!(out.lines().any(|l| l == *line), "no line '{line}' in:\n{out}");
    }
    Some(out)
}

crate::boot_test! {
    /// 40 processes in a tree, each writing its own pattern into memory it shares copy-on-write
    /// with the others and seeing only its own, in both fork modes and both folio sizes.
    #[timeout_ms = 120_000]
    fn a_fork_tree_sees_only_its_own_writes() {
        for args in [&[][..], &["--fork", "copy"], &["--fork", "share", "--folio", "4k"], &["--folio", "4k"]] {
            expect_output("fork-tree", args, "fork-tree: 40 processes ok\n");
        }
    }
}

crate::boot_test! {
    /// Parent and child write the same pages (data, bss, heap, stack, a mapping) and each reads
    /// back its own values; a shared mapping shows the child's write to the parent.
    fn parent_and_child_write_the_same_page() {
        for args in [&[][..], &["--fork", "copy"], &["--fork", "share"], &["--folio", "4k"]] {
            expect_output("cow-page", args, "cow-page: ok\n");
        }
    }
}

crate::boot_test! {
    /// Pipes between processes: ping-pong, a 4 MiB transfer in odd sizes, end of file only after
    /// every writer closed, SIGPIPE and EPIPE, dup2/dup3 and the descriptor flags.
    #[timeout_ms = 120_000]
    fn pipes_between_processes_behave_as_on_linux() {
        expect_output(
            "pipes",
            &[],
            "pipes: ping-pong 1000 rounds ok\n\
             pipes: transfer 4194304 bytes ok, checksum 0xec29f22969c2325\n\
             pipes: eof ok\n\
             pipes: sigpipe ok\n\
             pipes: epipe ok\n\
             pipes: dup ok\n\
             pipes: fcntl ok\n\
             pipes: ok\n",
        );
    }
}

crate::boot_test! {
    /// vfork + execve, fork + execve (close-on-exec descriptors closed, others inherited) and
    /// posix_spawn with a file action, of a program from the archive; execve of a missing
    /// program fails with ENOENT and the caller goes on.
    fn spawn_runs_programs_from_the_archive() {
        expect_output(
            "spawn",
            &[],
            "spawn: execve of a missing program: ENOENT ok\n\
             echo-args: 2 words: [vfork] [two words]\n\
             echo-args: SPAWN_VAR=vfork\n\
             echo-args: exit 3\n\
             spawn: vfork+execve exit status 3 ok\n\
             echo-args: fd 20 closed\n\
             echo-args: fd 21 open\n\
             echo-args: 1 words: [fork]\n\
             echo-args: SPAWN_VAR=fork\n\
             echo-args: exit 5\n\
             spawn: fork+execve exit status 5 ok\n\
             spawn: fork+execve descriptors ok\n\
             echo-args: 1 words: [posix_spawn]\n\
             echo-args: SPAWN_VAR=posix_spawn\n\
             echo-args: exit 7\n\
             spawn: posix_spawn exit status 7 ok\n\
             spawn: posix_spawn with dup2 exit status 0 ok\n\
             spawn: posix_spawn output through a pipe ok\n\
             spawn: ok\n",
        );
    }
}

crate::boot_test! {
    /// wait4 by pid, for any child and with WNOHANG (0 while children run), statuses of 20
    /// children, some sleeping first, and ECHILD when none is left.
    fn waiting_for_many_children() {
        expect_output(
            "wait-many",
            &[],
            "wait-many: WNOHANG with a running child: 0 ok\n\
             wait-many: 20 children reaped by pid and by polling ok\n\
             wait-many: released child reaped by wait ok\n\
             wait-many: ECHILD ok\n\
             wait-many: ok\n",
        );
    }
}

crate::boot_test! {
    /// Two busy children that make no system call both progress while their parent sleeps (the
    /// timer preempts them), and SIGKILL and SIGTERM end them.
    fn busy_processes_share_the_cpu() {
        expect_output(
            "preempt",
            &[],
            "preempt: both counters moved\npreempt: SIGKILL ok\npreempt: SIGTERM ok\npreempt: ok\n",
        );
    }
}

crate::boot_test! {
    /// A fork bomb meets the process limit (EAGAIN) and the kernel stays alive; every child is
    /// reaped and every frame returns.
    #[timeout_ms = 120_000]
    fn a_fork_bomb_meets_the_process_limit() {
        let Some(out) = expect_lines("fork-bomb", &["--require-limit"], &["fork-bomb: ok"]) else { return };
        assert!(out.contains("fork-bomb: limit reached after 127 forks"), "{out}");
    }
}

crate::boot_test! {
    /// Fork with little memory left: forks fail with ENOMEM or children are killed when their
    /// copies do not fit, never anything else, and nothing is lost.
    #[timeout_ms = 120_000]
    fn fork_under_memory_pressure_fails_cleanly() {
        use crate::runtime::{alloc_frames, frame_counts, free_frames};
        // Hold all but about 24 MiB of free memory.
        let mut held = alloc::vec::Vec::new();
        const ORDER: usize = 4;
        while frame_counts().0 > (24 << 20) / 4096 {
            match alloc_frames(ORDER) {
                Ok(pa) => held.push(pa),
                Err(_) => break,
            }
        }
        let r = run("fork-oom", &["8", "6", "--fork", "copy", "--folio", "4k"]);
        for pa in held {
            free_frames(pa, ORDER).expect("held frames go back");
        }
        let Some((exit, out)) = r else { return };
        assert_eq!(exit, Ok(Exit::Code(0)), "{out}");
        assert!(out.contains("fork-oom: done\n"), "{out}");
        let pressure = !out.contains("children ok 6, killed 0; forks failed ENOMEM 0, EAGAIN 0");
        assert!(pressure, "6 copies of 8 MiB fit in 24 MiB: the test did not press:\n{out}");
    }
}

crate::boot_test! {
    /// kvsnap: a child streams a snapshot of the store through a pipe while the parent updates
    /// it; the snapshot is the state at the fork, in both fork modes and both folio sizes, and
    /// copy-on-write is counted.
    #[timeout_ms = 120_000]
    fn kvsnap_snapshots_are_consistent() {
        for (folio, fork) in [("4k", "copy"), ("64k", "copy"), ("4k", "share"), ("64k", "share")] {
            let Some(out) = expect_lines(
                "kvsnap",
                &["--mib", "8", "--folio", folio, "--fork", fork, "--updates", "100"],
                &["kvsnap: 51200 updates ok", "kvsnap: ok"],
            ) else {
                return;
            };
            assert!(out.contains(&alloc::format!("kvsnap: 8 MiB, folio {folio}, fork {fork}\n")), "{out}");
            assert!(out.contains("kvsnap: snapshot checksum ok (0x"), "{out}");
            assert!(!out.contains("n/a"), "Tessera reports its counters:\n{out}");
        }
    }
}

crate::boot_test! {
    /// A process killed by a fault dies alone: its parent sees SIGSEGV in the wait status.
    fn a_faulting_child_dies_alone() {
        let Some((exit, out)) = run("write-kernel", &[]) else { return };
        assert!(matches!(exit, Ok(Exit::Signal { signal: signal::SIGSEGV, .. })), "{exit:?}\n{out}");
    }
}

crate::boot_test! {
    /// With SIGCHLD ignored, dead children are reaped at once: wait blocks until the last one
    /// exits, then answers ECHILD, and no zombie is left (as on Linux).
    fn ignoring_sigchld_leaves_no_zombies() {
        expect_output("no-zombies", &[], "no-zombies: ECHILD after every child exited, no zombie left\n");
    }
}

crate::boot_test! {
    /// FP/SIMD registers are each process's own: four processes hold all 32 vector registers and
    /// their FPCR rounding mode across 400 yields and system calls while the others do the same
    /// (the kernel never touches them; a switch saves and restores them).
    fn fp_simd_registers_survive_switches() {
        expect_output(
            "fp-switch",
            &[],
            "fp-switch: 4 processes kept their 32 vector registers and FPCR across 400 calls each\n",
        );
    }
}

crate::boot_test! {
    /// Signal handlers as on Linux: run by raise and kill before they return, with siginfo and
    /// the mask of their action; pending signals delivered when unblocked (a blocked SIGTERM
    /// kills when unblocked); SIGCHLD; EINTR from read and nanosleep, SA_RESTART; sigsuspend
    /// and pause; the alternate stack; SIGSEGV handlers that siglongjmp out or fix the page;
    /// FP/SIMD registers kept across a handler.
    fn signal_handlers_run_as_on_linux() {
        expect_output(
            "signals",
            &[],
            "signals: handler run by raise and kill ok\n\
             signals: SA_SIGINFO si_signo si_code si_pid ok\n\
             signals: mask inside a handler ok\n\
             signals: SA_NODEFER and SA_RESETHAND ok\n\
             signals: pending signal delivered on unblock ok\n\
             signals: blocked SIGTERM kills when unblocked ok\n\
             signals: SIGCHLD handler counted 3 children ok\n\
             signals: waitpid returns the child before the SIGCHLD handler ok\n\
             signals: read EINTR ok\n\
             signals: read SA_RESTART ok\n\
             signals: nanosleep EINTR with remaining time ok\n\
             signals: sigsuspend and pause ok\n\
             signals: sigaltstack and SA_ONSTACK ok\n\
             signals: SIGSEGV handler siglongjmp ok\n\
             signals: SIGSEGV handler mprotect and return ok\n\
             signals: FP/SIMD registers kept across a handler ok\n\
             signals: ok\n",
        );
    }
}

crate::boot_test! {
    /// Threads (glibc's pthreads): a mutex-protected counter over 8 threads, a condition-variable
    /// ping-pong, thread ids, shared memory and thread-local storage, `exit` from a thread ending
    /// the process, detached threads, a thread blocked in a pipe read, signals to the process
    /// and to one thread, a fault in a thread killing the process, the main thread ending
    /// first, futex answers (EAGAIN, ETIMEDOUT, EINVAL, ENOSYS, EINTR), clone's flag rules, and
    /// `execve` from a thread.
    #[timeout_ms = 120_000]
    fn threads_behave_as_on_linux() {
        expect_output("threads", &[], THREADS_OUTPUT);
    }
}

/// What `threads` prints (the kernel reports the child process killed by its thread's fault).
const THREADS_OUTPUT: &str = "threads: mutex counter 80000 ok\n\
     threads: condvar ping-pong 1000 rounds ok\n\
     threads: ids ok\n\
     threads: shared memory ok\n\
     threads: thread-local ok\n\
     threads: exit from a thread ends the process with status 42 ok\n\
     threads: detached ok\n\
     threads: read of a pipe in a thread ok\n\
     threads: signals to the process and to a thread ok\n\
     tessera: process 25 killed by signal 11 (fault at 0x8)\n\
     threads: a fault in a thread kills the process ok\n\
     threads: the main thread ends first ok\n\
     threads: futex EAGAIN ETIMEDOUT EINVAL ENOSYS EINTR ok\n\
     threads: clone flag checks ok\n\
     echo-args: 2 words: [from] [a thread]\n\
     echo-args: SPAWN_VAR=thread\n\
     echo-args: exit 9\n\
     threads: execve from a thread ok\n\
     threads: ok\n";

crate::boot_test! {
    /// Threads of Rust `std` (musl's pthreads, std's futex-based locks): spawn and join, a
    /// `Mutex` through `Arc`, an `mpsc` channel, a `Condvar` hand-off, a `recv_timeout` that
    /// expires (a futex wait with a deadline), scoped threads.
    #[timeout_ms = 120_000]
    fn rust_std_threads_behave_as_on_linux() {
        expect_output(
            "rust-threads",
            &[],
            "rust-threads: mutex counter 30000 ok\n\
             rust-threads: channel 1000 messages ok\n\
             rust-threads: condvar 200 rounds ok\n\
             rust-threads: recv_timeout ok\n\
             rust-threads: scoped threads ok\n\
             rust-threads: ok\n",
        );
    }
}
