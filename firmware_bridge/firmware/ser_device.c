/*
 * ser_device.c - SerialDevice (edge_runtime/serial_device.py) in C for one exported model:
 * protocol revision 2 (docs/protocol.md).
 *
 * Every decision mirrors the Python reference device, so the same host tests run against both:
 * the order of checks, the error codes and their texts, ACK status codes, the INFO extension,
 * the STATS counters, stream offsets through the reorder buffer (ser_reassembly.c: RESEND for lost
 * input, SYNC, zero fill + GAP when given up, stale duplicates, STREAM_RESET past max_gap with
 * window numbering continued), RESULTs re-sent on a host's RESEND, the window policy (a window of
 * W frames ends at frame k*H + W, classified from a clean model state) and the speech gate of
 * StreamingClassifier (windows fed as features are never gated). Integer arithmetic only.
 *
 * Deliberate differences (docs/protocol.md §6.1, docs/firmware.md): the reorder pool is
 * SER_RA_POOL_BYTES (serve: 256 KiB) and SER_DEV_RESULT_HISTORY RESULTs are kept (serve: 512);
 * there is no TX queue (a UART without flow control cannot stall a write, so tx_dropped_results
 * and tx_timeouts stay 0) and no port to reopen (the boot INFO is sent at reset only).
 */
#include "ser_device.h"

#include <string.h>

#include "ser_engine.h"
#include "ser_fw_info.h"

/* Session modes (messages.Mode) and what this device accepts (INFO.accepts). */
enum { MODE_IDLE = 0, MODE_AUDIO = 1, MODE_FEATURES = 2, MODE_MIC_PUSH = 3 };
#define ACCEPTS_AUDIO_FEATURES 0x03u
#define TABLES_CORRUPT (-1000)
#define ACK_OK 0u
#define ACK_ALREADY 1u
#define RESULT_NO_SPEECH 0x10u
#define RESULT_UTTERANCE 0x20u
#define INFO_EXT_RESEND 0x04u
#define NO_GATE_F32_BITS 0xC3480000u /* -200.0f: INFO.gate_dbfs of a device without a dBFS gate */


static const char *const mode_names[4] = {"IDLE", "AUDIO", "FEATURES", "MIC_PUSH"};
static const char *const type_names[SER_MSG_TYPE_MAX + 1] = {
    "", "HELLO", "INFO", "AUDIO", "FEATURES", "RESULT", "ERROR", "PING", "PONG",
    "START", "STOP", "ACK", "GET_STATS", "STATS", "RESEND"};

/* ------------------------------------------------------------------ little helpers */
static void put16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    put16(p, v & 0xFFFFu);
    put16(p + 2, v >> 16);
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* A tiny text builder (no printf: it would cost more flash than this whole file). */
typedef struct {
    char s[201];
    size_t n;
} text_t;
static void t_str(text_t *t, const char *s) {
    while (*s && t->n < sizeof(t->s) - 1) t->s[t->n++] = *s++;
    t->s[t->n] = 0;
}
static void t_u32(text_t *t, uint32_t v) {
    char b[11];
    int i = 10;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    t_str(t, b + i);
}

static size_t put_str8(uint8_t *p, size_t cap, const char *s) {
    size_t n = strlen(s);
    if (n > 255) n = 255;
    if (n + 1 > cap) return 0;
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return n + 1;
}

/* ------------------------------------------------------------------ sending */
static void send_error(ser_device_t *d, uint16_t code, uint16_t ref_seq, uint8_t ref_type, const char *text);

static void send(ser_device_t *d, uint8_t type, const uint8_t *payload, size_t len) {
    size_t n;
    if (len > d->host_max_payload) { /* HELLO said the host cannot take it */
        d->c.tx_dropped++;
        if (type != SER_MSG_ERROR) {
            text_t t = {{0}, 0};
            t_str(&t, type_names[type <= SER_MSG_TYPE_MAX ? type : 0]);
            t_str(&t, " needs ");
            t_u32(&t, (uint32_t)len);
            t_str(&t, " bytes, host accepts ");
            t_u32(&t, d->host_max_payload);
            send_error(d, SER_ERR_TOO_LARGE, SER_NO_SEQ, type, t.s);
        }
        return;
    }
    n = ser_frame_encode(type, d->tx_seq, payload, len, d->wire, sizeof d->wire);
    if (!n) return;
    d->tx_seq++;
    d->io->write(d->io->ctx, d->wire, n);
    d->c.tx_frames++;
}

static void send_error(ser_device_t *d, uint16_t code, uint16_t ref_seq, uint8_t ref_type, const char *text) {
    const size_t n = ser_error_payload(code, ref_seq, ref_type, text, d->payload, sizeof d->payload);
    d->c.errors++;
    send(d, SER_MSG_ERROR, d->payload, n);
}

static void send_ack(ser_device_t *d, uint16_t ref_seq, uint8_t ref_type, uint8_t status) {
    send(d, SER_MSG_ACK, d->payload, ser_ack_payload(ref_seq, ref_type, status, d->payload, sizeof d->payload));
}

