/*
 * selftest.c - instruction counts of the front end and the model, measured on the target (built
 * only with -DSER_FW_SELFTEST; bench/firmware.py runs it in QEMU with -icount shift=0, where one
 * SysTick tick of the 25 MHz SYSCLK is exactly 40 guest instructions).
 *
 * Runs before the UART is enabled, so no interrupt but the SysTick wrap (one per 2^24 ticks, a few
 * instructions) lands inside a measurement. Input: deterministic pseudo-random audio with a moving
 * envelope (an LCG; the front end's work does not depend on the signal beyond a few branches).
 * Prints one line per figure through semihosting, then the firmware exits.
 */
#include <stdint.h>
#include <string.h>

#include "semihost.h"
#include "ser_engine.h"
#include "ser_frontend.h"
#include "ser_model.h"
#include "uart.h"

#ifndef SER_SELFTEST_FRAMES
#define SER_SELFTEST_FRAMES 300
#endif
#ifndef SER_SELFTEST_WINDOWS
#define SER_SELFTEST_WINDOWS 5
#endif

extern uint32_t ser_stack_used_bytes(void);

static ser_fe_state_t st;

static void put_kv(const char *key, uint64_t v) {
    char line[64], digits[21];
    size_t n = 0, k = 0;
    const char *p;
    for (p = "SER_SELFTEST "; *p;) line[n++] = *p++;
    for (p = key; *p && n < 40;) line[n++] = *p++;
    line[n++] = '=';
    do {
        digits[k++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (k) line[n++] = digits[--k];
    line[n++] = '\n';
    line[n] = 0;
    semihost_puts(line);
}

/* Calibration: a loop of exactly 2 * n + 2 instructions (movs/ldr, then n x {subs, bne}, and the
 * final fall-through counts once), timed like everything else: ticks -> instructions. */
static uint64_t calibration_ticks(uint32_t n) {
    uint64_t t0 = systick_ticks();
    __asm__ volatile("mov r0, %0\n1:\n subs r0, r0, #1\n bne 1b\n" ::"r"(n) : "r0", "cc");
    return systick_ticks() - t0 - 0;
}

void ser_selftest(void) {
    static int16_t hop[SER_HOP_LENGTH];
    static int8_t window[SER_WINDOW_FRAMES][SER_N_FEATURES];
    int32_t feats[SER_N_FEATURES];
    uint32_t seed = 12345u, f = 0, i, w, hops = 0, fe_hash = 2166136261u;
    uint64_t fe_ticks = 0, q_ticks = 0, nn_ticks = 0, nn_min = ~(uint64_t)0, t0;

    int8_t scores[SER_N_LABELS];
    if (ser_fe_init(&st, &ser_fe_tables) != SER_FE_OK) semihost_exit(4);
    if (ser_engine_init() != 0) semihost_exit(5);
    while (f < SER_SELFTEST_FRAMES) {
        for (i = 0; i < SER_HOP_LENGTH; i++) {
            const int32_t env = 256 + (int32_t)((hops * 37u) & 1023u) * 8; /* up to ~8.4k */
            seed = seed * 1664525u + 1013904223u;
            hop[i] = (int16_t)(((int32_t)(seed >> 16) - 32768) * env / 32768);
        }
        hops++;
        (void)ser_fe_push(&st, hop, SER_HOP_LENGTH);
        while (ser_fe_samples_needed(&st) == 0 && f < SER_SELFTEST_FRAMES) {
            t0 = systick_ticks();
            (void)ser_fe_pop(&st, feats);
            fe_ticks += systick_ticks() - t0;
            for (i = 0; i < SER_N_FEATURES; i++) { /* FNV-1a over the features, little-endian */
                uint32_t b;
                for (b = 0; b < 4; b++) fe_hash = (fe_hash ^ (((uint32_t)feats[i] >> (8 * b)) & 0xFFu)) * 16777619u;
            }
            t0 = systick_ticks();
            ser_fe_quantize(feats, SER_N_FEATURES, SER_INPUT_MULTIPLIER, SER_INPUT_RIGHT_SHIFT,
                            SER_INPUT_ZERO_POINT, window[f % SER_WINDOW_FRAMES]);
            q_ticks += systick_ticks() - t0;
            f++;
        }
    }
    for (w = 0; w < SER_SELFTEST_WINDOWS; w++) {
        uint64_t dt;
        const uint32_t oldest = f % SER_WINDOW_FRAMES; /* the last window, oldest frame first */
        memcpy(ser_engine_input(), window[oldest], (size_t)(SER_WINDOW_FRAMES - oldest) * SER_N_FEATURES);
        memcpy(ser_engine_input() + (size_t)(SER_WINDOW_FRAMES - oldest) * SER_N_FEATURES, window[0],
               (size_t)oldest * SER_N_FEATURES);
        t0 = systick_ticks();
        (void)ser_engine_invoke(scores);
        dt = systick_ticks() - t0;
        nn_ticks += dt;
        if (dt < nn_min) nn_min = dt;
    }
    {
        /* the difference of two loop lengths cancels the fixed cost of reading the clock */
        const uint64_t a = calibration_ticks(100000u), b = calibration_ticks(1100000u);
        put_kv("calibration_instructions", 2u * 1000000u);
        put_kv("calibration_ticks", b - a);
    }
    put_kv("frames", f);
    put_kv("fe_ticks", fe_ticks);
    put_kv("quantize_ticks", q_ticks);
    put_kv("windows", SER_SELFTEST_WINDOWS);
    put_kv("nn_ticks", nn_ticks);
    put_kv("nn_min_ticks", nn_min);
    put_kv("arena_bytes", ser_engine_arena_bytes());
    put_kv("stack_used_bytes", ser_stack_used_bytes());
    put_kv("fe_hash", fe_hash);
    for (i = 0; i < SER_N_LABELS; i++) {
        char key[12] = "score";
        key[5] = (char)('0' + i / 10u);
        key[6] = (char)('0' + i % 10u);
        key[7] = 0;
        put_kv(key, (uint8_t)scores[i]); /* as unsigned bytes */
    }
    put_kv("ticks_per_second", 25000000u);
}
