/*
 * ser_device.h - the device side of the serial protocol in C: edge_runtime/serial_device.py's
 * SerialDevice (HELLO/INFO, PING/PONG, START/STOP/ACK, AUDIO and FEATURES sessions with gap
 * filling and GAP flags, RESULT per window, GET_STATS/STATS, ERROR) with the same window policy
 * and gate as edge_runtime.classifier.StreamingClassifier, for one exported model.
 *
 * Board independent: the board supplies a write function and a tick clock (ser_device_io_t), feeds
 * received bytes to ser_device_feed() from its main loop, and links a ser_engine.h implementation.
 * Compile with the exported <prefix>_model.h (SER_* geometry) and ser_fw_info.h (INFO constants,
 * gate threshold; written by firmware_bridge/image.py).
 */
#ifndef SER_DEVICE_H
#define SER_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "ser_frontend.h"
#include "ser_model.h"
#include "ser_protocol.h"
#include "ser_fw_info.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef SER_DEV_MAX_GAPS
#define SER_DEV_MAX_GAPS 8 /* zero-filled holes remembered for GAP flags (oldest forgotten first) */
#endif
#define SER_DEV_TX_PAYLOAD 320 /* largest payload the device sends (INFO with long labels) */

typedef struct {
    void (*write)(void *ctx, const uint8_t *data, size_t n);
    uint64_t (*ticks)(void *ctx); /* monotonic clock */
    uint32_t ticks_per_us;
    void *ctx;
} ser_device_io_t;

/* STATS counters beyond the decoder's (STATS_FIELDS order is built in ser_device.c). */
typedef struct {
    uint32_t tx_frames, results, errors, gap_samples, gap_frames, stale, sessions;
    /* timing, for benchmarks: front-end frames and the ticks spent in ser_fe_pop; model windows
     * and the ticks spent in ser_engine_invoke */
    uint32_t fe_frames, nn_windows;
    uint64_t fe_ticks, nn_ticks;
} ser_device_counters_t;

/* An utterance (or the whole session, for the summary) being accumulated (classifier._Utterance). */
typedef struct {
    uint32_t n_windows, n_speech, n_no_speech;
    int32_t first, last;        /* window indices, -1 = none yet */
    uint64_t t_start, t_end;    /* samples (AUDIO) or frames x hop samples (FEATURES) */
    int32_t sum_scores[SER_N_LABELS]; /* over the speech windows */
} ser_utterance_t;

typedef struct {
    const ser_device_io_t *io;
    ser_decoder_t rx;
    ser_fe_state_t fe;
    int engine_rc;
    uint16_t tx_seq;
    uint8_t mode;
    uint16_t session;
    uint32_t next_offset; /* expected offset of the next AUDIO sample / FEATURES frame */
    uint32_t base;        /* stream offset of the engine's t = 0 */
    uint64_t gap_lo[SER_DEV_MAX_GAPS], gap_hi[SER_DEV_MAX_GAPS];
    uint32_t n_gaps;
    uint32_t frames_total, windows_emitted;
    int8_t frames[SER_WINDOW_FRAMES][SER_N_FEATURES]; /* ring of the last window's int8 frames */
    int32_t level[SER_WINDOW_FRAMES];  /* their Q8 log2 levels (speech gate), -1 = no audio */
    uint8_t active[SER_WINDOW_FRAMES]; /* gate: frame counted as speech-like */
    uint32_t last_end;                 /* frame (exclusive) where the last classified window ended */
    /* speech gate state (edge_runtime.speech_gate.SpeechGate) */
    int32_t gate_blocks[SER_FW_GATE_FLOOR_BLOCKS];
    int32_t gate_blocks_min, gate_cur_min;
    uint32_t gate_cur_n, gate_run;
    /* utterances (window policy) */
    ser_utterance_t utt, all;
    int utt_open;
    uint32_t utt_gap, utterances_emitted;
    int pending_utt; /* an utterance record to send after the current message's windows */
    ser_utterance_t pending;
    uint32_t pending_number;
    int8_t scores[SER_N_LABELS];
    uint64_t t_rx; /* tick when the request being handled arrived */
    ser_device_counters_t c;
    uint8_t payload[SER_DEV_TX_PAYLOAD];
    uint8_t wire[SER_WIRE_SIZE(SER_DEV_TX_PAYLOAD)];
} ser_device_t;

/* Set up (front end, decoder, engine) and send the boot INFO. */
void ser_device_init(ser_device_t *d, const ser_device_io_t *io);
/* One received byte: completes frames and answers them. */
void ser_device_feed(ser_device_t *d, uint8_t byte);
/* Counters (STATS plus timing). */
const ser_device_counters_t *ser_device_counters(const ser_device_t *d);

#ifdef __cplusplus
}
#endif

#endif /* SER_DEVICE_H */
