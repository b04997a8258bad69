/* Signal handlers with Linux arm64 semantics: handlers run by raise and kill before they
 * return, SA_SIGINFO's siginfo, the mask inside a handler, SA_NODEFER and SA_RESETHAND, pending
 * signals delivered when unblocked (a blocked SIGTERM kills when unblocked), a SIGCHLD handler,
 * EINTR from read and nanosleep and SA_RESTART, sigsuspend and pause, the alternate stack,
 * SIGSEGV handlers that siglongjmp out or fix the mapping, and FP/SIMD registers across a
 * handler. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *what) {
    fprintf(stderr, "signals: FAILED: %s (errno %d: %s)\n", what, errno, strerror(errno));
    exit(1);
}

static void check(int ok, const char *what) {
    if (!ok) fail(what);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void on(int sig, void (*fn)(int), int flags, const sigset_t *mask) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    if (mask) sa.sa_mask = *mask;
    if (sigaction(sig, &sa, NULL) != 0) fail("sigaction");
}

static void on_info(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = flags | SA_SIGINFO;
    if (sigaction(sig, &sa, NULL) != 0) fail("sigaction");
}

static int blocked(int sig) {
    sigset_t s;
    if (sigprocmask(SIG_BLOCK, NULL, &s) != 0) fail("sigprocmask");
    return sigismember(&s, sig);
}

static void set_blocked(int sig, int block) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    if (sigprocmask(block ? SIG_BLOCK : SIG_UNBLOCK, &s, NULL) != 0) fail("sigprocmask");
}

static void reap(pid_t pid, int code) {
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
    }
    check(r == pid, "waitpid");
    check(WIFEXITED(st) && WEXITSTATUS(st) == code, "child exit status");
}

/* A child that sleeps `ms` then sends `sig` to its parent, then sleeps `then_ms` and writes a
 * byte to `fd` if it is not -1. */
static pid_t signaller(long ms, int sig, long then_ms, int fd) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        sleep_ms(ms);
        kill(parent, sig);
        if (fd >= 0) {
            sleep_ms(then_ms);
            if (write(fd, "x", 1) != 1) _exit(2);
        }
        _exit(0);
    }
    return pid;
}

static volatile sig_atomic_t hits, usr2_blocked_inside, self_blocked_inside;
static volatile int last_sig;

static void count(int sig) {
    hits++;
    last_sig = sig;
    usr2_blocked_inside = blocked(SIGUSR2);
    self_blocked_inside = blocked(sig);
}

static void test_raise_and_kill(void) {
    on(SIGUSR1, count, 0, NULL);
    hits = 0;
    raise(SIGUSR1);
    check(hits == 1 && last_sig == SIGUSR1, "handler ran by raise");
    kill(getpid(), SIGUSR1);
    check(hits == 2, "handler ran by kill");
    printf("signals: handler run by raise and kill ok\n");
}

static volatile int info_signo, info_code, info_pid;
static volatile uintptr_t info_uc;

static void info_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    info_signo = si->si_signo;
    info_code = si->si_code;
    info_pid = si->si_pid;
    info_uc = (uintptr_t)uc;
}

static void test_siginfo(void) {
    on_info(SIGUSR2, info_handler, 0);
    kill(getpid(), SIGUSR2);
    check(info_signo == SIGUSR2 && info_code == SI_USER && info_pid == getpid(), "siginfo of kill");
    check(info_uc != 0, "ucontext passed");
    syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2);
    check(info_signo == SIGUSR2 && info_code == SI_TKILL && info_pid == getpid(), "siginfo of tgkill");
    printf("signals: SA_SIGINFO si_signo si_code si_pid ok\n");
}

static void test_masks(void) {
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    on(SIGUSR1, count, 0, &m);
    raise(SIGUSR1);
    check(self_blocked_inside && usr2_blocked_inside, "signal and sa_mask blocked inside the handler");
    check(!blocked(SIGUSR1) && !blocked(SIGUSR2), "mask restored after the handler");
    on(SIGUSR1, count, SA_NODEFER, NULL);
    raise(SIGUSR1);
    check(!self_blocked_inside, "SA_NODEFER leaves the signal unblocked");
    printf("signals: mask inside a handler ok\n");
    on(SIGUSR1, count, SA_RESETHAND, NULL);
    hits = 0;
    raise(SIGUSR1);
    struct sigaction old;
    sigaction(SIGUSR1, NULL, &old);
    check(hits == 1 && old.sa_handler == SIG_DFL, "SA_RESETHAND resets to SIG_DFL");
    printf("signals: SA_NODEFER and SA_RESETHAND ok\n");
}

