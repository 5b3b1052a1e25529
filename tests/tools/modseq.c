/*
 * modseq — prints the change sequences of a store, as a move's delta pass
 * sees them (ms_mailbox_modseq, ms_attr.modseq), for the tests.
 *
 *   modseq CONF STORE floor MAILBOX   the mailbox's floor now
 *   modseq CONF STORE list PATH       "self MODSEQ" for the node at PATH,
 *                                     then "KIND UID MODSEQ NAME" for
 *                                     each child (KIND: m message, f
 *                                     folder, b mailbox)
 *
 * Opens the store read-only, directly (no mount needed).  Exit status 0,
 * or 1 with a message.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <glib.h>

#include "mailstore.h"

static int print_child(void *ctx, const char *name, const ms_attr *a, uint64_t cookie)
{
    (void)ctx, (void)cookie;
    char kind = a->node.kind == MS_MESSAGE ? 'm' : a->node.kind == MS_FOLDER ? 'f' : 'b';
    printf("%c %" PRId64 " %" PRIu64 " %s\n", kind, a->imap_uid, a->modseq, name);
    return 0;
}

/* The command on an opened store: 0 or a negative errno. */
static int run(ms_store *st, const char *cmd, const char *arg)
{
    ms_node n;
    int rc = ms_resolve(st, arg, &n);
    if (rc)
        return rc;
    ms_attr a;
    if ((rc = ms_getattr(st, n, &a)))
        return rc;
    if (!strcmp(cmd, "floor")) {
        uint64_t floor;
        if ((rc = ms_mailbox_modseq(st, a.mailbox, &floor)))
            return rc;
        printf("%" PRIu64 "\n", floor);
        return 0;
    }
    if (strcmp(cmd, "list"))
        return -EINVAL;
    printf("self %" PRIu64 "\n", a.modseq);
    return ms_list(st, n, 0, print_child, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: modseq CONF STORE floor MAILBOX | list PATH\n");
        return 1;
    }
    ms_config *cfg;
    char *err = NULL;
    int rc = ms_config_load(argv[1], &cfg, &err);
    const ms_store_conf *sc = rc ? NULL : ms_config_find_store(cfg, argv[2]);
    if (rc || !sc) {
        fprintf(stderr, "modseq: %s\n", err ? err : "no such store");
        return 1;
    }
    ms_store *st;
    if ((rc = ms_store_open(sc, MS_OPEN_READONLY, &st, &err))) {
        fprintf(stderr, "modseq: %s\n", err ? err : g_strerror(-rc));
        return 1;
    }
    rc = run(st, argv[3], argv[4]);
    if (rc)
        fprintf(stderr, "modseq: %s %s: %s\n", argv[3], argv[4], g_strerror(-rc));
    ms_store_close(st);
    ms_config_free(cfg);
    return rc ? 1 : 0;
}
