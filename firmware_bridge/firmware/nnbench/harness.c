/* harness.c - bare-metal Cortex-M4 harness that counts the guest instructions of one inference of
 * the exported model (ser_model_run) under QEMU `-M mps2-an386 -icount shift=0 -semihosting`.
 *
 * SysTick runs from the processor clock; under -icount the virtual clock advances a fixed amount
 * per instruction, so a calibration loop of a known instruction count gives ticks per instruction.
 * Prints "calib <ticks> <instructions>", then per window "run <ticks>" and "scores s0 s1 ...", the
 * per-operator ticks of the first window ("op <k> <ticks>"), then exits through semihosting
 * SYS_EXIT. Driven by firmware_bridge/nn_m4.py (tests and bench/firmware.py); not the firmware.
 */
#include <stdint.h>
#include <string.h>

#include "ser_net.h"
#include "windows.h" /* BENCH_N, const int8_t bench_windows[BENCH_N][SER_NET_INPUT_SIZE] */

#define REG(a) (*(volatile uint32_t *)(a))
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SCB_CPACR REG(0xE000ED88u)

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
void reset_handler(void);
static void fault_handler(void);

__attribute__((section(".vectors"), used)) static const void *const vectors[16] = {
    &_estack, (void *)reset_handler, (void *)fault_handler, (void *)fault_handler,
    (void *)fault_handler, (void *)fault_handler, (void *)fault_handler,
};

static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void put(const char *s) { semihost(0x04, s); }

static void put_int(int32_t v) {
    char b[16];
    int i = 15;
    uint32_t u = v < 0 ? (uint32_t)(-(v + 1)) + 1u : (uint32_t)v;
    b[i--] = 0;
    do { b[i--] = (char)('0' + u % 10u); u /= 10u; } while (u);
    if (v < 0) b[i--] = '-';
    put(b + i + 1);
}

static void exit_qemu(void) {
    semihost(0x18, (const void *)0x20026); /* ADP_Stopped_ApplicationExit */
    for (;;) {}
}

static void fault_handler(void) {
    put("fault\n");
    exit_qemu();
}

static inline uint32_t ticks(void) { return SYST_CVR; } /* counts down */

/* 4 * n + small constant instructions: subs/bne pairs, unrolled twice. */
__attribute__((noinline)) static void spin(uint32_t n) {
    __asm__ volatile("1: subs %0, %0, #1\n\tnop\n\tnop\n\tbne 1b" : "+r"(n) : : "cc");
}

/* Per-operator ticks of the last run (generated code calls bench_step(k) before operator k). */
static uint32_t step_t[64];
static int step_k[64], n_steps;
void bench_step(int k);
void bench_step(int k) {
    if (n_steps < 64) { step_t[n_steps] = ticks(); step_k[n_steps++] = k; }
}

int main(void) {
    int8_t scores[SER_NET_OUTPUT_SIZE];
    uint32_t t0, t1;
    int r, i;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5u; /* processor clock, enabled, no interrupt */
    t0 = ticks(); spin(100000u); t1 = ticks();
    put("calib "); put_int((int32_t)((t0 - t1) & 0xFFFFFFu)); put(" "); put_int(400000); put("\n");
    for (r = 0; r < BENCH_N; r++) {
        memcpy(ser_model_input(), bench_windows[r], SER_NET_INPUT_SIZE);
        n_steps = 0;
        t0 = ticks();
        ser_model_run();
        t1 = ticks();
        put("run "); put_int((int32_t)((t0 - t1) & 0xFFFFFFu)); put("\n");
        memcpy(scores, ser_model_output(), SER_NET_OUTPUT_SIZE);
        put("scores");
        for (i = 0; i < SER_NET_OUTPUT_SIZE; i++) { put(" "); put_int(scores[i]); }
        put("\n");
        if (r == 0) {
            for (i = 0; i + 1 < n_steps; i++) {
                put("op "); put_int(step_k[i]); put(" ");
                put_int((int32_t)((step_t[i] - step_t[i + 1]) & 0xFFFFFFu)); put("\n");
            }
        }
    }
    exit_qemu();
    return 0;
}

void reset_handler(void) {
    uint32_t *s = &_sidata, *d = &_sdata;
    while (d < &_edata) *d++ = *s++;
    for (d = &_sbss; d < &_ebss;) *d++ = 0;
    main();
    exit_qemu();
}
