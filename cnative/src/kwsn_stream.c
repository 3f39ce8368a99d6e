/* Streaming keyword detection: see include/kwsnet_stream.h for the semantics (those of
 * kwsnet/detect/detector.py). No malloc: everything lives in the caller's storage, whose size
 * is computed with overflow-checked size_t arithmetic (a 32-bit size_t wraps long before a
 * model's shapes reach KWSN_MAX_ELEMS). */
#include "kwsnet_stream.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kwsn_frontend.h"
#include "kwsn_model_stream.h"

/* Weak, as in kwsn_model.c: an MCU build of a raw-audio model may leave kwsn_frontend.c out
 * (kwsn_model_frontend then refuses every model, so none of these is called). */
#if defined(__GNUC__) && !defined(KWSN_FRONTEND_REQUIRED)
#pragma weak kwsn_frontend_frames
#pragma weak kwsn_frontend_scratch_floats
#pragma weak kwsn_frontend_prepare
#pragma weak kwsn_frontend_frames_at
#pragma weak kwsn_frontend_normalize
#endif

#define KWSN_STREAM_MAGIC 0x4b575354u /* "KWST" */
/* Frames computed per kwsn_frontend_frames_at call (a multiple of its 4 vector lanes). */
#define KWSN_STREAM_FRAME_BATCH 8u

/* The frame cache's geometry for a model and config (cache 0: no cache): frames t in
 * [t_lo, t_hi] of a window lie wholly inside it (n_int of them); window k's frame t is frame
 * k * shift + t of the signal. */
typedef struct {
    int cache;
    kwsn_frontend fe;
    uint32_t n_frames, shift, t_lo, t_hi, n_int;
} cache_geo;

/* The incremental path's plan (on 0: the model is not such a chain, or no frame cache). */
#define KWSN_STREAM_MAX_INC 64u
typedef struct {
    int on;
    uint32_t n_chain;             /* layers 1 .. n_chain form the chain */
    kwsn_layer_info li[KWSN_STREAM_MAX_INC]; /* layer i's info at li[i] (i <= n_chain) */
    uint32_t keep[KWSN_STREAM_MAX_INC]; /* conv i: the span of the next conv reading its output
                                         * (0: none): the old columns a window still reads */
    size_t buf_floats;            /* all conv outputs */
    size_t x_floats, y_floats;    /* the slice and result scratch */
} inc_plan;

struct kwsn_stream {
    uint32_t magic;
    const kwsn_model *model;
    size_t window;      /* W: model input floats */
    size_t n_classes;   /* C */
    uint32_t hop, smooth, patience, sample_rate;
    double refractory_s;
    uint64_t total;      /* samples pushed */
    uint64_t next_start; /* first sample of the next window to score */
    uint64_t n_windows;  /* windows scored */
    uint64_t n_nonfinite; /* windows skipped: a non-finite sample or posterior */
    uint64_t last_bad;   /* index of the latest non-finite sample pushed (has_bad) */
    int has_bad;
    int has_last;        /* a detection happened (last_time valid) */
    double last_time;
    int flushed;
    float *ring;      /* 2W: sample i at i % W and i % W + W, so any window is contiguous */
    float *probs;     /* C: logits -> posteriors of the latest window */
    float *hist;      /* smooth x C: window k's posteriors in slot k % smooth */
    uint8_t *hvalid;  /* smooth: slot k % smooth holds window k's posteriors (0: skipped) */
    double *scores;   /* C: smoothed scores of the latest window (NaN: it was skipped) */
    double *thr;      /* C */
    uint32_t *streak; /* C */
    uint8_t *is_kw;   /* C */
    /* the frame cache (geo.cache != 0): signal frame j is kept in frames[] at slot
     * j % geo.n_int until overwritten */
    cache_geo geo;
    uint64_t next_frame; /* first signal frame (interior) not computed yet */
    uint64_t computed;   /* frames computed (counter) */
    float *fscratch;     /* the front end's scratch (kwsn_frontend_prepare'd once) */
    float *frames;       /* n_int x n_out, frame-major */
    float *fbuf;         /* KWSN_STREAM_FRAME_BATCH x n_out: frames just computed */
    float *feats;        /* n_out x n_frames, channel-major: the window's features */
    /* the incremental path (inc.on): layers 1 .. inc.n_chain of the model are valid stride-1
     * Conv1dEx and ReLU records, each reading the previous tensor, the last of them [C, 1];
     * inc_buf[i] is layer i's output for the latest window ([C_out, L_out], a ReLU's in its
     * conv's buffer), of which the columns a later window reads are kept (the next conv's span
     * plus the new ones); each window shifts those and computes only the new columns */
    inc_plan inc;
    uint64_t inc_end;    /* signal frame after the newest feature frame through the chain */
    int inc_have;        /* the buffers hold a window (inc_end valid) */
    float *inc_buf[KWSN_STREAM_MAX_INC];
    float *inc_x;        /* a slice of a layer's input, contiguous rows */
    float *inc_y;        /* a layer's new columns; the head's vectors */
};

