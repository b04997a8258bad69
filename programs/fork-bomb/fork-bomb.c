/* Forks children that each block reading a pipe, until fork fails: it must fail with EAGAIN (the
 * process limit). Then closes the pipe, which releases every child, and reaps them all.
 *
 * fork-bomb [--max N] [--nproc N] [--require-limit]
 *   --max N: stop after N forks (default 10000) and report "no limit seen"; that is a failure only
 *            with --require-limit.
 *   --nproc N: setrlimit(RLIMIT_NPROC) to N first (root ignores it on Linux). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void fail(const char *what) {
    fprintf(stderr, "fork-bomb: FAILED: %s (errno %d: %s)\n", what, errno, strerror(errno));
    exit(1);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    long max = 10000, nproc = 0;
    int require_limit = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--max") && i + 1 < argc) {
            max = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--nproc") && i + 1 < argc) {
            nproc = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--require-limit")) {
            require_limit = 1;
        } else {
            fprintf(stderr, "usage: fork-bomb [--max N] [--nproc N] [--require-limit]\n");
            return 2;
        }
    }
    if (max < 1) max = 1;
    if (nproc > 0) {
        struct rlimit rl = {(rlim_t)nproc, (rlim_t)nproc};
        if (setrlimit(RLIMIT_NPROC, &rl) != 0) fail("setrlimit(RLIMIT_NPROC)");
    }
    pid_t *pids = calloc((size_t)max, sizeof *pids);
    if (!pids) fail("calloc");
    int gate[2];
    if (pipe(gate)) fail("pipe");

    long forks = 0;
    int limit_errno = 0;
    while (forks < max) {
        pid_t pid = fork();
        if (pid < 0) {
            limit_errno = errno;
            break;
        }
        if (pid == 0) {
            char c;
            close(gate[1]);
            _exit(read(gate[0], &c, 1) == 0 ? 0 : 3);
        }
        pids[forks++] = pid;
    }
    close(gate[1]);
    close(gate[0]);

    long bad = 0;
    for (long i = 0; i < forks; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) != pids[i]) fail("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    }
    errno = 0;
    if (wait(NULL) != -1 || errno != ECHILD) fail("children left after reaping: expected ECHILD");
    if (bad) {
        fprintf(stderr, "fork-bomb: FAILED: %ld of %ld children did not exit 0\n", bad, forks);
        return 1;
    }

    if (limit_errno == 0) {
        printf("fork-bomb: no limit seen after %ld forks\n", forks);
        if (require_limit) {
            fprintf(stderr, "fork-bomb: FAILED: --require-limit and fork never failed\n");
            return 1;
        }
    } else if (limit_errno == EAGAIN) {
        printf("fork-bomb: limit reached after %ld forks\n", forks);
    } else {
        fprintf(stderr, "fork-bomb: FAILED: fork %ld failed with errno %d (%s), expected EAGAIN\n", forks + 1,
                limit_errno, strerror(limit_errno));
        return 1;
    }
    printf("fork-bomb: ok\n");
    return 0;
}
