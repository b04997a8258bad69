/* Starting programs: execve of a missing program (ENOENT), vfork + execve, fork + execve (a
 * descriptor with FD_CLOEXEC is closed in the new program, one without it stays open and
 * usable), posix_spawn (plain, and with a dup2 file action sending the program's stdout into a
 * pipe); every exit status is checked.
 *
 * The program run is echo-args, at $SPAWN_DIR/echo-args (default /echo-args: Tessera looks the
 * last path component up in its program archive). Where the host cannot execute arm64 programs
 * (qemu-user without binfmt_misc), SPAWN_WRAPPER=/usr/bin/qemu-aarch64 runs each through qemu;
 * without it an ENOEXEC exec ends this program with status 77 ("skipped"). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CLOSED_FD 20
#define OPEN_FD 21

static char path[4096];
static const char *wrapper;

static void fail(const char *what) {
    fprintf(stderr, "spawn: %s (errno %d: %s)\n", what, errno, strerror(errno));
    exit(1);
}

/* The vector to execute for echo-args with `args` (NULL-terminated): argv[0] "echo-args", or
 * the wrapper followed by the program's path. */
static void make_argv(char **out, char *const *args) {
    int n = 0;
    if (wrapper) {
        out[n++] = (char *)wrapper;
        out[n++] = path;
    } else {
        out[n++] = "echo-args";
    }
    for (int i = 0; args[i]; i++) out[n++] = args[i];
    out[n] = NULL;
}

static const char *exec_path(void) { return wrapper ? wrapper : path; }

/* Checks the wait status `st` of a child that should have exited with `want`. */
static void expect_exit(const char *how, int st, int want) {
    if (WIFEXITED(st) && WEXITSTATUS(st) == want) {
        printf("spawn: %s exit status %d ok\n", how, want);
        return;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 126) {
        printf("spawn: %s: this host cannot execute %s (ENOEXEC); set SPAWN_WRAPPER=/usr/bin/qemu-aarch64: skipped\n",
               how, path);
        exit(77);
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
        fprintf(stderr, "spawn: FAILED: %s: could not execute %s (set SPAWN_DIR to its folder)\n", how,
                exec_path());
        exit(1);
    }
    fprintf(stderr, "spawn: FAILED: %s: wait status %#x, expected exit %d\n", how, st, want);
    exit(1);
}

static int reap(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) fail("waitpid");
    return st;
}

/* In a child after a failed execve: 126 for ENOEXEC, 127 otherwise. */
static void exec_failed(void) { _exit(errno == ENOEXEC ? 126 : 127); }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *dir = getenv("SPAWN_DIR");
    snprintf(path, sizeof path, "%s/echo-args", dir ? dir : "");
    wrapper = getenv("SPAWN_WRAPPER");
    if (wrapper && !*wrapper) wrapper = NULL;

    char *missing_argv[] = {"spawn-no-such-program", NULL};
    char *empty_env[] = {NULL};
    errno = 0;
    if (execve("/spawn-no-such-program", missing_argv, empty_env) != -1 || errno != ENOENT)
        fail("execve of a missing program: expected ENOENT");
    printf("spawn: execve of a missing program: ENOENT ok\n");

    char *argv[16];
    char *vfork_env[] = {"SPAWN_VAR=vfork", NULL};
    make_argv(argv, (char *[]){"3", "vfork", "two words", NULL});
    pid_t pid = vfork();
    if (pid < 0) fail("vfork");
    if (pid == 0) {
        execve(exec_path(), argv, vfork_env);
        exec_failed();
    }
    expect_exit("vfork+execve", reap(pid), 3);

    int p[2];
    if (pipe(p)) fail("pipe");
    if (dup3(p[0], CLOSED_FD, O_CLOEXEC) != CLOSED_FD || dup2(p[1], OPEN_FD) != OPEN_FD) fail("dup3");
    close(p[0]);
    close(p[1]);
    char *fork_env[] = {"PATH=/", "SPAWN_VAR=fork", "OTHER=1", NULL};
    make_argv(argv, (char *[]){"5", "--closed", "20", "--write", "21", "fork", NULL});
    pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        execve(exec_path(), argv, fork_env);
        exec_failed();
    }
    int st = reap(pid);
    close(OPEN_FD);
    char got[64] = {0};
    ssize_t n = read(CLOSED_FD, got, sizeof got - 1);
    expect_exit("fork+execve", st, 5);
    if (n != 10 || strcmp(got, "echo-args\n")) fail("fork+execve: the inherited descriptor carried no text");
    close(CLOSED_FD);
    printf("spawn: fork+execve descriptors ok\n");

    char *spawn_env[] = {"SPAWN_VAR=posix_spawn", NULL};
    make_argv(argv, (char *[]){"7", "posix_spawn", NULL});
    int err = posix_spawn(&pid, exec_path(), NULL, NULL, argv, spawn_env);
    if (err) {
        errno = err;
        fail("posix_spawn");
    }
    expect_exit("posix_spawn", reap(pid), 7);

    if (pipe(p)) fail("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    posix_spawn_file_actions_addclose(&fa, p[1]);
    make_argv(argv, (char *[]){"0", "piped", NULL});
    err = posix_spawn(&pid, exec_path(), &fa, NULL, argv, spawn_env);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        errno = err;
        fail("posix_spawn with file actions");
    }
    close(p[1]);
    char out[512];
    size_t len = 0;
    while (len + 1 < sizeof out && (n = read(p[0], out + len, sizeof out - 1 - len)) > 0) len += (size_t)n;
    out[len] = 0;
    close(p[0]);
    expect_exit("posix_spawn with dup2", reap(pid), 0);
    const char *want = "echo-args: 1 words: [piped]\necho-args: SPAWN_VAR=posix_spawn\necho-args: exit 0\n";
    if (strcmp(out, want)) {
        fprintf(stderr, "spawn: FAILED: posix_spawn output through the pipe was:\n%s", out);
        return 1;
    }
    printf("spawn: posix_spawn output through a pipe ok\n");
    printf("spawn: ok\n");
    return 0;
}