kwsn_stream_config kwsn_stream_default_config(void) {
    kwsn_stream_config c;
    memset(&c, 0, sizeof c);
    c.hop_samples = 1600u;
    c.smooth_windows = 3u;
    c.threshold = 0.5;
    c.thresholds = NULL;
    c.patience = 1u;
    c.refractory_ms = 1000.0;
    c.is_keyword = NULL;
    c.sample_rate = 0u;
    c.frame_cache = 1u;
    return c;
}

uint32_t kwsn_stream_hop(double hop_ms, uint32_t sample_rate) {
    double h;
    if (!(hop_ms > 0.0) || !isfinite(hop_ms)) return 0u;
    h = nearbyint(hop_ms * (double)sample_rate / 1000.0); /* half to even, as Python's round */
    if (h > 4294967295.0) return 0u;
    return h < 1.0 ? 1u : (uint32_t)h;
}

static kwsn_status bad(char *msg, size_t cap, const char *text) {
    if (msg && cap) snprintf(msg, cap, "%s", text);
    return KWSN_ERR_ARG;
}

kwsn_status kwsn_stream_check(const kwsn_model *model, const kwsn_stream_config *cfg,
                              char *msg, size_t msg_cap) {
    char t[160];
    size_t c, n_classes, n_kw = 0;
    uint32_t model_rate;
    if (msg && msg_cap) msg[0] = '\0';
    if (!model || !cfg) return bad(msg, msg_cap, "model and config must not be NULL");
    n_classes = kwsn_n_classes(model);
    model_rate = kwsn_sample_rate(model);
    if (kwsn_input_len(model) == 0 || n_classes == 0)
        return bad(msg, msg_cap, "model: no input or no classes");
    if (cfg->hop_samples == 0)
        return bad(msg, msg_cap, "hop_samples: 0, expected >= 1");
    if (cfg->smooth_windows < 1 || cfg->smooth_windows > KWSN_STREAM_MAX_SMOOTH) {
        snprintf(t, sizeof t, "smooth_windows: %u, expected 1..%u", cfg->smooth_windows,
                 KWSN_STREAM_MAX_SMOOTH);
        return bad(msg, msg_cap, t);
    }
    if (cfg->patience < 1 || cfg->patience > KWSN_STREAM_MAX_PATIENCE) {
        snprintf(t, sizeof t, "patience: %u, expected 1..%u", cfg->patience,
                 KWSN_STREAM_MAX_PATIENCE);
        return bad(msg, msg_cap, t);
    }
    if (!(cfg->refractory_ms >= 0.0) || !isfinite(cfg->refractory_ms)) {
        snprintf(t, sizeof t, "refractory_ms: %g, expected a finite value >= 0",
                 cfg->refractory_ms);
        return bad(msg, msg_cap, t);
    }
    if (isnan(cfg->threshold)) return bad(msg, msg_cap, "threshold: nan, expected a number");
    for (c = 0; c < n_classes; c++) {
        int kw = cfg->is_keyword ? cfg->is_keyword[c] != 0 : 1;
        n_kw += (size_t)kw;
        if (cfg->thresholds && isnan(cfg->thresholds[c])) {
            snprintf(t, sizeof t, "thresholds[%zu]: nan, expected a number", c);
            return bad(msg, msg_cap, t);
        }
    }
    if (n_kw == 0) return bad(msg, msg_cap, "is_keyword: no class is a keyword");
    if (cfg->sample_rate == 0 && model_rate == 0)
        return bad(msg, msg_cap, "sample_rate: 0 and the model file states none; set it");
    if (cfg->sample_rate != 0 && model_rate != 0 && cfg->sample_rate != model_rate) {
        snprintf(t, sizeof t, "sample_rate: %u Hz, the model was trained at %u Hz",
                 cfg->sample_rate, model_rate);
        return bad(msg, msg_cap, t);
    }
    return KWSN_OK;
}

