/*
 * hidden.c — the names of hidden move mailboxes, made and recognised in
 * one place (mailstore.h, "mailbox administration").
 *
 * A move's incoming copy in its target store is "~mailfs~move~<id>~<name>",
 * the retained source copy "~mailfs~retained~<id>~<name>".  No '/', so a
 * backend whose mailboxes are directories (Maildir) or IMAP names can
 * hold them; the prefix "~mailfs~" is refused for visible mailboxes, so
 * no visible name is ever one.  Stores written before use
 * "move/<id>/<name>" and "retained/<id>/<name>", which are still found
 * and parsed: nothing is renamed.
 */
#include "mailstore.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#define HIDDEN_PREFIX "~mailfs~"

/* The word of a hidden state in its names, or NULL for a visible one. */
static const char *state_word(ms_mb_state state)
{
    return state == MS_MB_INCOMING ? "move" : state == MS_MB_RETAINED ? "retained" : NULL;
}

bool ms_hidden_reserved(const char *name) { return g_str_has_prefix(name, HIDDEN_PREFIX); }

char *ms_hidden_name(ms_mb_state state, int64_t move, const char *name)
{
    const char *word = state_word(state);
    g_return_val_if_fail(word && move > 0, NULL);
    return g_strdup_printf(HIDDEN_PREFIX "%s~%lld~%s", word, (long long)move, name);
}

/* The name stores made before hidden names lost their '/'. */
static char *legacy_name(ms_mb_state state, int64_t move, const char *name)
{
    return g_strdup_printf("%s/%lld/%s", state_word(state), (long long)move, name);
}

int ms_hidden_find(ms_store *st, ms_mb_state state, int64_t move, const char *name, int64_t *id)
{
    if (!state_word(state) || move <= 0)
        return -EINVAL;
    g_autofree char *now = ms_hidden_name(state, move, name);
    int rc = ms_mailbox_find(st, now, state, id);
    if (rc != -ENOENT)
        return rc;
    g_autofree char *old = legacy_name(state, move, name);
    return ms_mailbox_find(st, old, state, id);
}

/* Reads "<id><sep><rest>" at p: the id (> 0) and where rest starts. */
static bool parse_id(const char *p, char sep, int64_t *move, const char **rest)
{
    if (*p < '1' || *p > '9')
        return false;
    char *end;
    long long id = strtoll(p, &end, 10);
    if (*end != sep || id <= 0)
        return false;
    *move = id;
    *rest = end + 1;
    return true;
}

bool ms_hidden_parse(const char *hidden, int64_t *move, const char **name)
{
    static const char *const words[] = {"move", "retained"};
    for (size_t i = 0; i < G_N_ELEMENTS(words); i++) {
        size_t n = strlen(words[i]);
        const char *p = hidden;
        char sep;
        if (g_str_has_prefix(p, HIDDEN_PREFIX) &&
            !strncmp(p + strlen(HIDDEN_PREFIX), words[i], n) &&
            p[strlen(HIDDEN_PREFIX) + n] == '~') {
            p += strlen(HIDDEN_PREFIX) + n + 1;
            sep = '~';
        } else if (!strncmp(p, words[i], n) && p[n] == '/') {
            p += n + 1;
            sep = '/';
        } else {
            continue;
        }
        int64_t id;
        const char *rest;
        if (parse_id(p, sep, &id, &rest) && *rest) {
            *move = id;
            *name = rest;
            return true;
        }
    }
    return false;
}
