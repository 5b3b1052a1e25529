/* mimedump: print a stable, line-oriented summary of MIME messages so that
 * tests can compare what mailfs exposes against an independent parser
 * (GMime) without caring about header order, boundaries or transfer
 * encodings.  Output per file (tab-separated):
 *   subject\t<decoded subject>
 *   embedded\t<subject>            (a message/rfc822 part; walked into)
 *   part\t<sha256>\t<size>\t<type/subtype>\t<filename or ->
 *   body\t<type/subtype>\t<size>   (leaf that is neither attachment nor named)
 *   inner-part, inner-body          (the same, inside an embedded message)
 * Sizes and hashes are of the decoded content. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include <gmime/gmime.h>
#include <nettle/sha2.h>

/* Header values may legally contain tabs or (after bad decoding) newlines;
 * flatten them so every record stays on one line with a fixed field count. */
static void print_field(const char *s)
{
    for (; s && *s; s++)
        putchar(*s == '\t' || *s == '\r' || *s == '\n' ? ' ' : *s);
}

/* Lower-cased so that "Text/PLAIN" and "text/plain" compare equal. */
static char *mime_type(GMimeObject *obj)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    char *t = g_strdup_printf("%s/%s", ct ? g_mime_content_type_get_media_type(ct) : "text",
                              ct ? g_mime_content_type_get_media_subtype(ct) : "plain");
    char *lower = g_ascii_strdown(t, -1);
    g_free(t);
    return lower;
}

/* Writing the data wrapper to a stream undoes the Content-Transfer-Encoding
 * (base64, quoted-printable, uuencode) but not the charset, so the bytes are
 * what a client saving the attachment would get. */
static GByteArray *decoded(GMimePart *part, GMimeStream **keep)
{
    GMimeDataWrapper *dw = g_mime_part_get_content(part);
    *keep = g_mime_stream_mem_new();
    if (dw)
        g_mime_data_wrapper_write_to_stream(dw, *keep);
    return g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(*keep));
}

/* depth > 0: inside an embedded message, printed as "inner-part" and
 * "inner-body" so a comparison can tell them from the top message's. */
static void print_leaf(GMimePart *part, int depth)
{
    GMimeStream *mem;
    GByteArray *data = decoded(part, &mem);
    char *type = mime_type(GMIME_OBJECT(part));
    const char *name = g_mime_part_get_filename(part);

    if (g_mime_part_is_attachment(part) || name) {
        struct sha256_ctx ctx;
        uint8_t digest[SHA256_DIGEST_SIZE];
        sha256_init(&ctx);
        sha256_update(&ctx, data->len, data->data);
        sha256_digest(&ctx, sizeof digest, digest);
        fputs(depth ? "inner-part\t" : "part\t", stdout);
        for (size_t i = 0; i < sizeof digest; i++)
            printf("%02x", digest[i]);
        printf("\t%u\t%s\t", data->len, type);
        if (name && *name)
            print_field(name);
        else
            putchar('-');
        putchar('\n');
    } else {
        /* Inline non-text leaves without a name (rare) land here too, so
         * nothing in the message is silently skipped. */
        printf("%sbody\t%s\t%u\n", depth ? "inner-" : "", type, data->len);
    }
    g_free(type);
    g_object_unref(mem);
}

/* Own recursion instead of g_mime_message_foreach: the latter does not
 * descend into message/rfc822 parts, and we need those attachments too. */
static void walk(GMimeObject *obj, int depth)
{
    if (!obj)
        return;
    if (GMIME_IS_MESSAGE_PART(obj)) {
        GMimeMessage *msg = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
        fputs("embedded\t", stdout);
        if (msg)
            print_field(g_mime_message_get_subject(msg));
        putchar('\n');
        if (msg)
            walk(g_mime_message_get_mime_part(msg), depth + 1);
    } else if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        for (int i = 0; i < g_mime_multipart_get_count(mp); i++)
            walk(g_mime_multipart_get_part(mp, i), depth);
    } else if (GMIME_IS_PART(obj)) {
        print_leaf(GMIME_PART(obj), depth);
    }
}

static int dump(const char *path)
{
    GError *err = NULL;
    GMimeStream *stream = g_mime_stream_fs_open(path, O_RDONLY, 0, &err);
    if (!stream) {
        fprintf(stderr, "%s: not parseable (%s)\n", path, err ? err->message : "open failed");
        g_clear_error(&err);
        return -1;
    }
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    g_object_unref(stream);
    if (!msg) {
        fprintf(stderr, "%s: not parseable\n", path);
        return -1;
    }
    fputs("subject\t", stdout);
    print_field(g_mime_message_get_subject(msg));
    putchar('\n');
    walk(g_mime_message_get_mime_part(msg), 0);
    g_object_unref(msg);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE...\n", argv[0]);
        return 2;
    }
    g_mime_init();
    /* Keep going after a bad file so one run reports every failure. */
    for (int i = 1; i < argc; i++)
        if (dump(argv[i]) < 0)
            rc = 1;
    g_mime_shutdown();
    return rc;
}