static void send_info(ser_device_t *d, uint16_t reply_to, int boot) {
    uint8_t *p = d->payload;
    size_t n = 32, k;
    int i;
    /* the boot INFO says the device's own revision; an answer, the one both sides speak */
    const uint8_t revision = boot || d->peer_revision >= SER_PROTOCOL_REVISION ? SER_PROTOCOL_REVISION
                                                                                : d->peer_revision;
    p[0] = revision;
    p[1] = boot ? 1u : 0u;
    p[2] = ACCEPTS_AUDIO_FEATURES;
    p[3] = d->mode;
    put16(p + 4, (uint32_t)d->rx.max_payload);
    put16(p + 6, reply_to);
    put32(p + 8, SER_SAMPLE_RATE);
    put16(p + 12, SER_WINDOW_FRAMES);
    put16(p + 14, SER_HOP_FRAMES);
    put16(p + 16, SER_N_FEATURES);
    put16(p + 18, SER_HOP_LENGTH);
    put32(p + 20, SER_FW_INPUT_SCALE_BITS);
    p[24] = (uint8_t)(int8_t)SER_INPUT_ZERO_POINT;
    p[25] = (uint8_t)(int8_t)SER_OUTPUT_ZERO_POINT;
    p[26] = SER_N_LABELS;
    p[27] = 0;
    put32(p + 28, SER_FW_OUTPUT_SCALE_BITS);
    n += (k = put_str8(p + n, sizeof d->payload - n, SER_FW_VERSION));
    n += (k = put_str8(p + n, sizeof d->payload - n, SER_MODEL_HASH));
    n += (k = put_str8(p + n, sizeof d->payload - n, SER_FRONTEND_HASH));
    for (i = 0; i < SER_N_LABELS; i++) n += (k = put_str8(p + n, sizeof d->payload - n, ser_labels[i]));
    (void)k;
    if (revision >= 2 && n + 17 <= sizeof d->payload) { /* the revision-2 extension block */
        p[n] = 16;
        put16(p + n + 1, SER_FRAME_LENGTH);
        p[n + 3] = INFO_EXT_RESEND; /* logits, no dBFS gate, asks for lost input */
        p[n + 4] = 0;
        put32(p + n + 5, 0u);               /* min_confidence 0.0f: never UNCERTAIN by threshold */
        put32(p + n + 9, NO_GATE_F32_BITS); /* gate_dbfs: the speech gate is relative, not a dBFS level */
        put16(p + n + 13, d->mode ? d->session : 0u);
        put16(p + n + 15, SER_DEV_RESEND_HOLD_MS);
        n += 17;
    }
    send(d, SER_MSG_INFO, p, n);
}

#define N_STATS 26
static void send_stats(ser_device_t *d, uint16_t ref_seq) {
    /* messages.STATS_FIELDS order; the live session's reorder buffer counts too */
    const ser_decoder_stats_t *s = ser_decoder_stats(&d->rx);
    const uint32_t v[N_STATS] = {
        s->frames_ok, s->dropped[SER_DROP_CRC], s->dropped[SER_DROP_COBS], s->dropped[SER_DROP_LENGTH],
        s->dropped[SER_DROP_VERSION], s->dropped[SER_DROP_UNKNOWN_TYPE], s->dropped[SER_DROP_OVERSIZE],
        s->dropped[SER_DROP_PAYLOAD], s->seq_lost,
        d->c.tx_frames, d->c.results, d->c.errors, d->c.gap_samples, d->c.gap_frames,
        d->c.stale + (d->ra_active ? d->ra.c.stale : 0u),
        /* revision 2 */
        s->dropped[SER_DROP_SHORT], 0u /* tx_dropped_results: no TX queue */, d->c.tx_dropped,
        0u /* tx_timeouts: UART writes cannot stall */, d->c.resend_requests,
        d->c.resend_recovered + (d->ra_active ? d->ra.c.recovered_items : 0u), d->c.gap_windows,
        d->c.sessions, d->c.rx_unexpected_type,
        /* rx_buffer_full, rx_buffered_max: serve's port-reader ring; no reader thread here (the
         * UART interrupt's ring is the board's, and what it drops shows as rx_crc/rx_cobs) */
        0u, 0u};
    uint8_t *p = d->payload;
    int i;
    put16(p, ref_seq);
    p[2] = N_STATS;
    p[3] = 0;
    for (i = 0; i < N_STATS; i++) put32(p + 4 + 4 * i, v[i]);
    send(d, SER_MSG_STATS, p, 4 + 4 * N_STATS);
}

/* ------------------------------------------------------------------ speech gate */
#define NO_LEVEL (-1)
#define GATE_NONE 0x7FFFFFFF

static void gate_reset(ser_device_t *d) {
    uint32_t i;
    for (i = 0; i < SER_FW_GATE_FLOOR_BLOCKS; i++) d->gate_blocks[i] = GATE_NONE;
    d->gate_blocks_min = d->gate_cur_min = GATE_NONE;
    d->gate_cur_n = d->gate_run = 0;
}

/* SpeechGate.push for one frame level (Q8 log2): 1 if the frame is active. */
static uint8_t gate_push(ser_device_t *d, int32_t x) {
    int32_t floor, thr;
    uint8_t act;
    if (x < d->gate_cur_min) d->gate_cur_min = x;
    floor = d->gate_cur_min < d->gate_blocks_min ? d->gate_cur_min : d->gate_blocks_min;
    thr = floor >= GATE_NONE - SER_FW_GATE_MARGIN_Q8 ? GATE_NONE : floor + SER_FW_GATE_MARGIN_Q8;
    if (thr < SER_FW_GATE_ABS_FLOOR_Q8) thr = SER_FW_GATE_ABS_FLOOR_Q8;
    d->gate_run = x >= thr ? d->gate_run + 1 : 0;
    act = d->gate_run >= SER_FW_GATE_MIN_RUN;
    if (++d->gate_cur_n == SER_FW_GATE_BLOCK_FRAMES) { /* close the block: drop the oldest minimum */
        uint32_t i;
        int32_t m = d->gate_cur_min;
        for (i = 0; i + 1 < SER_FW_GATE_FLOOR_BLOCKS; i++) {
            d->gate_blocks[i] = d->gate_blocks[i + 1];
            if (d->gate_blocks[i] < m) m = d->gate_blocks[i];
        }
        d->gate_blocks[SER_FW_GATE_FLOOR_BLOCKS - 1] = d->gate_cur_min;
        d->gate_blocks_min = m;
        d->gate_cur_min = GATE_NONE;
        d->gate_cur_n = 0;
    }
    return act;
}

