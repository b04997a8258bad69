/* Reads the virtual counter (open to EL0), the physical counter and the cache type register
 * (trapped, and emulated as Linux does), then executes an instruction EL0 may not: reading a
 * kernel system register (SIGILL). */
#include <stdio.h>
int main(void) {
    unsigned long v, p, ctr, sctlr;
    __asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
    __asm__ volatile("mrs %0, cntpct_el0" : "=r"(p));
    __asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
    printf("counters: virtual %s, physical %s, cache type %s\n", v ? "ok" : "zero", p ? "ok" : "zero",
           ctr ? "ok" : "zero");
    fflush(stdout);
    __asm__ volatile("mrs %0, sctlr_el1" : "=r"(sctlr));
    printf("counters: read SCTLR_EL1 = %lx\n", sctlr);
    return 0;
}
