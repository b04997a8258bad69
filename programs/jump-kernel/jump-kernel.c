/* Jumps into kernel text: Linux kills it with SIGSEGV. */
int main(void) {
    ((void (*)(void))0xffff000040200000UL)();
    return 0;
}
