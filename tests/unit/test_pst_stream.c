/*
 * test_pst_stream.c — the PST helper's streamed attachments
 * (store/backend/pst/pst_render.c), through the functions mailfs-pst uses.
 *
 *   test_pst_stream [PSTDIR]
 *
 * - pr_base64_open's text is GMime's base64 (the in-memory rendering's),
 *   byte for byte, for every remainder and line position, whatever the
 *   sizes of the writes, and pr_base64_len predicts its length;
 * - 200 MB of attachment written through it in libpst's 8 KiB blocks
 *   come out as GMime would encode them, and the process's peak RSS
 *   stays under 64 MB (no PST with such an attachment can be made here:
 *   libpst and pst-utils only read);
 * - with PSTDIR (the test data), every item of every file rendered with
 *   its stored-apart attachments streamed (pr_streaming, min 1 byte) and
 *   put together as send_item does is the in-memory rendering, byte for
 *   byte, and some attachments were streamed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>
#include <glib.h>
#include <gmime/gmime.h>

#include "pst_int.h"

static const char *pst_dir;

/* ------------------------------------------------------------ sinks */

static void append_emit(void *ctx, const void *buf, size_t len)
{
    g_byte_array_append(ctx, buf, (guint)len);
}

typedef struct hash_sink {
    GChecksum *sum;
    uint64_t len;
    size_t biggest; /* the largest piece handed over */
} hash_sink;

static void hash_emit(void *ctx, const void *buf, size_t len)
{
    hash_sink *h = ctx;
    g_checksum_update(h->sum, buf, (gssize)len);
    h->len += len;
    h->biggest = MAX(h->biggest, len);
}

/* GMime's base64 of in, in pieces as they come (the oracle). */
typedef struct gmime_b64 {
    GMimeEncoding enc;
    char out[64 * 1024];
} gmime_b64;

static void gmime_step(gmime_b64 *g, const void *in, size_t len, pr_emit_fn emit, void *ctx)
{
    for (size_t off = 0; off < len; off += 16 * 1024) { /* the output fits g->out */
        size_t n = g_mime_encoding_step(&g->enc, (const char *)in + off, MIN(len - off, 16 * 1024),
                                        g->out);
        emit(ctx, g->out, n);
    }
}

static void gmime_close(gmime_b64 *g, pr_emit_fn emit, void *ctx)
{
    size_t n = g_mime_encoding_flush(&g->enc, "", 0, g->out);
    emit(ctx, g->out, n);
}

/* Deterministic bytes that are not text (every value occurs). */
static void fill(unsigned char *p, size_t n, uint64_t *state)
{
    for (size_t i = 0; i < n; i++) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        p[i] = (unsigned char)(*state >> 24);
    }
}

/* ---------------------------------------------------------- encoder */

static void test_base64_is_gmimes(void **state)
{
    (void)state;
    static const size_t sizes[] = {1,   2,   3,   4,   56,   57,    58,    113,   114,
                                   115, 171, 172, 999, 4096, 65535, 65536, 200001};
    static const size_t pieces[] = {1, 2, 5, 57, 8192, 1 << 20};
    uint64_t seed = 42;
    for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
        size_t n = sizes[i];
        unsigned char *data = g_malloc(n);
        fill(data, n, &seed);
        GByteArray *want = g_byte_array_new();
        gmime_b64 *g = g_new0(gmime_b64, 1);
        g_mime_encoding_init_encode(&g->enc, GMIME_CONTENT_ENCODING_BASE64);
        gmime_step(g, data, n, append_emit, want);
        gmime_close(g, append_emit, want);
        g_free(g);
        for (size_t k = 0; k < G_N_ELEMENTS(pieces); k++) {
            GByteArray *got = g_byte_array_new();
            uint64_t written = 0;
            FILE *f = pr_base64_open(append_emit, got, &written);
            assert_non_null(f);
            for (size_t off = 0; off < n; off += pieces[k])
                assert_int_equal(fwrite(data + off, 1, MIN(pieces[k], n - off), f),
                                 MIN(pieces[k], n - off));
            assert_int_equal(fclose(f), 0);
            assert_int_equal(written, n);
            assert_int_equal(got->len, want->len);
            assert_memory_equal(got->data, want->data, want->len);
            assert_int_equal(pr_base64_len(n), got->len);
            g_byte_array_free(got, TRUE);
        }
        g_byte_array_free(want, TRUE);
        g_free(data);
    }
}

/* 200 MB through the encoder in libpst's blocks: GMime's text, in pieces
 * of at most 64 KiB, the process under 64 MB at its peak. */
