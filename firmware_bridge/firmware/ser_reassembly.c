/*
 * ser_reassembly.c - StreamReassembler (edge_runtime/protocol/reassembly.py) in C, bounded pool.
 *
 * Buffered input is kept as "islands": non-overlapping runs of items sorted by position and packed
 * in the pool in that order (a chunk that continues an island is appended to it), so many small
 * frames (FEATURES, one frame each) cost one descriptor per hole, not one per frame. What is
 * released, when, and which ranges are asked for follow the Python class step by step.
 */
#include "ser_reassembly.h"

#include <string.h>

#define WRAP ((int64_t)1 << 32)
#define NO_LIMIT INT64_MAX

void ser_ra_init(ser_ra_t *r, uint32_t start_offset, uint32_t item_size, int resend, uint64_t hold,
                 uint64_t retry, int64_t max_gap, ser_ra_emit_fn emit, void *ctx) {
    memset(r, 0, offsetof(ser_ra_t, pool)); /* the pool's old bytes are never read */
    r->start = start_offset;
    r->item_size = item_size ? item_size : 1u;
    r->resend = resend;
    r->hold = hold;
    r->retry = retry;
    r->max_gap = max_gap;
    r->emit = emit;
    r->ctx = ctx;
}

size_t ser_ra_size(void) { return sizeof(ser_ra_t); }
uint32_t ser_ra_buffered(const ser_ra_t *r) { return r->used / r->item_size; }

int64_t ser_ra_position(const ser_ra_t *r, uint32_t offset) {
    const uint32_t d = offset - r->start - (uint32_t)r->next;
    return r->next + (d >= 0x80000000u ? (int64_t)d - WRAP : (int64_t)d);
}

uint32_t ser_ra_offset_of(const ser_ra_t *r, int64_t pos) { return r->start + (uint32_t)(uint64_t)pos; }

/* ------------------------------------------------------------------ the pool */
static void remove_first(ser_ra_t *r) {
    const uint32_t sz = r->chunks[0].n * r->item_size;
    uint32_t i;
    memmove(r->pool, r->pool + sz, r->used - sz);
    r->used -= sz;
    for (i = 1; i < r->n_chunks; i++) {
        r->chunks[i - 1] = r->chunks[i];
        r->chunks[i - 1].at -= sz;
    }
    r->n_chunks--;
}

/* Insert items [pos, pos + n) (not covered by any island) before island i, merging with the
 * island before it and/or after it when contiguous. The caller checked that it fits. */
static void insert_run(ser_ra_t *r, uint32_t i, int64_t pos, const uint8_t *items, uint32_t n) {
    const uint32_t sz = n * r->item_size, at = i < r->n_chunks ? r->chunks[i].at : r->used;
    uint32_t k;
    memmove(r->pool + at + sz, r->pool + at, r->used - at);
    memcpy(r->pool + at, items, sz);
    r->used += sz;
    for (k = i; k < r->n_chunks; k++) r->chunks[k].at += sz;
    if (i > 0 && r->chunks[i - 1].pos + r->chunks[i - 1].n == pos) { /* continues island i-1 */
        r->chunks[i - 1].n += n;
        if (i < r->n_chunks && r->chunks[i].pos == pos + n) { /* and closes the hole to island i */
            r->chunks[i - 1].n += r->chunks[i].n;
            for (k = i + 1; k < r->n_chunks; k++) r->chunks[k - 1] = r->chunks[k];
            r->n_chunks--;
        }
        return;
    }
    if (i < r->n_chunks && r->chunks[i].pos == pos + n) { /* ends where island i starts */
        r->chunks[i].pos = pos;
        r->chunks[i].n += n;
        r->chunks[i].at = at;
        return;
    }
    for (k = r->n_chunks; k > i; k--) r->chunks[k] = r->chunks[k - 1];
    r->chunks[i].pos = pos;
    r->chunks[i].n = n;
    r->chunks[i].at = at;
    r->n_chunks++;
}