/* ilog2_q8 of the frame's L * sum x^2 - (sum x)^2 (speech_gate.frame_stats): the frame about to
 * be popped is in the front end's ring. */
static int32_t frame_level(const ser_fe_state_t *fe) {
    const uint32_t mask = SER_FRAME_LENGTH - 1u;
    int64_t sum = 0, sq = 0, e;
    uint32_t i;
    int msb;
    for (i = 0; i < SER_FRAME_LENGTH; i++) {
        const int32_t v = fe->ring[(fe->start + i) & mask];
        sum += v;
        sq += v * v;
    }
    e = (int64_t)SER_FRAME_LENGTH * sq - sum * sum;
    if (e <= 0) return 0;
    msb = 63 - __builtin_clzll((uint64_t)e);
    return msb * 256 + (int32_t)(((uint64_t)e << 8) >> msb) - 256;
}

/* ------------------------------------------------------------------ stream state */
static void utt_clear(ser_utterance_t *u) {
    memset(u, 0, sizeof *u);
    u->first = u->last = -1;
}

static void reset_engine(ser_device_t *d) { /* StreamingClassifier.reset */
    ser_fe_reset(&d->fe);
    gate_reset(d);
    d->frames_total = 0;
    d->windows_emitted = 0;
    d->last_end = 0;
    utt_clear(&d->utt);
    utt_clear(&d->all);
    d->utt_open = 0;
    d->utt_gap = 0;
    d->utterances_emitted = 0;
}

/* A new session (START): engine, GAP bookkeeping, numbering and the RESULT history. */
static void reset_stream(ser_device_t *d) {
    reset_engine(d);
    d->pending_utt = 0;
    d->engine_pos = 0;
    d->n_gaps = 0;
    d->win_base = 0;
    d->t_base = 0;
    d->last_window = -1;
    memset(d->history_ok, 0, sizeof d->history_ok);
}

static int overlaps_gap(ser_device_t *d, uint64_t lo, uint64_t hi) {
    uint32_t i, j = 0;
    int hit = 0;
    for (i = 0; i < d->n_gaps; i++) { /* windows come in order: forget gaps that end before lo */
        if (d->gap_hi[i] > lo) {
            d->gap_lo[j] = d->gap_lo[i];
            d->gap_hi[j] = d->gap_hi[i];
            if (d->gap_lo[j] < hi && lo < d->gap_hi[j]) hit = 1;
            j++;
        }
    }
    d->n_gaps = j;
    return hit;
}

static uint32_t ms_of(uint64_t samples) { /* round(samples * 1000 / sr), half to even */
    const uint64_t num = samples * 1000u, q = num / SER_SAMPLE_RATE, r = num % SER_SAMPLE_RATE;
    return (uint32_t)(2u * r > SER_SAMPLE_RATE || (2u * r == SER_SAMPLE_RATE && (q & 1u)) ? q + 1u : q);
}

