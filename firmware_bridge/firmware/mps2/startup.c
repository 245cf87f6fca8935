/*
 * startup.c - vector table and reset handler for the MPS2 AN386 (Cortex-M4F).
 *
 * Reset: copy .data from flash, zero .bss, paint the stack with a pattern (so the firmware can
 * report how much of it was ever used), then main(). Faults end the emulation with exit code 3
 * in semihosting builds (tests see a crash as a failure, not a hang) and park the core otherwise.
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "semihost.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);
void reset_handler(void);
void uart0_rx_irq_handler(void);
void uart_overflow_irq_handler(void);
void systick_handler(void);

#define STACK_PAINT 0x5AC4C0DEu

static void fault_handler(void) {
#ifdef SER_FW_SEMIHOSTING
    semihost_puts("ser-edge firmware: fault\n");
    semihost_exit(3);
#endif
    for (;;) {
    }
}

static void default_handler(void) { fault_handler(); }

typedef void (*vector_t)(void);

/* 16 system exceptions + the AN386's 32 external interrupts. */
__attribute__((section(".vectors"), used)) const vector_t vector_table[48] = {
    (vector_t)(uintptr_t)&_estack, /* initial SP */
    reset_handler,
    default_handler, /* NMI */
    fault_handler,   /* HardFault */
    fault_handler,   /* MemManage */
    fault_handler,   /* BusFault */
    fault_handler,   /* UsageFault */
    0, 0, 0, 0,
    default_handler, /* SVCall */
    default_handler, /* DebugMon */
    0,
    default_handler, /* PendSV */
    systick_handler,
    /* external interrupts */
    [16 + UART0_RX_IRQn] = uart0_rx_irq_handler,
    [16 + 1] = default_handler,
    [16 + 2 ... 16 + 11] = default_handler,
    [16 + UART_OVERFLOW_IRQn] = uart_overflow_irq_handler,
    [16 + 13 ... 47] = default_handler,
};

uint32_t ser_stack_used_bytes(void) {
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) p++;
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

__attribute__((noreturn)) void reset_handler(void) {
    uint32_t *p, *const paint_end = (uint32_t *)((uintptr_t)&_estack - 128u);
    memcpy(&_sdata, &_sidata, (size_t)((uintptr_t)&_edata - (uintptr_t)&_sdata));
    memset(&_sbss, 0, (size_t)((uintptr_t)&_ebss - (uintptr_t)&_sbss));
    /* paint everything below the current frame (a few words of this function are in use) */
    for (p = &_sstack; p < paint_end; p++) *p = STACK_PAINT;
    SCB_VTOR = (uint32_t)(uintptr_t)vector_table;
    SCB_CCR |= SCB_CCR_DIV_0_TRP;
    (void)main();
    fault_handler();
    for (;;) {
    }
}
