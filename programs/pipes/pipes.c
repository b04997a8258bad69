/* Pipes between processes: a 1000-round ping-pong; a 4 MiB transfer with writes and reads of
 * varying sizes (odd ones, and more than 64 KiB); end of file only once every write end is closed
 * (the parent's own copy included); EPIPE with SIGPIPE ignored and death by SIGPIPE without;
 * dup2/dup3 of a write end onto stdout; fcntl F_GETFD/F_SETFD (FD_CLOEXEC) and F_GETFL. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TRANSFER (4u << 20)

static void fail(const char *what) {
    fprintf(stderr, "pipes: %s (errno %d: %s)\n", what, errno, strerror(errno));
    exit(1);
}

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "pipes: FAILED: %s\n", what);
        exit(1);
    }
}

static pid_t fork_or_die(void) {
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    return pid;
}

/* Waits for `pid` and returns its wait status. */
static int reap(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) fail("waitpid");
    return st;
}

static int exited_zero(int st) { return WIFEXITED(st) && WEXITSTATUS(st) == 0; }

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void ping_pong(void) {
    int down[2], up[2];
    if (pipe(down) || pipe(up)) fail("pipe");
    pid_t pid = fork_or_die();
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        for (;;) {
            unsigned char msg[4];
            ssize_t n = read(down[0], msg, sizeof msg);
            if (n == 0) _exit(0);
            if (n != sizeof msg) _exit(2);
            for (int i = 0; i < 4; i++) msg[i] ^= 0x5a;
            if (write(up[1], msg, sizeof msg) != sizeof msg) _exit(3);
        }
    }
    close(down[0]);
    close(up[1]);
    for (unsigned r = 0; r < 1000; r++) {
        unsigned char msg[4] = {r & 0xff, r >> 8, 0xab, 0xcd}, back[4];
        if (write(down[1], msg, sizeof msg) != sizeof msg) fail("ping-pong write");
        if (read(up[0], back, sizeof back) != sizeof back) fail("ping-pong read");
        for (int i = 0; i < 4; i++) check(back[i] == (msg[i] ^ 0x5a), "ping-pong reply");
    }
    close(down[1]);
    check(exited_zero(reap(pid)), "ping-pong child exit status");
    close(up[0]);
    printf("pipes: ping-pong 1000 rounds ok\n");
}

static unsigned char stream_byte(uint32_t i) { return (unsigned char)(i * 131u + (i >> 12) + (i >> 20)); }

static void transfer(void) {
    static const size_t write_sizes[] = {1, 7, 4096, 65537, 100000, 333, 65536, 150001, 4095, 12345};
    static const size_t read_sizes[] = {1, 100, 4096, 70000, 65536, 3, 131072, 999};
    static unsigned char buf[200000];
    int p[2];
    if (pipe(p)) fail("pipe");
    pid_t pid = fork_or_die();
    if (pid == 0) {
        close(p[0]);
        uint32_t off = 0;
        for (unsigned k = 0; off < TRANSFER; k++) {
            size_t n = write_sizes[k % 10];
            if (n > TRANSFER - off) n = TRANSFER - off;
            for (size_t i = 0; i < n; i++) buf[i] = stream_byte(off + (uint32_t)i);
            size_t done = 0;
            while (done < n) {
                ssize_t w = write(p[1], buf + done, n - done);
                if (w <= 0) _exit(2);
                done += (size_t)w;
            }
            off += (uint32_t)n;
        }
        _exit(0);
    }
    close(p[1]);
    uint64_t sum = 0xcbf29ce484222325ull, want = 0xcbf29ce484222325ull;
    uint32_t off = 0;
    for (unsigned k = 0;; k++) {
        ssize_t n = read(p[0], buf, read_sizes[k % 8]);
        if (n < 0) fail("transfer read");
        if (n == 0) break;
        check(off + (uint64_t)n <= TRANSFER, "transfer: more bytes than written");
        for (ssize_t i = 0; i < n; i++) {
            unsigned char b = stream_byte(off + (uint32_t)i);
            if (buf[i] != b) {
                fprintf(stderr, "pipes: transfer byte %u is %#x, expected %#x\n", off + (unsigned)i, buf[i], b);
                exit(1);
            }
            sum = (sum ^ buf[i]) * 0x100000001b3ull;
            want = (want ^ b) * 0x100000001b3ull;
        }
        off += (uint32_t)n;
    }
    close(p[0]);
    check(off == TRANSFER, "transfer: byte count");
    check(sum == want, "transfer: checksum");
    check(exited_zero(reap(pid)), "transfer writer exit status");
    printf("pipes: transfer %u bytes ok, checksum %#llx\n", off, (unsigned long long)sum);
}

