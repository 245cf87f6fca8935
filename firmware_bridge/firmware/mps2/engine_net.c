/*
 * engine_net.c - ser_engine.h on the model compiled ahead of time by `ser-edge export`
 * (<prefix>_net.c + the ser_nn kernels). The device writes each window straight into the input
 * tensor inside the static arena (no extra copy), runs every layer, and reads the scores.
 */
#include <string.h>

#include "ser_engine.h"
#include "ser_model.h"

#if !defined(SER_HAS_NET) || !SER_HAS_NET
#error "engine_net.c needs an export with the model compiled to C (ser_net.h)"
#endif
#if SER_NET_INPUT_SIZE != SER_WINDOW_FRAMES * SER_N_FEATURES || SER_NET_OUTPUT_SIZE != SER_N_LABELS
#error "the compiled model's input/output do not match the window geometry / labels"
#endif

int ser_engine_init(void) { return 0; }
int8_t *ser_engine_input(void) { return ser_model_input(); }
int ser_engine_invoke(int8_t *scores) {
    ser_model_run();
    memcpy(scores, ser_model_output(), SER_N_LABELS);
    return 0;
}
const char *ser_engine_error(int rc) {
    (void)rc;
    return "inference failed";
}
uint32_t ser_engine_arena_bytes(void) { return ser_model_arena_bytes; }