static uint8_t argmax8(const int8_t *v, int n) { /* first maximum, as np.argmax */
    int i, best = 0;
    for (i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (uint8_t)best;
}

/* The label of an utterance (window_policy.aggregate_means): the class with the highest mean
 * log-probability = the highest sum of int8 logits; an exact tie is broken by the mean probability
 * (sum_probs, Q31 per window); a tie in both (within 1e-9 per window, window_policy._TIE) has no
 * label: -1 (UNCERTAIN), never the lowest index. */
static int utt_label(const ser_utterance_t *u) {
    const uint64_t tol = (uint64_t)u->n_speech * 2147u / 1000u; /* 1e-9 in Q31, per window */
    uint64_t pmax = 0;
    int i, best = 0, n_best = 0, winner = -1;
    for (i = 1; i < SER_N_LABELS; i++)
        if (u->sum_scores[i] > u->sum_scores[best]) best = i;
    for (i = 0; i < SER_N_LABELS; i++)
        if (u->sum_scores[i] == u->sum_scores[best] && u->sum_probs[i] > pmax) pmax = u->sum_probs[i];
    for (i = 0; i < SER_N_LABELS; i++) {
        if (u->sum_scores[i] == u->sum_scores[best] && u->sum_probs[i] + tol >= pmax) {
            n_best++;
            winner = i;
        }
    }
    return n_best == 1 ? winner : -1;
}

/* softmax of a window's int8 logits, Q31: exp((q_i - q_max) * output_scale) / sum, from the table
 * ser_fw_info.h carries (the zero point cancels). */
static void window_probs(const int8_t *q, uint32_t *p) {
    static const uint32_t ex[256] = SER_FW_EXP_Q31;
    uint64_t sum = 0;
    int i, mx = q[0];
    for (i = 1; i < SER_N_LABELS; i++)
        if (q[i] > mx) mx = q[i];
    for (i = 0; i < SER_N_LABELS; i++) sum += ex[mx - q[i]];
    for (i = 0; i < SER_N_LABELS; i++) p[i] = (uint32_t)(((uint64_t)ex[mx - q[i]] << 31) / sum);
}

/* Utterance / summary record (classifier._record + serial_device.result_to_message). */
static void send_record(ser_device_t *d, const ser_utterance_t *u, uint32_t number, int summary) {
    int8_t mean[SER_N_LABELS];
    uint8_t flags = 0x20u /* UTTERANCE */, index = 0;
    uint64_t t0 = u->t_start, t1 = u->t_end;
    int i, label;
    size_t n;
    if (u->n_speech) {
        for (i = 0; i < SER_N_LABELS; i++) { /* rint(mean): half to even */
            const int32_t s = u->sum_scores[i], c = (int32_t)u->n_speech;
            int32_t q = s / c, r = s % c;
            if (r < 0) { q -= 1; r += c; } /* floor division */
            if (2 * r > c || (2 * r == c && (q & 1))) q += 1;
            mean[i] = (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
        }
        label = utt_label(u);
        if (label < 0) { /* a tie in both: no emotion; index = top-1 of the mean scores (diagnostics) */
            flags |= SER_RESULT_UNCERTAIN;
            index = argmax8(mean, SER_N_LABELS);
        } else {
            index = (uint8_t)label;
        }
    } else {
        memset(mean, 0, sizeof mean);
        if (summary && u->n_windows == 0) {
            flags |= SER_RESULT_SILENCE; /* too_short (fewer frames than a window) or silence */
            t0 = 0;
            t1 = d->mode == MODE_AUDIO ? d->fe.samples_seen : 0;
        } else {
            flags |= u->n_no_speech ? 0x10u /* NO_SPEECH */ : SER_RESULT_SILENCE;
        }
    }
    n = ser_result_payload(number, d->session, index, flags, ms_of(t0), ms_of(t1), 0, mean, SER_N_LABELS,
                           d->payload, sizeof d->payload);
    send(d, SER_MSG_RESULT, d->payload, n);
    d->c.results++;
}

static void flush_pending(ser_device_t *d) {
    if (d->pending_utt) {
        d->pending_utt = 0;
        send_record(d, &d->pending, d->pending_number, 0);
    }
}

static void close_utterance(ser_device_t *d) {
    if (!d->utt_open) return;
    flush_pending(d); /* at most one record waits: an older one goes out now */
    d->pending = d->utt;
    d->pending_number = d->utterances_emitted++;
    d->pending_utt = 1;
    d->utt_open = 0;
    d->utt_gap = 0;
    utt_clear(&d->utt);
}

static void utt_add(ser_utterance_t *u, uint32_t k, uint64_t t0, uint64_t t1, const int8_t *scores,
                    const uint32_t *probs, int speech, int no_speech) {
    int i;
    if (u->first < 0) {
        u->first = (int32_t)k;
        u->t_start = t0;
    }
    u->last = (int32_t)k;
    if (t1 > u->t_end) u->t_end = t1;
    u->n_windows++;
    if (speech) {
        u->n_speech++;
        for (i = 0; i < SER_N_LABELS; i++) {
            u->sum_scores[i] += scores[i];
            u->sum_probs[i] += probs[i];
        }
    } else if (no_speech) {
        u->n_no_speech++;
    }
}

/* Classify window k: frames [first, first + n_real) (+ pad frames for a short stream).
 * is_short 0: hop / flush / tie-break (the last W frames of the ring); 1: short (`before` pad
 * frames, ring [0, n_real), then padding to W). */
static void classify_window(ser_device_t *d, uint32_t k, uint32_t first, uint32_t n_real, int is_short,
                            uint32_t before) {
    static const int8_t pad[SER_N_FEATURES] = SER_FW_PAD_FRAME;
    const uint32_t W = SER_WINDOW_FRAMES, oldest = is_short ? 0u : d->frames_total % W;
    int8_t *in = ser_engine_input();
    uint32_t i, n_active = 0;
    int32_t max_level = NO_LEVEL;
    uint8_t flags = 0, index;
    int audio, reason = 0; /* 1 silence, 2 no_speech */
    uint64_t t0, lo, hi;
    size_t n;
    int rc;
    if (is_short) {
        for (i = 0; i < before; i++) memcpy(in + (size_t)i * SER_N_FEATURES, pad, SER_N_FEATURES);
        memcpy(in + (size_t)before * SER_N_FEATURES, d->frames[0], (size_t)n_real * SER_N_FEATURES);
        for (i = before + n_real; i < W; i++) memcpy(in + (size_t)i * SER_N_FEATURES, pad, SER_N_FEATURES);
    } else { /* oldest frame first: the ring slot the next frame would overwrite */
        memcpy(in, d->frames[oldest], (size_t)(W - oldest) * SER_N_FEATURES);
        memcpy(in + (size_t)(W - oldest) * SER_N_FEATURES, d->frames[0], (size_t)oldest * SER_N_FEATURES);
    }
    t0 = d->io->ticks(d->io->ctx);
    rc = d->engine_rc ? d->engine_rc : ser_engine_invoke(d->scores);
    d->c.nn_ticks += d->io->ticks(d->io->ctx) - t0;
    d->c.nn_windows++;
    d->last_end = first + n_real;
    d->windows_emitted = k + 1;
    if (rc) {
        send_error(d, SER_ERR_ENGINE, SER_NO_SEQ, 0,
                   rc == TABLES_CORRUPT ? "front-end tables fail their checksum" : ser_engine_error(rc));
        return;
    }
    /* the gate over the window's real frames (audio only; features are never gated) */
    audio = 1;
    for (i = 0; i < n_real; i++) {
        const uint32_t slot = is_short ? i : (oldest + i) % W;
        if (d->level[slot] == NO_LEVEL) audio = 0;
        if (d->level[slot] > max_level) max_level = d->level[slot];
        n_active += d->active[slot];
    }
    if (n_real == 0) audio = 0;
    if (audio) {
        if (max_level < SER_FW_GATE_ABS_FLOOR_Q8) reason = 1;
        else if (n_active < SER_FW_GATE_MIN_ACTIVE) reason = 2;
    }
    if (reason == 1) flags |= SER_RESULT_SILENCE;
    if (reason == 2) flags |= 0x10u; /* NO_SPEECH */
    index = argmax8(d->scores, SER_N_LABELS); /* the emotion, or the model's top-1 when gated */
    if (d->mode == MODE_FEATURES) {
        lo = first;
        hi = (uint64_t)first + n_real;
    } else {
        lo = (uint64_t)first * SER_HOP_LENGTH;
        hi = ((uint64_t)first + n_real - 1u) * SER_HOP_LENGTH + SER_FRAME_LENGTH;
    }
    if (d->n_gaps && overlaps_gap(d, lo, hi)) {
        flags |= SER_RESULT_GAP;
        d->c.gap_windows++;
    }
    {
        const uint64_t ts = (uint64_t)first * SER_HOP_LENGTH;
        const uint64_t te = ((uint64_t)first + n_real - 1u) * SER_HOP_LENGTH + SER_FRAME_LENGTH;
        const uint32_t number = k + d->win_base; /* numbering continues after a STREAM_RESET */
        if ((int64_t)number > d->last_window) d->last_window = number;
        n = ser_result_payload(number, d->session, index, flags, ms_of(d->t_base + ts), ms_of(d->t_base + te),
                               (uint32_t)((d->io->ticks(d->io->ctx) - d->t_rx) / d->io->ticks_per_us),
                               d->scores, SER_N_LABELS, d->payload, sizeof d->payload);
        if (n == SER_DEV_RESULT_SIZE) { /* kept for a host that missed it (RESEND) */
            const uint32_t slot = number % SER_DEV_RESULT_HISTORY;
            memcpy(d->history[slot], d->payload, n);
            d->history_ok[slot] = 1;
        }
        send(d, SER_MSG_RESULT, d->payload, n);
        d->c.results++;
        /* StreamingClassifier._account */
        uint32_t probs[SER_N_LABELS];
        if (reason == 0) window_probs(d->scores, probs);
        utt_add(&d->all, k, ts, te, d->scores, probs, reason == 0, reason == 2);
        if (reason == 0) {
            if (!d->utt_open) {
                utt_clear(&d->utt);
                d->utt_open = 1;
            }
            utt_add(&d->utt, k, ts, te, d->scores, probs, 1, 0);
            d->utt_gap = 0;
        } else if (d->utt_open && ++d->utt_gap >= SER_FW_UTTERANCE_GAP_WINDOWS) {
            close_utterance(d);
        }
    }
}

/* StreamingClassifier._add_frames, one frame at a time: a window fires when its last frame lands. */
static void add_frame(ser_device_t *d, const int8_t *q, int32_t level) {
    const uint32_t W = SER_WINDOW_FRAMES, slot = d->frames_total % W;
    uint32_t end;
    memcpy(d->frames[slot], q, SER_N_FEATURES);
    d->level[slot] = level;
    d->active[slot] = level == NO_LEVEL ? 0 : gate_push(d, level);
    d->frames_total++;
    end = d->windows_emitted * SER_HOP_FRAMES + W;
    if (d->frames_total == end) classify_window(d, d->windows_emitted, end - W, W, 0, 0);
}

/* The stream's speech windows so far tie exactly, in both rules (StreamingClassifier._tied). */
static int stream_tied(const ser_device_t *d) { return d->all.n_speech > 0 && utt_label(&d->all) < 0; }

/* StreamingClassifier.finish (serial STOP): the tail window, the tie-break views, the open
 * utterance, the summary. */
static void finish_stream(ser_device_t *d) {
    const uint32_t W = SER_WINDOW_FRAMES, n = d->frames_total;
    int short_done = 0;
    if (d->windows_emitted == 0 && n > 0 && n < W) {
        if (n >= SER_FW_MIN_FRAMES) {
            classify_window(d, 0, 0, n, 1, 0);
            short_done = 1;
        }
    } else if (d->windows_emitted > 0 && n - d->last_end >= SER_FW_FLUSH_MIN_FRAMES) {
        classify_window(d, d->windows_emitted, n - W, W, 0, 0);
    }
    /* An exact tie (which only the class index would break) is broken with more views of the same
     * audio: a short stream's frames centred, then at the window's end; a longer stream's
     * end-aligned window if its last frames were never the end of a window. */
    if (stream_tied(d)) {
        if (n < W && short_done) {
            classify_window(d, d->windows_emitted, 0, n, 1, (W - n) / 2);
            if (stream_tied(d)) classify_window(d, d->windows_emitted, 0, n, 1, W - n);
        } else if (n >= W && n > d->last_end) {
            classify_window(d, d->windows_emitted, n - W, W, 0, 0);
        }
    }
    close_utterance(d);
    flush_pending(d);
    send_record(d, &d->all, 0xFFFFFFFFu, 1);
    reset_engine(d);
}

static void push_pcm(ser_device_t *d, const int16_t *pcm, size_t n) {
    int32_t feats[SER_N_FEATURES];
    int8_t q[SER_N_FEATURES];
    while (1) {
        const size_t k = ser_fe_push(&d->fe, pcm, n);
        pcm += k;
        n -= k;
        while (ser_fe_samples_needed(&d->fe) == 0) {
            const int32_t level = frame_level(&d->fe);
            const uint64_t t0 = d->io->ticks(d->io->ctx);
            (void)ser_fe_pop(&d->fe, feats);
            d->c.fe_ticks += d->io->ticks(d->io->ctx) - t0;
            d->c.fe_frames++;
            ser_fe_quantize(feats, SER_N_FEATURES, SER_INPUT_MULTIPLIER, SER_INPUT_RIGHT_SHIFT,
                            SER_INPUT_ZERO_POINT, q);
            add_frame(d, q, level);
        }
        if (n == 0) break;
    }
}

/* ------------------------------------------------------------------ the stream (reorder buffer) */
static uint32_t ticks_per_ms(const ser_device_t *d) { return d->io->ticks_per_us * 1000u; }

/* SerialDevice._apply for one piece the reorder buffer releases. */
static void ra_emit(void *ctx, int kind, const uint8_t *items, uint32_t n, int64_t pos) {
    ser_device_t *d = (ser_device_t *)ctx;
    const int audio = d->mode == MODE_AUDIO;
    if (kind == SER_RA_RESET) { /* a gap too long to fill: the stream restarts; numbering continues */
        text_t t = {{0}, 0};
        flush_pending(d); /* records already closed go out first */
        d->win_base = (uint32_t)(d->last_window + 1);
        d->t_base = (uint64_t)pos * (audio ? 1u : SER_HOP_LENGTH);
        reset_engine(d);
        d->engine_pos = 0;
        d->n_gaps = 0;
        t_str(&t, "gap too long to fill; stream restarted at offset ");
        t_u32(&t, ser_ra_offset_of(&d->ra, pos));
        t_str(&t, "; windows continue at ");
        t_u32(&t, d->win_base);
        send_error(d, SER_ERR_STREAM_RESET, d->cur_seq, d->cur_type, t.s);
        return;
    }
    if (kind == SER_RA_FILL) { /* given up: zeros keep time aligned; windows over it are flagged GAP */
        uint32_t i = d->n_gaps;
        if (i == SER_DEV_MAX_GAPS) { /* full: forget the oldest */
            memmove(d->gap_lo, d->gap_lo + 1, sizeof d->gap_lo[0] * (SER_DEV_MAX_GAPS - 1));
            memmove(d->gap_hi, d->gap_hi + 1, sizeof d->gap_hi[0] * (SER_DEV_MAX_GAPS - 1));
            i--;
        }
        d->gap_lo[i] = d->engine_pos;
        d->gap_hi[i] = d->engine_pos + n;
        d->n_gaps = i + 1;
        if (audio) {
            int16_t zeros[64];
            uint32_t left = n;
            d->c.gap_samples += n;
            memset(zeros, 0, sizeof zeros);
            while (left) {
                const uint32_t k = left < 64u ? left : 64u;
                push_pcm(d, zeros, k);
                left -= k;
            }
        } else {
            int8_t zp[SER_N_FEATURES];
            uint32_t i2;
            memset(zp, (int8_t)SER_INPUT_ZERO_POINT, sizeof zp);
            d->c.gap_frames += n;
            for (i2 = 0; i2 < n; i2++) add_frame(d, zp, NO_LEVEL);
        }
        d->engine_pos += n;
        return;
    }
    if (audio) { /* samples are unaligned little-endian int16 */
        int16_t pcm[64];
        uint32_t i = 0;
        while (i < n) {
            uint32_t k = 0;
            for (; k < 64u && i < n; k++, i++)
                pcm[k] = (int16_t)(uint16_t)(items[2 * i] | items[2 * i + 1] << 8);
            push_pcm(d, pcm, k);
        }
    } else {
        uint32_t i;
        for (i = 0; i < n; i++) add_frame(d, (const int8_t *)(items + (size_t)i * SER_N_FEATURES), NO_LEVEL);
    }
    d->engine_pos += n;
}

/* Leaving an AUDIO/FEATURES session: count what the reorder buffer saw; drop what it held. */
static void end_stream(ser_device_t *d) {
    if (!d->ra_active) return;
    d->c.stale += d->ra.c.stale;
    d->c.resend_recovered += d->ra.c.recovered_items;
    d->ra_active = 0;
}

void ser_device_poll(ser_device_t *d) {
    uint32_t first[SER_RA_MAX_RANGES], count[SER_RA_MAX_RANGES];
    unsigned m;
    size_t n;
    if (!d->ra_active || (d->ra.n_chunks == 0 && d->ra.known_end <= d->ra.next)) return; /* no holes */
    d->t_rx = d->io->ticks(d->io->ctx);
    d->cur_seq = SER_NO_SEQ;
    d->cur_type = d->mode == MODE_AUDIO ? SER_MSG_AUDIO : SER_MSG_FEATURES;
    m = ser_ra_poll(&d->ra, d->t_rx, first, count);
    flush_pending(d);
    if (m) {
        d->c.resend_requests++;
        n = ser_resend_payload(d->session, first, count, m, d->payload, sizeof d->payload);
        send(d, SER_MSG_RESEND, d->payload, n);
    }
}

static int check_session(ser_device_t *d, uint16_t seq, uint8_t want, uint8_t type) {
    text_t t = {{0}, 0};
    if (d->mode == want) return 1;
    if (d->mode == MODE_IDLE) {
        send_error(d, SER_ERR_NO_SESSION, seq, type, "send START first");
        return 0;
    }
    t_str(&t, "session is ");
    t_str(&t, mode_names[d->mode & 3u]);
    t_str(&t, ", got ");
    t_str(&t, type_names[type]);
    send_error(d, SER_ERR_WRONG_MODE, seq, type, t.s);
    return 0;
}

static void on_stream(ser_device_t *d, uint16_t seq, uint8_t type, uint32_t offset, const uint8_t *items, uint32_t n) {
    d->cur_seq = seq;
    d->cur_type = type;
    ser_ra_push(&d->ra, offset, items, n, d->io->ticks(d->io->ctx));
    flush_pending(d);
    ser_device_poll(d); /* ask at once for a hole this chunk revealed */
}

static void on_audio(ser_device_t *d, uint16_t seq, const uint8_t *p, size_t len) {
    uint32_t offset;
    const long n = ser_audio_parse(p, len, &offset); /* layout already checked; 0 samples = SYNC */
    if (!check_session(d, seq, MODE_AUDIO, SER_MSG_AUDIO)) return;
    on_stream(d, seq, SER_MSG_AUDIO, offset, p + 4, n > 0 ? (uint32_t)n : 0u);
}

static void on_features(ser_device_t *d, uint16_t seq, const uint8_t *p, size_t len) {
    const uint32_t offset = get32(p), n = get16(p + 4), nf = get16(p + 6);
    (void)len;
    if (!check_session(d, seq, MODE_FEATURES, SER_MSG_FEATURES)) return;
    if (nf != SER_N_FEATURES) {
        text_t t = {{0}, 0};
        t_str(&t, "got ");
        t_u32(&t, nf);
        t_str(&t, " features per frame, this model takes ");
        t_u32(&t, SER_N_FEATURES);
        send_error(d, SER_ERR_BAD_DIMS, seq, SER_MSG_FEATURES, t.s);
        return;
    }
    on_stream(d, seq, SER_MSG_FEATURES, offset, p + 8, n);
}

static void on_start(ser_device_t *d, uint16_t seq, const uint8_t *p, size_t len) {
    uint8_t mode;
    uint16_t session;
    uint32_t offset;
    (void)ser_start_parse(p, len, &mode, &session, &offset);
    if (mode == MODE_IDLE || mode > MODE_MIC_PUSH) {
        text_t t = {{0}, 0};
        if (mode == MODE_IDLE) {
            t_str(&t, "mode 0 is not a session; send STOP");
        } else {
            t_str(&t, "unknown mode ");
            t_u32(&t, mode);
        }
        send_error(d, SER_ERR_UNSUPPORTED, seq, SER_MSG_START, t.s);
        return;
    }
    if (d->have_key && d->key_mode == mode && d->key_session == session && d->key_offset == offset &&
        d->mode == mode) { /* a retry after a lost ACK: keep the stream (audio may already flow) */
        send_ack(d, seq, SER_MSG_START, ACK_ALREADY);
        return;
    }
    if (mode == MODE_MIC_PUSH) {
        send_error(d, SER_ERR_UNSUPPORTED, seq, SER_MSG_START, "this device has no audio source");
        return;
    }
    end_stream(d);
    d->session = session;
    d->have_key = 1;
    d->key_mode = mode;
    d->key_session = session;
    d->key_offset = offset;
    reset_stream(d);
    ser_ra_init(&d->ra, offset, mode == MODE_AUDIO ? 2u : (uint32_t)SER_N_FEATURES, d->peer_revision >= 2,
                (uint64_t)SER_DEV_RESEND_HOLD_MS * ticks_per_ms(d), (uint64_t)SER_DEV_RESEND_RETRY_MS * ticks_per_ms(d),
                mode == MODE_AUDIO ? (int64_t)SER_FW_MAX_GAP_SAMPLES : (int64_t)SER_FW_MAX_GAP_FRAMES, ra_emit, d);
    d->ra_active = 1;
    d->mode = mode;
    d->c.sessions++;
    send_ack(d, seq, SER_MSG_START, ACK_OK);
}

static void on_stop(ser_device_t *d, uint16_t seq) {
    const int idle = d->mode == MODE_IDLE;
    if (d->mode == MODE_AUDIO || d->mode == MODE_FEATURES) {
        d->cur_seq = SER_NO_SEQ;
        ser_ra_flush(&d->ra); /* input still held for a RESEND goes in (holes zero-filled) */
        finish_stream(d);     /* the tail window, utterance and summary come before the ACK */
    }
    end_stream(d);
    d->mode = MODE_IDLE;
    d->have_key = 0;
    send_ack(d, seq, SER_MSG_STOP, idle ? ACK_ALREADY : ACK_OK);
}

/* The host missed RESULTs: send the ones still held again (same bytes). */
static void on_resend(ser_device_t *d, const uint8_t *p, size_t len) {
    uint32_t first[SER_MAX_RESEND_RANGES], count[SER_MAX_RESEND_RANGES];
    uint16_t session;
    const int n = ser_resend_parse(p, len, &session, first, count, SER_MAX_RESEND_RANGES);
    int i;
    if (n < 1 || session != d->session) return;
    for (i = 0; i < n; i++) {
        const uint32_t lim = count[i] < SER_DEV_RESULT_HISTORY ? count[i] : SER_DEV_RESULT_HISTORY;
        uint32_t k;
        for (k = 0; k < lim; k++) {
            const uint32_t w = first[i] + k, slot = w % SER_DEV_RESULT_HISTORY;
            if (d->history_ok[slot] && get32(d->history[slot]) == w) {
                memcpy(d->payload, d->history[slot], SER_DEV_RESULT_SIZE);
                send(d, SER_MSG_RESULT, d->payload, SER_DEV_RESULT_SIZE);
                d->c.results_resent++;
            }
        }
    }
}

static void on_hello(ser_device_t *d, uint16_t seq, const uint8_t *p) {
    const uint16_t host_max = get16(p + 2);
    d->peer_revision = p[0] < SER_PROTOCOL_REVISION ? p[0] : SER_PROTOCOL_REVISION; /* >= 1: checked */
    d->host_max_payload = host_max < 64u ? 64u : host_max;
    d->rx.have_seq = 0; /* a new conversation: the host's counter may have restarted */
    send_info(d, seq, 0);
}

static void handle(ser_device_t *d, const ser_frame_t *f) {
    switch (f->type) {
        case SER_MSG_AUDIO: on_audio(d, f->seq, f->payload, f->length); break;
        case SER_MSG_FEATURES: on_features(d, f->seq, f->payload, f->length); break;
        case SER_MSG_PING: send(d, SER_MSG_PONG, f->payload, f->length); break;
        case SER_MSG_HELLO: on_hello(d, f->seq, f->payload); break;
        case SER_MSG_START: on_start(d, f->seq, f->payload, f->length); break;
        case SER_MSG_STOP: on_stop(d, f->seq); break;
        case SER_MSG_GET_STATS: send_stats(d, f->seq); break;
        case SER_MSG_PONG: break; /* the answer to a PING this device sent */
        case SER_MSG_RESEND: on_resend(d, f->payload, f->length); break;
        default: { /* a device->host type sent to the device */
            text_t t = {{0}, 0};
            d->c.rx_unexpected_type++;
            t_str(&t, type_names[f->type]);
            t_str(&t, " is not a request");
            send_error(d, SER_ERR_UNKNOWN_TYPE, f->seq, f->type, t.s);
        }
    }
}

/* Types only a device sends (docs/protocol.md §4: PING, PONG and RESEND go both ways). */
static int device_only_type(uint8_t type) {
    return type == SER_MSG_INFO || type == SER_MSG_RESULT || type == SER_MSG_ERROR || type == SER_MSG_ACK ||
           type == SER_MSG_STATS;
}

/* SerialDevice._on_drop: only frames that passed the CRC have a seq/type worth answering. */
static void on_drop(ser_device_t *d, int reason, const ser_frame_t *f) {
    text_t t = {{0}, 0};
    if (reason == SER_DROP_PAYLOAD && device_only_type(f->type)) reason = SER_DROP_UNKNOWN_TYPE;
    switch (reason) {
        case SER_DROP_UNKNOWN_TYPE:
            if (f->type >= 1 && f->type <= SER_MSG_TYPE_MAX) {
                t_str(&t, type_names[f->type]);
                t_str(&t, " is not a request");
            } else {
                static const char hex[] = "0123456789abcdef";
                char h[3] = {hex[f->type >> 4], hex[f->type & 15u], 0};
                t_str(&t, "unknown message type 0x");
                t_str(&t, h);
            }
            send_error(d, SER_ERR_UNKNOWN_TYPE, f->seq, f->type, t.s);
            break;
        case SER_DROP_PAYLOAD: send_error(d, SER_ERR_BAD_PAYLOAD, f->seq, f->type, "payload"); break;
        case SER_DROP_LENGTH: send_error(d, SER_ERR_BAD_PAYLOAD, f->seq, f->type, "length"); break;
        case SER_DROP_VERSION:
            send_error(d, SER_ERR_VERSION, f->seq, f->type, "this device speaks protocol version 1");
            break;
        case SER_DROP_OVERSIZE:
            t_str(&t, "max payload is ");
            t_u32(&t, (uint32_t)d->rx.max_payload);
            t_str(&t, " bytes");
            send_error(d, SER_ERR_TOO_LARGE, f->seq, f->type, t.s);
            break;
        default: break; /* cobs, short, crc: seq and type cannot be trusted */
    }
}

void ser_device_feed(ser_device_t *d, uint8_t byte) {
    ser_frame_t f;
    int rc;
    f.payload = NULL; /* the decoder fills the header only for frames that passed the CRC */
    rc = ser_decoder_feed(&d->rx, byte, &f);
    if (rc == 0) return;
    if (rc < 0) {
        if (f.payload) on_drop(d, -rc - 1, &f);
        return;
    }
    d->t_rx = d->io->ticks(d->io->ctx);
    handle(d, &f);
    flush_pending(d); /* an utterance closed by this message's windows follows them */
}

void ser_device_init(ser_device_t *d, const ser_device_io_t *io) {
    memset(d, 0, sizeof *d);
    d->io = io;
    d->peer_revision = 1; /* until a HELLO says more: no RESEND frames to unknown hosts */
    d->host_max_payload = SER_PROTOCOL_MAX_PAYLOAD;
    ser_decoder_init(&d->rx, SER_DEV_MAX_PAYLOAD);
    ser_decoder_check_messages(&d->rx, 1);
    if (ser_fe_init(&d->fe, &ser_fe_tables) != SER_FE_OK ||
        ser_fe_tables_checksum(&ser_fe_tables) != SER_TABLES_CHECKSUM)
        d->engine_rc = TABLES_CORRUPT; /* tables corrupt: every window answers ERROR ENGINE */
    else
        d->engine_rc = ser_engine_init();
    reset_stream(d);
    send_info(d, SER_NO_SEQ, 1);
}

const ser_device_counters_t *ser_device_counters(const ser_device_t *d) { return &d->c; }
