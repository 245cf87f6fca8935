/*
 * ser_reassembly.h - the device side of selective retransmission (docs/protocol.md §6.1, revision 2)
 * in C: edge_runtime/protocol/reassembly.py's StreamReassembler with a fixed-size reorder pool.
 *
 * One session's AUDIO samples / FEATURES frames ("items", item_size bytes each) are put back in
 * stream order:
 *   - a chunk at the expected position is released at once (SER_RA_DATA), followed by the buffered
 *     chunks it made contiguous;
 *   - a chunk ahead of it is buffered; the missing range before it is a hole, returned by
 *     ser_ra_poll in the ranges to ask for (RESEND), again every `retry` ticks while missing;
 *   - a hole still missing `hold` ticks after it was seen, or any hole while a new chunk does not
 *     fit in the pool, is given up: released as SER_RA_FILL (the device zero-fills it and flags the
 *     windows it touches GAP), so the stream always moves on with bounded memory;
 *   - a chunk more than max_gap items beyond anything seen resets the stream there (SER_RA_RESET);
 *     a chunk entirely behind is stale (counted), a partly old one is trimmed;
 *   - an empty chunk (SYNC) only says where the stream has got to.
 * With resend = 0 (a revision-1 host) holes are filled as soon as they are seen.
 *
 * Same decisions as the Python class, in the same order; the only difference is the bound: the
 * Python device buffers up to 256 KiB, this pool SER_RA_POOL_BYTES (and SER_RA_MAX_CHUNKS chunks).
 * No allocation, no clock of its own: the caller passes `now` in its own ticks.
 */
#ifndef SER_REASSEMBLY_H
#define SER_REASSEMBLY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef SER_RA_POOL_BYTES
#define SER_RA_POOL_BYTES 6144 /* items waiting behind holes */
#endif
#ifndef SER_RA_MAX_CHUNKS
#define SER_RA_MAX_CHUNKS 24 /* chunks waiting behind holes */
#endif
#define SER_RA_MAX_HOLES (SER_RA_MAX_CHUNKS + 1)
#define SER_RA_MAX_RANGES 8 /* per RESEND request (protocol limit) */

/* What ser_ra_push / ser_ra_poll / ser_ra_flush release, in stream order, through the emit callback:
 * DATA n items (at `items`, valid during the call), FILL n lost items given up (items NULL),
 * RESET: the stream restarts at position `pos` (n = 0). */
enum { SER_RA_DATA = 0, SER_RA_FILL = 1, SER_RA_RESET = 2 };
typedef void (*ser_ra_emit_fn)(void *ctx, int kind, const uint8_t *items, uint32_t n, int64_t pos);

typedef struct {
    int64_t pos;
    uint32_t n;   /* items */
    uint32_t at;  /* byte offset in the pool (chunks are stored in position order, packed) */
} ser_ra_chunk_t;

typedef struct {
    int64_t start, end;
    uint64_t seen;          /* when this loss was first noticed (kept across partial fills) */
    uint64_t next_request;  /* when to ask for it (again) */
} ser_ra_hole_t;

typedef struct {
    uint32_t stale, recovered_items, fills, filled_items, resets, resend_requests, resend_ranges;
} ser_ra_counters_t;

typedef struct {
    uint32_t start;         /* wire offset of position 0 */
    uint32_t item_size;     /* bytes per item */
    int resend;             /* ask for holes (revision-2 host) instead of filling them at once */
    uint64_t hold, retry;   /* ticks */
    int64_t max_gap;        /* items */
    int64_t next;           /* position of the next item to release */
    int64_t known_end;      /* furthest position any chunk or SYNC has announced */
    uint64_t now;           /* latest clock reading passed in */
    uint32_t n_chunks, used;
    ser_ra_chunk_t chunks[SER_RA_MAX_CHUNKS];
    uint32_t n_holes;
    ser_ra_hole_t holes[SER_RA_MAX_HOLES];
    ser_ra_counters_t c;
    ser_ra_emit_fn emit;
    void *ctx;
    uint8_t pool[SER_RA_POOL_BYTES];
} ser_ra_t;

/* Start a session's stream at wire offset start_offset. */
void ser_ra_init(ser_ra_t *r, uint32_t start_offset, uint32_t item_size, int resend, uint64_t hold,
                 uint64_t retry, int64_t max_gap, ser_ra_emit_fn emit, void *ctx);
/* Unwrapped position of wire `offset` (the one nearest the expected position), and back. */
int64_t ser_ra_position(const ser_ra_t *r, uint32_t offset);
uint32_t ser_ra_offset_of(const ser_ra_t *r, int64_t pos);
/* One chunk of n items (n = 0: SYNC) at wire offset `offset`. */
void ser_ra_push(ser_ra_t *r, uint32_t offset, const uint8_t *items, uint32_t n, uint64_t now);
/* Give up holes older than hold; fill first[]/count[] with up to SER_RA_MAX_RANGES wire ranges to
 * ask for now (oldest first); returns how many. */
unsigned ser_ra_poll(ser_ra_t *r, uint64_t now, uint32_t *first, uint32_t *count);
/* End of input: give up every hole, release everything buffered. */
void ser_ra_flush(ser_ra_t *r);
/* Items waiting behind holes. */
uint32_t ser_ra_buffered(const ser_ra_t *r);
size_t ser_ra_size(void);

#ifdef __cplusplus
}
#endif

#endif /* SER_REASSEMBLY_H */
