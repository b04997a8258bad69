/* Passes bad pointers, lengths and flags to every system call Tessera implements and checks each
 * answer against the errno Linux gives. Prints one line per failed check and "bad-args: N checks
 * ok" at the end; exits 0 only if every check held. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int checks, failures;

static void expect(const char *what, long r, int err) {
    checks++;
    if (r != -1 || errno != err) {
        failures++;
        printf("FAIL %s: got %ld errno %d (%s), want errno %d (%s)\n", what, r, r == -1 ? errno : 0,
               r == -1 ? strerror(errno) : "-", err, strerror(err));
    }
}

#define BAD ((void *)0x10)
#define KERNEL ((void *)0xffff000040200000UL)

int main(void) {
    char buf[64];
    struct timespec ts;
    errno = 0;
    expect("write bad buffer", syscall(SYS_write, 1, BAD, 5), EFAULT);
    expect("write kernel buffer", syscall(SYS_write, 1, KERNEL, 5), EFAULT);
    expect("write bad fd", syscall(SYS_write, 57, buf, 1), EBADF);
    expect("writev too many", syscall(SYS_writev, 1, buf, 100000), EINVAL);
    expect("writev bad iovec", syscall(SYS_writev, 1, BAD, 1), EFAULT);
    expect("read bad fd", syscall(SYS_read, 57, buf, 1), EBADF);
    expect("mmap zero length", syscall(SYS_mmap, 0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), EINVAL);
    expect("mmap no type", syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_ANONYMOUS, -1, 0), EINVAL);
    expect("mmap bad fd", syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE, 57, 0), EBADF);
    expect("mmap unaligned fixed", syscall(SYS_mmap, 0x10001, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), EINVAL);
    expect("mmap unaligned offset", syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 1), EINVAL);
    expect("munmap unaligned", syscall(SYS_munmap, 0x10001, 4096), EINVAL);
    expect("munmap zero length", syscall(SYS_munmap, 0x10000, 0), EINVAL);
    expect("mprotect unaligned", syscall(SYS_mprotect, 0x10001, 4096, PROT_READ), EINVAL);
    expect("mprotect bad prot", syscall(SYS_mprotect, 0x10000, 4096, 0x100), EINVAL);
    expect("mprotect unmapped", syscall(SYS_mprotect, 0x10000, 4096, PROT_READ), ENOMEM);
    expect("madvise unaligned", syscall(SYS_madvise, 0x10001, 4096, MADV_DONTNEED), EINVAL);
    expect("madvise bad advice", syscall(SYS_madvise, 0x10000, 4096, 9999), EINVAL);
    expect("rt_sigaction SIGKILL", syscall(SYS_rt_sigaction, SIGKILL, buf, 0, 8), EINVAL);
    expect("rt_sigaction bad size", syscall(SYS_rt_sigaction, SIGINT, 0, 0, 4), EINVAL);
    expect("rt_sigaction signal 0", syscall(SYS_rt_sigaction, 0, 0, 0, 8), EINVAL);
    expect("rt_sigaction bad act", syscall(SYS_rt_sigaction, SIGINT, BAD, 0, 8), EFAULT);
    expect("rt_sigprocmask bad how", syscall(SYS_rt_sigprocmask, 7, buf, 0, 8), EINVAL);
    expect("rt_sigprocmask bad size", syscall(SYS_rt_sigprocmask, SIG_BLOCK, buf, 0, 4), EINVAL);
    expect("clock_gettime bad clock", syscall(SYS_clock_gettime, 99, &ts), EINVAL);
    expect("clock_gettime bad pointer", syscall(SYS_clock_gettime, CLOCK_MONOTONIC, BAD), EFAULT);
    ts.tv_sec = 0;
    ts.tv_nsec = 2000000000;
    expect("nanosleep bad nsec", syscall(SYS_nanosleep, &ts, 0), EINVAL);
    expect("nanosleep bad pointer", syscall(SYS_nanosleep, BAD, 0), EFAULT);
    expect("getrandom bad flags", syscall(SYS_getrandom, buf, 8, 0x100), EINVAL);
    expect("getrandom bad pointer", syscall(SYS_getrandom, BAD, 8, 0), EFAULT);
    expect("uname bad pointer", syscall(SYS_uname, BAD), EFAULT);
    expect("ppoll too many", syscall(SYS_ppoll, buf, 100000, 0, 0, 8), EINVAL);
    expect("prlimit64 bad resource", syscall(SYS_prlimit64, 0, 99, 0, buf), EINVAL);
    expect("set_robust_list bad size", syscall(SYS_set_robust_list, buf, 5), EINVAL);
    expect("unknown system call", syscall(4000), ENOSYS);
    expect("getcwd too small", syscall(SYS_getcwd, buf, 1), ERANGE);
    expect("getcwd bad pointer", syscall(SYS_getcwd, BAD, 64), EFAULT);
    expect("fcntl bad fd", syscall(SYS_fcntl, 57, F_GETFD), EBADF);
    expect("fcntl bad command", syscall(SYS_fcntl, 1, 9999), EINVAL);
    expect("openat bad path", syscall(SYS_openat, AT_FDCWD, BAD, O_RDONLY), EFAULT);
    expect("openat missing file", syscall(SYS_openat, AT_FDCWD, "/no/such/file", O_RDONLY), ENOENT);
    expect("kill bad signal", syscall(SYS_kill, getpid(), 99), EINVAL);
    expect("kill no such process", syscall(SYS_kill, 99999, 0), ESRCH);
    expect("sched_getaffinity bad size", syscall(SYS_sched_getaffinity, 0, 3, buf), EINVAL);
    printf("bad-args: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
