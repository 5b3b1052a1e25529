/*
 * pst_int.h — internals shared by the pst backend (pst.c) and the item
 * renderer (pst_render.c).  Not part of the public API.
 */
#ifndef MAILFS_PST_INT_H
#define MAILFS_PST_INT_H

#include "pst_proto.h"

#include <libpst/libpst.h>

#include <glib.h>
#include <stdint.h>
#include <stdio.h>

/* The class of a parsed item.  readpst exports only mail, contacts,
 * appointments and journal entries; mailfs also shows posts, sticky
 * notes, tasks and distribution lists (tests/pst compares the rest). */
pr_class pr_classify(const pst_item *item);
/* The item's date in ns since the epoch: delivery, else sent, else last
 * modified, else created; 0 when it has none. */
int64_t pr_item_time_ns(const pst_item *item);
/* "\Seen" and "\Draft" from the item's message flags ("" for none). */
const char *pr_item_flags(const pst_item *item);

/* Where streamed bytes go, in order: the helper's PP_DATA records. */
typedef void (*pr_emit_fn)(void *ctx, const void *buf, size_t len);

/*
 * A FILE that base64-encodes what is written to it as GMime does (76
 * characters a line, each line and the last one ended by "\n") and hands
 * the text to emit in pieces of at most 64 KiB: an attachment goes
 * through it from libpst (pst_attach_to_file) block by block, never whole
 * in memory.  fclose flushes it; then *written holds the bytes written
 * in.  NULL (errno) when it cannot be made.
 */
FILE *pr_base64_open(pr_emit_fn emit, void *ctx, uint64_t *written);
/* How many bytes pr_base64_open emits for n bytes written in (n > 0). */
uint64_t pr_base64_len(uint64_t n);

/* An attachment left out of a rendering, to be streamed where it goes. */
typedef struct pr_stream {
    size_t at; /* offset in the rendered bytes where its base64 text goes */
    pst_item_attach *attach;
    uint64_t raw; /* its size before encoding */
} pr_stream;

/* Which attachments a rendering leaves to be streamed. */
typedef struct pr_streaming {
    uint64_t min;  /* attachments of at least this many bytes (> 0) */
    GArray *parts; /* pr_stream, in order of at; filled by pr_render */
} pr_streaming;

/* Streams attachment a of a rendered item (one of pr_streaming's parts)
 * to emit: 0, or -EIO when libpst gave other than raw bytes. */
int pr_stream_attachment(pst_file *pf, const pr_stream *s, pr_emit_fn emit, void *ctx);

/*
 * Renders a parsed item of class c to bytes appended to out.  salt makes
 * generated identifiers (MIME boundaries, Message-ID, UID) unique and
 * stable: the same item always renders to the same bytes.  With st, the
 * message's own attachments of st->min bytes or more (stored apart in
 * the file) are not in out but listed in st->parts, each to be streamed
 * at its offset (pr_stream_attachment): the item is out with every part's
 * base64 text inserted, byte for byte what rendering without st gives.
 * Returns 0, or -EIO with *why (g_free) when the item cannot be rendered
 * at all; parts that cannot be read (a damaged attachment) are logged
 * and left out.
 */
int pr_render(pst_file *pf, pst_item *item, pr_class c, const char *salt, GByteArray *out,
              pr_streaming *st, char **why);

#endif
