/*
 * errors.c — what the errnos of moves and administrative commands mean.
 *
 * The store library returns errnos; an admin needs to know what to do.
 * The CLI, the daemon's log and the journal's error column all take the
 * words from this one table, so the same failure reads the same
 * everywhere and a new text is added in one place.
 */
#include "mailstore.h"

#include <errno.h>
#include <string.h>

#include <glib.h>

typedef struct meaning {
    ms_op op;
    int err; /* positive errno */
    const char *text;
} meaning;

static const meaning meanings[] = {
    {MS_OP_MOVE, EEXIST, "a mailbox of that name exists in the target store"},
    {MS_OP_MOVE, ENOTEMPTY, "a mailbox of that name exists in the target store"},
    {MS_OP_MOVE, EBUSY, "the mailbox is being moved already"},
    {MS_OP_MOVE, EROFS, "a store is read-only"},
    {MS_OP_MOVE, ENOSPC, "not enough free space in the target (a move needs twice the mailbox)"},
    {MS_OP_MOVE, EINTR, "interrupted; rolled back"},
    /* Refused by the directory, or failed and rolled back: the words of
     * what happened were logged where it happened. */
    {MS_OP_MOVE, EIO, "not moved; the mailbox is as it was (the log above says why)"},
    {MS_OP_MOVE, EINPROGRESS,
     "committed, but it could not finish: 'mailfsctl recover' finishes it (see the log)"},
    {MS_OP_MOVE, EINVAL, "source and target are the same store"},
    {MS_OP_MOVE, ESTALE,
     "not moved: another process (recovery) took the move over while it ran; the journal "
     "says how it was settled (mailfsctl moves)"},
    {MS_OP_MOVE, EAGAIN,
     "the source mailbox changed behind mailfs during the move (a delivery by the mail "
     "server?); rolled back, the mailbox is as it was: retry the move"},
    {MS_OP_UNDO, ESTALE,
     "the retained source copy is gone (retention over or purged); move the mailbox back "
     "with 'mailfsctl move' instead"},
    {MS_OP_UNDO, EINVAL, "only a finished move can be undone"},
    {MS_OP_UNDO, EEXIST, "a mailbox of that name exists in the source store"},
    {MS_OP_UNDO, ENOENT, "the mailbox is no longer in the target store"},
    {MS_OP_RESTORE, EEXIST,
     "refused: a name it needs is taken (see above); nothing was restored or overwritten"},
    {MS_OP_RESTORE, ENOENT, "nothing deleted of that name is kept"},
    {MS_OP_RESTORE, EBUSY, "the mailbox is being moved; restore once the move is done"},
    {MS_OP_RESTORE, ENOTSUP, "the store keeps no deleted items"},
    {MS_OP_RESTORE, EROFS, "the store is read-only"},
    {MS_OP_COMPACT, EBUSY, "the store stayed locked by another process; try again"},
    {MS_OP_COMPACT, EROFS, "the store is read-only"},
    {MS_OP_COMPACT, ENOTSUP,
     "nothing to compact: a maildir store gives space back as each message is deleted"},
    {MS_OP_CREATE, EEXIST, "a mailbox of that name exists"},
};

/* An import and an undo are moves: what they do not say otherwise, a
 * move's words say. */
static ms_op fallback(ms_op op)
{
    return op == MS_OP_IMPORT || op == MS_OP_UNDO ? MS_OP_MOVE : MS_OP_ANY;
}

const char *ms_strerror(ms_op op, int rc)
{
    int e = rc < 0 ? -rc : rc;
    for (ms_op o = op;; o = fallback(o)) {
        for (size_t i = 0; i < G_N_ELEMENTS(meanings); i++)
            if (meanings[i].op == o && meanings[i].err == e)
                return meanings[i].text;
        if (o == MS_OP_ANY)
            break;
    }
    return g_strerror(e);
}
