/*
 * journal.h — the move journal's internals, shared by journal.c and
 * move.c (not part of the public API).
 */
#ifndef MAILFS_JOURNAL_H
#define MAILFS_JOURNAL_H

#include "mailstore.h"

#include <glib.h>

/*
 * Every write here returns 0 or a negative errno (-ENOSPC: disk full;
 * -EIO: anything else, logged with SQLite's words): callers decide what a
 * failed record means for the move, and never ignore it.
 */
/* Records a new move (state running, step recorded), durably. */
int jn_create(ms_journal *j, const char *mailbox, const char *newname, const char *source,
              const char *target, int64_t total_messages, int64_t total_bytes, int64_t *id);
/* Sets the step; durable when the step is a commit point. */
int jn_step(ms_journal *j, int64_t id, ms_move_step step, bool durable);
int jn_progress(ms_journal *j, int64_t id, int64_t messages, int64_t bytes);
/* The move's real totals, once known (they were an estimate). */
int jn_set_totals(ms_journal *j, int64_t id, int64_t messages, int64_t bytes);
/* Durable for the commit point and the final states; never UNKNOWN. */
int jn_set_state(ms_journal *j, int64_t id, ms_move_state state, const char *error);
/*
 * jn_set_state for the owner's own steps (the commit point, a prepared
 * move's cutover): only while the move is in state from and still owned
 * by this process; else -ESTALE and nothing is written: another process
 * (recovery, which found the owner dead; or an adopter) took the move.
 */
int jn_transition(ms_journal *j, int64_t id, ms_move_state from, ms_move_state to,
                  const char *error);
/* Records when the source mailbox was locked (for mailfsctl moves). */
int jn_locked(ms_journal *j, int64_t id, int64_t at_ns);
int jn_set_target_id(ms_journal *j, int64_t id, int64_t target_mailbox);
int jn_set_times(ms_journal *j, int64_t id, int64_t lock_ns, int64_t retain_until);
/* The move's target mailbox id (0 if none yet). */
int jn_target_id(ms_journal *j, int64_t id, int64_t *target_mailbox);
/* Ids of moves in state (running/committed) whose process is gone. */
int jn_orphans(ms_journal *j, GArray *ids);
/* False only when move id's owner is certainly gone (no process of its
 * pid, or one started at another time; or handed to recovery): a
 * journal that cannot be read, or an owner /proc hides (hidepid, another
 * user), counts as alive, and recovery asks again later. */
bool jn_owner_alive(ms_journal *j, int64_t id);
/* An interrupted import of source into target as newname that no live
 * process owns (state running, before its commit point): -ENOENT if none. */
int jn_find_resumable(ms_journal *j, const char *source, const char *target, const char *newname,
                      int64_t *id);
/* The newest prepared move of source's mailbox into target as newname
 * (DESIGN 10): -ENOENT if none. */
int jn_find_prepared(ms_journal *j, const char *source, const char *mailbox, const char *target,
                     const char *newname, int64_t *id);
/* A move of source's mailbox that is not over (running, prepared or
 * committed), whatever its target: -ENOENT if none. */
int jn_find_active(ms_journal *j, const char *source, const char *mailbox, int64_t *id);
/* Records pass number pass of move id (phase "bulk", "delta", "final"). */
int jn_pass(ms_journal *j, int64_t id, int pass, const char *phase, const ms_move_pass *p);
/* The cutover's hold on the user (the directory's lock values spec on
 * entry dn): saved durably before the entry is changed, dropped once the
 * hold is lifted; get: -ENOENT when none is recorded. */
int jn_hold_save(ms_journal *j, int64_t id, const char *dn, const char *spec);
int jn_hold_get(ms_journal *j, int64_t id, char **dn, char **spec);
int jn_hold_drop(ms_journal *j, int64_t id);
/* Appends to ids every move with a recorded hold. */
int jn_holds(ms_journal *j, GArray *ids);
/* Makes this process the owner of move id again, durably, its error
 * cleared: only from an owner certainly gone (or this process); else
 * -ESTALE (another process owns it, or took it first). */
int jn_adopt(ms_journal *j, int64_t id);
/* As jn_adopt for recovery: only while the move is still in state, its
 * error kept.  -ESTALE: its owner lives or wrote it meanwhile (say, its
 * commit point), or another recovery claimed it first: leave it. */
int jn_claim(ms_journal *j, int64_t id, ms_move_state state);
/* Hands move id over to recovery, even while this process lives. */
int jn_disown(ms_journal *j, int64_t id);
/* Step 4's record: the entry, its values before, and the target's (durable). */
int jn_dir_save(ms_journal *j, int64_t id, const char *dn, const char *saved, const char *target);
/* -ENOENT when the move never reached step 4. */
int jn_dir_get(ms_journal *j, int64_t id, char **dn, char **saved, char **target);
/* Enters, durably enough, a finished move whose own journal is gone (its
 * retained copy found in a store), so that moves, undo and purge see it. */
int jn_record_done(ms_journal *j, const char *mailbox, const char *newname, const char *source,
                   const char *target, int64_t retain_until, const char *why, int64_t *id);
/* ms_orphans, also counting in *settled the moves it settled. */
int mv_orphans(ms_journal *j, ms_store *const *stores, size_t n, ms_directory *dir, int retain_days,
               bool fix, GPtrArray *findings, int *settled);

#endif
