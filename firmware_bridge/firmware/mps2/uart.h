/*
 * uart.h - CMSDK APB UART0 driver: interrupt-driven receive into a ring buffer, polled transmit.
 */
#ifndef SER_UART_H
#define SER_UART_H

#include <stddef.h>
#include <stdint.h>

#ifndef SER_UART_RX_RING
#define SER_UART_RX_RING 2048 /* bytes; power of two. ~2 AUDIO frames of slack at 921600 baud */
#endif

void uart_init(uint32_t baud);
/* Take one received byte; 0 when the ring is empty. */
int uart_rx_pop(uint8_t *byte);
/* 1 when no received byte is waiting. */
int uart_rx_empty(void);
/* Bytes lost because the ring was full (the RX interrupt could not store them). */
uint32_t uart_rx_dropped(void);
/* Blocking write of n bytes. */
void uart_write(const uint8_t *data, size_t n);

/* SysTick: free-running 64-bit count of SYSCLK ticks (25 MHz on the AN386); its wrap interrupt
 * (every 10 ms) also wakes the main loop for the device's timed work. */
void systick_init(void);
uint64_t systick_ticks(void);

#endif /* SER_UART_H */
