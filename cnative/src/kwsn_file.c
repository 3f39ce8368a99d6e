/* File helpers: read a model file into one malloc'd block and prepare it. Kept out of the
 * inference path (and out of MCU builds, which use the generated C header instead). */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

#include "kwsn_frontend.h"
#include "kwsnet.h"

/* The file loader loads any model, a log-mel one too, so it links the front end: the runtime
 * core (kwsn_model.c) refers to kwsn_frontend_* weakly, so that an MCU build of a raw-audio
 * model may leave src/kwsn_frontend.c out, and a weak reference alone does not pull an
 * archive member (libkwsnet.a) into a program. */
void (*const kwsn_frontend_linked)(const kwsn_frontend *, const float *, uint32_t, float *,
                                   float *) = kwsn_frontend_run;

/* Cap on what we will read; any real model is far smaller. */
#define KWSN_MAX_FILE_BYTES ((size_t)1 << 30)

struct kwsn_loaded {
    kwsn_model *model; /* in storage */
    void *storage;     /* kwsn_model_bytes(KWSN_MAX_LAYERS), malloc-aligned */
    void *buf;         /* the file bytes: weights point into it */
    void *tables;      /* kwsn_tables_bytes + alignment (kwsn_model_set_tables), or NULL */
};

kwsn_status kwsn_load_file(const char *path, kwsn_loaded **out) {
    return kwsn_load_file_ex(path, NULL, out);
}

kwsn_status kwsn_load_file_ex(const char *path, const kwsn_limits *limits, kwsn_loaded **out) {
    return kwsn_load_file_why(path, limits, out, NULL, 0u);
}

/* "layer i (Type): check", "layer i (Type)", "check" or "" into why (kwsn_parse_error). */
static void describe(const void *storage, size_t storage_bytes, char *why, size_t why_len) {
    uint32_t layer, type;
    const char *check = kwsn_parse_error(storage, storage_bytes, &layer, &type);
    if (layer != UINT32_MAX && check)
        snprintf(why, why_len, "layer %u (%s): %s", (unsigned)layer, kwsn_layer_name(type), check);
    else if (layer != UINT32_MAX)
        snprintf(why, why_len, "layer %u (%s)", (unsigned)layer, kwsn_layer_name(type));
    else
        snprintf(why, why_len, "%s", check ? check : "");
}

kwsn_status kwsn_load_file_why(const char *path, const kwsn_limits *limits, kwsn_loaded **out,
                               char *why, size_t why_len) {
    if (why && why_len) why[0] = '\0';
    if (!path || !out) return KWSN_ERR_ARG;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return KWSN_ERR_IO;
    kwsn_status st = KWSN_ERR_IO;
    kwsn_loaded *lm = NULL;
    long size = -1;
    /* A directory opens on Linux and ftell reports LONG_MAX: read one byte first, so it is an
     * I/O error rather than "too big". */
    if (fgetc(f) == EOF && ferror(f)) goto done;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) goto done;
    if ((size_t)size > KWSN_MAX_FILE_BYTES) {
        st = KWSN_ERR_TOO_BIG;
        goto done;
    }
    lm = (kwsn_loaded *)calloc(1, sizeof(*lm));
    /* malloc's alignment satisfies the parser's 4-byte rule */
    if (lm) lm->buf = malloc(size > 0 ? (size_t)size : 1u);
    if (lm) lm->storage = malloc(kwsn_model_bytes(KWSN_MAX_LAYERS));
    if (!lm || !lm->buf || !lm->storage) {
        st = KWSN_ERR_NOMEM;
        goto done;
    }
    if (fread(lm->buf, 1, (size_t)size, f) != (size_t)size) {
        st = KWSN_ERR_IO;
        goto done;
    }
    st = kwsn_model_parse(lm->buf, (size_t)size, lm->storage, kwsn_model_bytes(KWSN_MAX_LAYERS),
                          limits, &lm->model);
    if (st != KWSN_OK && why && why_len)
        describe(lm->storage, kwsn_model_bytes(KWSN_MAX_LAYERS), why, why_len);
    if (st == KWSN_OK) { /* the packed weights and front-end tables, built once */
        const size_t tb = kwsn_tables_bytes(lm->model);
        if (tb) {
            lm->tables = malloc(tb + KWSN_ARENA_ALIGN);
            if (!lm->tables) {
                st = KWSN_ERR_NOMEM;
                goto done;
            }
            const uintptr_t a = ((uintptr_t)lm->tables + KWSN_ARENA_ALIGN - 1u) &
                                ~(uintptr_t)(KWSN_ARENA_ALIGN - 1u);
            st = kwsn_model_set_tables(lm->model, (void *)a, tb);
        }
    }
done:
    fclose(f);
    if (st == KWSN_OK) {
        *out = lm;
    } else {
        kwsn_free(lm);
    }
    return st;
}

const kwsn_model *kwsn_loaded_model(const kwsn_loaded *lm) { return lm ? lm->model : NULL; }

void kwsn_free(kwsn_loaded *lm) {
    if (!lm) return;
    free(lm->buf);
    free(lm->storage);
    free(lm->tables);
    free(lm);
}