static void eof(void) {
    /* A reader child counts bytes until end of file, which comes only once the writer child and
     * the parent have closed their write ends. */
    int p[2];
    if (pipe(p)) fail("pipe");
    pid_t reader = fork_or_die();
    if (reader == 0) {
        close(p[1]);
        char b[64];
        long total = 0;
        ssize_t n;
        while ((n = read(p[0], b, sizeof b)) > 0) total += n;
        _exit(n == 0 && total == 10 ? 0 : 2);
    }
    pid_t writer = fork_or_die();
    if (writer == 0) {
        close(p[0]);
        _exit(write(p[1], "0123456789", 10) == 10 ? 0 : 2);
    }
    close(p[0]);
    check(exited_zero(reap(writer)), "eof: writer exit status");
    sleep_ms(20);
    int st;
    check(waitpid(reader, &st, WNOHANG) == 0, "eof: reader saw end of file while the parent held a write end");
    close(p[1]);
    check(exited_zero(reap(reader)), "eof: reader exit status");

    /* The parent as reader: data, then end of file, again and again. */
    if (pipe(p)) fail("pipe");
    if (write(p[1], "abc", 3) != 3) fail("eof: write");
    close(p[1]);
    char b[8];
    check(read(p[0], b, sizeof b) == 3 && !memcmp(b, "abc", 3), "eof: data before end of file");
    check(read(p[0], b, sizeof b) == 0, "eof: first read at end of file");
    check(read(p[0], b, sizeof b) == 0, "eof: second read at end of file");
    close(p[0]);
    printf("pipes: eof ok\n");
}

static void epipe(void) {
    /* Default action: a child writing to a pipe without readers dies of SIGPIPE. */
    int p[2];
    if (pipe(p)) fail("pipe");
    close(p[0]);
    pid_t pid = fork_or_die();
    if (pid == 0) {
        ssize_t n = write(p[1], "x", 1);
        _exit(n < 0 ? 3 : 4);
    }
    close(p[1]);
    int st = reap(pid);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGPIPE) {
        fprintf(stderr, "pipes: sigpipe: child status %#x, expected death by SIGPIPE\n", st);
        exit(1);
    }
    printf("pipes: sigpipe ok\n");

    /* Ignored: the write fails with EPIPE and the writer lives on. */
    check(signal(SIGPIPE, SIG_IGN) != SIG_ERR, "signal(SIGPIPE, SIG_IGN)");
    if (pipe(p)) fail("pipe");
    close(p[0]);
    errno = 0;
    check(write(p[1], "x", 1) == -1 && errno == EPIPE, "epipe: write with no reader");
    close(p[1]);
    /* The last reader is a child that exits. */
    if (pipe(p)) fail("pipe");
    pid = fork_or_die();
    if (pid == 0) _exit(0);
    close(p[0]);
    check(exited_zero(reap(pid)), "epipe: reader child exit status");
    errno = 0;
    check(write(p[1], "x", 1) == -1 && errno == EPIPE, "epipe: write after the reader exited");
    close(p[1]);
    check(signal(SIGPIPE, SIG_DFL) != SIG_ERR, "signal(SIGPIPE, SIG_DFL)");
    printf("pipes: epipe ok\n");
}

/* Reads everything from `fd` into `buf` (NUL-terminated). */
static void read_all(int fd, char *buf, size_t size) {
    size_t len = 0;
    ssize_t n;
    while (len + 1 < size && (n = read(fd, buf + len, size - 1 - len)) > 0) len += (size_t)n;
    buf[len] = 0;
}

