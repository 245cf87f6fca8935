/*
 * semihost.h - Arm semihosting calls (bkpt 0xab), used only by test and benchmark builds under
 * QEMU (`-semihosting-config enable=on`). On a board without a debugger attached, bkpt faults:
 * production builds never call these.
 */
#ifndef SER_SEMIHOST_H
#define SER_SEMIHOST_H

#include <stdint.h>

#define SEMIHOST_SYS_WRITE0 0x04
#define SEMIHOST_SYS_EXIT_EXTENDED 0x20
#define SEMIHOST_ADP_APPLICATION_EXIT 0x20026u

static inline uint32_t semihost_call(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* Print a NUL-terminated string on the host's stdout. */
static inline void semihost_puts(const char *s) { (void)semihost_call(SEMIHOST_SYS_WRITE0, s); }

/* End the emulation; QEMU exits with `code`. */
static inline void semihost_exit(uint32_t code) {
    const uint32_t block[2] = {SEMIHOST_ADP_APPLICATION_EXIT, code};
    (void)semihost_call(SEMIHOST_SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

#endif /* SER_SEMIHOST_H */
