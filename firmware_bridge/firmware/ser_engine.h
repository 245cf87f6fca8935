/*
 * ser_engine.h - the model as the device loop sees it: one int8 window in, int8 scores out.
 *
 * The firmware binds this to the exported model (firmware_bridge/firmware/mps2/engine_*.c).
 * Every call classifies one window from scratch (recurrent state starts at zero, as in
 * edge_runtime.interpreter.IntModel.predict_window).
 */
#ifndef SER_ENGINE_H
#define SER_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 0 when the engine is ready; otherwise the device answers every window with ERROR ENGINE. */
int ser_engine_init(void);
/* The input buffer: window_frames x n_features int8, oldest frame first (row-major). */
int8_t *ser_engine_input(void);
/* Run the model on ser_engine_input(); scores[n_labels]. 0 = ok, else an error code. */
int ser_engine_invoke(int8_t *scores);
/* One line saying what an error code means (for ERROR ENGINE). */
const char *ser_engine_error(int rc);
/* Scratch memory the engine uses (activations, arena), bytes. */
uint32_t ser_engine_arena_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* SER_ENGINE_H */