static cache_geo cache_plan(const kwsn_model *model, const kwsn_stream_config *cfg) {
    cache_geo g;
    memset(&g, 0, sizeof g);
    if (!cfg->frame_cache || kwsn_model_frontend(model, &g.fe) != KWSN_OK) return g;
    const size_t w = kwsn_input_len(model);
    const uint32_t hop = g.fe.hop_length, n = g.fe.n_fft;
    const uint64_t pad = g.fe.center ? n / 2u : 0u;
    /* the FrontEnd's prepare checked w and set layer 0's output to [n_out, n_frames] */
    if (cfg->hop_samples % hop != 0u || (uint64_t)w + pad < n) return g;
    g.n_frames = kwsn_frontend_frames(&g.fe, (uint32_t)w);
    /* frame t reads samples [t hop - pad, t hop - pad + n): inside for t_lo <= t <= t_hi */
    g.t_lo = (uint32_t)((pad + hop - 1u) / hop);
    {
        uint64_t hi = ((uint64_t)w + pad - n) / hop;
        if (hi >= g.n_frames) hi = g.n_frames - 1u;
        if (hi < g.t_lo) return g;
        g.t_hi = (uint32_t)hi;
    }
    g.n_int = g.t_hi - g.t_lo + 1u;
    g.shift = cfg->hop_samples / hop;
    g.cache = 1;
    return g;
}

/* Whether the model streams incrementally: a float model whose layer 0 is the (cached)
 * FrontEnd, then valid stride-1 Conv1dEx / ReLU layers each reading the previous tensor down to
 * a [C, 1] output, then an optional Flatten and a Linear (the last layer). Each output column of
 * such a chain depends on its own input columns only, so a window's columns are the previous
 * window's shifted by the hop plus the new ones. */
static inc_plan inc_plan_of(const kwsn_model *model, const kwsn_stream_config *cfg,
                            const cache_geo *g) {
    inc_plan p;
    uint32_t n = kwsn_n_layers(model), i;
    kwsn_layer_info h;
    memset(&p, 0, sizeof p);
    /* every frame of the window the signal's own (no reflect padding), none normalised over
     * the window: a frame is the same in every window holding it */
    if (!g->cache || cfg->frame_cache != 1u || kwsn_is_int8(model) || n < 3u ||
        g->t_lo != 0u || g->n_int != g->n_frames || g->fe.normalize != KWSN_FE_NORM_NONE)
        return p;
    for (i = 1; i < n && i < KWSN_STREAM_MAX_INC; i++) {
        kwsn_layer_info *li = &p.li[i];
        if (kwsn_model_layer_info(model, i, li) != KWSN_OK || li->input != i ||
            li->n_inputs != 1u)
            return p;
        if (li->type == KWSN_LAYER_CONV1D_EX) {
            if (li->stride != 1u || li->pad != 0u) return p;
            p.buf_floats += (size_t)li->C_out * li->L_out;
            if ((size_t)li->C_in * li->L_in > p.x_floats) p.x_floats = (size_t)li->C_in * li->L_in;
            if ((size_t)li->C_out * li->L_out > p.y_floats)
                p.y_floats = (size_t)li->C_out * li->L_out;
        } else if (li->type != KWSN_LAYER_RELU || i == 1u) {
            break;
        }
    }
    if (i >= n || i < 2u || p.li[i - 1u].L_out != 1u) return p;
    p.n_chain = i - 1u;
    for (uint32_t a = 1; a <= p.n_chain; a++)
        for (uint32_t b = a + 1u; b <= p.n_chain; b++)
            if (p.li[b].type == KWSN_LAYER_CONV1D_EX) {
                p.keep[a] = p.li[b].dil * (p.li[b].k - 1u);
                break;
            }
    /* the head: [Flatten,] Linear (the last layer) */
    if (kwsn_model_layer_info(model, i, &h) != KWSN_OK || h.input != i) return p;
    if (h.type == KWSN_LAYER_FLATTEN) {
        i++;
        if (i >= n || kwsn_model_layer_info(model, i, &h) != KWSN_OK || h.input != i) return p;
    }
    if (h.type != KWSN_LAYER_LINEAR || i != n - 1u) return p;
    if ((size_t)p.li[p.n_chain].C_out > p.y_floats) p.y_floats = p.li[p.n_chain].C_out;
    if (h.C_out > p.y_floats) p.y_floats = h.C_out;
    p.on = 1;
    return p;
}

/* Byte offsets of the arrays after the struct. */
typedef struct {
    size_t ring, probs, hist, hvalid, scores, thr, streak, is_kw, fscratch, frames, fbuf, feats,
        inc_bufs, inc_x, inc_y, total;
} layout;

/* Lays out arrays one after the other, each 8-byte aligned; ok drops to 0 when a size or an
 * offset does not fit size_t (then nothing it returned may be used). */
typedef struct {
    size_t off;
    int ok;
} cursor;

static int mul_size(size_t a, size_t b, size_t *r) {
    if (b != 0u && a > SIZE_MAX / b) return 0;
    *r = a * b;
    return 1;
}

static int add_size(size_t a, size_t b, size_t *r) {
    if (a > SIZE_MAX - b) return 0;
    *r = a + b;
    return 1;
}