static void test_200mb_attachment(void **state)
{
    (void)state;
    enum { BLOCK = 8176 }; /* a PST data block's payload */
    const uint64_t total = 200ULL * 1024 * 1024;
    hash_sink got = {g_checksum_new(G_CHECKSUM_SHA256), 0, 0};
    hash_sink want = {g_checksum_new(G_CHECKSUM_SHA256), 0, 0};
    gmime_b64 *g = g_new0(gmime_b64, 1);
    g_mime_encoding_init_encode(&g->enc, GMIME_CONTENT_ENCODING_BASE64);
    uint64_t written = 0, seed = 7;
    FILE *f = pr_base64_open(hash_emit, &got, &written);
    assert_non_null(f);
    unsigned char block[BLOCK];
    for (uint64_t off = 0; off < total; off += BLOCK) {
        size_t n = (size_t)MIN((uint64_t)BLOCK, total - off);
        fill(block, n, &seed);
        assert_int_equal(fwrite(block, 1, n, f), n);
        gmime_step(g, block, n, hash_emit, &want);
    }
    assert_int_equal(fclose(f), 0);
    gmime_close(g, hash_emit, &want);
    g_free(g);
    assert_int_equal(written, total);
    assert_int_equal(got.len, pr_base64_len(total));
    assert_int_equal(got.len, want.len);
    assert_string_equal(g_checksum_get_string(got.sum), g_checksum_get_string(want.sum));
    assert_true(got.biggest <= 64 * 1024);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("# 200 MB attachment: %llu bytes of base64, largest piece %zu, peak RSS %ld KB\n",
           (unsigned long long)got.len, got.biggest, ru.ru_maxrss);
    assert_true(ru.ru_maxrss < 64 * 1024);
    g_checksum_free(got.sum);
    g_checksum_free(want.sum);
}

/* ------------------------------------------------ real items, streamed */

typedef struct walk {
    pst_file pf;
    int items, streamed;
} walk;

/* Renders it both ways and compares; streamed parts put in as send_item
 * does. */
static void compare_item(walk *w, pst_item *it)
{
    pr_class cls = pr_classify(it);
    if (cls == PR_SKIP)
        return;
    g_autofree char *salt = g_strdup_printf("t.%llx", (unsigned long long)it->block_id);
    GByteArray *mem = g_byte_array_new(), *bytes = g_byte_array_new();
    char *why = NULL;
    int rc1 = pr_render(&w->pf, it, cls, salt, mem, NULL, &why);
    g_free(why);
    why = NULL;
    pr_streaming st = {1, g_array_new(FALSE, FALSE, sizeof(pr_stream))};
    int rc2 = pr_render(&w->pf, it, cls, salt, bytes, &st, &why);
    g_free(why);
    assert_int_equal(rc1, rc2);
    GByteArray *sent = g_byte_array_new();
    size_t off = 0;
    uint64_t promised = bytes->len;
    for (guint i = 0; i < st.parts->len; i++) {
        const pr_stream *s = &g_array_index(st.parts, pr_stream, i);
        promised += pr_base64_len(s->raw);
        g_byte_array_append(sent, bytes->data + off, (guint)(s->at - off));
        off = s->at;
        assert_int_equal(pr_stream_attachment(&w->pf, s, append_emit, sent), 0);
    }
    g_byte_array_append(sent, bytes->data + off, (guint)(bytes->len - off));
    assert_int_equal(sent->len, promised);
    assert_int_equal(sent->len, mem->len);
    assert_memory_equal(sent->data, mem->data, mem->len);
    w->items++;
    w->streamed += (int)st.parts->len;
    g_array_free(st.parts, TRUE);
    g_byte_array_free(sent, TRUE);
    g_byte_array_free(bytes, TRUE);
    g_byte_array_free(mem, TRUE);
}

static void walk_tree(walk *w, pst_desc_tree *d, int depth)
{
    for (; d && depth < 64; d = d->next) {
        if (d->desc) {
            pst_item *it = pst_parse_item(&w->pf, d, NULL);
            if (it) {
                if (!it->folder)
                    compare_item(w, it);
                pst_freeItem(it);
            }
        }
        if (d->child)
            walk_tree(w, d->child, depth + 1);
    }
}

static void test_streamed_items_equal_rendered(void **state)
{
    (void)state;
    if (!pst_dir)
        skip();
    GDir *dir = g_dir_open(pst_dir, 0, NULL);
    assert_non_null(dir);
    int items = 0, streamed = 0;
    const char *name;
    while ((name = g_dir_read_name(dir))) {
        g_autofree char *path = g_build_filename(pst_dir, name, NULL);
        walk w = {0};
        if (pst_open(&w.pf, path, NULL) < 0)
            continue;
        if (pst_load_index(&w.pf) == 0) {
            pst_load_extended_attributes(&w.pf);
            walk_tree(&w, w.pf.d_head, 0);
        }
        pst_close(&w.pf);
        items += w.items;
        streamed += w.streamed;
    }
    g_dir_close(dir);
    printf("# %d items rendered both ways, %d attachments streamed\n", items, streamed);
    assert_true(items > 200);
    assert_true(streamed > 0);
}

int main(int argc, char **argv)
{
    pst_dir = argc > 1 && *argv[1] ? argv[1] : NULL;
    g_mime_init();
    /* The 200 MB test first: the peak RSS it checks is the process's. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_200mb_attachment),
        cmocka_unit_test(test_base64_is_gmimes),
        cmocka_unit_test(test_streamed_items_equal_rendered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
