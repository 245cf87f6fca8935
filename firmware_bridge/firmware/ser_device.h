/*
 * ser_device.h - the device side of the serial protocol in C: edge_runtime/serial_device.py's
 * SerialDevice, protocol revision 2 (HELLO/INFO with the revision-2 extension, PING/PONG,
 * START/STOP/ACK with status codes, AUDIO and FEATURES sessions through the reorder buffer of
 * ser_reassembly.h: RESEND requests for lost input, SYNC, give-up with zero fill and GAP flags,
 * STREAM_RESET with continued window numbering; RESULT per window, RESEND of RESULTs a host
 * missed; GET_STATS/STATS with every revision-2 counter, ERROR) with the same window policy and
 * gate as edge_runtime.classifier.StreamingClassifier, for one exported model.
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
#include "ser_reassembly.h"
#include "ser_fw_info.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef SER_DEV_MAX_GAPS
#define SER_DEV_MAX_GAPS 8 /* zero-filled holes remembered for GAP flags (oldest forgotten first) */
#endif
#define SER_DEV_TX_PAYLOAD 320 /* largest payload the device sends (INFO with long labels) */
#ifndef SER_DEV_MAX_PAYLOAD
#define SER_DEV_MAX_PAYLOAD 1024 /* INFO.max_payload. The decoder buffers frames up to the protocol's
                                    4096-byte ceiling (SER_MAX_PAYLOAD) so a larger one is answered
                                    TOO_LARGE after its CRC is checked, as serve does. */
#endif
#ifndef SER_DEV_RESULT_HISTORY
#define SER_DEV_RESULT_HISTORY 32 /* window RESULTs kept for a host's RESEND (serve: 512) */
#endif
#define SER_DEV_RESEND_HOLD_MS 3000u /* INFO.resend_hold_ms: wait this long for lost input */
#define SER_DEV_RESEND_RETRY_MS 100u /* ask again this often while it is missing */
#define SER_DEV_RESULT_SIZE (21 + SER_N_LABELS)

typedef struct {
    void (*write)(void *ctx, const uint8_t *data, size_t n);
    uint64_t (*ticks)(void *ctx); /* monotonic clock */
    uint32_t ticks_per_us;
    void *ctx;
} ser_device_io_t;

/* STATS counters beyond the decoder's (STATS_FIELDS order is built in ser_device.c). */
typedef struct {
    uint32_t tx_frames, results, errors, gap_samples, gap_frames, stale, sessions;
    uint32_t tx_dropped, resend_requests, resend_recovered, gap_windows, rx_unexpected_type, results_resent;
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
    uint64_t sum_probs[SER_N_LABELS];  /* their softmax probabilities, Q32 (ties of sum_scores) */
} ser_utterance_t;

typedef struct {
    const ser_device_io_t *io;
    ser_decoder_t rx;
    ser_fe_state_t fe;
    int engine_rc;
    uint16_t tx_seq;
    uint8_t mode;
    uint16_t session;
    uint8_t peer_revision;     /* min(HELLO.max_version, 2); 1 until a HELLO says more */
    uint16_t host_max_payload; /* HELLO.host_max_payload (>= 64): larger replies are not sent */
    int have_key;              /* (mode, session, start_offset) of the current START, for retries */
    uint8_t key_mode;
    uint16_t key_session;
    uint32_t key_offset;
    uint16_t cur_seq;          /* the frame being handled (ERROR STREAM_RESET names it) */
    uint8_t cur_type;
    uint64_t engine_pos;       /* items fed to the engine since its last reset (GAP bookkeeping) */
    uint32_t win_base;         /* window numbering continues across a STREAM_RESET ... */
    uint64_t t_base;           /* ... and so do times (samples since the session's start_offset) */
    int64_t last_window;
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
    int ra_active; /* an AUDIO/FEATURES session's reorder buffer is in use */
    ser_ra_t ra;
    /* window RESULT payloads by window_index % SER_DEV_RESULT_HISTORY (a host's RESEND) */
    uint8_t history[SER_DEV_RESULT_HISTORY][SER_DEV_RESULT_SIZE];
    uint8_t history_ok[SER_DEV_RESULT_HISTORY];
    ser_device_counters_t c;
    uint8_t payload[SER_DEV_TX_PAYLOAD];
    uint8_t wire[SER_WIRE_SIZE(SER_DEV_TX_PAYLOAD)];
} ser_device_t;

/* Set up (front end, decoder, engine) and send the boot INFO. */
void ser_device_init(ser_device_t *d, const ser_device_io_t *io);
/* One received byte: completes frames and answers them. */
void ser_device_feed(ser_device_t *d, uint8_t byte);
/* Call often (every few ms, and whenever the loop wakes): gives up lost input that waited too long
 * and sends RESEND for what is still missing. */
void ser_device_poll(ser_device_t *d);
/* Counters (STATS plus timing). */
const ser_device_counters_t *ser_device_counters(const ser_device_t *d);

#ifdef __cplusplus
}
#endif

#endif /* SER_DEVICE_H */