/* Reserve n * m * elem bytes (rounded up to 8); returns its offset. */
static size_t take(cursor *c, size_t n, size_t m, size_t elem) {
    size_t b = 0, at = c->off;
    if (!c->ok || !mul_size(n, m, &b) || !mul_size(b, elem, &b) || !add_size(b, 7u, &b)) {
        c->ok = 0;
        return 0;
    }
    b &= ~(size_t)7u;
    if (!add_size(at, b, &c->off)) c->ok = 0;
    return at;
}

/* 1 and the layout, or 0 when the storage size does not fit size_t. */
static int plan(size_t w, size_t c, uint32_t smooth, const cache_geo *g, const inc_plan *ip,
                layout *l) {
    cursor k = {0u, 1};
    (void)take(&k, 1u, 1u, sizeof(struct kwsn_stream));
    l->ring = take(&k, 2u, w, sizeof(float));
    l->probs = take(&k, c, 1u, sizeof(float));
    l->hist = take(&k, smooth, c, sizeof(float));
    l->hvalid = take(&k, smooth, 1u, 1u);
    l->scores = take(&k, c, 1u, sizeof(double));
    l->thr = take(&k, c, 1u, sizeof(double));
    l->streak = take(&k, c, 1u, sizeof(uint32_t));
    l->is_kw = take(&k, c, 1u, 1u);
    l->fscratch = l->frames = l->fbuf = l->feats = k.off;
    if (g->cache) {
        const size_t no = g->fe.n_out;
        /* 16 floats more: init moves the front end's scratch to the next 64-byte boundary
         * (the storage is only 8-byte aligned), so that its FFT buffers' 64-byte vectors
         * never straddle two cache lines */
        l->fscratch = take(&k, kwsn_frontend_scratch_floats(&g->fe, (uint32_t)w) + 16u, 1u,
                           sizeof(float));
        l->frames = take(&k, g->n_int, no, sizeof(float));
        l->fbuf = take(&k, KWSN_STREAM_FRAME_BATCH, no, sizeof(float));
        l->feats = take(&k, g->n_frames, no, sizeof(float));
    }
    l->inc_bufs = l->inc_x = l->inc_y = k.off;
    if (ip->on) {
        l->inc_bufs = take(&k, ip->buf_floats, 1u, sizeof(float));
        l->inc_x = take(&k, ip->x_floats, 1u, sizeof(float));
        l->inc_y = take(&k, ip->y_floats, 1u, sizeof(float));
    }
    l->total = k.off;
    return k.ok;
}

static int plan_of(const kwsn_model *model, const kwsn_stream_config *cfg, cache_geo *g,
                   inc_plan *ip, layout *l) {
    *g = cache_plan(model, cfg);
    *ip = inc_plan_of(model, cfg, g);
    return plan(kwsn_input_len(model), kwsn_n_classes(model), cfg->smooth_windows, g, ip, l);
}

kwsn_status kwsn_stream_size(const kwsn_model *model, const kwsn_stream_config *cfg,
                             const kwsn_limits *limits, size_t *bytes, char *msg,
                             size_t msg_cap) {
    cache_geo g;
    inc_plan ip;
    layout l;
    size_t limit = KWSN_DEFAULT_MAX_ARENA_BYTES;
    kwsn_status st;
    if (bytes) *bytes = 0;
    st = kwsn_stream_check(model, cfg, msg, msg_cap);
    if (st != KWSN_OK) return st;
    if (!bytes) return bad(msg, msg_cap, "bytes must not be NULL");
    if (limits && limits->max_arena_bytes) limit = limits->max_arena_bytes;
    if (!plan_of(model, cfg, &g, &ip, &l)) {
        if (msg && msg_cap)
            snprintf(msg, msg_cap,
                     "stream storage for a %zu-sample window, %zu classes and smooth_windows "
                     "%u does not fit a %u-bit size_t",
                     kwsn_input_len(model), kwsn_n_classes(model), cfg->smooth_windows,
                     (unsigned)(sizeof(size_t) * 8u));
        return KWSN_ERR_TOO_BIG;
    }
    if (l.total > limit) {
        if (msg && msg_cap)
            snprintf(msg, msg_cap,
                     "stream storage of %zu bytes (a %zu-sample window, %zu classes, "
                     "smooth_windows %u) exceeds the memory limit of %zu (max_arena_bytes)",
                     l.total, kwsn_input_len(model), kwsn_n_classes(model), cfg->smooth_windows,
                     limit);
        return KWSN_ERR_STREAM_LIMIT;
    }
    *bytes = l.total;
    return KWSN_OK;
}

size_t kwsn_stream_bytes(const kwsn_model *model, const kwsn_stream_config *cfg) {
    size_t bytes = 0;
    if (kwsn_stream_size(model, cfg, NULL, &bytes, NULL, 0) != KWSN_OK) return 0;
    return bytes;
}

