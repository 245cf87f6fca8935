/*
 * ser_device.c - SerialDevice (edge_runtime/serial_device.py) in C for one exported model.
 *
 * Every decision mirrors the Python reference device, so the same host tests run against both:
 * the order of checks, the error codes and their texts, stream offsets (zero-filled gaps, stale
 * duplicates, STREAM_RESET past max_gap), the window policy (a window of W frames ends at frame
 * k*H + W, classified from a clean model state) and the window energy gate of
 * StreamingClassifier (sum of the frames' sums of squares below SER_FW_GATE_SUMSQ = silence;
 * windows fed as features are never gated). Integer arithmetic only.
 */
#include "ser_device.h"

#include <string.h>

#include "ser_engine.h"
#include "ser_fw_info.h"

/* Session modes (messages.Mode) and what this device accepts (INFO.accepts). */
enum { MODE_IDLE = 0, MODE_AUDIO = 1, MODE_FEATURES = 2, MODE_MIC_PUSH = 3 };
#define ACCEPTS_AUDIO_FEATURES 0x03u
#define STREAM_HALF 0x80000000u
#define TABLES_CORRUPT (-1000)


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
static void send(ser_device_t *d, uint8_t type, const uint8_t *payload, size_t len) {
    const size_t n = ser_frame_encode(type, d->tx_seq, payload, len, d->wire, sizeof d->wire);
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

static void send_ack(ser_device_t *d, uint16_t ref_seq, uint8_t ref_type) {
    send(d, SER_MSG_ACK, d->payload, ser_ack_payload(ref_seq, ref_type, 0, d->payload, sizeof d->payload));
}

static void send_info(ser_device_t *d, uint16_t reply_to, int boot) {
    uint8_t *p = d->payload;
    size_t n = 32, k;
    int i;
    p[0] = SER_PROTOCOL_VERSION;
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
    send(d, SER_MSG_INFO, p, n);
}

static void send_stats(ser_device_t *d, uint16_t ref_seq) {
    /* messages.STATS_FIELDS order */
    const ser_decoder_stats_t *s = ser_decoder_stats(&d->rx);
    const uint32_t v[15] = {
        s->frames_ok, s->dropped[SER_DROP_CRC], s->dropped[SER_DROP_COBS], s->dropped[SER_DROP_LENGTH],
        s->dropped[SER_DROP_VERSION], s->dropped[SER_DROP_UNKNOWN_TYPE], s->dropped[SER_DROP_OVERSIZE],
        s->dropped[SER_DROP_PAYLOAD], s->seq_lost,
        d->c.tx_frames, d->c.results, d->c.errors, d->c.gap_samples, d->c.gap_frames, d->c.stale};
    uint8_t *p = d->payload;
    int i;
    put16(p, ref_seq);
    p[2] = 15;
    p[3] = 0;
    for (i = 0; i < 15; i++) put32(p + 4 + 4 * i, v[i]);
    send(d, SER_MSG_STATS, p, 4 + 4 * 15);
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

static void reset_stream(ser_device_t *d, uint32_t offset) {
    reset_engine(d);
    d->pending_utt = 0;
    d->next_offset = offset;
    d->base = offset;
    d->n_gaps = 0;
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

/* Utterance / summary record (classifier._record + serial_device.result_to_message). */
static void send_record(ser_device_t *d, const ser_utterance_t *u, uint32_t number, int summary) {
    int8_t mean[SER_N_LABELS];
    uint8_t flags = 0x20u /* UTTERANCE */, index = 0;
    uint64_t t0 = u->t_start, t1 = u->t_end;
    int i, best = -1, tie = 0;
    size_t n;
    if (u->n_speech) {
        for (i = 0; i < SER_N_LABELS; i++) { /* rint(mean): half to even */
            const int32_t s = u->sum_scores[i], c = (int32_t)u->n_speech;
            int32_t q = s / c, r = s % c;
            if (r < 0) { q -= 1; r += c; } /* floor division */
            if (2 * r > c || (2 * r == c && (q & 1))) q += 1;
            mean[i] = (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
            /* argmax of the mean log-probability = argmax of the sum of int8 logits */
            if (best < 0 || s > u->sum_scores[best]) {
                best = i;
                tie = 0;
            } else if (s == u->sum_scores[best]) {
                tie = 1; /* Python breaks it by the mean probability: the firmware says uncertain */
            }
        }
        if (tie) {
            flags |= SER_RESULT_UNCERTAIN;
            index = argmax8(mean, SER_N_LABELS);
        } else {
            index = (uint8_t)best;
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

static void utt_add(ser_utterance_t *u, uint32_t k, uint64_t t0, uint64_t t1, const int8_t *scores, int speech,
                    int no_speech) {
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
        for (i = 0; i < SER_N_LABELS; i++) u->sum_scores[i] += scores[i];
    } else if (no_speech) {
        u->n_no_speech++;
    }
}

/* Classify window k: frames [first, first + n_real) (+ pad frames for a short stream).
 * kind: 0 hop / flush (the last W frames of the ring), 1 short (ring [0, n_real) + padding). */
static void classify_window(ser_device_t *d, uint32_t k, uint32_t first, uint32_t n_real, int is_short) {
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
        memcpy(in, d->frames[0], (size_t)n_real * SER_N_FEATURES);
        for (i = n_real; i < W; i++) memcpy(in + (size_t)i * SER_N_FEATURES, pad, SER_N_FEATURES);
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
    if (d->n_gaps && overlaps_gap(d, lo, hi)) flags |= SER_RESULT_GAP;
    {
        const uint64_t ts = (uint64_t)first * SER_HOP_LENGTH;
        const uint64_t te = ((uint64_t)first + n_real - 1u) * SER_HOP_LENGTH + SER_FRAME_LENGTH;
        n = ser_result_payload(k, d->session, index, flags, ms_of(ts), ms_of(te),
                               (uint32_t)((d->io->ticks(d->io->ctx) - d->t_rx) / d->io->ticks_per_us),
                               d->scores, SER_N_LABELS, d->payload, sizeof d->payload);
        send(d, SER_MSG_RESULT, d->payload, n);
        d->c.results++;
        /* StreamingClassifier._account */
        utt_add(&d->all, k, ts, te, d->scores, reason == 0, reason == 2);
        if (reason == 0) {
            if (!d->utt_open) {
                utt_clear(&d->utt);
                d->utt_open = 1;
            }
            utt_add(&d->utt, k, ts, te, d->scores, 1, 0);
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
    if (d->frames_total == end) classify_window(d, d->windows_emitted, end - W, W, 0);
}

/* StreamingClassifier.finish (serial STOP): the tail window, the open utterance, the summary. */
static void finish_stream(ser_device_t *d) {
    const uint32_t W = SER_WINDOW_FRAMES, n = d->frames_total;
    if (d->windows_emitted == 0 && n > 0 && n < W) {
        if (n >= SER_FW_MIN_FRAMES) classify_window(d, 0, 0, n, 1);
    } else if (d->windows_emitted > 0 && n - d->last_end >= SER_FW_FLUSH_MIN_FRAMES) {
        classify_window(d, d->windows_emitted, n - W, W, 0);
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

/* SerialDevice._align: how many leading items to skip (>= 0), or -fill (< 0) zero items to insert
 * first; 0x7FFFFFFF = drop the chunk (stale). */
#define ALIGN_DROP 0x7FFFFFFFL
static long align_stream(ser_device_t *d, uint16_t seq, uint8_t type, uint32_t offset, uint32_t n, uint32_t max_gap) {
    const uint32_t diff = offset - d->next_offset;
    if (diff == 0) return 0;
    if (diff >= STREAM_HALF) {
        const uint32_t behind = 0u - diff;
        if (behind >= n) {
            d->c.stale++;
            return ALIGN_DROP;
        }
        return (long)behind;
    }
    if (diff > max_gap) {
        text_t t = {{0}, 0};
        t_str(&t, "gap of ");
        t_u32(&t, diff);
        t_str(&t, type == SER_MSG_AUDIO ? " samples" : " frames");
        t_str(&t, " is too long to fill; stream state reset at the new offset (window numbering restarts)");
        send_error(d, SER_ERR_STREAM_RESET, seq, type, t.s);
        reset_stream(d, offset);
        return 0;
    }
    {
        const uint64_t start = (uint32_t)(d->next_offset - d->base);
        uint32_t i = d->n_gaps;
        if (i == SER_DEV_MAX_GAPS) { /* full: forget the oldest */
            memmove(d->gap_lo, d->gap_lo + 1, sizeof d->gap_lo[0] * (SER_DEV_MAX_GAPS - 1));
            memmove(d->gap_hi, d->gap_hi + 1, sizeof d->gap_hi[0] * (SER_DEV_MAX_GAPS - 1));
            i--;
        }
        d->gap_lo[i] = start;
        d->gap_hi[i] = start + diff;
        d->n_gaps = i + 1;
    }
    return -(long)diff;
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

static void on_audio(ser_device_t *d, uint16_t seq, const uint8_t *p, size_t len) {
    uint32_t offset, n, i;
    long skip;
    int16_t pcm[64];
    n = (uint32_t)ser_audio_parse(p, len, &offset); /* layout already checked by the decoder */
    if (!check_session(d, seq, MODE_AUDIO, SER_MSG_AUDIO)) return;
    skip = align_stream(d, seq, SER_MSG_AUDIO, offset, n, SER_FW_MAX_GAP_SAMPLES);
    if (skip == ALIGN_DROP) return;
    if (skip < 0) {
        uint32_t fill = (uint32_t)(-skip);
        d->c.gap_samples += fill;
        memset(pcm, 0, sizeof pcm);
        while (fill) {
            const uint32_t k = fill < 64u ? fill : 64u;
            push_pcm(d, pcm, k);
            fill -= k;
        }
        d->next_offset += (uint32_t)(-skip);
        skip = 0;
    }
    for (i = (uint32_t)skip; i < n;) { /* samples are unaligned little-endian in the payload */
        uint32_t k = 0;
        for (; k < 64u && i < n; k++, i++) pcm[k] = ser_audio_sample(p, i);
        push_pcm(d, pcm, k);
    }
    d->next_offset += n - (uint32_t)skip;
}

static void on_features(ser_device_t *d, uint16_t seq, const uint8_t *p, size_t len) {
    const uint32_t offset = get32(p), n = get16(p + 4), nf = get16(p + 6);
    long skip;
    uint32_t i;
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
    skip = align_stream(d, seq, SER_MSG_FEATURES, offset, n, SER_FW_MAX_GAP_FRAMES);
    if (skip == ALIGN_DROP) return;
    if (skip < 0) {
        int8_t zp[SER_N_FEATURES];
        uint32_t fill = (uint32_t)(-skip);
        memset(zp, (int8_t)SER_INPUT_ZERO_POINT, sizeof zp);
        d->c.gap_frames += fill;
        for (i = 0; i < fill; i++) add_frame(d, zp, NO_LEVEL);
        d->next_offset += fill;
        skip = 0;
    }
    for (i = (uint32_t)skip; i < n; i++) add_frame(d, (const int8_t *)(p + 8 + (size_t)i * nf), NO_LEVEL);
    d->next_offset += n - (uint32_t)skip;
}

static void on_start(ser_device_t *d, uint16_t seq, const uint8_t *p, size_t len) {
    uint8_t mode;
    uint16_t session;
    uint32_t offset;
    (void)ser_start_parse(p, len, &mode, &session, &offset);
    if (mode > MODE_MIC_PUSH) {
        text_t t = {{0}, 0};
        t_str(&t, "unknown mode ");
        t_u32(&t, mode);
        send_error(d, SER_ERR_UNSUPPORTED, seq, SER_MSG_START, t.s);
        return;
    }
    if (mode == MODE_MIC_PUSH) {
        send_error(d, SER_ERR_UNSUPPORTED, seq, SER_MSG_START, "this device has no audio source");
        return;
    }
    d->session = session;
    reset_stream(d, offset);
    d->mode = mode;
    d->c.sessions++;
    send_ack(d, seq, SER_MSG_START);
}

static void handle(ser_device_t *d, const ser_frame_t *f) {
    switch (f->type) {
        case SER_MSG_AUDIO: on_audio(d, f->seq, f->payload, f->length); break;
        case SER_MSG_FEATURES: on_features(d, f->seq, f->payload, f->length); break;
        case SER_MSG_PING: send(d, SER_MSG_PONG, f->payload, f->length); break;
        case SER_MSG_HELLO: send_info(d, f->seq, 0); break;
        case SER_MSG_START: on_start(d, f->seq, f->payload, f->length); break;
        case SER_MSG_STOP:
            if (d->mode == MODE_AUDIO || d->mode == MODE_FEATURES) finish_stream(d);
            d->mode = MODE_IDLE;
            send_ack(d, f->seq, SER_MSG_STOP);
            break;
        case SER_MSG_GET_STATS: send_stats(d, f->seq); break;
        case SER_MSG_PONG:
        case SER_MSG_ACK: break; /* answers to nothing we asked; harmless */
        default: {
            text_t t = {{0}, 0};
            t_str(&t, type_names[f->type]);
            t_str(&t, " is not a request");
            send_error(d, SER_ERR_UNKNOWN_TYPE, f->seq, f->type, t.s);
        }
    }
}

/* SerialDevice._on_drop: only frames that passed the CRC have a seq/type worth answering. */
static void on_drop(ser_device_t *d, int reason, const ser_frame_t *f) {
    switch (reason) {
        case SER_DROP_UNKNOWN_TYPE: send_error(d, SER_ERR_UNKNOWN_TYPE, f->seq, f->type, "unknown_type"); break;
        case SER_DROP_PAYLOAD: send_error(d, SER_ERR_BAD_PAYLOAD, f->seq, f->type, "payload"); break;
        case SER_DROP_LENGTH: send_error(d, SER_ERR_BAD_PAYLOAD, f->seq, f->type, "length"); break;
        case SER_DROP_VERSION:
            send_error(d, SER_ERR_VERSION, f->seq, f->type, "this device speaks protocol version 1");
            break;
        case SER_DROP_OVERSIZE: {
            text_t t = {{0}, 0};
            t_str(&t, "max payload is ");
            t_u32(&t, (uint32_t)d->rx.max_payload);
            t_str(&t, " bytes");
            send_error(d, SER_ERR_TOO_LARGE, f->seq, f->type, t.s);
            break;
        }
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
    ser_decoder_init(&d->rx, 0);
    ser_decoder_check_messages(&d->rx, 1);
    if (ser_fe_init(&d->fe, &ser_fe_tables) != SER_FE_OK ||
        ser_fe_tables_checksum(&ser_fe_tables) != SER_TABLES_CHECKSUM)
        d->engine_rc = TABLES_CORRUPT; /* tables corrupt: every window answers ERROR ENGINE */
    else
        d->engine_rc = ser_engine_init();
    reset_stream(d, 0);
    send_info(d, SER_NO_SEQ, 1);
}

const ser_device_counters_t *ser_device_counters(const ser_device_t *d) { return &d->c; }