static void test_pending(void) {
    on(SIGUSR1, count, 0, NULL);
    hits = 0;
    set_blocked(SIGUSR1, 1);
    raise(SIGUSR1);
    check(hits == 0, "blocked signal not delivered");
    sigset_t p;
    sigpending(&p);
    check(sigismember(&p, SIGUSR1), "sigpending shows the blocked signal");
    set_blocked(SIGUSR1, 0);
    check(hits == 1, "delivered when unblocked");
    sigpending(&p);
    check(!sigismember(&p, SIGUSR1), "no longer pending");
    printf("signals: pending signal delivered on unblock ok\n");

    int fds[2];
    if (pipe(fds) != 0) fail("pipe");
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        close(fds[0]);
        set_blocked(SIGTERM, 1);
        raise(SIGTERM);
        if (write(fds[1], "x", 1) != 1) _exit(2);
        set_blocked(SIGTERM, 0);
        _exit(3);
    }
    close(fds[1]);
    char c;
    check(read(fds[0], &c, 1) == 1, "child survived a blocked SIGTERM");
    close(fds[0]);
    int st;
    check(waitpid(pid, &st, 0) == pid, "waitpid");
    check(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "unblocked SIGTERM killed the child");
    printf("signals: blocked SIGTERM kills when unblocked ok\n");
}

static volatile sig_atomic_t children;

static void on_child(int sig) {
    (void)sig;
    children++;
}

static volatile sig_atomic_t reaper_ran;

static void reaper(int sig) {
    (void)sig;
    int saved = errno;
    reaper_ran = 1;
    while (waitpid(-1, NULL, WNOHANG) > 0) children++;
    errno = saved;
}

static void test_sigchld(void) {
    on(SIGCHLD, on_child, SA_RESTART, NULL);
    children = 0;
    for (int i = 0; i < 3; i++) {
        pid_t pid = fork();
        if (pid < 0) fail("fork");
        if (pid == 0) _exit(0);
        reap(pid, 0);
        check(children == i + 1, "SIGCHLD handler ran for each child");
    }
    printf("signals: SIGCHLD handler counted 3 children ok\n");
    /* A parent waiting for its child gets it from waitpid before the SIGCHLD handler runs: a
     * handler that reaps finds nothing left. */
    on(SIGCHLD, reaper, 0, NULL);
    children = 0;
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        sleep_ms(30);
        _exit(5);
    }
    int st;
    check(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 5, "waitpid got the child first");
    check(children == 0 && reaper_ran, "the SIGCHLD handler ran after waitpid and found nothing");
    on(SIGCHLD, SIG_DFL, 0, NULL);
    printf("signals: waitpid returns the child before the SIGCHLD handler ok\n");
}

static void test_eintr(void) {
    int fds[2];
    if (pipe(fds) != 0) fail("pipe");
    char c;
    on(SIGUSR1, count, 0, NULL);
    hits = 0;
    pid_t pid = signaller(50, SIGUSR1, 0, -1);
    errno = 0;
    check(read(fds[0], &c, 1) == -1 && errno == EINTR && hits == 1, "read interrupted: EINTR");
    reap(pid, 0);
    printf("signals: read EINTR ok\n");

    on(SIGUSR1, count, SA_RESTART, NULL);
    hits = 0;
    pid = signaller(50, SIGUSR1, 50, fds[1]);
    check(read(fds[0], &c, 1) == 1 && c == 'x' && hits == 1, "read restarted with SA_RESTART");
    reap(pid, 0);
    close(fds[0]);
    close(fds[1]);
    printf("signals: read SA_RESTART ok\n");

    on(SIGUSR1, count, SA_RESTART, NULL);
    hits = 0;
    pid = signaller(50, SIGUSR1, 0, -1);
    struct timespec req = {5, 0}, rem = {0, 0};
    errno = 0;
    check(nanosleep(&req, &rem) == -1 && errno == EINTR && hits == 1, "nanosleep interrupted: EINTR");
    check(rem.tv_sec < 5 && (rem.tv_sec > 0 || rem.tv_nsec > 0), "nanosleep remaining time");
    reap(pid, 0);
    printf("signals: nanosleep EINTR with remaining time ok\n");
}

static void test_suspend(void) {
    on(SIGUSR1, count, 0, NULL);
    hits = 0;
    set_blocked(SIGUSR1, 1);
    pid_t pid = signaller(20, SIGUSR1, 0, -1);
    sigset_t none;
    sigemptyset(&none);
    errno = 0;
    check(sigsuspend(&none) == -1 && errno == EINTR && hits == 1, "sigsuspend woken by a signal");
    check(blocked(SIGUSR1), "sigsuspend restored the mask");
    set_blocked(SIGUSR1, 0);
    reap(pid, 0);
    hits = 0;
    pid = signaller(50, SIGUSR1, 0, -1);
    errno = 0;
    check(pause() == -1 && errno == EINTR && hits == 1, "pause woken by a signal");
    reap(pid, 0);
    printf("signals: sigsuspend and pause ok\n");
}

static char altstack[65536] __attribute__((aligned(16)));
static volatile uintptr_t handler_sp;
static volatile int alt_flags;

static void on_alt(int sig) {
    (void)sig;
    volatile char here;
    handler_sp = (uintptr_t)&here;
    stack_t now;
    sigaltstack(NULL, &now);
    alt_flags = now.ss_flags;
}