void kwsn_stream_reset(kwsn_stream *s) {
    size_t c;
    if (!s || s->magic != KWSN_STREAM_MAGIC) return;
    s->total = s->next_start = s->n_windows = s->n_nonfinite = s->last_bad = 0;
    s->has_bad = s->has_last = s->flushed = 0;
    s->last_time = 0.0;
    s->next_frame = s->computed = 0;
    s->inc_end = 0;
    s->inc_have = 0;
    memset(s->ring, 0, 2u * s->window * sizeof(float)); /* in the planned size: no overflow */
    memset(s->hvalid, 0, s->smooth);
    for (c = 0; c < s->n_classes; c++) {
        s->streak[c] = 0;
        s->scores[c] = 0.0;
    }
}

kwsn_status kwsn_stream_init(void *storage, size_t storage_bytes, const kwsn_model *model,
                             const kwsn_stream_config *cfg, kwsn_stream **stream) {
    kwsn_stream *s;
    layout l;
    cache_geo g;
    inc_plan ip;
    size_t c;
    unsigned char *base = (unsigned char *)storage;
    if (stream) *stream = NULL;
    if (!storage || !stream) return KWSN_ERR_ARG;
    if (kwsn_stream_check(model, cfg, NULL, 0) != KWSN_OK) return KWSN_ERR_ARG;
    if (!plan_of(model, cfg, &g, &ip, &l)) return KWSN_ERR_TOO_BIG;
    if (storage_bytes < l.total || ((uintptr_t)storage % KWSN_STREAM_ALIGN) != 0)
        return KWSN_ERR_STORAGE;
    s = (kwsn_stream *)storage;
    memset(s, 0, sizeof *s);
    s->model = model;
    s->window = kwsn_input_len(model);
    s->n_classes = kwsn_n_classes(model);
    s->hop = cfg->hop_samples;
    s->smooth = cfg->smooth_windows;
    s->patience = cfg->patience;
    s->sample_rate = cfg->sample_rate ? cfg->sample_rate : kwsn_sample_rate(model);
    s->refractory_s = cfg->refractory_ms / 1000.0;
    s->ring = (float *)(void *)(base + l.ring);
    s->probs = (float *)(void *)(base + l.probs);
    s->hist = (float *)(void *)(base + l.hist);
    s->hvalid = base + l.hvalid;
    s->scores = (double *)(void *)(base + l.scores);
    s->thr = (double *)(void *)(base + l.thr);
    s->streak = (uint32_t *)(void *)(base + l.streak);
    s->is_kw = base + l.is_kw;
    s->geo = g;
    if (g.cache) {
        s->fscratch = (float *)(void *)(base + l.fscratch +
                                        (64u - (uintptr_t)(base + l.fscratch) % 64u) % 64u);
        s->frames = (float *)(void *)(base + l.frames);
        s->fbuf = (float *)(void *)(base + l.fbuf);
        s->feats = (float *)(void *)(base + l.feats);
        kwsn_frontend_prepare(&s->geo.fe, s->fscratch); /* once: every window's frames reuse it */
    }
    s->inc = ip;
    if (ip.on) {
        float *b = (float *)(void *)(base + l.inc_bufs);
        for (uint32_t i = 1; i <= ip.n_chain; i++) {
            const kwsn_layer_info *li = &ip.li[i];
            if (li->type == KWSN_LAYER_CONV1D_EX) {
                s->inc_buf[i] = b;
                b += (size_t)li->C_out * li->L_out;
            } else {
                s->inc_buf[i] = s->inc_buf[i - 1u]; /* a ReLU: in place */
            }
        }
        s->inc_x = (float *)(void *)(base + l.inc_x);
        s->inc_y = (float *)(void *)(base + l.inc_y);
    }
    for (c = 0; c < s->n_classes; c++) {
        s->thr[c] = cfg->thresholds ? cfg->thresholds[c] : cfg->threshold;
        s->is_kw[c] = (uint8_t)(cfg->is_keyword ? cfg->is_keyword[c] != 0 : 1);
    }
    s->magic = KWSN_STREAM_MAGIC;
    kwsn_stream_reset(s);
    *stream = s;
    return KWSN_OK;
}

size_t kwsn_stream_pending_hops(const kwsn_stream *s, size_t n) {
    uint64_t end, first_end;
    if (!s || s->magic != KWSN_STREAM_MAGIC) return 0;
    end = s->total + (uint64_t)n;
    first_end = s->next_start + (uint64_t)s->window;
    if (end < first_end) return 0;
    return (size_t)((end - first_end) / s->hop + 1u);
}

/* Frames [t0, t1) of the window into feats (channel-major) and, for interior frames, the
 * cache slots of signal frames first + t. */