/* Items of [pos, pos + n) no island holds yet. */
static uint32_t uncovered(const ser_ra_t *r, int64_t pos, uint32_t n) {
    int64_t left = n, lo, hi;
    uint32_t i;
    for (i = 0; i < r->n_chunks; i++) {
        lo = r->chunks[i].pos > pos ? r->chunks[i].pos : pos;
        hi = r->chunks[i].pos + r->chunks[i].n < pos + n ? r->chunks[i].pos + r->chunks[i].n : pos + (int64_t)n;
        if (hi > lo) left -= hi - lo;
    }
    return (uint32_t)left;
}

static int covered(const ser_ra_t *r, int64_t pos) {
    uint32_t i;
    for (i = 0; i < r->n_chunks; i++)
        if (r->chunks[i].pos <= pos && pos < r->chunks[i].pos + r->chunks[i].n) return 1;
    return 0;
}

/* Buffer the parts of [pos, pos + n) not buffered yet (pos > next). */
static void store(ser_ra_t *r, int64_t pos, const uint8_t *items, uint32_t n) {
    const int64_t end = pos + n;
    uint32_t i = 0;
    while (pos < end) {
        while (i < r->n_chunks && r->chunks[i].pos + r->chunks[i].n <= pos) i++;
        if (i < r->n_chunks && r->chunks[i].pos <= pos) { /* already held: skip it */
            const int64_t skip_to = r->chunks[i].pos + r->chunks[i].n;
            items += (size_t)(skip_to - pos) * r->item_size;
            pos = skip_to;
            continue;
        }
        {
            const int64_t run_end = i < r->n_chunks && r->chunks[i].pos < end ? r->chunks[i].pos : end;
            const uint32_t k = (uint32_t)(run_end - pos);
            const uint32_t before = r->n_chunks;
            insert_run(r, i, pos, items, k);
            items += (size_t)k * r->item_size;
            pos = run_end;
            if (r->n_chunks < before) i--; /* two islands merged */
        }
    }
}

/* ------------------------------------------------------------------ releasing */
static void drain(ser_ra_t *r) {
    while (r->n_chunks && r->chunks[0].pos <= r->next) {
        const ser_ra_chunk_t ch = r->chunks[0];
        if (ch.pos + ch.n > r->next) {
            const uint32_t skip = (uint32_t)(r->next - ch.pos), k = ch.n - skip;
            r->emit(r->ctx, SER_RA_DATA, r->pool + ch.at + (size_t)skip * r->item_size, k, r->next);
            r->next += k;
        }
        remove_first(r);
    }
}

/* Give up the first hole (all: every hole up to known_end), but never past `limit`. */
static void give_up(ser_ra_t *r, int all, int64_t limit) {
    for (;;) {
        int64_t end = r->n_chunks ? r->chunks[0].pos : r->known_end;
        if (end > limit) end = limit;
        if (end > r->next) {
            const uint32_t n = (uint32_t)(end - r->next);
            r->emit(r->ctx, SER_RA_FILL, NULL, n, r->next);
            r->c.fills++;
            r->c.filled_items += n;
            r->next = end;
        }
        drain(r);
        if (!all || r->next >= r->known_end || r->next >= limit) return;
    }
}

/* Recompute the holes between the release point and known_end, keeping when each was first seen. */
static void update_holes(ser_ra_t *r, uint64_t now) {
    ser_ra_hole_t out[SER_RA_MAX_HOLES];
    uint32_t m = 0, i, j;
    int64_t cur = r->next, s, e;
    for (i = 0; i <= r->n_chunks; i++) {
        if (i < r->n_chunks) {
            s = cur;
            e = r->chunks[i].pos;
            if (r->chunks[i].pos + r->chunks[i].n > cur) cur = r->chunks[i].pos + r->chunks[i].n;
        } else {
            s = cur;
            e = r->known_end;
        }
        if (e <= s) continue;
        out[m].start = s;
        out[m].end = e;
        out[m].seen = out[m].next_request = now;
        for (j = 0; j < r->n_holes; j++) {
            if (r->holes[j].start <= s && s < r->holes[j].end) {
                out[m].seen = r->holes[j].seen;
                out[m].next_request = r->holes[j].next_request;
                break;
            }
        }
        m++;
    }
    memcpy(r->holes, out, m * sizeof out[0]);
    r->n_holes = m;
}