static void dup_stdout(void) {
    int p[2];
    char got[128];
    fflush(stdout);
    if (pipe(p)) fail("pipe");
    pid_t pid = fork_or_die();
    if (pid == 0) {
        if (dup2(p[1], 1) != 1) _exit(2);
        close(p[0]);
        close(p[1]);
        printf("through dup2\n");
        fflush(stdout);
        _exit(0);
    }
    close(p[1]);
    read_all(p[0], got, sizeof got);
    close(p[0]);
    check(exited_zero(reap(pid)), "dup2: child exit status");
    check(!strcmp(got, "through dup2\n"), "dup2: text read from the pipe");

    if (pipe(p)) fail("pipe");
    pid = fork_or_die();
    if (pid == 0) {
        if (dup3(p[1], 1, O_CLOEXEC) != 1) _exit(2);
        if (fcntl(1, F_GETFD) != FD_CLOEXEC) _exit(3);
        if (fcntl(p[1], F_GETFD) != 0) _exit(4);
        close(p[0]);
        close(p[1]);
        if (write(1, "through dup3\n", 13) != 13) _exit(5);
        _exit(0);
    }
    close(p[1]);
    read_all(p[0], got, sizeof got);
    close(p[0]);
    check(exited_zero(reap(pid)), "dup3: child exit status");
    check(!strcmp(got, "through dup3\n"), "dup3: text read from the pipe");

    if (pipe(p)) fail("pipe");
    errno = 0;
    check(dup3(p[0], p[0], 0) == -1 && errno == EINVAL, "dup3 onto itself: EINVAL");
    errno = 0;
    check(dup3(p[1], p[0], 0x12345678 & ~O_CLOEXEC) == -1 && errno == EINVAL, "dup3 bad flags: EINVAL");
    const int spare = 30;
    check(dup3(p[1], spare, 0) == spare, "dup3 onto a free descriptor");
    close(spare);
    errno = 0;
    check(dup3(spare, p[0], 0) == -1 && errno == EBADF, "dup3 of a closed descriptor: EBADF");
    check(dup2(p[0], p[0]) == p[0], "dup2 onto itself");
    close(p[0]);
    close(p[1]);
    printf("pipes: dup ok\n");
}

static void fcntl_flags(void) {
    int p[2];
    if (pipe(p)) fail("pipe");
    check(fcntl(p[0], F_GETFD) == 0 && fcntl(p[1], F_GETFD) == 0, "F_GETFD of a new pipe: 0");
    check(fcntl(p[0], F_SETFD, FD_CLOEXEC) == 0, "F_SETFD FD_CLOEXEC");
    check(fcntl(p[0], F_GETFD) == FD_CLOEXEC, "F_GETFD after F_SETFD: FD_CLOEXEC");
    check(fcntl(p[1], F_GETFD) == 0, "F_SETFD changed the other end");
    check(fcntl(p[0], F_SETFD, 0) == 0 && fcntl(p[0], F_GETFD) == 0, "F_SETFD 0");
    int fl0 = fcntl(p[0], F_GETFL), fl1 = fcntl(p[1], F_GETFL);
    check(fl0 >= 0 && (fl0 & O_ACCMODE) == O_RDONLY, "F_GETFL of the read end: O_RDONLY");
    check(fl1 >= 0 && (fl1 & O_ACCMODE) == O_WRONLY, "F_GETFL of the write end: O_WRONLY");
    close(p[0]);
    close(p[1]);
    errno = 0;
    check(fcntl(p[0], F_GETFD) == -1 && errno == EBADF, "F_GETFD of a closed descriptor: EBADF");
    if (pipe2(p, O_CLOEXEC)) fail("pipe2");
    check(fcntl(p[0], F_GETFD) == FD_CLOEXEC && fcntl(p[1], F_GETFD) == FD_CLOEXEC,
          "pipe2(O_CLOEXEC): both ends FD_CLOEXEC");
    close(p[0]);
    close(p[1]);
    printf("pipes: fcntl ok\n");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    ping_pong();
    transfer();
    eof();
    epipe();
    dup_stdout();
    fcntl_flags();
    printf("pipes: ok\n");
    return 0;
}