static void compute_frames(kwsn_stream *s, const float *win, uint64_t first, uint32_t t0,
                           uint32_t t1) {
    const cache_geo *g = &s->geo;
    const uint32_t T = g->n_frames, no = g->fe.n_out;
    while (t0 < t1) {
        const uint32_t k = t1 - t0 < KWSN_STREAM_FRAME_BATCH ? t1 - t0 : KWSN_STREAM_FRAME_BATCH;
        kwsn_frontend_frames_at(&g->fe, win, (uint32_t)s->window, t0, k, s->fscratch, s->fbuf);
        for (uint32_t i = 0; i < k; i++) {
            const uint32_t t = t0 + i;
            const float *f = s->fbuf + (size_t)i * no;
            if (t >= g->t_lo && t <= g->t_hi)
                memcpy(s->frames + (size_t)((first + t) % g->n_int) * no, f, no * sizeof(float));
            for (uint32_t c = 0; c < no; c++) s->feats[(size_t)c * T + t] = f[c];
        }
        s->computed += k;
        t0 += k;
    }
}

/* The frame cache: the features of the window win[0 .. W) starting at sample `start` (a
 * multiple of the hop; windows come in order) into s->feats, computing only the edge frames
 * (reflect padding: this window's own) and the interior frames no earlier window held. */
static void window_features(kwsn_stream *s, const float *win, uint64_t start) {
    const cache_geo *g = &s->geo;
    const uint32_t T = g->n_frames, no = g->fe.n_out;
    const uint64_t first = (start / s->hop) * g->shift; /* signal frame of t = 0 */
    /* interior frames t_lo .. t_new - 1 are cached, t_new .. t_hi are new */
    uint32_t t_new = g->t_lo;
    if (s->next_frame > first + g->t_lo)
        t_new = s->next_frame > first + g->t_hi ? g->t_hi + 1u
                                                 : (uint32_t)(s->next_frame - first);
    compute_frames(s, win, first, 0u, g->t_lo);
    for (uint32_t t = g->t_lo; t < t_new; t++) {
        const float *f = s->frames + (size_t)((first + t) % g->n_int) * no;
        for (uint32_t c = 0; c < no; c++) s->feats[(size_t)c * T + t] = f[c];
    }
    compute_frames(s, win, first, t_new, T);
    if (first + g->t_hi + 1u > s->next_frame) s->next_frame = first + g->t_hi + 1u;
    kwsn_frontend_normalize(&g->fe, s->feats, T);
}

/* The incremental path: the window's features are in s->feats (window_features); its signal
 * frames end at `end`. Each chain layer shifts its output left by its new columns and computes
 * only those, on the slice of its input they read (the same kernels as kwsn_forward, on fewer
 * columns); the head runs on the last layer's [C, 1]. Logits into s->probs. */
static kwsn_status inc_forward(kwsn_stream *s, void *arena, uint64_t end) {
    const inc_plan *p = &s->inc;
    const uint32_t T = s->geo.n_frames;
    uint32_t n_new = T, i, n = kwsn_n_layers(s->model);
    const float *src = s->feats;
    uint32_t src_L = T;
    kwsn_status st;
    if (s->inc_have && end > s->inc_end && end - s->inc_end < T)
        n_new = (uint32_t)(end - s->inc_end);
    for (i = 1; i <= p->n_chain; i++) {
        const kwsn_layer_info *li = &p->li[i];
        float *buf = s->inc_buf[i];
        const uint32_t Lo = li->L_out, Co = li->C_out;
        const uint32_t m = n_new < Lo ? n_new : Lo; /* new output columns */
        if (li->type == KWSN_LAYER_RELU && p->li[i - 1u].type == KWSN_LAYER_CONV1D_EX) {
            /* done: the conv before it ran it on its new columns (below) */
        } else if (li->type == KWSN_LAYER_RELU) {
            /* in place on the new columns of its input's buffer (rows of Lo) */
            for (uint32_t c = 0; c < Co; c++) {
                float *row = buf + (size_t)c * Lo + (Lo - m);
                st = kwsn_model_run_layer_on(s->model, i, arena, row, m, s->inc_y);
                if (st != KWSN_OK) return st;
                memcpy(row, s->inc_y, m * sizeof(float));
            }
        } else {
            const uint32_t span = li->dil * (li->k - 1u), w = m + span, Ci = li->C_in;
            /* shift by m: of row c's old columns only the last keep are read again (by the
             * next conv, whose span that is); they move to [Lo - m - keep, Lo - m) */
            const uint32_t keep = p->keep[i] < Lo - m ? p->keep[i] : Lo - m;
            if (keep > 0u)
                for (uint32_t c = 0; c < Co; c++) {
                    float *row = buf + (size_t)c * Lo;
                    memmove(row + (Lo - m - keep), row + (Lo - keep), keep * sizeof(float));
                }
            for (uint32_t c = 0; c < Ci; c++)
                memcpy(s->inc_x + (size_t)c * w, src + (size_t)c * src_L + (src_L - w),
                       w * sizeof(float));
            st = kwsn_model_run_layer_on(s->model, i, arena, s->inc_x, w, s->inc_y);
            if (st == KWSN_OK && i < p->n_chain && p->li[i + 1u].type == KWSN_LAYER_RELU)
                st = kwsn_model_run_layer_on(s->model, i + 1u, arena, s->inc_y, m, s->inc_y);
            if (st != KWSN_OK) return st;
            for (uint32_t c = 0; c < Co; c++)
                memcpy(buf + (size_t)c * Lo + (Lo - m), s->inc_y + (size_t)c * m,
                       m * sizeof(float));
        }
        src = buf;
        src_L = Lo;
        n_new = m;
    }
    s->inc_end = end;
    s->inc_have = 1;
    /* the head: [Flatten,] Linear on the [C, 1] output */
    for (i = p->n_chain + 1u; i < n; i++) {
        float *dst = i == n - 1u ? s->probs : s->inc_y;
        st = kwsn_model_run_layer_on(s->model, i, arena, src, 1u, dst);
        if (st != KWSN_OK) return st;
        src = dst;
    }
    return KWSN_OK;
}

