/*
 * uart.c - CMSDK APB UART0 (interrupt RX into a ring, polled TX) and a 64-bit SysTick clock.
 *
 * The RX interrupt moves every received byte into a single-producer/single-consumer ring; the
 * main loop pops bytes. head is written only by the interrupt, tail only by the main loop, so
 * neither needs a lock (32-bit loads/stores are atomic on the M4).
 */
#include "uart.h"

#include "board.h"

#if (SER_UART_RX_RING & (SER_UART_RX_RING - 1)) != 0
#error "SER_UART_RX_RING must be a power of two"
#endif

static uint8_t rx_ring[SER_UART_RX_RING];
static volatile uint32_t rx_head, rx_tail, rx_dropped;
static volatile uint32_t systick_wraps;

void uart_init(uint32_t baud) {
    uint32_t div = BOARD_SYSCLK_HZ / baud;
    UART_CTRL(UART0_BASE) = 0;
    UART_BAUDDIV(UART0_BASE) = div < 16u ? 16u : div; /* the CMSDK UART needs a divider >= 16 */
    UART_INTSTATUS(UART0_BASE) = UART_INT_RX | UART_INT_RXOVR;
    UART_CTRL(UART0_BASE) = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXIRQ | UART_CTRL_RXOVRIRQ;
    board_irq_enable(UART0_RX_IRQn);
    board_irq_enable(UART_OVERFLOW_IRQn);
}

static void rx_drain(void) {
    while (UART_STATE(UART0_BASE) & UART_STATE_RXFULL) {
        const uint8_t b = (uint8_t)UART_DATA(UART0_BASE);
        const uint32_t h = rx_head;
        if (h - rx_tail < SER_UART_RX_RING) {
            rx_ring[h & (SER_UART_RX_RING - 1)] = b;
            rx_head = h + 1;
        } else {
            rx_dropped = rx_dropped + 1;
        }
    }
}

void uart0_rx_irq_handler(void) {
    UART_INTSTATUS(UART0_BASE) = UART_INT_RX;
    rx_drain();
}

void uart_overflow_irq_handler(void) {
    /* the hardware holding register was overwritten before we read it: count one lost byte */
    if (UART_STATE(UART0_BASE) & UART_STATE_RXOVR) {
        UART_STATE(UART0_BASE) = UART_STATE_RXOVR;
        rx_dropped = rx_dropped + 1;
    }
    UART_INTSTATUS(UART0_BASE) = UART_INT_RXOVR;
    rx_drain();
}

int uart_rx_pop(uint8_t *byte) {
    const uint32_t t = rx_tail;
    if (t == rx_head) return 0;
    *byte = rx_ring[t & (SER_UART_RX_RING - 1)];
    rx_tail = t + 1;
    return 1;
}

int uart_rx_empty(void) { return rx_tail == rx_head; }

uint32_t uart_rx_dropped(void) { return rx_dropped; }

void uart_write(const uint8_t *data, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        while (UART_STATE(UART0_BASE) & UART_STATE_TXFULL) {
        }
        UART_DATA(UART0_BASE) = data[i];
    }
}

#define SYSTICK_RELOAD (BOARD_SYSCLK_HZ / 100u - 1u) /* wrap (and wake) every 10 ms; the counter is 24 bits */

void systick_handler(void) { systick_wraps = systick_wraps + 1; }

void systick_init(void) {
    SYST_CSR = 0;
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

uint64_t systick_ticks(void) {
    /* The counter counts down and the wrap interrupt may be pending: read wraps, counter, wraps
     * again until both wrap reads agree (an interrupt in between changes them). */
    uint32_t w0, w1, v;
    do {
        w0 = systick_wraps;
        v = SYST_CVR;
        w1 = systick_wraps;
    } while (w0 != w1);
    return (uint64_t)w0 * (SYSTICK_RELOAD + 1u) + (SYSTICK_RELOAD - v);
}
