/* Calls abort(): Linux ends it with SIGABRT (a shell reports status 134). */
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    puts("abort: calling abort()");
    fflush(stdout);
    abort();
}