/* Score the window win[0 .. W) starting at sample `start`; append a detection. `cached`:
 * through the frame cache (every window of the stream in order), else the whole model. A
 * window holding a non-finite sample is not run; one whose posteriors are not all finite is
 * not used either: it is skipped (counted, its scores NaN, every streak reset) and leaves a
 * gap in the moving average, which is the mean of the valid windows among the last
 * smooth_windows, summed oldest first in float64 (as kwsnet/detect/detector.py does). */
static kwsn_status score_window(kwsn_stream *s, const float *win, uint64_t start, int cached,
                                void *arena, size_t arena_bytes, kwsn_detection *out,
                                size_t *n_out) {
    const size_t C = s->n_classes;
    const uint32_t m = s->smooth;
    size_t c, slot, used = 0;
    uint64_t k, j, first;
    double t;
    long best = -1;
    int any_ready = 0, ok = !(s->has_bad && s->last_bad >= start);
    kwsn_status st = KWSN_OK;
    if (ok) {
        if (cached) {
            window_features(s, win, start);
            if (s->inc.on)
                st = inc_forward(s, arena,
                                 (start / s->hop) * s->geo.shift + s->geo.n_frames);
            else
                st = kwsn_forward_features(s->model, arena, arena_bytes, s->feats,
                                           (size_t)s->geo.n_frames * s->geo.fe.n_out, s->probs,
                                           C);
        } else {
            st = kwsn_forward(s->model, arena, arena_bytes, win, s->window, s->probs, C);
        }
        if (st != KWSN_OK) return st;
        kwsn_softmax(s->probs, C);
        for (c = 0; c < C && ok; c++) ok = isfinite(s->probs[c]) != 0;
    }
    k = s->n_windows++; /* this window's index */
    slot = (size_t)(k % m);
    s->hvalid[slot] = (uint8_t)ok;
    if (!ok) {
        s->n_nonfinite++;
        for (c = 0; c < C; c++) {
            s->scores[c] = (double)NAN;
            s->streak[c] = 0;
        }
        return KWSN_OK;
    }
    memcpy(s->hist + slot * C, s->probs, C * sizeof(float));
    for (c = 0; c < C; c++) s->scores[c] = 0.0;
    first = k >= m - 1u ? k - (m - 1u) : 0u;
    for (j = first; j <= k; j++) {
        const size_t sl = (size_t)(j % m);
        const float *h = s->hist + sl * C;
        if (!s->hvalid[sl]) continue;
        used++;
        for (c = 0; c < C; c++) s->scores[c] += (double)h[c];
    }
    for (c = 0; c < C; c++) s->scores[c] /= (double)used;
    for (c = 0; c < C; c++) {
        if (s->is_kw[c] && s->scores[c] >= s->thr[c]) {
            if (s->streak[c] < UINT32_MAX) s->streak[c]++;
        } else {
            s->streak[c] = 0;
        }
        if (s->streak[c] >= s->patience) {
            any_ready = 1;
            if (best < 0 || s->scores[c] > s->scores[best]) best = (long)c;
        }
    }
    t = ((double)start + (double)s->window / 2.0) / (double)s->sample_rate;
    if (!any_ready || (s->has_last && t - s->last_time < s->refractory_s)) return KWSN_OK;
    out[*n_out].time = t;
    out[*n_out].score = s->scores[best];
    out[*n_out].start = start;
    out[*n_out].class_index = (uint32_t)best;
    (*n_out)++;
    s->has_last = 1;
    s->last_time = t;
    for (c = 0; c < C; c++) s->streak[c] = 0;
    return KWSN_OK;
}

