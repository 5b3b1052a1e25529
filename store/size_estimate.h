/*
 * size_estimate.h — a mailbox's size, estimated when exact totals would
 * cost reading it all (internal to store/, not part of the public API).
 */
#ifndef MAILFS_SIZE_ESTIMATE_H
#define MAILFS_SIZE_ESTIMATE_H

#include "mailstore.h"

#include <stdbool.h>

/*
 * The messages and bytes of mailbox id of st: the backend's estimate when
 * it has one (a PST file, whose exact size is known only once every item
 * is rendered), *estimated true; else ms_mailbox_size's exact totals,
 * *estimated false.  An estimate's bytes are meant to be above the real
 * size but are not a bound: a caller that promises space from them checks
 * again once the real bytes pass them.
 */
int ms_mailbox_size_estimate(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes,
                             bool *estimated);

#endif
