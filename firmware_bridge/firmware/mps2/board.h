/*
 * board.h - the few registers of the Arm MPS2 AN386 board (Cortex-M4F) this firmware touches,
 * written out from the Arm documentation (ARMv7-M ARM for SysTick/NVIC/SCB, CMSDK APB UART TRM,
 * AN386 application note for the memory map and interrupt numbers). No CMSIS headers.
 */
#ifndef SER_BOARD_H
#define SER_BOARD_H

#include <stdint.h>

#define SER_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* Board clock: AN386 SYSCLK, which also clocks SysTick (CLKSOURCE = processor clock). */
#define BOARD_SYSCLK_HZ 25000000u

/* CMSDK APB UART0 (AN386: 0x40004000; RX interrupt = IRQ 0, TX interrupt = IRQ 1). */
#define UART0_BASE 0x40004000u
#define UART_DATA(b) SER_REG((b) + 0x00u)
#define UART_STATE(b) SER_REG((b) + 0x04u)     /* bit0 TX full, bit1 RX full, bit2/3 overruns */
#define UART_CTRL(b) SER_REG((b) + 0x08u)      /* bit0 TX en, bit1 RX en, bit2 TX int, bit3 RX int */
#define UART_INTSTATUS(b) SER_REG((b) + 0x0Cu) /* read: pending; write 1: clear */
#define UART_BAUDDIV(b) SER_REG((b) + 0x10u)
#define UART_STATE_TXFULL 0x1u
#define UART_STATE_RXFULL 0x2u
#define UART_STATE_RXOVR 0x8u
#define UART_CTRL_TXEN 0x1u
#define UART_CTRL_RXEN 0x2u
#define UART_CTRL_RXIRQ 0x8u
#define UART_CTRL_RXOVRIRQ 0x20u
#define UART_INT_RX 0x2u
#define UART_INT_RXOVR 0x8u
#define UART0_RX_IRQn 0
#define UART_OVERFLOW_IRQn 12 /* AN386: OR of every UART's overrun interrupts */

/* System control space (ARMv7-M). */
#define SYST_CSR SER_REG(0xE000E010u)
#define SYST_RVR SER_REG(0xE000E014u)
#define SYST_CVR SER_REG(0xE000E018u)
#define SYST_CSR_ENABLE 0x1u
#define SYST_CSR_TICKINT 0x2u
#define SYST_CSR_CLKSOURCE 0x4u
#define NVIC_ISER(n) SER_REG(0xE000E100u + 4u * (n))
#define NVIC_IPR_BYTE(irq) (*(volatile uint8_t *)(uintptr_t)(0xE000E400u + (irq)))
#define SCB_VTOR SER_REG(0xE000ED08u)
#define SCB_CCR SER_REG(0xE000ED14u)
#define SCB_CCR_DIV_0_TRP 0x10u

static inline void board_irq_enable(int irq) { NVIC_ISER((unsigned)irq >> 5) = 1u << ((unsigned)irq & 31u); }
static inline void board_wfi(void) { __asm__ volatile("wfi" ::: "memory"); }
static inline uint32_t board_irq_save(void) {
    uint32_t p;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(p)::"memory");
    return p;
}
static inline void board_irq_restore(uint32_t p) { __asm__ volatile("msr primask, %0" ::"r"(p) : "memory"); }

#endif /* SER_BOARD_H */
