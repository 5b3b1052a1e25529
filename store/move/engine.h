/*
 * engine.h — what the move engine's files share (not part of the public
 * API): move.c (copy primitives, verification, the commit point's two
 * ends, recovery, undo) and online.c (the passes and the online move of
 * DESIGN 10).
 */
#ifndef MAILFS_ENGINE_H
#define MAILFS_ENGINE_H

#include "journal.h"

#include <glib.h>

/* Space asked for beyond twice the mailbox: the stores' own overhead. */
#define SPACE_MARGIN (16 * 1024 * 1024)
#define PAGE 512 /* children listed and copied per round */
/* One target transaction per this many messages or bytes, whichever first. */
#define BATCH_MESSAGES 256
#define BATCH_BYTES (16 * 1024 * 1024)

typedef struct mover {
    ms_journal *j;
    ms_store *src, *dst;
    int64_t id;
    const ms_move_opts *opts;
    bool resume; /* an interrupted import goes on: what is there stays */
    int64_t messages, bytes;
    int64_t last_report_ns;
    char *error;        /* what went wrong, for the journal and the log */
    bool journal_error; /* ... and it was the journal that failed */
    /* The source mailbox's stamp taken once it was locked; stamped false
     * when its backend has none (nothing writes behind its lock). */
    bool stamped;
    uint8_t stamp[MS_STAMP_LEN];
    /* The final passes: each comparison keeps the stamp it read, which
     * is then the next pass's starting point (one stamp per pass). */
    bool restamp;
    /* Shared bytes: after the first -EXDEV the stores cannot share any
     * (another backend or filesystem), and messages are copied.  A
     * target batch is open between consecutive links only (in_batch),
     * holding batch_messages linked messages of batch_bytes. */
    /* The source keeps IMAP UIDs (not a .pst file): a message listed
     * without one is not numbered yet, and waits for the next pass. */
    bool uids;
    /* Online moves: folders found equal to the source (online.c). */
    GHashTable *synced;
    bool no_link;
    bool in_batch;
    int64_t batch_messages, batch_bytes;
    /* The bytes the free-space check of the preflight covered when they
     * were an estimate (0: exact, nothing to check again): see
     * mv_check_space. */
    int64_t space_promised;
} mover;

typedef struct child {
    char *name;
    ms_attr attr;
    uint64_t cookie;
} child;

/* A child of a listing (ms_list), owned by its array. */
void mv_child_clear(gpointer p);
/* The next page of children of parent after *cookie; empty at the end. */
int mv_next_page(ms_store *st, ms_node parent, uint64_t *cookie, GArray *page);
/* Progress into the journal, at most every 250 ms unless forced. */
int mv_report(mover *mv, bool force);
/* True once the caller asked the move to stop (opts->cancelled). */
bool mv_cancelled(mover *mv);
/* A failed journal write (rc) as the move's EIO, said once; 0 passes. */
int mv_journal_failed(mover *mv, int rc);
int mv_open_batch(mover *mv);
/* Records a new move of mailbox from src into dst as newname (or, with
 * adopt, makes this process the owner of that recorded move again), and
 * reads it back into *mi; *id_out (may be NULL) gets its id. */
int mv_record(ms_journal *j, int64_t adopt, ms_store *src, ms_store *dst, const char *mailbox,
              const char *newname, int64_t messages, int64_t bytes, int64_t *id_out,
              ms_move_info *mi);
/* Ends the open target batch, committing it if commit. */
int mv_close_batch(mover *mv, bool commit);
/* Commits the prepared writers in one target transaction; frees them. */
int mv_commit_prepared(mover *mv, GPtrArray *ready);
/* A writer holding source message m for dfolder (0), or 1 when none is
 * needed (linked, or there from a resumed import); an errno. */
int mv_prepare_message(mover *mv, const child *m, ms_node dfolder, GPtrArray *ready,
                       ms_writer **out);
int mv_set_times_and_owner(ms_store *st, ms_node n, const ms_attr *like);
bool mv_same_flags(const char *a, const char *b);
/* Source message c against its copy in dparent (UID too with uids);
 * -EIO with mv->error set when they differ. */
int mv_verify_message(mover *mv, const child *c, ms_node dparent, bool uids);
/* The source mailbox's stamp (ms_mailbox_stamp) taken now, and compared. */
int mv_take_stamp(mover *mv, int64_t mailbox);
int mv_source_changed(mover *mv, int64_t mailbox);
int mv_changed_behind(mover *mv);
int mv_check_unchanged(mover *mv, int64_t mailbox);
/* DESIGN 4's step 4: the entry's values saved, the target's written. */
int mv_directory_step(ms_journal *j, mover *mv, ms_directory *dir, const char *mailbox);
/* With estimated, an import's totals may be the source's estimate
 * (ms_mailbox_size_estimate: *estimated true), not rendered first. */
int mv_preflight(ms_store *src, ms_store *dst, const char *mailbox, const char *newname,
                 bool import, ms_attr *mb, int64_t *messages, int64_t *bytes, bool *estimated);
/* Stored bytes (mv->bytes + adding) past space_promised: room for twice
 * as much again, or -ENOSPC with mv->error. */
int mv_check_space(mover *mv, int64_t adding);
int mv_preflight_directory(ms_directory *dir, ms_store *dst, const char *mailbox);
/* The journal still the file opened, the source unchanged since the
 * last look, then the commit point, durably; else the reason in
 * mv->error (or the errno). */
int mv_commit_point(ms_journal *j, mover *mv, int64_t mailbox);
/* A move that fails before its commit point: said once in the log and
 * the journal, rolled back; returns rc. */
int mv_fail(ms_journal *j, mover *mv, ms_store *src, ms_store *dst, ms_directory *dir,
            const ms_move_info *mi, int rc);
/* Before the commit point: back (idempotent); after it: forward. */
int mv_roll_back(ms_journal *j, ms_store *src, ms_store *dst, ms_directory *dir,
                 const ms_move_info *mi, const char *why);
int mv_roll_forward(ms_journal *j, ms_store *src, ms_store *dst, ms_directory *dir,
                    const ms_move_info *mi, int retain_days, int64_t locked_at);
void mv_hand_to_recovery(ms_journal *j, int64_t id);
/* Lifts the cutover's hold on the user of move id, if one is recorded. */
int mv_release_user(ms_journal *j, ms_directory *dir, int64_t id);
/*
 * Carries the messages below folder from of src (changed at or after
 * since; 0: all) into folder to of dst, folders made as needed: each
 * copied durably with a new UID there, then removed from src unless keep.
 * With keep, a message whose name dst already holds is left; without,
 * one dst holds with the same bytes (SHA-256) was carried before a crash
 * and is only removed, and another of that name is carried under the name
 * NAME.carried-TIME.  *carried counts them.
 */
int mv_carry_folder(ms_store *src, ms_node from, ms_store *dst, ms_node to, uint64_t since,
                    bool keep, int64_t *carried);
/* The online move of DESIGN 10 (online.c). */
int mv_online_move(ms_journal *j, ms_store *src, ms_store *dst, const char *mailbox,
                   const ms_move_opts *opts, int64_t *id_out);

#endif