static kwsn_status arena_ok(const kwsn_stream *s, const void *arena, size_t arena_bytes) {
    if (!arena || arena_bytes < kwsn_arena_bytes(s->model) ||
        ((uintptr_t)arena % KWSN_ARENA_ALIGN) != 0)
        return KWSN_ERR_ARENA;
    return KWSN_OK;
}

/* Write samples into the doubled ring at absolute positions [s->total, s->total + m), and
 * note the latest non-finite one. */
static void ring_write(kwsn_stream *s, const float *x, size_t m) {
    size_t W = s->window, i;
    if (m > W) { /* only the last W samples can belong to a window */
        s->total += m - W;
        x += m - W;
        m = W;
    }
    for (i = m; i > 0; i--) {
        if (!isfinite(x[i - 1u])) {
            s->has_bad = 1;
            s->last_bad = s->total + (uint64_t)(i - 1u);
            break;
        }
    }
    while (m > 0) {
        size_t p = (size_t)(s->total % W);
        size_t k = W - p < m ? W - p : m;
        memcpy(s->ring + p, x, k * sizeof(float));
        memcpy(s->ring + p + W, x, k * sizeof(float));
        s->total += k;
        x += k;
        m -= k;
    }
}

kwsn_status kwsn_stream_push(kwsn_stream *s, const float *samples, size_t n, void *arena,
                             size_t arena_bytes, kwsn_detection *out, size_t out_cap,
                             size_t *n_out) {
    kwsn_status st;
    if (n_out) *n_out = 0;
    if (!s || s->magic != KWSN_STREAM_MAGIC || !n_out || (n > 0 && !samples) || s->flushed)
        return KWSN_ERR_ARG;
    st = arena_ok(s, arena, arena_bytes);
    if (st != KWSN_OK) return st;
    if (kwsn_stream_pending_hops(s, n) > out_cap || (out_cap > 0 && !out)) return KWSN_ERR_ARG;
    while (n > 0) {
        uint64_t end = s->next_start + (uint64_t)s->window;
        uint64_t need = end - s->total; /* >= 1: a complete window is scored at once */
        size_t m = need < (uint64_t)n ? (size_t)need : n;
        ring_write(s, samples, m);
        samples += m;
        n -= m;
        if (s->total == end) {
            const float *win = s->ring + (size_t)(s->next_start % s->window);
            st = score_window(s, win, s->next_start, s->geo.cache, arena, arena_bytes, out, n_out);
            if (st != KWSN_OK) return st;
            s->next_start += s->hop;
        }
    }
    return KWSN_OK;
}

kwsn_status kwsn_stream_flush(kwsn_stream *s, void *arena, size_t arena_bytes,
                              kwsn_detection *out, size_t out_cap, size_t *n_out) {
    kwsn_status st;
    if (n_out) *n_out = 0;
    if (!s || s->magic != KWSN_STREAM_MAGIC || !n_out || s->flushed) return KWSN_ERR_ARG;
    st = arena_ok(s, arena, arena_bytes);
    if (st != KWSN_OK) return st;
    if (s->n_windows == 0) {
        /* total < W: samples sit at ring[0 .. total); pad with zeros */
        if (out_cap < 1 || !out) return KWSN_ERR_ARG;
        memset(s->ring + (size_t)s->total, 0, (s->window - (size_t)s->total) * sizeof(float));
        st = score_window(s, s->ring, 0u, 0, arena, arena_bytes, out, n_out);
        if (st != KWSN_OK) return st;
    }
    s->flushed = 1;
    return KWSN_OK;
}

uint64_t kwsn_stream_samples(const kwsn_stream *s) {
    return s && s->magic == KWSN_STREAM_MAGIC ? s->total : 0u;
}

uint64_t kwsn_stream_windows(const kwsn_stream *s) {
    return s && s->magic == KWSN_STREAM_MAGIC ? s->n_windows : 0u;
}

uint64_t kwsn_stream_nonfinite_windows(const kwsn_stream *s) {
    return s && s->magic == KWSN_STREAM_MAGIC ? s->n_nonfinite : 0u;
}

int kwsn_stream_frame_cached(const kwsn_stream *s) {
    return s && s->magic == KWSN_STREAM_MAGIC ? s->geo.cache : 0;
}

int kwsn_stream_incremental(const kwsn_stream *s) {
    return s && s->magic == KWSN_STREAM_MAGIC ? s->inc.on : 0;
}

uint64_t kwsn_stream_frames_computed(const kwsn_stream *s) {
    return s && s->magic == KWSN_STREAM_MAGIC ? s->computed : 0u;
}

const double *kwsn_stream_scores(const kwsn_stream *s) {
    if (!s || s->magic != KWSN_STREAM_MAGIC || s->n_windows == 0) return NULL;
    return s->scores;
}
