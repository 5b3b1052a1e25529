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

/* The class of a parsed item.  readpst exports only mail, contacts,
 * appointments and journal entries; mailfs also shows posts, sticky
 * notes, tasks and distribution lists (tests/pst compares the rest). */
pr_class pr_classify(const pst_item *item);
/* The item's date in ns since the epoch: delivery, else sent, else last
 * modified, else created; 0 when it has none. */
int64_t pr_item_time_ns(const pst_item *item);
/* "\Seen" and "\Draft" from the item's message flags ("" for none). */
const char *pr_item_flags(const pst_item *item);

/*
 * Renders a parsed item of class c to bytes appended to out.  salt makes
 * generated identifiers (MIME boundaries, Message-ID, UID) unique and
 * stable: the same item always renders to the same bytes.  Returns 0, or
 * -EIO with *why (g_free) when the item cannot be rendered at all; parts
 * that cannot be read (a damaged attachment) are logged and left out.
 */
int pr_render(pst_file *pf, pst_item *item, pr_class c, const char *salt, GByteArray *out,
              char **why);

#endif
