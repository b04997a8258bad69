/* Waiting for many children: a child blocked on a pipe makes waitpid(-1, WNOHANG) answer 0; then
 * 20 children exit with distinct codes, some after sleeping for different times; two are waited
 * for by pid, the rest collected by polling with WNOHANG, and the blocked one, once released, by
 * a blocking wait for any child. Every status is checked, and afterwards wait answers ECHILD. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILDREN 20

static void fail(const char *what) {
    fprintf(stderr, "wait-many: FAILED: %s (errno %d: %s)\n", what, errno, strerror(errno));
    exit(1);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int code_of(int i) { return 10 + 3 * i; }
/* Every third child sleeps, for 10 to 70 ms. */
static long sleep_of(int i) { return i % 3 == 0 ? 10 + 10 * (i / 3) : 0; }

static pid_t pids[CHILDREN];
static int reaped[CHILDREN];

/* Records the status of `pid`, one of the 20 children. */
static void record(pid_t pid, int st) {
    for (int i = 0; i < CHILDREN; i++) {
        if (pids[i] != pid) continue;
        if (reaped[i]) fail("a child reaped twice");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != code_of(i)) {
            fprintf(stderr, "wait-many: FAILED: child %d: status %#x, expected exit %d\n", i, st, code_of(i));
            exit(1);
        }
        reaped[i] = 1;
        return;
    }
    fprintf(stderr, "wait-many: FAILED: wait returned unknown pid %d\n", (int)pid);
    exit(1);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int st;
    errno = 0;
    if (waitpid(-1, &st, WNOHANG) != -1 || errno != ECHILD) fail("WNOHANG without children: expected ECHILD");

    int gate[2];
    if (pipe(gate)) fail("pipe");
    pid_t blocked = fork();
    if (blocked < 0) fail("fork");
    if (blocked == 0) {
        char c;
        close(gate[1]);
        _exit(read(gate[0], &c, 1) == 0 ? 99 : 98);
    }
    close(gate[0]);
    for (int k = 0; k < 3; k++) {
        if (waitpid(-1, &st, WNOHANG) != 0) fail("WNOHANG while the only child is blocked: expected 0");
        if (waitpid(blocked, &st, WNOHANG) != 0) fail("WNOHANG for the blocked child: expected 0");
    }
    printf("wait-many: WNOHANG with a running child: 0 ok\n");

    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        if (pids[i] < 0) fail("fork");
        if (pids[i] == 0) {
            close(gate[1]);
            if (sleep_of(i)) sleep_ms(sleep_of(i));
            _exit(code_of(i));
        }
    }
    /* By pid: a sleeper (child 9, 40 ms) and one that exits at once (child 4). */
    const int by_pid[] = {9, 4};
    for (int k = 0; k < 2; k++) {
        int i = by_pid[k];
        if (waitpid(pids[i], &st, 0) != pids[i]) fail("waitpid by pid");
        record(pids[i], st);
        errno = 0;
        if (waitpid(pids[i], &st, WNOHANG) != -1 || errno != ECHILD) fail("waitpid of a reaped child: expected ECHILD");
    }
    int left = CHILDREN - 2, polls = 0;
    while (left > 0) {
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid < 0) fail("waitpid(-1, WNOHANG)");
        if (pid == 0) {
            sleep_ms(2);
        } else if (pid == blocked) {
            fail("the blocked child ended early");
        } else {
            record(pid, st);
            left--;
        }
        if (++polls > 100000) fail("children never ended");
    }
    if (waitpid(-1, &st, WNOHANG) != 0) fail("WNOHANG with only the blocked child left: expected 0");
    printf("wait-many: %d children reaped by pid and by polling ok\n", CHILDREN);

    close(gate[1]);
    pid_t pid = wait(&st);
    if (pid != blocked) fail("wait for any child: expected the released one");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 99) {
        fprintf(stderr, "wait-many: FAILED: released child status %#x, expected exit 99\n", st);
        return 1;
    }
    printf("wait-many: released child reaped by wait ok\n");

    errno = 0;
    if (wait(&st) != -1 || errno != ECHILD) fail("wait without children: expected ECHILD");
    errno = 0;
    if (waitpid(getpid(), &st, 0) != -1 || errno != ECHILD) fail("waitpid of itself: expected ECHILD");
    errno = 0;
    if (waitpid(blocked, &st, 0) != -1 || errno != ECHILD) fail("waitpid of a reaped child: expected ECHILD");
    printf("wait-many: ECHILD ok\n");
    printf("wait-many: ok\n");
    return 0;
}