/* ------------------------------------------------------------------ input */
void ser_ra_push(ser_ra_t *r, uint32_t offset, const uint8_t *items, uint32_t n, uint64_t now) {
    int64_t pos = ser_ra_position(r, offset);
    if (now > r->now) r->now = now;
    if (n && pos + n <= r->next) {
        r->c.stale++;
        return;
    }
    if (pos < r->next) { /* partly old: keep the new part */
        const uint32_t skip = (uint32_t)(r->next - pos);
        items += (size_t)skip * r->item_size;
        n = skip < n ? n - skip : 0u;
        pos = r->next;
    }
    if (pos - r->known_end > r->max_gap) { /* a jump far past anything seen (not a backlog) */
        r->emit(r->ctx, SER_RA_RESET, NULL, 0, pos);
        r->c.resets++;
        r->n_chunks = r->used = r->n_holes = 0;
        r->next = r->known_end = pos;
    }
    if (n && pos < r->known_end && !covered(r, pos)) r->c.recovered_items += n; /* fills input that was missing */
    if (n) {
        if (pos > r->next) {
            /* No room behind the holes: give up the oldest ones (never past this chunk) until it fits;
             * the Python class stores first and then gives up while over its budget: same outcome. */
            while (pos > r->next && (r->n_chunks >= SER_RA_MAX_CHUNKS ||
                                     r->used + uncovered(r, pos, n) * r->item_size > SER_RA_POOL_BYTES))
                give_up(r, 0, pos);
        }
        if (pos + n > r->known_end) r->known_end = pos + n;
        if (pos < r->next) { /* a buffered copy of its start was released meanwhile: keep the rest */
            const int64_t skip = r->next - pos;
            if (skip >= (int64_t)n) {
                drain(r);
                if (!r->resend) give_up(r, 1, NO_LIMIT);
                return;
            }
            items += (size_t)skip * r->item_size;
            n -= (uint32_t)skip;
            pos = r->next;
        }
        if (pos == r->next) {
            r->emit(r->ctx, SER_RA_DATA, items, n, pos);
            r->next += n;
        } else {
            store(r, pos, items, n);
        }
        drain(r);
    } else if (pos > r->known_end) {
        r->known_end = pos;
    }
    if (!r->resend) give_up(r, 1, NO_LIMIT);
}

unsigned ser_ra_poll(ser_ra_t *r, uint64_t now, uint32_t *first, uint32_t *count) {
    unsigned m = 0;
    uint32_t i;
    if (now > r->now) r->now = now;
    now = r->now;
    update_holes(r, now);
    while (r->n_holes && now - r->holes[0].seen > r->hold) {
        give_up(r, 0, NO_LIMIT);
        update_holes(r, now);
    }
    if (r->resend) {
        for (i = 0; i < r->n_holes && m < SER_RA_MAX_RANGES; i++) {
            if (r->holes[i].next_request <= now) {
                first[m] = ser_ra_offset_of(r, r->holes[i].start);
                count[m] = (uint32_t)(r->holes[i].end - r->holes[i].start);
                r->holes[i].next_request = now + r->retry;
                m++;
            }
        }
    }
    if (m) {
        r->c.resend_requests++;
        r->c.resend_ranges += m;
    }
    return m;
}

void ser_ra_flush(ser_ra_t *r) {
    give_up(r, 1, NO_LIMIT);
    r->n_holes = 0;
}