static void test_altstack(void) {
    stack_t ss = {.ss_sp = altstack, .ss_flags = 0, .ss_size = sizeof altstack};
    if (sigaltstack(&ss, NULL) != 0) fail("sigaltstack");
    on(SIGUSR2, on_alt, SA_ONSTACK, NULL);
    raise(SIGUSR2);
    check(handler_sp > (uintptr_t)altstack && handler_sp < (uintptr_t)altstack + sizeof altstack,
          "SA_ONSTACK handler runs on the alternate stack");
    check(alt_flags == SS_ONSTACK, "sigaltstack reports SS_ONSTACK inside the handler");
    on(SIGUSR2, on_alt, 0, NULL);
    raise(SIGUSR2);
    check(!(handler_sp > (uintptr_t)altstack && handler_sp < (uintptr_t)altstack + sizeof altstack),
          "without SA_ONSTACK the handler runs on the normal stack");
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    printf("signals: sigaltstack and SA_ONSTACK ok\n");
}

static sigjmp_buf jump;
static volatile char *page;
static volatile uintptr_t fault_addr;
static volatile int fault_code;

static void segv_jump(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    fault_addr = (uintptr_t)si->si_addr;
    fault_code = si->si_code;
    siglongjmp(jump, 1);
}

static void segv_fix(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    fault_addr = (uintptr_t)si->si_addr;
    fault_code = si->si_code;
    if (mprotect((void *)page, 4096, PROT_READ | PROT_WRITE) != 0) _exit(4);
}

static void test_segv(void) {
    page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) fail("mmap");
    on_info(SIGSEGV, segv_jump, 0);
    if (sigsetjmp(jump, 1) == 0) {
        page[16] = 1;
        fail("write to a PROT_NONE page did not fault");
    }
    check(fault_addr == (uintptr_t)page + 16 && fault_code == SEGV_ACCERR, "SIGSEGV siginfo");
    check(!blocked(SIGSEGV), "siglongjmp restored the mask");
    printf("signals: SIGSEGV handler siglongjmp ok\n");
    on_info(SIGSEGV, segv_fix, 0);
    fault_addr = 0;
    page[32] = 42;
    check(fault_addr == (uintptr_t)page + 32 && page[32] == 42, "write after the handler fixed the page");
    munmap((void *)page, 4096);
    on(SIGSEGV, SIG_DFL, 0, NULL);
    printf("signals: SIGSEGV handler mprotect and return ok\n");
}

static volatile double fp_sink;

static void fp_clobber(int sig) {
    double x = sig;
    for (int i = 0; i < 100; i++) x = x * 1.5 + 0.25;
    fp_sink = x;
    __asm__ volatile(".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
                     "movi v\\i\\().2d, #0\n"
                     ".endr\n"
                     "msr fpcr, xzr\n" ::
                         : "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10",
                           "v11", "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21",
                           "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31");
}

static void test_fp(void) {
    on(SIGUSR1, fp_clobber, 0, NULL);
    uint64_t out[64];
    uint64_t fpcr;
    long tid = gettid(), pid = getpid();
    /* All 32 vector registers and FPCR's rounding mode set, a tgkill whose handler zeroes them,
     * then everything read back. */
    __asm__ volatile("mov x9, #0x1111\n"
                     "movk x9, #0x2222, lsl #16\n"
                     ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
                     "dup v\\i\\().2d, x9\n"
                     "mov v\\i\\().d[1], x9\n"
                     "add x9, x9, #0x101\n"
                     ".endr\n"
                     "mov x9, #0xc00000\n"
                     "msr fpcr, x9\n"
                     "mov x0, %[pid]\n"
                     "mov x1, %[tid]\n"
                     "mov x2, #10\n"
                     "mov x8, #131\n"
                     "svc #0\n"
                     ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
                     "str q\\i, [%[out], #\\i*16]\n"
                     ".endr\n"
                     "mrs %[fpcr], fpcr\n"
                     "msr fpcr, xzr\n"
                     : [fpcr] "=&r"(fpcr)
                     : [pid] "r"(pid), [tid] "r"(tid), [out] "r"(out)
                     : "x0", "x1", "x2", "x8", "x9", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6",
                       "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14", "v15", "v16", "v17", "v18",
                       "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30",
                       "v31");
    uint64_t want = 0x22221111;
    for (int i = 0; i < 32; i++) {
        check(out[2 * i] == want && out[2 * i + 1] == want, "vector register kept across a handler");
        want += 0x101;
    }
    check(fpcr == 0xc00000, "FPCR kept across a handler");
    printf("signals: FP/SIMD registers kept across a handler ok\n");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_raise_and_kill();
    test_siginfo();
    test_masks();
    test_pending();
    test_sigchld();
    test_eintr();
    test_suspend();
    test_altstack();
    test_segv();
    test_fp();
    printf("signals: ok\n");
    return 0;
}
