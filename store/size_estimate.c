/*
 * size_estimate.c — see size_estimate.h.
 */
#include "size_estimate.h"

#include "backend.h"

int ms_mailbox_size_estimate(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes,
                             bool *estimated)
{
    *estimated = st->be->admin->mailbox_size_estimate != NULL;
    if (*estimated)
        return st->be->admin->mailbox_size_estimate(st, id, messages, bytes);
    return ms_mailbox_size(st, id, messages, bytes);
}
