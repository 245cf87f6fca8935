/*
 * main.c - the ser-edge device firmware for the MPS2 AN386 (Cortex-M4F): UART0 at SER_FW_BAUD,
 * the serial protocol device loop (ser_device.c) over the exported model. Received bytes arrive
 * by interrupt in a ring (uart.c); the loop feeds them to the device, lets it do its timed work
 * (ser_device_poll) and sleeps (WFI) until the next byte or SysTick interrupt.
 */
#include <stdint.h>

#include "board.h"
#include "ser_device.h"
#include "uart.h"

#ifndef SER_FW_BAUD
#define SER_FW_BAUD 921600u
#endif

static ser_device_t device;

static void io_write(void *ctx, const uint8_t *data, size_t n) {
    (void)ctx;
    uart_write(data, n);
}

static uint64_t io_ticks(void *ctx) {
    (void)ctx;
    return systick_ticks();
}

static const ser_device_io_t io = {io_write, io_ticks, BOARD_SYSCLK_HZ / 1000000u, 0};

#ifdef SER_FW_SELFTEST
#include "semihost.h"
void ser_selftest(void);
#endif

int main(void) {
    systick_init();
#ifdef SER_FW_SELFTEST
    ser_selftest(); /* measure on the target, print through semihosting, end the emulation */
    semihost_exit(0);
#endif
    uart_init(SER_FW_BAUD);
    ser_device_init(&device, &io);
    for (;;) {
        uint8_t b;
        uint32_t irq;
        while (uart_rx_pop(&b)) ser_device_feed(&device, b);
        /* Time-driven work (lost input given up, RESEND repeated) whenever the loop wakes: after
         * each burst of bytes and at least every SysTick period. */
        ser_device_poll(&device);
        /* Interrupts off between the empty check and WFI, so a byte arriving in between still
         * wakes the core (WFI wakes on a pending interrupt even with PRIMASK set). */
        irq = board_irq_save();
        if (uart_rx_empty()) board_wfi();
        board_irq_restore(irq);
    }
}
