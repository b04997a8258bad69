/* The smallest useful program: exits 0 at once (the exec-to-exit benchmark runs it). */
int main(void) {
    return 0;
}
