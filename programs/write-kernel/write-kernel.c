/* Writes to a kernel address: Linux kills it with SIGSEGV. */
int main(void) {
    *(volatile long *)0xffff000040200000UL = 1;
    return 0;
}
