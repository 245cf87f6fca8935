/*
 * engine_none.c - the engine of an image built without inference kernels: every window is
 * answered with ERROR ENGINE (never a made-up score). Used only while no kernels are linked.
 */
#include "ser_engine.h"
#include "ser_model.h"

static int8_t input[SER_WINDOW_FRAMES * SER_N_FEATURES];

int ser_engine_init(void) { return -1; }
int8_t *ser_engine_input(void) { return input; }
int ser_engine_invoke(int8_t *scores) {
    (void)scores;
    return -1;
}
const char *ser_engine_error(int rc) {
    (void)rc;
    return "this firmware image was built without inference kernels";
}
uint32_t ser_engine_arena_bytes(void) { return 0; }
