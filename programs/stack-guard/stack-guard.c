/* Recurses until its stack overflows. Each frame writes both ends of a 4000-byte array, so every
 * page of the stack is touched in turn and the first access past its bottom lands in the guard
 * gap below it: Linux (past RLIMIT_STACK) and Tessera kill the program there with SIGSEGV rather
 * than let the stack run into other memory. */
#include <stdio.h>

static int __attribute__((noinline)) deeper(int n) {
    volatile char page[4000];
    page[0] = (char)n;
    page[sizeof page - 1] = (char)n;
    if (n == -1)
        return 0;
    return deeper(n + 1) + page[0];
}

int main(void) {
    printf("stack-guard: recursing\n");
    fflush(stdout);
    return deeper(0);
}
