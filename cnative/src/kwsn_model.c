/* kwsnet runtime core: status names, CRC-32, the layer tables (one entry per op: float and
 * int8), the model file parser (format versions 1, 2 and 3), shape preparation, the static
 * memory plan, and the forward pass in a caller-owned arena. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kwsn_frontend.h"
#include "kwsn_kernels.h"
#include "kwsnet.h"

/* The front end is referenced weakly (GCC/clang), so an MCU build of a raw-audio model may
 * leave src/kwsn_frontend.c out: the FRONTEND op then reports KWSN_ERR_LAYER_TYPE at prepare.
 * kwsn_file.c references it strongly (every program that loads files gets it). Define
 * KWSN_FRONTEND_REQUIRED to make it a plain (strong) dependency. */
#if defined(__GNUC__) && !defined(KWSN_FRONTEND_REQUIRED)
#pragma weak kwsn_frontend_check
#pragma weak kwsn_frontend_frames
#pragma weak kwsn_frontend_scratch_floats
#pragma weak kwsn_frontend_ops
#pragma weak kwsn_frontend_run
#pragma weak kwsn_frontend_tables_floats
#pragma weak kwsn_frontend_fill_tables
#pragma weak kwsn_frontend_run_tables
#define KWSN_FRONTEND_LINKED() (kwsn_frontend_run != 0 && kwsn_frontend_check != 0)
#define KWSN_FRONTEND_TABLES_LINKED()                                                          \
    (kwsn_frontend_tables_floats != 0 && kwsn_frontend_fill_tables != 0 &&                     \
     kwsn_frontend_run_tables != 0)
#else
#define KWSN_FRONTEND_LINKED() 1
#endif

/* ------------------------------------------------------------------ status names */

static const char *const kwsn_status_names[KWSN_STATUS_COUNT] = {
    "ok",
    "bad argument",
    "I/O error",
    "out of memory",
    "truncated model file",
    "bad magic (not a kwsnet model file)",
    "unsupported format version",
    "CRC mismatch (corrupted model file)",
    "misaligned buffer or big-endian host",
    "unknown layer type",
    "bad layer parameters",
    "layer shapes do not chain",
    "size exceeds runtime limits",
    "trailing bytes after the last layer",
    "arena too small or misaligned",
    "input length does not match the model",
    "model op count exceeds the limit",
    "model arena exceeds the memory limit",
    "non-finite (NaN/Inf) weight",
    "model storage too small or misaligned",
    "bad tensor id in the layer graph",
    "stream storage exceeds the memory limit",
};

const char *kwsn_status_str(kwsn_status s) {
    if ((int)s < 0 || s >= KWSN_STATUS_COUNT) return "unknown status";
    return kwsn_status_names[s];
}

/* ------------------------------------------------------------------ CRC-32 (zlib) */

uint32_t kwsn_crc32(const void *buf, size_t len) {
    /* nibble table: small enough for an MCU, fast enough for a model file */
    static const uint32_t t[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
        0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
        0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    const uint8_t *p = (const uint8_t *)buf;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ t[crc & 15u];
        crc = (crc >> 4) ^ t[crc & 15u];
    }
    return crc ^ 0xFFFFFFFFu;
}

/* ------------------------------------------------------------------ shapes */

static size_t shape_numel(kwsn_shape s) { return (size_t)s.dim[0] * (size_t)s.dim[1]; }

static kwsn_shape shape2(uint32_t c, uint32_t l) {
    kwsn_shape s = {2u, {c, l}};
    return s;
}

static kwsn_shape shape1(uint32_t f) {
    kwsn_shape s = {1u, {f, 1u}};
    return s;
}

/* ------------------------------------------------------------------ private structs */

/* A prepared layer: its descriptor (inputs resolved), the shapes checked by the op's
 * prepare(), and its place in the memory plan. Tensor t > 0 is layer t - 1's output. */
typedef struct {
    kwsn_layer_desc desc;
    kwsn_shape in;     /* shape of input 0 */
    kwsn_shape in2;    /* shape of input 1 (Add), else a copy of in */
    kwsn_shape out;
    uint32_t op_index; /* entry in the runtime's layer table, set by prepare */
    uint32_t slot;     /* its output's activation slot: the index of the layer that opened it */
    uint32_t last_use; /* last layer reading its output (n_layers: the model output) */
    uint32_t occupant; /* as a slot's opener: the tensor id in the slot now (planning only) */
    size_t slot_bytes; /* as a slot's opener: the slot's size, 64-byte multiple */
    size_t slot_off;   /* as a slot's opener: its byte offset in the arena */
    size_t scratch;    /* scratch floats its kernel needs (conv: the padded input) */
    uint64_t ops;      /* arithmetic operations per sample (multiply and add count 1 each) */
    uint32_t fuse_relu; /* LayerNorm: the next layer is a ReLU of this output only, in place;
                         * when both run, one pass computes both (set by prepare) */
    uint32_t fuse_next; /* LayerNorm: 1 (a MaxPool1d) or 2 (a ReLU, then a MaxPool1d):
                         * when all run, one pass writes the pool's output alone
                         * (layernorm_run, run_layernorm_pool_q8; set by prepare); 0 none */
    kwsn_qparams in_q, in2_q; /* int8 models: the input tensors' quantisation */
    const char *why; /* why prepare refused its parameters (a check's source text), or NULL */
    const void *packed; /* its tables in the caller's buffer (kwsn_model_set_tables: an int8
                         * conv's packed weights, the FrontEnd's twiddles and ranges), or NULL:
                         * the kernel builds them per call (the same bits) */
} kwsn_layer;

/* Opaque in kwsnet.h; lives at the start of the caller's storage, layers right after. */
struct kwsn_model {
    uint32_t version;
    uint32_t sample_rate;
    kwsn_shape input;
    uint32_t n_layers;
    kwsn_layer *layers; /* in the caller's storage, n_layers entries */
    size_t act_bytes;   /* all activation slots (the memory plan), 64-byte multiple */
    size_t max_scratch; /* largest per-layer scratch (floats) */
    size_t weight_bytes;
    size_t n_classes; /* numel of the last layer's output */
    uint64_t ops;     /* sum of the layers' op counts */
    const kwsn_kernel_table *kernels; /* the kernel path chosen at prepare */
    uint32_t int8;        /* 1: a format-3 model (int8 tensors, kwsn_qops) */
    uint32_t has_input_q; /* int8: the float input is quantised with input_q first */
    kwsn_qparams input_q;
    size_t in_codes_off;  /* int8 with has_input_q: byte offset of the input codes */
    uint32_t features_entry; /* 1: layer 0 is a FrontEnd and no other layer reads the audio */
    /* Why the last parse into this storage failed (kwsn_parse_error): layer index + 1 (0: not
     * in a layer) and, for a model-level parameter, the check that refused it. finish() keeps
     * them when it zeroes the rest. */
    uint32_t err_layer;
    const char *err_why;
};

/* Refuse a layer's parameters, remembering which check refused them (its source text). */
static kwsn_status bad(const kwsn_layer *l, const char *why) {
    ((kwsn_layer *)l)->why = why; /* the layer record lives in the caller's writable storage */
    return KWSN_ERR_PARAM;
}

static kwsn_status bad_model(kwsn_model *m, const char *why) {
    m->err_why = why;
    return KWSN_ERR_PARAM;
}

/* ------------------------------------------------------------------ layer table */

typedef struct {
    uint32_t type;
    const char *name;
    uint32_t n_ints;
    uint32_t n_inputs;
    /* 1: out may be an input read for the last time (elementwise: ReLU, LayerNorm, Flatten,
     * Add); the memory plan then gives the output that input's slot. */
    int overwrites_input;
    /* Check ints/floats against l->in (and l->in2), set l->out. Runs once, at load. */
    kwsn_status (*prepare)(kwsn_layer *l);
    /* Run one sample with kernel set k; in2 is input 1 (NULL for one-input ops). out may
     * equal in (or in2) only for overwrites_input ops. */
    void (*run)(const kwsn_kernel_table *k, const kwsn_layer *l, const float *in,
                const float *in2, float *out, float *scratch);
} kwsn_op;

#define I(l, k) ((l)->desc.ints[k])

static kwsn_status pool_geometry(kwsn_layer *l, int32_t k, int32_t s) {
    if (l->in.ndim != 2) return KWSN_ERR_SHAPE;
    if (k < 1 || s < 1) return bad(l, "k < 1 || s < 1");
    if ((uint32_t)k > l->in.dim[1]) return KWSN_ERR_SHAPE;
    /* A window is bounded absolutely, not only by the input: window L/2 at stride 1 over a
     * long input costs ~L^2/4 (a 52-byte file once took days per forward). The cost of every
     * window is counted in ops and checked against the caller's limit. */
    if ((uint32_t)k > KWSN_MAX_POOL_WINDOW) return KWSN_ERR_TOO_BIG;
    l->out = shape2(l->in.dim[0], (l->in.dim[1] - (uint32_t)k) / (uint32_t)s + 1u);
    l->ops = (uint64_t)l->out.dim[0] * l->out.dim[1] * (uint64_t)k;
    return KWSN_OK;
}

static kwsn_status check_pool(kwsn_layer *l) {
    if (l->desc.n_floats != 0) return bad(l, "l->desc.n_floats != 0");
    return pool_geometry(l, I(l, 0), I(l, 1));
}

static void run_avgpool(const kwsn_kernel_table *kt, const kwsn_layer *l,
                        const float *in, const float *in2, float *out,
                        float *scratch) {
    (void)in2;
    (void)scratch;
    kt->avgpool1d(out, in, l->in.dim[0], l->in.dim[1], (uint32_t)I(l, 0),
                       (uint32_t)I(l, 1), l->out.dim[1]);
}

static void run_maxpool(const kwsn_kernel_table *kt, const kwsn_layer *l,
                        const float *in, const float *in2, float *out,
                        float *scratch) {
    (void)in2;
    (void)scratch;
    kt->maxpool1d(out, in, l->in.dim[0], l->in.dim[1], (uint32_t)I(l, 0),
                       (uint32_t)I(l, 1), l->out.dim[1]);
}

/* ints: in_ch, out_ch, kernel (odd), has_bias. floats: w[out][in][k], then b[out]. */
static kwsn_status prep_conv(kwsn_layer *l) {
    int32_t ci = I(l, 0), co = I(l, 1), k = I(l, 2), hb = I(l, 3);
    if (ci < 1 || co < 1 || k < 1 || (k % 2) == 0 || (hb != 0 && hb != 1))
        return bad(l, "ci < 1 || co < 1 || k < 1 || (k % 2) == 0 || (hb != 0 && hb != 1)");
    if ((uint64_t)co * (uint64_t)ci * (uint64_t)k > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    uint64_t nw = (uint64_t)co * (uint64_t)ci * (uint64_t)k + (hb ? (uint64_t)co : 0u);
    if (l->desc.n_floats != nw) return bad(l, "l->desc.n_floats != nw");
    if (l->in.ndim != 2 || l->in.dim[0] != (uint32_t)ci) return KWSN_ERR_SHAPE;
    if ((uint64_t)co * l->in.dim[1] > KWSN_MAX_ELEMS ||
        (uint64_t)ci * (l->in.dim[1] + (uint64_t)k) > KWSN_MAX_ELEMS)
        return KWSN_ERR_TOO_BIG;
    l->out = shape2((uint32_t)co, l->in.dim[1]);
    l->scratch = kwsn_conv1d_scratch_floats((uint32_t)ci, l->in.dim[1], (uint32_t)k);
    /* a multiply and an add per weight and position, plus the padded copy */
    l->ops = 2u * (uint64_t)co * ci * k * l->in.dim[1] + (uint64_t)ci * (l->in.dim[1] + k);
    return KWSN_OK;
}

static void run_conv(const kwsn_kernel_table *kt, const kwsn_layer *l,
                     const float *in, const float *in2, float *out,
                        float *scratch) {
    (void)in2;
    uint32_t ci = (uint32_t)I(l, 0), co = (uint32_t)I(l, 1), k = (uint32_t)I(l, 2);
    const float *w = l->desc.floats;
    const float *b = I(l, 3) ? w + (size_t)co * ci * k : NULL;
    kt->conv1d_same(out, in, w, b, ci, co, l->in.dim[1], k, scratch);
}

/* ints: norm_ndim (1|2), d0, d1 (1 when norm_ndim == 1), affine.
 * floats: eps, then gamma[N], beta[N] when affine (N = d0 * d1). */
static kwsn_status prep_layernorm(kwsn_layer *l) {
    int32_t nd = I(l, 0), d0 = I(l, 1), d1 = I(l, 2), aff = I(l, 3);
    if ((nd != 1 && nd != 2) || d0 < 1 || d1 < 1 || (nd == 1 && d1 != 1) ||
        (aff != 0 && aff != 1))
        return bad(l, "(nd != 1 && nd != 2) || d0 < 1 || d1 < 1 || (nd == 1 && d1 != 1) || (aff != "
                      "0 && aff != 1)");
    uint64_t n = (uint64_t)d0 * (uint64_t)d1;
    if (n > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    if (l->desc.n_floats != 1u + (aff ? 2u * n : 0u))
        return bad(l, "l->desc.n_floats != 1u + (aff ? 2u * n : 0u)");
    float eps = l->desc.floats[0];
    if (!(eps >= 0.0f) || isinf(eps)) return bad(l, "!(eps >= 0.0f) || isinf(eps)");
    if (nd == 2) {
        if (l->in.ndim != 2 || l->in.dim[0] != (uint32_t)d0 || l->in.dim[1] != (uint32_t)d1)
            return KWSN_ERR_SHAPE;
    } else {
        uint32_t last = l->in.ndim == 2 ? l->in.dim[1] : l->in.dim[0];
        if (last != (uint32_t)d0) return KWSN_ERR_SHAPE;
    }
    l->out = l->in;
    /* two passes of moments (~3 ops each) and the affine pass (~4 ops) */
    l->ops = 10u * (uint64_t)shape_numel(l->in);
    return KWSN_OK;
}

/* LayerNorm l, then the ReLU when `relu`; with mp (a MaxPool1d(k, k) that fuse_next names)
 * then that pool too, in one pass: out is mp's output (the same bits; the LayerNorm's and the
 * ReLU's outputs are never written). mp NULL: out is the LayerNorm's (or ReLU's) output. */
static void layernorm_run(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                          float *out, int relu, const kwsn_layer *mp) {
    uint32_t n = (uint32_t)I(l, 1) * (uint32_t)I(l, 2);
    const float *f = l->desc.floats;
    const float *g = I(l, 3) ? f + 1 : NULL;
    const float *b = I(l, 3) ? f + 1 + n : NULL;
    kt->layernorm(out, in, g, b, f[0], (uint32_t)(shape_numel(l->in) / n), n, relu,
                  mp ? (uint32_t)I(mp, 0) : 1u, mp ? mp->in.dim[1] : n);
}

static void run_layernorm(const kwsn_kernel_table *kt, const kwsn_layer *l,
                          const float *in, const float *in2, float *out,
                        float *scratch) {
    (void)in2;
    (void)scratch;
    layernorm_run(kt, l, in, out, 0, NULL);
}

static kwsn_status prep_elementwise(kwsn_layer *l) {
    if (l->desc.n_floats != 0) return bad(l, "l->desc.n_floats != 0");
    l->out = l->in;
    l->ops = shape_numel(l->in);
    return KWSN_OK;
}

static void run_relu(const kwsn_kernel_table *kt, const kwsn_layer *l,
                     const float *in, const float *in2, float *out,
                        float *scratch) {
    (void)in2;
    (void)scratch;
    kt->relu(out, in, (uint32_t)shape_numel(l->in));
}

/* ints: output_size (only 1 is supported). */
static kwsn_status prep_adaptive_avg(kwsn_layer *l) {
    if (I(l, 0) != 1 || l->desc.n_floats != 0)
        return bad(l, "I(l, 0) != 1 || l->desc.n_floats != 0");
    if (l->in.ndim != 2) return KWSN_ERR_SHAPE;
    l->out = shape2(l->in.dim[0], 1u);
    l->ops = shape_numel(l->in);
    return KWSN_OK;
}

static void run_adaptive_avg(const kwsn_kernel_table *kt, const kwsn_layer *l,
                             const float *in, const float *in2, float *out,
                        float *scratch) {
    (void)in2;
    (void)scratch;
    kt->adaptive_avgpool1(out, in, l->in.dim[0], l->in.dim[1]);
}

static kwsn_status prep_flatten(kwsn_layer *l) {
    if (l->desc.n_floats != 0) return bad(l, "l->desc.n_floats != 0");
    l->out = shape1((uint32_t)shape_numel(l->in));
    return KWSN_OK;
}

static void run_flatten(const kwsn_kernel_table *kt, const kwsn_layer *l,
                        const float *in, const float *in2, float *out,
                        float *scratch) {
    (void)in2;
    /* [C, L] and [C*L] share one layout: nothing to do in place, else a copy */
    (void)kt, (void)scratch;
    if (out != in) memcpy(out, in, shape_numel(l->in) * sizeof(float));
}

/* ints: in_features, out_features, has_bias. floats: w[out][in], then b[out]. */
static kwsn_status prep_linear(kwsn_layer *l) {
    int32_t fi = I(l, 0), fo = I(l, 1), hb = I(l, 2);
    if (fi < 1 || fo < 1 || (hb != 0 && hb != 1))
        return bad(l, "fi < 1 || fo < 1 || (hb != 0 && hb != 1)");
    if ((uint64_t)fi * (uint64_t)fo > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    if (l->desc.n_floats != (uint64_t)fi * (uint64_t)fo + (hb ? (uint64_t)fo : 0u))
        return bad(l, "l->desc.n_floats != (uint64_t)fi * (uint64_t)fo + (hb ? (uint64_t)fo : 0u)");
    if (l->in.ndim != 1 || l->in.dim[0] != (uint32_t)fi) return KWSN_ERR_SHAPE;
    l->out = shape1((uint32_t)fo);
    l->ops = 2u * (uint64_t)fi * fo;
    return KWSN_OK;
}

static void run_linear(const kwsn_kernel_table *kt, const kwsn_layer *l,
                       const float *in, const float *in2, float *out,
                        float *scratch) {
    (void)in2;
    (void)scratch;
    uint32_t fi = (uint32_t)I(l, 0), fo = (uint32_t)I(l, 1);
    const float *w = l->desc.floats;
    kt->linear(out, in, w, I(l, 2) ? w + (size_t)fi * fo : NULL, fi, fo);
}

/* ints: n_fft, hop_length, n_mels, n_out, center, normalize (KWSN_FE_NORM_*), has_dct.
 * floats: eps, window[n_fft], fbank[n_fft / 2 + 1][n_mels], then dct[n_mels][n_out] when
 * has_dct (MFCC; n_out = n_mels otherwise). Input [1, T] (or [T]) -> [n_out, frames]. */
#define KWSN_MAX_FFT (1u << 16)

/* g: the 7 ints, f: the floats (eps first) of a FrontEnd payload */
static kwsn_frontend frontend_at(const int32_t *g, const float *f) {
    kwsn_frontend fe;
    const uint32_t n_fft = (uint32_t)g[0], n_mels = (uint32_t)g[2];
    fe.n_fft = n_fft;
    fe.hop_length = (uint32_t)g[1];
    fe.n_mels = n_mels;
    fe.n_out = (uint32_t)g[3];
    fe.center = (uint32_t)g[4];
    fe.normalize = (uint32_t)g[5];
    fe.eps = f[0];
    fe.window = f + 1;
    fe.fbank = f + 1 + n_fft;
    fe.dct = g[6] ? f + 1 + n_fft + (size_t)(n_fft / 2u + 1u) * n_mels : NULL;
    return fe;
}

static kwsn_frontend frontend_of(const kwsn_layer *l) {
    return frontend_at(l->desc.ints, l->desc.floats);
}

static kwsn_status prep_frontend(kwsn_layer *l) {
    const int32_t n_fft = I(l, 0), hop = I(l, 1), nm = I(l, 2), no = I(l, 3), c = I(l, 4),
                  norm = I(l, 5), hd = I(l, 6);
    if (!KWSN_FRONTEND_LINKED()) return KWSN_ERR_LAYER_TYPE;
    if (n_fft < 2 || hop < 1 || nm < 1 || no < 1 || (c != 0 && c != 1) || norm < 0 ||
        norm > KWSN_FE_NORM_MEANVAR || (hd != 0 && hd != 1) || (!hd && no != nm))
        return bad(l, "n_fft < 2 || hop < 1 || nm < 1 || no < 1 || (c != 0 && c != 1) || norm < 0 "
                      "|| norm > KWSN_FE_NORM_MEANVAR || (hd != 0 && hd != 1) || (!hd && no != nm)");
    if ((uint32_t)n_fft > KWSN_MAX_FFT) return KWSN_ERR_TOO_BIG;
    const uint64_t nb = (uint64_t)n_fft / 2u + 1u;
    if (nb * (uint64_t)nm > KWSN_MAX_ELEMS || (uint64_t)nm * (uint64_t)no > KWSN_MAX_ELEMS)
        return KWSN_ERR_TOO_BIG;
    const uint64_t nw = 1u + (uint64_t)n_fft + nb * nm + (hd ? (uint64_t)nm * no : 0u);
    if (l->desc.n_floats != nw) return bad(l, "l->desc.n_floats != nw");
    if (!(l->desc.floats[0] > 0.0f))
        return bad(l, "!(l->desc.floats[0] > 0.0f)"); /* eps: log(mel + eps) */
    if (l->in.ndim == 2 && l->in.dim[0] != 1u) return KWSN_ERR_SHAPE;
    const uint32_t T = l->in.ndim == 2 ? l->in.dim[1] : l->in.dim[0];
    const kwsn_frontend fe = frontend_of(l);
    kwsn_status st = kwsn_frontend_check(&fe, T);
    if (st != KWSN_OK) return st;
    const uint32_t frames = kwsn_frontend_frames(&fe, T);
    if (frames < 1u) return KWSN_ERR_SHAPE;
    if ((uint64_t)frames * (uint64_t)no > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    l->out = shape2((uint32_t)no, frames);
    l->scratch = kwsn_frontend_scratch_floats(&fe, T);
    l->ops = kwsn_frontend_ops(&fe, T);
    return KWSN_OK;
}

static void run_frontend(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                         const float *in2, float *out, float *scratch) {
    (void)in2;
    const kwsn_frontend fe = frontend_of(l);
    if (l->packed) /* the twiddles and ranges built once (kwsn_model_set_tables) */
        kwsn_frontend_run_tables(&fe, (const float *)l->packed, kt->name, in,
                                 (uint32_t)shape_numel(l->in), scratch, out);
    else
        kwsn_frontend_run(&fe, in, (uint32_t)shape_numel(l->in), scratch, out);
}

/* ints: in_ch, out_ch, kernel, stride, padding (zeros, both sides), dilation, groups,
 * has_bias. floats: w[out][in / groups][kernel], then b[out]. [in, L] -> [out, L_out]. */
/* geo: in, out, kernel, stride, padding, dilation, groups */
static kwsn_conv1d_ex_args conv_args_at(const kwsn_layer *l, const int32_t *geo) {
    kwsn_conv1d_ex_args a;
    a.C_in = (uint32_t)geo[0];
    a.C_out = (uint32_t)geo[1];
    a.k = (uint32_t)geo[2];
    a.stride = (uint32_t)geo[3];
    a.pad = (uint32_t)geo[4];
    a.dil = (uint32_t)geo[5];
    a.groups = (uint32_t)geo[6];
    a.L = l->in.dim[1];
    a.L_out = l->out.dim[1];
    return a;
}

static kwsn_conv1d_ex_args conv_ex_args(const kwsn_layer *l) {
    return conv_args_at(l, l->desc.ints);
}

/* Checks the geometry geo[7] against l->in, sets l->out; *nw = the weight count. hb >= 0:
 * a float layer, whose n_floats must be the weights plus (hb) a bias. */
static kwsn_status conv_geometry(kwsn_layer *l, const int32_t *geo, int32_t hb,
                                 uint64_t *nw_out) {
    const int32_t ci = geo[0], co = geo[1], k = geo[2], st = geo[3], pad = geo[4],
                  dil = geo[5], g = geo[6];
    if (ci < 1 || co < 1 || k < 1 || st < 1 || pad < 0 || dil < 1 || g < 1)
        return bad(l, "ci < 1 || co < 1 || k < 1 || st < 1 || pad < 0 || dil < 1 || g < 1");
    if (k > KWSN_MAX_CONV_KERNEL || st > KWSN_MAX_CONV_STRIDE || dil > KWSN_MAX_CONV_DILATION ||
        pad > KWSN_MAX_CONV_KERNEL * KWSN_MAX_CONV_DILATION)
        return KWSN_ERR_TOO_BIG;
    if (ci % g != 0 || co % g != 0) return bad(l, "ci % g != 0 || co % g != 0");
    const uint64_t nw = (uint64_t)co * (uint64_t)(ci / g) * (uint64_t)k;
    if (nw > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    *nw_out = nw;
    if (hb >= 0 && l->desc.n_floats != nw + (hb ? (uint64_t)co : 0u))
        return bad(l, "hb >= 0 && l->desc.n_floats != nw + (hb ? (uint64_t)co : 0u)");
    if (l->in.ndim != 2 || l->in.dim[0] != (uint32_t)ci) return KWSN_ERR_SHAPE;
    const uint64_t span = (uint64_t)dil * (uint64_t)(k - 1) + 1u;
    const uint64_t Lp = (uint64_t)l->in.dim[1] + 2u * (uint64_t)pad;
    if (Lp < span) return KWSN_ERR_SHAPE;
    const uint64_t L_out = (Lp - span) / (uint64_t)st + 1u;
    if ((uint64_t)co * L_out > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    l->out = shape2((uint32_t)co, (uint32_t)L_out);
    const kwsn_conv1d_ex_args a = conv_args_at(l, geo);
    if ((uint64_t)ci * kwsn_conv1d_ex_channel_floats(&a) > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    return KWSN_OK;
}

static kwsn_status prep_conv_ex(kwsn_layer *l) {
    const int32_t hb = I(l, 7);
    uint64_t nw = 0;
    if (hb != 0 && hb != 1) return bad(l, "hb != 0 && hb != 1");
    kwsn_status st = conv_geometry(l, l->desc.ints, hb, &nw);
    if (st != KWSN_OK) return st;
    const kwsn_conv1d_ex_args a = conv_ex_args(l);
    const uint64_t L_out = l->out.dim[1];
    l->scratch = kwsn_conv1d_ex_scratch_floats(&a);
    /* a multiply and an add per weight and output position, plus the phase-split copy */
    l->ops = 2u * nw * L_out + (uint64_t)l->scratch;
    return KWSN_OK;
}

static void run_conv_ex(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                        const float *in2, float *out, float *scratch) {
    (void)in2;
    const kwsn_conv1d_ex_args a = conv_ex_args(l);
    const float *w = l->desc.floats;
    const float *b = I(l, 7) ? w + (size_t)a.C_out * (a.C_in / a.groups) * a.k : NULL;
    kt->conv1d_ex(out, in, w, b, &a, scratch);
}

/* ints: in_ch, out_ch, H_in, W_in, kernel_h, kernel_w, stride_h, stride_w, pad_top,
 * pad_bottom, pad_left, pad_right (zeros), groups, has_bias. floats: w[out][in / groups][kh]
 * [kw], then b[out]. [in, H_in * W_in] (or, in == 1, a feature map [H_in, W_in] read as one
 * channel) -> [out, H_out * W_out], each channel row-major. */
/* geo: the 13 ints before has_bias; l->out set (prepare checked it) */
static kwsn_conv2d_args conv2d_args_at(const kwsn_layer *l, const int32_t *geo) {
    kwsn_conv2d_args a;
    a.C_in = (uint32_t)geo[0];
    a.C_out = (uint32_t)geo[1];
    a.H = (uint32_t)geo[2];
    a.W = (uint32_t)geo[3];
    a.kh = (uint32_t)geo[4];
    a.kw = (uint32_t)geo[5];
    a.sh = (uint32_t)geo[6];
    a.sw = (uint32_t)geo[7];
    a.pt = (uint32_t)geo[8];
    a.pl = (uint32_t)geo[10];
    a.groups = (uint32_t)geo[12];
    a.W_out = (a.W + a.pl + (uint32_t)geo[11] - a.kw) / a.sw + 1u;
    a.H_out = (uint32_t)(shape_numel(l->out) / a.C_out) / a.W_out;
    /* a 1x1 conv of stride 1 without padding reads each channel as one row (longer tiles) */
    if (a.kh == 1u && a.kw == 1u && a.sh == 1u && a.sw == 1u && a.pt == 0u && a.pl == 0u &&
        geo[9] == 0 && geo[11] == 0) {
        a.W *= a.H;
        a.W_out = a.W;
        a.H = a.H_out = 1u;
    }
    return a;
}

/* Checks the geometry geo[13] against l->in, sets l->out and *elems (the scratch's offsets and
 * padded rows, in elements); *nw = the weight count. hb >= 0: a float layer, whose n_floats
 * must be the weights plus (hb) a bias. */
static kwsn_status conv2d_geometry(kwsn_layer *l, const int32_t *geo, int32_t hb, uint64_t *nw_out,
                                   uint64_t *elems) {
    const int32_t ci = geo[0], co = geo[1], H = geo[2], W = geo[3], kh = geo[4], kw = geo[5],
                  sh = geo[6], sw = geo[7], pt = geo[8], pb = geo[9], pl = geo[10], pr = geo[11],
                  g = geo[12];
    if (ci < 1 || co < 1 || H < 1 || W < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || g < 1)
        return bad(l, "ci < 1 || co < 1 || H < 1 || W < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 "
                      "|| g < 1");
    if (pt < 0 || pb < 0 || pl < 0 || pr < 0) return bad(l, "pt < 0 || pb < 0 || pl < 0 || pr < 0");
    if (kh > KWSN_MAX_CONV_KERNEL || kw > KWSN_MAX_CONV_KERNEL || sh > KWSN_MAX_CONV_STRIDE ||
        sw > KWSN_MAX_CONV_STRIDE || pt > KWSN_MAX_CONV_KERNEL || pb > KWSN_MAX_CONV_KERNEL ||
        pl > KWSN_MAX_CONV_KERNEL || pr > KWSN_MAX_CONV_KERNEL)
        return KWSN_ERR_TOO_BIG;
    if (ci % g != 0 || co % g != 0) return bad(l, "ci % g != 0 || co % g != 0");
    const uint64_t taps = (uint64_t)(ci / g) * (uint64_t)kh * (uint64_t)kw;
    const uint64_t nw = (uint64_t)co * taps;
    if (nw > KWSN_MAX_ELEMS || (uint64_t)ci * (uint64_t)H * (uint64_t)W > KWSN_MAX_ELEMS)
        return KWSN_ERR_TOO_BIG;
    *nw_out = nw;
    if (hb >= 0 && l->desc.n_floats != nw + (hb ? (uint64_t)co : 0u))
        return bad(l, "hb >= 0 && l->desc.n_floats != nw + (hb ? (uint64_t)co : 0u)");
    if (l->in.ndim != 2 ||
        !((l->in.dim[0] == (uint32_t)ci && l->in.dim[1] == (uint32_t)(H * W)) ||
          (ci == 1 && l->in.dim[0] == (uint32_t)H && l->in.dim[1] == (uint32_t)W)))
        return KWSN_ERR_SHAPE;
    if (H + pt + pb < kh || W + pl + pr < kw) return KWSN_ERR_SHAPE;
    const uint64_t H_out = (uint64_t)(H + pt + pb - kh) / (uint64_t)sh + 1u;
    const uint64_t W_out = (uint64_t)(W + pl + pr - kw) / (uint64_t)sw + 1u;
    if ((uint64_t)co * H_out * W_out > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    /* the scratch (kwsn_conv2d_scratch_floats), in 64 bits before any size_t arithmetic */
    const uint64_t cs = (uint64_t)sw * (W_out + (uint64_t)(kw - 1) / (uint64_t)sw + 1u);
    const uint64_t rows = (H_out - 1u) * (uint64_t)sh + (uint64_t)kh;
    *elems = taps + 16u + (uint64_t)ci * rows * cs;
    if (*elems > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    l->out = shape2((uint32_t)co, (uint32_t)(H_out * W_out));
    return KWSN_OK;
}

static kwsn_status prep_conv2d(kwsn_layer *l) {
    const int32_t hb = I(l, 13);
    uint64_t nw = 0, elems = 0;
    if (hb != 0 && hb != 1) return bad(l, "hb != 0 && hb != 1");
    kwsn_status st = conv2d_geometry(l, l->desc.ints, hb, &nw, &elems);
    if (st != KWSN_OK) return st;
    const kwsn_conv2d_args a = conv2d_args_at(l, l->desc.ints);
    l->scratch = kwsn_conv2d_scratch_floats(&a);
    /* a multiply and an add per weight and output position, plus the phase-split rows */
    l->ops = 2u * nw * l->out.dim[1] + elems;
    return KWSN_OK;
}

static void run_conv2d(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                       const float *in2, float *out, float *scratch) {
    (void)in2;
    const kwsn_conv2d_args a = conv2d_args_at(l, l->desc.ints);
    const float *w = l->desc.floats;
    const float *b = I(l, 13) ? w + (size_t)a.C_out * (a.C_in / a.groups) * a.kh * a.kw : NULL;
    kt->conv2d(out, in, w, b, &a, scratch);
}

/* Two inputs of one shape, no ints or floats. */
static kwsn_status prep_add(kwsn_layer *l) {
    if (l->desc.n_floats != 0) return bad(l, "l->desc.n_floats != 0");
    if (l->in.ndim != l->in2.ndim || l->in.dim[0] != l->in2.dim[0] ||
        l->in.dim[1] != l->in2.dim[1])
        return KWSN_ERR_SHAPE;
    l->out = l->in;
    l->ops = shape_numel(l->in);
    return KWSN_OK;
}

static void run_add(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                    const float *in2, float *out, float *scratch) {
    (void)scratch;
    kt->add(out, in, in2, (uint32_t)shape_numel(l->in));
}

/* ints: channels. floats: score weight [channels], score bias (kwsnet SelfAttentionPooling's
 * Linear(C, 1)). [C, L] -> [C]: every frame valid (fixed-length clips). */
static kwsn_status prep_attn_pool(kwsn_layer *l) {
    const int32_t c = I(l, 0);
    if (c < 1 || l->desc.n_floats != (uint64_t)c + 1u)
        return bad(l, "c < 1 || l->desc.n_floats != (uint64_t)c + 1u");
    if (l->in.ndim != 2 || l->in.dim[0] != (uint32_t)c) return KWSN_ERR_SHAPE;
    l->out = shape1((uint32_t)c);
    l->scratch = l->in.dim[1];
    /* scores (2 per weight), softmax (~4 per frame, exp counted as one), weighted sum */
    l->ops = 4u * (uint64_t)shape_numel(l->in) + 4u * (uint64_t)l->in.dim[1];
    return KWSN_OK;
}

static void run_attn_pool(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                          const float *in2, float *out, float *scratch) {
    (void)in2;
    const float *f = l->desc.floats;
    kt->attn_pool(out, in, f, f[I(l, 0)], l->in.dim[0], l->in.dim[1], scratch);
}

/* ints (at g): channels C, attention_channels H, global_context (0|1). floats (at f): eps,
 * w1[H][A] (A = 3C with the global context, else C), b1[H], w2[C][H], b2[C] (kwsnet
 * AttentiveStatisticsPooling's attention Linear, Tanh, Linear). [C, L] -> [2C] (weighted
 * mean, then weighted std): every frame valid (fixed-length clips). */
static kwsn_asp_args asp_args_at(const int32_t *g, const float *f, kwsn_shape in) {
    kwsn_asp_args a;
    a.C = (uint32_t)g[0];
    a.H = (uint32_t)g[1];
    a.global_context = (uint32_t)g[2];
    a.L = in.dim[1];
    a.eps = f[0];
    a.w1 = f + 1;
    a.b1 = a.w1 + (size_t)a.H * (a.global_context ? 3u : 1u) * a.C;
    a.w2 = a.b1 + a.H;
    a.b2 = a.w2 + (size_t)a.C * a.H;
    return a;
}

static kwsn_status prep_attn_stats_pool(kwsn_layer *l) {
    const int32_t c = I(l, 0), h = I(l, 1), gc = I(l, 2);
    if (c < 1 || h < 1 || (gc != 0 && gc != 1))
        return bad(l, "c < 1 || h < 1 || (gc != 0 && gc != 1)");
    if ((uint64_t)c * (uint64_t)h > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    const uint64_t nw = 1u + (uint64_t)h * (gc ? 3u : 1u) * (uint64_t)c + (uint64_t)h +
                        (uint64_t)c * (uint64_t)h + (uint64_t)c;
    if (l->desc.n_floats != nw) return bad(l, "l->desc.n_floats != nw");
    const float eps = l->desc.floats[0];
    if (!(eps > 0.0f)) return bad(l, "!(eps > 0.0f)");
    if (l->in.ndim != 2 || l->in.dim[0] != (uint32_t)c) return KWSN_ERR_SHAPE;
    const uint64_t L = l->in.dim[1], ch = (uint64_t)c * (uint64_t)h;
    if ((uint64_t)h * L > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    l->out = shape1(2u * (uint32_t)c);
    l->scratch = kwsn_asp_scratch_floats((uint32_t)c, (uint32_t)L, (uint32_t)h);
    /* the attention's two matmuls (2 per weight and frame) and its context (2 per weight),
     * tanh and exp (~20 each), the softmax and the two weighted moments (~8 per element) */
    l->ops = 4u * ch * L + 4u * ch + 20u * (uint64_t)h * L + 28u * (uint64_t)c * L +
             8u * (uint64_t)c * L;
    return KWSN_OK;
}

static void run_attn_stats_pool(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                                const float *in2, float *out, float *scratch) {
    (void)in2;
    const kwsn_asp_args a = asp_args_at(l->desc.ints, l->desc.floats, l->in);
    kt->attn_stats_pool(out, in, &a, scratch);
}

/* ints: n. floats: eps. [n] -> [n]: x / max(||x||_2, eps) (torch.nn.functional.normalize;
 * with the head's normalised, scaled class weights as the next Linear it is an AAM-softmax /
 * AM-softmax head at inference). */
static kwsn_status prep_l2norm(kwsn_layer *l) {
    const int32_t n = I(l, 0);
    if (n < 1 || l->desc.n_floats != 1u) return bad(l, "n < 1 || l->desc.n_floats != 1u");
    const float eps = l->desc.floats[0];
    if (!(eps > 0.0f)) return bad(l, "!(eps > 0.0f)");
    if (l->in.ndim != 1 || l->in.dim[0] != (uint32_t)n) return KWSN_ERR_SHAPE;
    l->out = l->in;
    l->ops = 4u * (uint64_t)n;
    return KWSN_OK;
}

static void run_l2norm(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                       const float *in2, float *out, float *scratch) {
    (void)in2, (void)scratch;
    kt->l2norm(out, in, (uint32_t)I(l, 0), l->desc.floats[0]);
}

/* RowAffine and BroadcastAdd geometry g = C, H, W: input 0 is [C, H * W] (a channel of H rows
 * of W), and the output too. */
static kwsn_status rows_geometry(kwsn_layer *l, const int32_t *g) {
    const int32_t c = g[0], h = g[1], w = g[2];
    if (c < 1 || h < 1 || w < 1) return bad(l, "c < 1 || h < 1 || w < 1");
    if ((uint64_t)c * (uint64_t)h * (uint64_t)w > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    if (l->in.ndim != 2 || l->in.dim[0] != (uint32_t)c ||
        l->in.dim[1] != (uint32_t)h * (uint32_t)w)
        return KWSN_ERR_SHAPE;
    l->out = l->in;
    return KWSN_OK;
}

/* ints: C, H, W. floats: scale[C * H], shift[C * H]. [C, H * W] -> [C, H * W]: out[c, h, w] =
 * x[c, h, w] * scale[c, h] + shift[c, h]: SubSpectralNorm at inference (a BatchNorm per
 * channel and frequency sub-band, each sub-band's affine repeated on its rows). */
static kwsn_status prep_row_affine(kwsn_layer *l) {
    const uint64_t rows = (uint64_t)(uint32_t)I(l, 0) * (uint64_t)(uint32_t)I(l, 1);
    const kwsn_status st = rows_geometry(l, l->desc.ints);
    if (st != KWSN_OK) return st;
    if (l->desc.n_floats != 2u * rows) return bad(l, "l->desc.n_floats != 2u * rows");
    l->ops = 2u * (uint64_t)shape_numel(l->in);
    return KWSN_OK;
}

static void run_row_affine(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                           const float *in2, float *out, float *scratch) {
    (void)in2, (void)scratch;
    const uint32_t rows = (uint32_t)I(l, 0) * (uint32_t)I(l, 1);
    const float *f = l->desc.floats;
    kt->row_affine(out, in, f, f + rows, rows, (uint32_t)I(l, 2));
}

/* No ints or floats: x * sigmoid(x) elementwise. */
static kwsn_status prep_silu(kwsn_layer *l) {
    const kwsn_status st = prep_elementwise(l);
    l->ops = 20u * (uint64_t)shape_numel(l->in); /* exp, a divide, a few more */
    return st;
}

static void run_silu(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                     const float *in2, float *out, float *scratch) {
    (void)in2, (void)scratch;
    kt->silu(out, in, (uint32_t)shape_numel(l->in));
}

/* ints (at g): C, H, W. Inputs a [C, H * W] and b [C, W]: out[c, h, w] = a[c, h, w] + b[c, w]
 * (BC-ResNet adds its temporal branch to every frequency row). */
static kwsn_status bcast_geometry(kwsn_layer *l, const int32_t *g) {
    const kwsn_status st = rows_geometry(l, g);
    if (st != KWSN_OK) return st;
    if (l->in2.ndim != 2 || l->in2.dim[0] != (uint32_t)g[0] || l->in2.dim[1] != (uint32_t)g[2])
        return KWSN_ERR_SHAPE;
    l->ops = shape_numel(l->in);
    return KWSN_OK;
}

static kwsn_status prep_broadcast_add(kwsn_layer *l) {
    if (l->desc.n_floats != 0) return bad(l, "l->desc.n_floats != 0");
    return bcast_geometry(l, l->desc.ints);
}

static void run_broadcast_add(const kwsn_kernel_table *kt, const kwsn_layer *l, const float *in,
                              const float *in2, float *out, float *scratch) {
    (void)scratch;
    const uint32_t H = (uint32_t)I(l, 1), W = (uint32_t)I(l, 2);
    const size_t rows = (size_t)(uint32_t)I(l, 0) * H;
    for (size_t r = 0; r < rows; r++)
        kt->add(out + r * W, in + r * W, in2 + (r / H) * W, W);
}

/* THE table of ops: {type, name, n_ints, n_inputs, overwrites_input, prepare, run}. */
static const kwsn_op kwsn_ops[] = {
    {KWSN_LAYER_AVGPOOL1D, "AvgPool1d", 2, 1, 0, check_pool, run_avgpool},
    {KWSN_LAYER_CONV1D, "Conv1d", 4, 1, 0, prep_conv, run_conv},
    {KWSN_LAYER_LAYERNORM, "LayerNorm", 4, 1, 1, prep_layernorm, run_layernorm},
    {KWSN_LAYER_RELU, "ReLU", 0, 1, 1, prep_elementwise, run_relu},
    {KWSN_LAYER_MAXPOOL1D, "MaxPool1d", 2, 1, 0, check_pool, run_maxpool},
    {KWSN_LAYER_ADAPTIVE_AVGPOOL1D, "AdaptiveAvgPool1d", 1, 1, 0, prep_adaptive_avg,
     run_adaptive_avg},
    {KWSN_LAYER_FLATTEN, "Flatten", 0, 1, 1, prep_flatten, run_flatten},
    {KWSN_LAYER_LINEAR, "Linear", 3, 1, 0, prep_linear, run_linear},
    {KWSN_LAYER_FRONTEND, "FrontEnd", 7, 1, 0, prep_frontend, run_frontend},
    {KWSN_LAYER_CONV1D_EX, "Conv1dEx", 8, 1, 0, prep_conv_ex, run_conv_ex},
    {KWSN_LAYER_ADD, "Add", 0, 2, 1, prep_add, run_add},
    {KWSN_LAYER_ATTN_POOL, "AttnPool", 1, 1, 0, prep_attn_pool, run_attn_pool},
    {KWSN_LAYER_CONV2D, "Conv2d", 14, 1, 0, prep_conv2d, run_conv2d},
    {KWSN_LAYER_ATTN_STATS_POOL, "AttnStatsPool", 3, 1, 0, prep_attn_stats_pool,
     run_attn_stats_pool},
    {KWSN_LAYER_L2NORM, "L2Norm", 1, 1, 0, prep_l2norm, run_l2norm},
    {KWSN_LAYER_ROW_AFFINE, "RowAffine", 3, 1, 1, prep_row_affine, run_row_affine},
    {KWSN_LAYER_SILU, "SiLU", 0, 1, 1, prep_silu, run_silu},
    /* not overwrites_input: out must not take b's (smaller, still read) slot */
    {KWSN_LAYER_BROADCAST_ADD, "BroadcastAdd", 3, 2, 0, prep_broadcast_add, run_broadcast_add},
};
#define KWSN_N_OPS (sizeof(kwsn_ops) / sizeof(kwsn_ops[0]))

static const kwsn_op *find_op(uint32_t type) {
    for (size_t i = 0; i < KWSN_N_OPS; i++)
        if (kwsn_ops[i].type == type) return &kwsn_ops[i];
    return NULL;
}


/* ------------------------------------------------------------------ int8 layer table */

/* An int8 layer (format 3): ints[0..3) = out_zero_point, act_min, act_max, floats[0] =
 * out_scale (checked by prepare_layers), then QI(l, k) = the op's own ints. in / in2 are
 * int8 codes; audio is the model's float input (read by a FrontEnd only). */
typedef struct {
    uint32_t type; /* KWSN_LAYER_* (without KWSN_INT8_FLAG) */
    uint32_t n_ints;
    uint32_t n_inputs;
    int overwrites_input;
    kwsn_status (*prepare)(kwsn_layer *l);
    void (*run)(const kwsn_kernel_table *k, const kwsn_layer *l, const int8_t *in,
                const int8_t *in2, int8_t *out, void *scratch, const float *audio);
} kwsn_qop;

#define QI(l, k) ((l)->desc.ints[3 + (k)])
#define Q_ZP(l) ((l)->desc.ints[0])
#define Q_MIN(l) ((l)->desc.ints[1])
#define Q_MAX(l) ((l)->desc.ints[2])
#define Q_SCALE(l) ((l)->desc.floats[0])

static size_t bytes_to_floats(uint64_t b) { return (size_t)((b + 3u) / 4u); }

/* A multiplier M is 0 or in [2^30, 2^31); a shift in [-31, 30]. */
static int q8_mult_ok(int32_t m, int32_t shift) {
    return (m == 0 || m >= (INT32_C(1) << 30)) && shift >= -31 && shift <= 30;
}

static int q8_same_params(const kwsn_layer *l) {
    uint32_t a, b;
    float s = Q_SCALE(l);
    memcpy(&a, &s, 4);
    memcpy(&b, &l->in_q.scale, 4);
    return a == b && Q_ZP(l) == l->in_q.zero_point;
}

/* Weights in [-127, 127]; per output channel sum |w| * 255 + |bias| <= INT32_MAX (no partial
 * sum of the int32 accumulator can overflow, in any order); multipliers and shifts valid.
 * words: bias[co], mult[co], shift[co]. */
static kwsn_status q8_check_weights(const kwsn_layer *l, uint32_t co, uint64_t per_out) {
    const int8_t *w = l->desc.bytes;
    const int32_t *bias = l->desc.words, *mult = bias + co, *shift = mult + co;
    for (uint32_t o = 0; o < co; o++) {
        int64_t sum = 0;
        const int8_t *wo = w + (size_t)o * per_out;
        for (uint64_t j = 0; j < per_out; j++) {
            if (wo[j] == -128) return bad(l, "wo[j] == -128");
            sum += wo[j] < 0 ? -wo[j] : wo[j];
        }
        const int64_t b = bias[o] < 0 ? -(int64_t)bias[o] : (int64_t)bias[o];
        if (sum * 255 + b > INT32_MAX) return bad(l, "sum * 255 + b > INT32_MAX");
        if (!q8_mult_ok(mult[o], shift[o])) return bad(l, "!q8_mult_ok(mult[o], shift[o])");
    }
    return KWSN_OK;
}

static kwsn_q8_requant q8_requant_of(const kwsn_layer *l, uint32_t co) {
    kwsn_q8_requant rq;
    rq.bias = l->desc.words;
    rq.mult = l->desc.words + co;
    rq.shift = l->desc.words + 2u * (size_t)co;
    rq.zp_in = l->in_q.zero_point;
    rq.zp_out = Q_ZP(l);
    rq.act_min = Q_MIN(l);
    rq.act_max = Q_MAX(l);
    return rq;
}

/* Conv1dEx / Conv1d: ints in, out, kernel, stride, padding, dilation, groups; floats
 * out_scale, weight_scale[out]; words bias, multiplier, shift [out]; bytes weight. */
static kwsn_status prep_conv_q8(kwsn_layer *l) {
    uint64_t nw = 0;
    kwsn_status st = conv_geometry(l, &QI(l, 0), -1, &nw);
    if (st != KWSN_OK) return st;
    const uint32_t co = l->out.dim[0];
    if (l->desc.n_floats != 1u + (uint64_t)co || l->desc.n_words != 3u * (uint64_t)co ||
        l->desc.n_bytes != nw)
        return bad(l, "l->desc.n_floats != 1u + (uint64_t)co || l->desc.n_words != 3u * "
                      "(uint64_t)co || l->desc.n_bytes != nw");
    st = q8_check_weights(l, co, nw / co);
    if (st != KWSN_OK) return st;
    const kwsn_conv1d_ex_args a = conv_args_at(l, &QI(l, 0));
    l->scratch = bytes_to_floats(kwsn_conv1d_q8_scratch_bytes(&a));
    /* a multiply and an add per weight and position, the centred copy, the requantisation */
    l->ops = 2u * nw * l->out.dim[1] + (uint64_t)a.C_in * kwsn_conv1d_ex_channel_floats(&a) +
             8u * (uint64_t)co * l->out.dim[1];
    return KWSN_OK;
}

static void run_conv_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                        const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in2, (void)audio;
    const kwsn_conv1d_ex_args a = conv_args_at(l, &QI(l, 0));
    const kwsn_q8_requant rq = q8_requant_of(l, a.C_out);
    kt->conv1d_q8(out, in, l->desc.bytes, &rq, &a, l->packed, scratch);
}

/* Conv2d: ints the float Conv2d's geometry (no has_bias); floats out_scale,
 * weight_scale[out]; words bias, multiplier, shift [out]; bytes weight[out][in / g][kh][kw]. */
static kwsn_status prep_conv2d_q8(kwsn_layer *l) {
    uint64_t nw = 0, elems = 0;
    kwsn_status st = conv2d_geometry(l, &QI(l, 0), -1, &nw, &elems);
    if (st != KWSN_OK) return st;
    const uint32_t co = l->out.dim[0];
    if (l->desc.n_floats != 1u + (uint64_t)co || l->desc.n_words != 3u * (uint64_t)co ||
        l->desc.n_bytes != nw)
        return bad(l, "l->desc.n_floats != 1u + (uint64_t)co || l->desc.n_words != 3u * "
                      "(uint64_t)co || l->desc.n_bytes != nw");
    st = q8_check_weights(l, co, nw / co);
    if (st != KWSN_OK) return st;
    const kwsn_conv2d_args a = conv2d_args_at(l, &QI(l, 0));
    l->scratch = bytes_to_floats(kwsn_conv2d_q8_scratch_bytes(&a));
    /* multiply-adds, the centred rows, the requantisation */
    l->ops = 2u * nw * l->out.dim[1] + elems + 8u * (uint64_t)co * l->out.dim[1];
    return KWSN_OK;
}

static void run_conv2d_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                          const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in2, (void)audio;
    const kwsn_conv2d_args a = conv2d_args_at(l, &QI(l, 0));
    const kwsn_q8_requant rq = q8_requant_of(l, a.C_out);
    kt->conv2d_q8(out, in, l->desc.bytes, &rq, &a, l->packed, scratch);
}

/* Linear: ints in, out; the rest as a conv (weight [out][in]). */
static kwsn_status prep_linear_q8(kwsn_layer *l) {
    const int32_t fi = QI(l, 0), fo = QI(l, 1);
    if (fi < 1 || fo < 1) return bad(l, "fi < 1 || fo < 1");
    if ((uint64_t)fi * (uint64_t)fo > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    if (l->desc.n_floats != 1u + (uint64_t)fo || l->desc.n_words != 3u * (uint64_t)fo ||
        l->desc.n_bytes != (uint64_t)fi * (uint64_t)fo)
        return bad(l, "l->desc.n_floats != 1u + (uint64_t)fo || l->desc.n_words != 3u * "
                      "(uint64_t)fo || l->desc.n_bytes != (uint64_t)fi * (uint64_t)fo");
    if (l->in.ndim != 1 || l->in.dim[0] != (uint32_t)fi) return KWSN_ERR_SHAPE;
    kwsn_status st = q8_check_weights(l, (uint32_t)fo, (uint64_t)fi);
    if (st != KWSN_OK) return st;
    l->out = shape1((uint32_t)fo);
    l->scratch = bytes_to_floats(2u * (uint64_t)fi);
    l->ops = 2u * (uint64_t)fi * fo + fi + 8u * (uint64_t)fo;
    return KWSN_OK;
}

static void run_linear_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                          const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in2, (void)audio;
    const kwsn_q8_requant rq = q8_requant_of(l, (uint32_t)QI(l, 1));
    kt->linear_q8(out, in, l->desc.bytes, &rq, (uint32_t)QI(l, 0), (uint32_t)QI(l, 1), scratch);
}

/* AvgPool1d / AdaptiveAvgPool1d (mean: kernel = stride = L): ints kernel, stride; words M,
 * shift. */
static kwsn_status prep_avgpool_q8(kwsn_layer *l) {
    if (l->desc.n_floats != 1u || l->desc.n_words != 2u || l->desc.n_bytes != 0u)
        return bad(l, "l->desc.n_floats != 1u || l->desc.n_words != 2u || l->desc.n_bytes != 0u");
    kwsn_status st = pool_geometry(l, QI(l, 0), QI(l, 1));
    if (st != KWSN_OK) return st;
    if ((int64_t)QI(l, 0) * 255 > INT32_MAX) return KWSN_ERR_TOO_BIG;
    if (!q8_mult_ok(l->desc.words[0], l->desc.words[1]))
        return bad(l, "!q8_mult_ok(l->desc.words[0], l->desc.words[1])");
    l->ops += 8u * (uint64_t)shape_numel(l->out);
    return KWSN_OK;
}

static void run_avgpool_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                           const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in2, (void)scratch, (void)audio;
    kwsn_q8_requant rq = q8_requant_of(l, 0);
    rq.bias = NULL;
    rq.mult = &l->desc.words[0];
    rq.shift = &l->desc.words[1];
    kt->avgpool1d_q8(out, in, l->in.dim[0], l->in.dim[1], (uint32_t)QI(l, 0), (uint32_t)QI(l, 1),
                     l->out.dim[1], &rq);
}

/* MaxPool1d: ints kernel, stride; the input's quantisation. */
static kwsn_status prep_maxpool_q8(kwsn_layer *l) {
    if (l->desc.n_floats != 1u || l->desc.n_words != 0u || l->desc.n_bytes != 0u ||
        !q8_same_params(l))
        return bad(l, "l->desc.n_floats != 1u || l->desc.n_words != 0u || l->desc.n_bytes != 0u || "
                      "!q8_same_params(l)");
    return pool_geometry(l, QI(l, 0), QI(l, 1));
}

static void run_maxpool_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                           const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in2, (void)scratch, (void)audio;
    kt->maxpool1d_q8(out, in, l->in.dim[0], l->in.dim[1], (uint32_t)QI(l, 0), (uint32_t)QI(l, 1),
                     l->out.dim[1]);
}

/* ReLU: ints alias (1: the producer's clamp did it, a copy; 0: max(q, act_min)). */
static kwsn_status prep_relu_q8(kwsn_layer *l) {
    if (l->desc.n_floats != 1u || l->desc.n_words != 0u || l->desc.n_bytes != 0u ||
        (QI(l, 0) != 0 && QI(l, 0) != 1) || !q8_same_params(l))
        return bad(l, "l->desc.n_floats != 1u || l->desc.n_words != 0u || l->desc.n_bytes != 0u || "
                      "(QI(l, 0) != 0 && QI(l, 0) != 1) || !q8_same_params(l)");
    l->out = l->in;
    l->ops = shape_numel(l->in);
    return KWSN_OK;
}

static void run_relu_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                        const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)kt, (void)in2, (void)scratch, (void)audio;
    const size_t n = shape_numel(l->in);
    if (QI(l, 0)) {
        if (out != in) memcpy(out, in, n);
        return;
    }
    const int8_t lo = (int8_t)Q_MIN(l);
    for (size_t j = 0; j < n; j++) out[j] = in[j] < lo ? lo : in[j];
}

static kwsn_status prep_flatten_q8(kwsn_layer *l) {
    if (l->desc.n_floats != 1u || l->desc.n_words != 0u || l->desc.n_bytes != 0u ||
        !q8_same_params(l))
        return bad(l, "l->desc.n_floats != 1u || l->desc.n_words != 0u || l->desc.n_bytes != 0u || "
                      "!q8_same_params(l)");
    l->out = shape1((uint32_t)shape_numel(l->in));
    return KWSN_OK;
}

static void run_flatten_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                           const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)kt, (void)in2, (void)scratch, (void)audio;
    if (out != in) memcpy(out, in, shape_numel(l->in));
}

/* Add: ints left_shift; words M_a, s_a, M_b, s_b, M_out, s_out. The input shifts are <= 0
 * (a' and b' are at most |x| * 2^left_shift) and left_shift <= 22, so a' + b' fits int32. */
#define KWSN_Q8_MAX_ADD_SHIFT 22
static kwsn_status q8_add_params(kwsn_layer *l) {
    const int32_t *w = l->desc.words;
    if (l->desc.n_floats != 1u || l->desc.n_words != 6u || l->desc.n_bytes != 0u)
        return bad(l, "l->desc.n_floats != 1u || l->desc.n_words != 6u || l->desc.n_bytes != 0u");
    if (QI(l, 0) < 0 || QI(l, 0) > KWSN_Q8_MAX_ADD_SHIFT)
        return bad(l, "QI(l, 0) < 0 || QI(l, 0) > KWSN_Q8_MAX_ADD_SHIFT");
    if (!q8_mult_ok(w[0], w[1]) || !q8_mult_ok(w[2], w[3]) || !q8_mult_ok(w[4], w[5]) ||
        w[1] > 0 || w[3] > 0)
        return bad(l, "!q8_mult_ok(w[0], w[1]) || !q8_mult_ok(w[2], w[3]) || !q8_mult_ok(w[4], "
                      "w[5]) || w[1] > 0 || w[3] > 0");
    return KWSN_OK;
}

static kwsn_status prep_add_q8(kwsn_layer *l) {
    const kwsn_status st = q8_add_params(l);
    if (st != KWSN_OK) return st;
    if (l->in.ndim != l->in2.ndim || l->in.dim[0] != l->in2.dim[0] ||
        l->in.dim[1] != l->in2.dim[1])
        return KWSN_ERR_SHAPE;
    l->out = l->in;
    l->ops = 24u * (uint64_t)shape_numel(l->in);
    return KWSN_OK;
}

static kwsn_q8_add q8_add_of(const kwsn_layer *l) {
    const int32_t *w = l->desc.words;
    kwsn_q8_add p;
    p.zp_a = l->in_q.zero_point;
    p.zp_b = l->in2_q.zero_point;
    p.left_shift = QI(l, 0);
    p.m_a = w[0], p.s_a = w[1], p.m_b = w[2], p.s_b = w[3], p.m_o = w[4], p.s_o = w[5];
    p.zp_out = Q_ZP(l);
    p.act_min = Q_MIN(l);
    p.act_max = Q_MAX(l);
    return p;
}

static void run_add_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                       const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)scratch, (void)audio;
    const kwsn_q8_add p = q8_add_of(l);
    kt->add_q8(out, in, in2, 1u, 1u, (uint32_t)shape_numel(l->in), &p);
}

/* BroadcastAdd: ints left_shift, C, H, W; words as Add; b [C, W] added to each of a's rows. */
static kwsn_status prep_broadcast_add_q8(kwsn_layer *l) {
    kwsn_status st = q8_add_params(l);
    if (st == KWSN_OK) st = bcast_geometry(l, &QI(l, 1));
    if (st != KWSN_OK) return st;
    l->ops = 24u * (uint64_t)shape_numel(l->in);
    return KWSN_OK;
}

static void run_broadcast_add_q8(const kwsn_kernel_table *kt, const kwsn_layer *l,
                                 const int8_t *in, const int8_t *in2, int8_t *out, void *scratch,
                                 const float *audio) {
    (void)scratch, (void)audio;
    const kwsn_q8_add p = q8_add_of(l);
    const uint32_t H = (uint32_t)QI(l, 2), W = (uint32_t)QI(l, 3);
    const size_t rows = (size_t)(uint32_t)QI(l, 1) * H;
    kt->add_q8(out, in, in2, rows, H, W, &p);
}

/* RowAffine: ints C, H, W; a depthwise kernel-1 conv over the C * H rows of W codes (one
 * weight, bias, multiplier and shift per row): floats out_scale, weight_scale[C * H]; words
 * bias, multiplier, shift [C * H]; bytes weight[C * H]. */
static kwsn_conv1d_ex_args row_affine_q8_args(const kwsn_layer *l) {
    kwsn_conv1d_ex_args a;
    a.C_in = a.C_out = a.groups = (uint32_t)QI(l, 0) * (uint32_t)QI(l, 1);
    a.L = a.L_out = (uint32_t)QI(l, 2);
    a.k = a.stride = a.dil = 1u;
    a.pad = 0u;
    return a;
}

static kwsn_status prep_row_affine_q8(kwsn_layer *l) {
    kwsn_status st = rows_geometry(l, &QI(l, 0));
    if (st != KWSN_OK) return st;
    const uint64_t rows = (uint64_t)(uint32_t)QI(l, 0) * (uint64_t)(uint32_t)QI(l, 1);
    if (l->desc.n_floats != 1u + rows || l->desc.n_words != 3u * rows || l->desc.n_bytes != rows)
        return bad(l, "l->desc.n_floats != 1u + rows || l->desc.n_words != 3u * rows || "
                      "l->desc.n_bytes != rows");
    st = q8_check_weights(l, (uint32_t)rows, 1u);
    if (st != KWSN_OK) return st;
    const kwsn_conv1d_ex_args a = row_affine_q8_args(l);
    l->scratch = bytes_to_floats(kwsn_conv1d_q8_scratch_bytes(&a));
    l->ops = 12u * (uint64_t)shape_numel(l->in);
    return KWSN_OK;
}

static void run_row_affine_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                              const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in2, (void)audio;
    const kwsn_conv1d_ex_args a = row_affine_q8_args(l);
    const kwsn_q8_requant rq = q8_requant_of(l, a.C_out);
    kt->conv1d_q8(out, in, l->desc.bytes, &rq, &a, l->packed, scratch);
}

/* SiLU: no ints of its own; bytes the table of all 256 input codes, out = table[q + 128]
 * (kwsnet/quant/ptq.py rounds x sigmoid(x) of each code's real value once), every entry in
 * [act_min, act_max]. */
static kwsn_status prep_silu_q8(kwsn_layer *l) {
    if (l->desc.n_floats != 1u || l->desc.n_words != 0u || l->desc.n_bytes != 256u)
        return bad(l, "l->desc.n_floats != 1u || l->desc.n_words != 0u || l->desc.n_bytes != 256u");
    for (uint32_t j = 0; j < 256u; j++)
        if (l->desc.bytes[j] < Q_MIN(l) || l->desc.bytes[j] > Q_MAX(l))
            return bad(l, "l->desc.bytes[j] < Q_MIN(l) || l->desc.bytes[j] > Q_MAX(l)");
    l->out = l->in;
    l->ops = shape_numel(l->in);
    return KWSN_OK;
}

static void run_silu_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                        const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)kt, (void)in2, (void)scratch, (void)audio;
    const int8_t *table = l->desc.bytes;
    const size_t n = shape_numel(l->in);
    for (size_t j = 0; j < n; j++) out[j] = table[(int32_t)in[j] + 128];
}

/* The float layer inside an int8 one (the FrontEnd, a float island): its ints / floats after
 * the common prefix (n_ints of them; the output scale first among the floats). Its prepare
 * records a refused check in its own why: copy it back to l->why (kwsn_parse_error). */
static kwsn_layer island_float_layer(const kwsn_layer *l, uint32_t n_ints) {
    kwsn_layer t = *l;
    for (uint32_t k = 0; k < n_ints; k++) t.desc.ints[k] = QI(l, k);
    t.desc.n_ints = n_ints;
    t.desc.floats = l->desc.floats + 1;
    t.desc.n_floats = l->desc.n_floats - 1u;
    t.why = NULL;
    return t;
}

/* Floats rounded up to a multiple of 16 (64 bytes): where a float area after another in an
 * int8 layer's scratch starts, so that it keeps the arena's 64-byte alignment. */
static size_t round16(size_t n) { return (n + 15u) & ~(size_t)15u; }

/* FrontEnd: ints / floats after the common prefix = the float FrontEnd's; the float features
 * go to the start of scratch, the front end's own scratch after them (64-byte aligned: its
 * FFT buffers' 64-byte vectors then never straddle cache lines), then they are quantised. */
static kwsn_status prep_frontend_q8(kwsn_layer *l) {
    if (l->desc.n_words != 0u || l->desc.n_bytes != 0u || l->desc.n_floats < 2u)
        return bad(l, "l->desc.n_words != 0u || l->desc.n_bytes != 0u || l->desc.n_floats < 2u");
    kwsn_layer t = island_float_layer(l, 7u);
    const kwsn_status st = prep_frontend(&t);
    l->why = t.why;
    if (st != KWSN_OK) return st;
    l->out = t.out;
    l->scratch = round16(shape_numel(t.out)) + t.scratch;
    l->ops = t.ops + 4u * (uint64_t)shape_numel(t.out);
    return KWSN_OK;
}

static void run_frontend_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                            const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in, (void)in2;
    const kwsn_frontend fe = frontend_at(&QI(l, 0), l->desc.floats + 1);
    const size_t n = shape_numel(l->out);
    float *feats = (float *)scratch;
    if (l->packed)
        kwsn_frontend_run_tables(&fe, (const float *)l->packed, kt->name, audio,
                                 (uint32_t)shape_numel(l->in), feats + round16(n), feats);
    else
        kwsn_frontend_run(&fe, audio, (uint32_t)shape_numel(l->in), feats + round16(n), feats);
    kt->quantize_q8(out, feats, n, Q_SCALE(l), Q_ZP(l), Q_MIN(l));
}

/* A float island of an int8 model (AttnStatsPool, L2Norm): the input codes dequantised,
 * (float)(q - zp) * scale, then the float op, then its output quantised with the layer's own
 * scale and zero point (act_max 127). ints / floats after the common prefix are the float
 * op's (n_ints of them); no words or bytes. Scratch: the float input and output (each
 * rounded up to 16 floats), then the float op's. */
static kwsn_status prep_island_q8(kwsn_layer *l, kwsn_status (*prep)(kwsn_layer *),
                                  uint32_t n_ints) {
    if (l->desc.n_words != 0u || l->desc.n_bytes != 0u || l->desc.n_floats < 2u || Q_MAX(l) != 127)
        return bad(l, "l->desc.n_words != 0u || l->desc.n_bytes != 0u || l->desc.n_floats < 2u || "
                      "Q_MAX(l) != 127");
    kwsn_layer t = island_float_layer(l, n_ints);
    const kwsn_status st = prep(&t);
    l->why = t.why;
    if (st != KWSN_OK) return st;
    l->out = t.out;
    l->scratch = round16(shape_numel(l->in)) + round16(shape_numel(l->out)) + t.scratch;
    l->ops = t.ops + 2u * (uint64_t)shape_numel(l->in) + 4u * (uint64_t)shape_numel(l->out);
    return KWSN_OK;
}

static void run_island_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                          int8_t *out, void *scratch, uint32_t n_ints,
                          void (*run)(const kwsn_kernel_table *, const kwsn_layer *,
                                      const float *, const float *, float *, float *)) {
    const kwsn_layer t = island_float_layer(l, n_ints);
    const size_t n_in = shape_numel(l->in), n_out = shape_numel(l->out);
    float *x = (float *)scratch, *y = x + round16(n_in);
    kt->dequantize_q8(x, in, n_in, l->in_q.scale, l->in_q.zero_point);
    run(kt, &t, x, NULL, y, y + round16(n_out));
    kt->quantize_q8(out, y, n_out, Q_SCALE(l), Q_ZP(l), Q_MIN(l));
}

static kwsn_status prep_attn_stats_pool_q8(kwsn_layer *l) {
    return prep_island_q8(l, prep_attn_stats_pool, 3u);
}

static void run_attn_stats_pool_q8(const kwsn_kernel_table *kt, const kwsn_layer *l,
                                   const int8_t *in, const int8_t *in2, int8_t *out,
                                   void *scratch, const float *audio) {
    (void)in2, (void)audio;
    run_island_q8(kt, l, in, out, scratch, 3u, run_attn_stats_pool);
}

static kwsn_status prep_l2norm_q8(kwsn_layer *l) { return prep_island_q8(l, prep_l2norm, 1u); }

static void run_l2norm_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                          const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in2, (void)audio;
    run_island_q8(kt, l, in, out, scratch, 1u, run_l2norm);
}

/* LayerNorm (integer): ints norm_ndim, d0, d1, frac_bits, beta_shift; floats out_scale,
 * gamma_scale, eps; words M, shift, E_lo, E_hi; bytes gamma int8[N], then B int16 LE [N]
 * (beta in the accumulator's units is B << beta_shift). |Z| <= 2^(K + 11) + 1 for
 * N <= 2^20, so |B << b| <= INT32_MAX - 127 (2^(K+11) + 1) keeps Z G + (B << b) in int32. */
#define KWSN_Q8_LN_MAX_N (1u << 20)
#define KWSN_Q8_LN_MAX_FRAC 12
static kwsn_status prep_layernorm_q8(kwsn_layer *l) {
    const int32_t nd = QI(l, 0), d0 = QI(l, 1), d1 = QI(l, 2), kb = QI(l, 3), bsh = QI(l, 4);
    if ((nd != 1 && nd != 2) || d0 < 1 || d1 < 1 || (nd == 1 && d1 != 1) || kb < 0 ||
        kb > KWSN_Q8_LN_MAX_FRAC || bsh < 0 || bsh > 16)
        return bad(l, "(nd != 1 && nd != 2) || d0 < 1 || d1 < 1 || (nd == 1 && d1 != 1) || kb < 0 "
                      "|| kb > KWSN_Q8_LN_MAX_FRAC || bsh < 0 || bsh > 16");
    const uint64_t n = (uint64_t)d0 * (uint64_t)d1;
    if (n > KWSN_Q8_LN_MAX_N) return KWSN_ERR_TOO_BIG;
    if (l->desc.n_floats != 3u || l->desc.n_words != 4u || l->desc.n_bytes != 3u * n)
        return bad(l, "l->desc.n_floats != 3u || l->desc.n_words != 4u || l->desc.n_bytes != 3u * "
                      "n");
    const int32_t *w = l->desc.words;
    if (!q8_mult_ok(w[0], w[1]) || w[3] < 0 || w[3] >= (INT32_C(1) << 30))
        return bad(l, "!q8_mult_ok(w[0], w[1]) || w[3] < 0 || w[3] >= (INT32_C(1) << 30)");
    const int64_t b_max = (int64_t)INT32_MAX - 127 * (((int64_t)1 << (kb + 11)) + 1);
    const uint8_t *beta = (const uint8_t *)(const void *)(l->desc.bytes + n);
    for (uint64_t i = 0; i < n; i++) {
        int64_t bv = (int64_t)((uint32_t)beta[2u * i] | ((uint32_t)beta[2u * i + 1u] << 8));
        bv -= (bv & 0x8000) << 1; /* int16 */
        bv *= (int64_t)1 << bsh;
        if (l->desc.bytes[i] == -128 || bv > b_max || bv < -b_max)
            return bad(l, "l->desc.bytes[i] == -128 || bv > b_max || bv < -b_max");
    }
    if (nd == 2) {
        if (l->in.ndim != 2 || l->in.dim[0] != (uint32_t)d0 || l->in.dim[1] != (uint32_t)d1)
            return KWSN_ERR_SHAPE;
    } else {
        uint32_t last = l->in.ndim == 2 ? l->in.dim[1] : l->in.dim[0];
        if (last != (uint32_t)d0) return KWSN_ERR_SHAPE;
    }
    l->out = l->in;
    l->ops = 24u * (uint64_t)shape_numel(l->in);
    return KWSN_OK;
}

/* The kernel's parameters of LayerNorm l (unpooled). */
static kwsn_q8_layernorm layernorm_q8_params(const kwsn_layer *l) {
    const uint32_t n = (uint32_t)QI(l, 1) * (uint32_t)QI(l, 2);
    const int32_t *w = l->desc.words;
    kwsn_q8_layernorm p;
    p.gamma = l->desc.bytes;
    p.beta = (const uint8_t *)(const void *)(l->desc.bytes + n);
    p.beta_shift = QI(l, 4);
    p.e = ((uint64_t)(uint32_t)w[3] << 32) | (uint64_t)(uint32_t)w[2];
    p.zp_in = l->in_q.zero_point;
    p.zp_out = Q_ZP(l);
    p.act_min = Q_MIN(l);
    p.act_max = Q_MAX(l);
    p.m = w[0];
    p.shift = w[1];
    p.frac_bits = QI(l, 3);
    p.pool = 1u;
    p.row = n;
    return p;
}

static void run_layernorm_q8(const kwsn_kernel_table *kt, const kwsn_layer *l, const int8_t *in,
                             const int8_t *in2, int8_t *out, void *scratch, const float *audio) {
    (void)in2, (void)scratch, (void)audio;
    const uint32_t n = (uint32_t)QI(l, 1) * (uint32_t)QI(l, 2);
    const kwsn_q8_layernorm p = layernorm_q8_params(l);
    kt->layernorm_q8(out, in, (uint32_t)(shape_numel(l->in) / n), n, &p);
}

/* LayerNorm l, then (the layers fuse_next says) a ReLU and the MaxPool mp, in one pass: out
 * is mp's output (kwsn_q8_layernorm.pool: the same codes, one requantisation per window).
 * relu NULL: none; a ReLU that is a copy (alias) changes nothing, else raises act_min. */
static void run_layernorm_pool_q8(const kwsn_kernel_table *kt, const kwsn_layer *l,
                                  const kwsn_layer *relu, const kwsn_layer *mp, const int8_t *in,
                                  int8_t *out) {
    const uint32_t n = (uint32_t)QI(l, 1) * (uint32_t)QI(l, 2);
    kwsn_q8_layernorm p = layernorm_q8_params(l);
    if (relu && !QI(relu, 0) && Q_MIN(relu) > p.act_min) p.act_min = Q_MIN(relu);
    p.pool = (uint32_t)QI(mp, 0);
    p.row = mp->in.dim[1];
    kt->layernorm_q8(out, in, (uint32_t)(shape_numel(l->in) / n), n, &p);
}

/* THE int8 table: {type, n_ints (3 common + the op's), n_inputs, overwrites_input, prepare,
 * run}. Conv1d has the Conv1dEx record in format 3. */
static const kwsn_qop kwsn_qops[] = {
    {KWSN_LAYER_AVGPOOL1D, 5, 1, 0, prep_avgpool_q8, run_avgpool_q8},
    {KWSN_LAYER_CONV1D, 10, 1, 0, prep_conv_q8, run_conv_q8},
    {KWSN_LAYER_LAYERNORM, 8, 1, 1, prep_layernorm_q8, run_layernorm_q8},
    {KWSN_LAYER_RELU, 4, 1, 1, prep_relu_q8, run_relu_q8},
    {KWSN_LAYER_MAXPOOL1D, 5, 1, 0, prep_maxpool_q8, run_maxpool_q8},
    {KWSN_LAYER_ADAPTIVE_AVGPOOL1D, 5, 1, 0, prep_avgpool_q8, run_avgpool_q8},
    {KWSN_LAYER_FLATTEN, 3, 1, 1, prep_flatten_q8, run_flatten_q8},
    {KWSN_LAYER_LINEAR, 5, 1, 0, prep_linear_q8, run_linear_q8},
    {KWSN_LAYER_FRONTEND, 10, 1, 0, prep_frontend_q8, run_frontend_q8},
    {KWSN_LAYER_CONV1D_EX, 10, 1, 0, prep_conv_q8, run_conv_q8},
    {KWSN_LAYER_ADD, 4, 2, 1, prep_add_q8, run_add_q8},
    {KWSN_LAYER_CONV2D, 16, 1, 0, prep_conv2d_q8, run_conv2d_q8},
    {KWSN_LAYER_ATTN_STATS_POOL, 6, 1, 0, prep_attn_stats_pool_q8, run_attn_stats_pool_q8},
    {KWSN_LAYER_L2NORM, 4, 1, 0, prep_l2norm_q8, run_l2norm_q8},
    {KWSN_LAYER_ROW_AFFINE, 6, 1, 0, prep_row_affine_q8, run_row_affine_q8},
    {KWSN_LAYER_SILU, 3, 1, 1, prep_silu_q8, run_silu_q8},
    {KWSN_LAYER_BROADCAST_ADD, 7, 2, 0, prep_broadcast_add_q8, run_broadcast_add_q8},
};
#define KWSN_N_QOPS (sizeof(kwsn_qops) / sizeof(kwsn_qops[0]))

static const kwsn_qop *find_qop(uint32_t type) {
    if ((type & KWSN_INT8_FLAG) == 0u || (type & ~(KWSN_INT8_FLAG | 0xFFu)) != 0u) return NULL;
    for (size_t i = 0; i < KWSN_N_QOPS; i++)
        if (kwsn_qops[i].type == (type & 0xFFu)) return &kwsn_qops[i];
    return NULL;
}

/* An int8 type has its float twin's name. */
const char *kwsn_layer_name(uint32_t type) {
    if (find_qop(type)) type &= 0xFFu;
    const kwsn_op *op = find_op(type);
    return op ? op->name : "?";
}

/* ------------------------------------------------------------------ prepare */

static kwsn_status check_input_shape(kwsn_shape s) {
    if (s.ndim != 1 && s.ndim != 2) return KWSN_ERR_SHAPE;
    if (s.dim[0] < 1 || s.dim[1] < 1 || (s.ndim == 1 && s.dim[1] != 1)) return KWSN_ERR_SHAPE;
    if ((uint64_t)s.dim[0] * s.dim[1] > KWSN_MAX_ELEMS) return KWSN_ERR_TOO_BIG;
    return KWSN_OK;
}

kwsn_limits kwsn_default_limits(void) {
    kwsn_limits lim = {KWSN_DEFAULT_MAX_OPS, KWSN_DEFAULT_MAX_ARENA_BYTES};
    return lim;
}

uint32_t kwsn_abi_version(void) { return KWSN_ABI_VERSION; }

static kwsn_limits effective_limits(const kwsn_limits *user) {
    kwsn_limits lim = kwsn_default_limits();
    if (user && user->max_ops) lim.max_ops = user->max_ops;
    if (user && user->max_arena_bytes) lim.max_arena_bytes = user->max_arena_bytes;
    return lim;
}

/* Every weight, bias and eps finite: a NaN weight would turn every output into NaN, and the
 * header export already refuses them. One pass over the weights, at load only. */
static int all_finite(const float *f, uint32_t n) {
    uint32_t bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &f[i], sizeof(u));
        bad |= (uint32_t)((u & 0x7F800000u) == 0x7F800000u);
    }
    return !bad;
}

#define KWSN_ALIGN 64u

static size_t round_up(size_t n) { return (n + KWSN_ALIGN - 1u) & ~(size_t)(KWSN_ALIGN - 1u); }

static kwsn_shape tensor_shape(const kwsn_model *m, uint32_t t) {
    return t == 0 ? m->input : m->layers[t - 1u].out;
}

/* The static memory plan, once at prepare: tensor t > 0 lives in a slot from its layer to
 * its last reader. Layer i's output takes (1) the slot of an input read for the last time by
 * an overwrites_input op, else (2) the first slot whose tensor is dead, else (3) a new slot
 * (opened by layer i). A slot is as big as its biggest tensor. The caller's input (tensor 0)
 * is never written. Sets every slot's offset; returns the slots' total bytes. */
static uint64_t plan_memory(kwsn_model *m) {
    const uint32_t n = m->n_layers;
    const size_t elem = m->int8 ? 1u : sizeof(float); /* slots sized by dtype */
    for (uint32_t i = 0; i < n; i++) {
        kwsn_layer *l = &m->layers[i];
        const int overwrites = m->int8 ? kwsn_qops[l->op_index].overwrites_input
                                       : kwsn_ops[l->op_index].overwrites_input;
        uint32_t s = n; /* none yet */
        for (uint32_t k = 0; overwrites && k < l->desc.n_inputs && s == n; k++) {
            const uint32_t t = l->desc.inputs[k];
            if (t > 0 && m->layers[t - 1u].last_use == i) s = m->layers[t - 1u].slot;
        }
        for (uint32_t c = 0; c < i && s == n; c++) {
            const kwsn_layer *o = &m->layers[c];
            if (o->slot == c && m->layers[o->occupant - 1u].last_use < i) s = c;
        }
        if (s == n) {
            s = i;
            l->slot_bytes = 0;
        }
        l->slot = s;
        m->layers[s].occupant = i + 1u;
        const size_t need = round_up(shape_numel(l->out) * elem);
        if (need > m->layers[s].slot_bytes) m->layers[s].slot_bytes = need;
    }
    uint64_t off = 0;
    for (uint32_t c = 0; c < n; c++) {
        kwsn_layer *o = &m->layers[c];
        if (o->slot != c) continue;
        o->slot_off = (size_t)off; /* off < 2^8 slots x 2^28 bytes: checked before the cast */
        off += o->slot_bytes;
    }
    if (m->int8 && m->has_input_q) { /* the input codes, after the slots */
        m->in_codes_off = (size_t)off;
        off += round_up(shape_numel(m->input));
    }
    return off;
}

/* Chain shapes through the prepared layers, plan the memory and fill the model's derived
 * sizes; refuse a model over the limits as soon as its running op count passes max_ops. */
static kwsn_status prepare_layers(kwsn_model *m, const kwsn_limits *limits) {
    const kwsn_limits lim = effective_limits(limits);
    uint64_t ops = 0;
    kwsn_status st = check_input_shape(m->input);
    if (st != KWSN_OK) return st;
    if (m->n_layers < 1) return bad_model(m, "the model has no layers");
    size_t max_scratch = 0, wbytes = 0;
    if (m->int8 && m->has_input_q &&
        (!isfinite(m->input_q.scale) || !(m->input_q.scale > 0.0f) ||
         m->input_q.zero_point < -128 || m->input_q.zero_point > 127))
        return bad_model(m, "input quantiser: scale must be finite and > 0, zero point in "
                            "[-128, 127]");
    for (uint32_t i = 0; i < m->n_layers; i++) {
        kwsn_layer *l = &m->layers[i];
        m->err_layer = i + 1u; /* a failure from here on is this layer's */
        const kwsn_op *op = m->int8 ? NULL : find_op(l->desc.type);
        const kwsn_qop *qop = m->int8 ? find_qop(l->desc.type) : NULL;
        if (!op && !qop) return KWSN_ERR_LAYER_TYPE;
        if (l->desc.n_ints != (op ? op->n_ints : qop->n_ints))
            return bad(l, "l->desc.n_ints != (op ? op->n_ints : qop->n_ints)");
        if (l->desc.n_floats > 0 && !l->desc.floats) return KWSN_ERR_ARG;
        if ((l->desc.n_words > 0 && !l->desc.words) || (l->desc.n_bytes > 0 && !l->desc.bytes))
            return KWSN_ERR_ARG;
        if (l->desc.n_floats > KWSN_MAX_ELEMS || l->desc.n_words > KWSN_MAX_ELEMS ||
            l->desc.n_bytes > KWSN_MAX_ELEMS)
            return KWSN_ERR_TOO_BIG;
        if (op && (l->desc.n_words != 0 || l->desc.n_bytes != 0))
            return bad(l, "op && (l->desc.n_words != 0 || l->desc.n_bytes != 0)");
        if (l->desc.n_inputs == 0) { /* version 1 / a chain table: the previous output */
            l->desc.n_inputs = 1;
            l->desc.inputs[0] = i;
        }
        if (l->desc.n_inputs != (op ? op->n_inputs : qop->n_inputs))
            return bad(l, "l->desc.n_inputs != (op ? op->n_inputs : qop->n_inputs)");
        for (uint32_t k = 0; k < l->desc.n_inputs; k++)
            if (l->desc.inputs[k] > i) return KWSN_ERR_GRAPH; /* only earlier tensors */
        l->in = tensor_shape(m, l->desc.inputs[0]);
        l->in2 = l->desc.n_inputs > 1 ? tensor_shape(m, l->desc.inputs[1]) : l->in;
        if (qop) {
            /* the common prefix: out zero point, clamp range, out scale */
            const int32_t zp = l->desc.ints[0], lo = l->desc.ints[1], hi = l->desc.ints[2];
            if (l->desc.n_floats < 1u) return bad(l, "l->desc.n_floats < 1u");
            if (zp < -128 || zp > 127 || lo < -128 || hi > 127 || lo > hi)
                return bad(l, "zp < -128 || zp > 127 || lo < -128 || hi > 127 || lo > hi");
            if (!isfinite(l->desc.floats[0]) || !(l->desc.floats[0] > 0.0f))
                return bad(l, "!isfinite(l->desc.floats[0]) || !(l->desc.floats[0] > 0.0f)");
            /* a FrontEnd reads the float audio (tensor 0 without an input quantiser); every
             * other op reads int8 codes */
            const int fe = qop->type == KWSN_LAYER_FRONTEND;
            for (uint32_t k = 0; k < l->desc.n_inputs; k++) {
                const uint32_t t = l->desc.inputs[k];
                if (fe ? (t != 0 || m->has_input_q) : (t == 0 && !m->has_input_q))
                    return KWSN_ERR_GRAPH;
                kwsn_qparams q = m->input_q;
                if (t > 0) {
                    q.scale = m->layers[t - 1u].desc.floats[0];
                    q.zero_point = m->layers[t - 1u].desc.ints[0];
                }
                if (k == 0) l->in_q = q;
                l->in2_q = q;
            }
            l->op_index = (uint32_t)(qop - kwsn_qops);
            st = qop->prepare(l);
        } else {
            l->op_index = (uint32_t)(op - kwsn_ops);
            st = op->prepare(l);
        }
        if (st != KWSN_OK) return st;
        if (l->desc.n_floats && !all_finite(l->desc.floats, l->desc.n_floats))
            return KWSN_ERR_NONFINITE;
        ops += l->ops; /* each layer's ops < 2^58 (sizes are bounded), so no overflow */
        if (ops > lim.max_ops) return KWSN_ERR_OPS_LIMIT;
        l->last_use = i; /* read by nobody yet */
        for (uint32_t k = 0; k < l->desc.n_inputs; k++)
            if (l->desc.inputs[k] > 0) m->layers[l->desc.inputs[k] - 1u].last_use = i;
        if (l->scratch > max_scratch) max_scratch = l->scratch;
        wbytes += (size_t)l->desc.n_floats * sizeof(float) +
                  (size_t)l->desc.n_words * sizeof(int32_t) + (size_t)l->desc.n_bytes;
    }
    m->err_layer = 0u;
    m->layers[m->n_layers - 1u].last_use = m->n_layers; /* the model output stays */
    const uint64_t act = plan_memory(m);
    /* LayerNorm + ReLU in one pass where the ReLU reads only that LayerNorm's output, which
     * nobody else reads, and overwrites it in place (so the fused pass writes the same slot) */
    for (uint32_t i = 0; i + 1u < m->n_layers; i++) {
        kwsn_layer *l = &m->layers[i], *r = &m->layers[i + 1u];
        l->fuse_relu = l->desc.type == KWSN_LAYER_LAYERNORM && r->desc.type == KWSN_LAYER_RELU &&
                       r->desc.inputs[0] == i + 1u && l->last_use == i + 1u && r->slot == l->slot;
    }
    /* LayerNorm [-> ReLU] -> MaxPool1d(k, stride k) in one pass where each tensor of the
     * chain is read by the next layer alone (the pass writes neither the LayerNorm's nor the
     * ReLU's output) and the pool's slot is not the LayerNorm input's (the pass reads the
     * input row by row as it writes the windows: never in place); float: k <= the kernel's
     * buffer, KWSN_LN_POOL_MAX. (An int8 layer's own ints start after 3 common ones.) */
    const uint32_t q8 = m->int8 ? KWSN_INT8_FLAG : 0u, o = m->int8 ? 3u : 0u;
    for (uint32_t i = 0; i < m->n_layers; i++) {
        kwsn_layer *l = &m->layers[i];
        l->fuse_next = 0;
        if (l->desc.type != (KWSN_LAYER_LAYERNORM | q8)) continue;
        uint32_t prev = i, j = i + 1u;
        if (j < m->n_layers && m->layers[j].desc.type == (KWSN_LAYER_RELU | q8) &&
            m->layers[j].desc.inputs[0] == i + 1u && l->last_use == j) {
            prev = j;
            j++;
        }
        if (j >= m->n_layers) continue;
        const kwsn_layer *mp = &m->layers[j];
        const uint32_t in_t = l->desc.inputs[0];
        const uint64_t group = (uint64_t)I(l, o + 1u) * (uint64_t)I(l, o + 2u);
        if (mp->desc.type != (KWSN_LAYER_MAXPOOL1D | q8) || mp->desc.inputs[0] != prev + 1u ||
            m->layers[prev].last_use != j || I(mp, o) != I(mp, o + 1u) || mp->in.ndim != 2u ||
            mp->in.dim[1] == 0u || group % mp->in.dim[1] != 0u ||
            (!q8 && (uint32_t)I(mp, 0) > KWSN_LN_POOL_MAX) ||
            (in_t > 0u && m->layers[in_t - 1u].slot == mp->slot))
            continue;
        l->fuse_next = j - i;
    }
    const uint64_t arena = act + round_up(max_scratch * sizeof(float));
    if (arena > (uint64_t)lim.max_arena_bytes) return KWSN_ERR_ARENA_LIMIT;
    m->act_bytes = (size_t)act;
    m->max_scratch = max_scratch;
    m->weight_bytes = wbytes;
    m->n_classes = shape_numel(m->layers[m->n_layers - 1u].out);
    m->ops = ops;
    /* kwsn_forward_features can enter after layer 0: a FrontEnd that alone reads the audio */
    m->features_entry = m->n_layers >= 2u && KWSN_FRONTEND_LINKED() &&
                        (m->layers[0].desc.type & ~KWSN_INT8_FLAG) == KWSN_LAYER_FRONTEND;
    for (uint32_t i = 1; i < m->n_layers; i++)
        for (uint32_t k = 0; k < m->layers[i].desc.n_inputs; k++)
            if (m->layers[i].desc.inputs[k] == 0u) m->features_entry = 0u;
    m->kernels = kwsn_select_kernels();
    return KWSN_OK;
}

/* ------------------------------------------------------------------ model storage */

/* Strictest alignment the model's fields need (uint64_t, size_t, pointers, double). */
typedef struct {
    char c;
    union {
        uint64_t u;
        size_t z;
        const void *p;
        double d;
    } x;
} kwsn_align_probe;
#define KWSN_STORAGE_ALIGN offsetof(kwsn_align_probe, x)

/* The public upper bound KWSN_MODEL_BYTES(n) must hold for this build (C99 static check). */
typedef char kwsn_check_model_size[sizeof(struct kwsn_model) <= 256u ? 1 : -1];
typedef char kwsn_check_layer_size[sizeof(kwsn_layer) <= 320u ? 1 : -1];

static size_t model_header_bytes(void) {
    const size_t a = KWSN_STORAGE_ALIGN;
    return (sizeof(struct kwsn_model) + a - 1u) / a * a;
}

size_t kwsn_model_bytes(uint32_t n_layers) {
    return model_header_bytes() + (size_t)n_layers * sizeof(kwsn_layer);
}

/* The storage can hold the model header (aligned, big enough): kwsn_parse_error may read it. */
static int storage_usable(const void *storage, size_t storage_bytes) {
    return storage && ((uintptr_t)storage % KWSN_STORAGE_ALIGN) == 0 &&
           storage_bytes >= model_header_bytes();
}

/* Forget an earlier parse's error before a new one starts (it may fail before claiming). */
static void clear_error(void *storage, size_t storage_bytes) {
    if (!storage_usable(storage, storage_bytes)) return;
    kwsn_model *m = (kwsn_model *)storage;
    m->err_layer = 0u;
    m->err_why = NULL;
}

/* Zeroed model + layer records in the caller's storage, or NULL (*st says why). */
static kwsn_model *claim_storage(void *storage, size_t storage_bytes, uint32_t n_layers,
                                 kwsn_status *st) {
    if (((uintptr_t)storage % KWSN_STORAGE_ALIGN) != 0 ||
        storage_bytes < kwsn_model_bytes(n_layers)) {
        *st = KWSN_ERR_STORAGE;
        return NULL;
    }
    memset(storage, 0, kwsn_model_bytes(n_layers));
    kwsn_model *m = (kwsn_model *)storage;
    m->layers = (kwsn_layer *)(void *)((uint8_t *)storage + model_header_bytes());
    *st = KWSN_OK;
    return m;
}

/* On any failure *model is NULL and the storage's model header is zeroed, so a caller that
 * ignores the status cannot run a half-prepared model. */
static kwsn_status finish(kwsn_status st, kwsn_model *m, kwsn_model **model) {
    if (st != KWSN_OK && m) {
        const uint32_t err_layer = m->err_layer;
        const char *err_why = m->err_why;
        memset(m, 0, sizeof(*m));
        m->err_layer = err_layer; /* kwsn_parse_error reads them */
        m->err_why = err_why;
    }
    *model = st == KWSN_OK ? m : NULL;
    return st;
}

static kwsn_status from_table(const kwsn_layer_desc *descs, uint32_t n_layers,
                              kwsn_shape input, uint32_t sample_rate, int int8,
                              const kwsn_qparams *input_q, void *storage,
                              size_t storage_bytes, const kwsn_limits *limits,
                              kwsn_model **mp) {
    if (n_layers > KWSN_MAX_LAYERS) return KWSN_ERR_TOO_BIG;
    kwsn_status st;
    kwsn_model *m = *mp = claim_storage(storage, storage_bytes, n_layers, &st);
    if (!m) return st;
    for (uint32_t i = 0; i < n_layers; i++) {
        if (descs[i].n_ints > KWSN_MAX_INTS || descs[i].n_inputs > KWSN_MAX_INPUTS)
            return KWSN_ERR_PARAM;
        m->layers[i].desc = descs[i];
    }
    m->version = int8 ? KWSN_FORMAT_VERSION : 2u;
    m->sample_rate = sample_rate;
    m->input = input;
    m->n_layers = n_layers;
    m->int8 = (uint32_t)int8;
    if (int8 && input_q) {
        m->has_input_q = 1u;
        m->input_q = *input_q;
    }
    return prepare_layers(m, limits);
}

kwsn_status kwsn_model_from_table(const kwsn_layer_desc *descs, uint32_t n_layers,
                                  kwsn_shape input, uint32_t sample_rate, void *storage,
                                  size_t storage_bytes, const kwsn_limits *limits,
                                  kwsn_model **model) {
    if (!model) return KWSN_ERR_ARG;
    *model = NULL;
    if (!descs || !storage) return KWSN_ERR_ARG;
    clear_error(storage, storage_bytes);
    kwsn_model *m = NULL;
    kwsn_status st = from_table(descs, n_layers, input, sample_rate, 0, NULL, storage,
                                storage_bytes, limits, &m);
    return finish(st, m, model);
}

kwsn_status kwsn_model_from_table_q(const kwsn_layer_desc *descs, uint32_t n_layers,
                                    kwsn_shape input, uint32_t sample_rate,
                                    const kwsn_qparams *input_q, void *storage,
                                    size_t storage_bytes, const kwsn_limits *limits,
                                    kwsn_model **model) {
    if (!model) return KWSN_ERR_ARG;
    *model = NULL;
    if (!descs || !storage) return KWSN_ERR_ARG;
    clear_error(storage, storage_bytes);
    kwsn_model *m = NULL;
    kwsn_status st = from_table(descs, n_layers, input, sample_rate, 1, input_q, storage,
                                storage_bytes, limits, &m);
    return finish(st, m, model);
}

/* ------------------------------------------------------------------ parse */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
} reader;

static int read_u32(reader *r, uint32_t *v) {
    if (r->len - r->pos < 4u) return 0;
    const uint8_t *b = r->p + r->pos;
    *v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    r->pos += 4u;
    return 1;
}

static int host_is_little_endian(void) {
    const uint32_t one = 1u;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1u;
}

static kwsn_status parse(const void *buf, size_t len, void *storage, size_t storage_bytes,
                         const kwsn_limits *limits, kwsn_model **mp) {
    if (((uintptr_t)buf & 3u) != 0 || !host_is_little_endian()) return KWSN_ERR_ALIGN;
    const uint8_t *p = (const uint8_t *)buf;
    if (len < 4u) return KWSN_ERR_TRUNCATED;
    if (memcmp(p, KWSN_MAGIC, 4) != 0) return KWSN_ERR_MAGIC;
    reader r = {p, len, 4u};
    uint32_t version, sample_rate, in_ndim, d0, d1, n_layers;
    if (!read_u32(&r, &version)) return KWSN_ERR_TRUNCATED;
    if (version < KWSN_FORMAT_VERSION_MIN || version > KWSN_FORMAT_VERSION)
        return KWSN_ERR_VERSION;
    uint32_t has_q = 0, q_scale = 0, q_zp = 0;
    if (!read_u32(&r, &sample_rate) || !read_u32(&r, &in_ndim) || !read_u32(&r, &d0) ||
        !read_u32(&r, &d1) || !read_u32(&r, &n_layers))
        return KWSN_ERR_TRUNCATED;
    if (version >= 3u && (!read_u32(&r, &has_q) || !read_u32(&r, &q_scale) || !read_u32(&r, &q_zp)))
        return KWSN_ERR_TRUNCATED;
    if (len - r.pos < 4u) return KWSN_ERR_TRUNCATED;
    /* The CRC covers everything before its own field, at the very end of the buffer. */
    const size_t body = len - 4u;
    reader crc_r = {p, len, body};
    uint32_t crc_file = 0;
    read_u32(&crc_r, &crc_file);
    if (kwsn_crc32(p, body) != crc_file) return KWSN_ERR_CRC;
    if (n_layers > KWSN_MAX_LAYERS) return KWSN_ERR_TOO_BIG;
    kwsn_status st;
    kwsn_model *model = *mp = claim_storage(storage, storage_bytes, n_layers, &st);
    if (!model) return st;
    r.len = body; /* layer records may not reach into the CRC */
    for (uint32_t i = 0; i < n_layers; i++) {
        kwsn_layer *l = &model->layers[i];
        uint32_t n_inputs = 0, n_ints, n_floats, n_words = 0, n_bytes = 0;
        if (!read_u32(&r, &l->desc.type) || (version >= 2u && !read_u32(&r, &n_inputs)) ||
            !read_u32(&r, &n_ints) || !read_u32(&r, &n_floats) ||
            (version >= 3u && (!read_u32(&r, &n_words) || !read_u32(&r, &n_bytes))))
            return KWSN_ERR_TRUNCATED;
        /* version 2 names every input (0 would mean "the previous layer" in a table) */
        if (version >= 2u && (n_inputs < 1u || n_inputs > KWSN_MAX_INPUTS)) return KWSN_ERR_GRAPH;
        if (n_ints > KWSN_MAX_INTS) return KWSN_ERR_PARAM;
        if (n_floats > KWSN_MAX_ELEMS || n_words > KWSN_MAX_ELEMS || n_bytes > KWSN_MAX_ELEMS)
            return KWSN_ERR_TOO_BIG;
        /* sizes checked against what is left before reading any of it */
        const uint64_t padded = ((uint64_t)n_bytes + 3u) & ~(uint64_t)3u;
        if ((uint64_t)(r.len - r.pos) <
            4u * ((uint64_t)n_inputs + n_ints + n_floats + n_words) + padded)
            return KWSN_ERR_TRUNCATED;
        l->desc.n_inputs = n_inputs;
        for (uint32_t k = 0; k < n_inputs; k++) read_u32(&r, &l->desc.inputs[k]);
        l->desc.n_ints = n_ints;
        for (uint32_t k = 0; k < n_ints; k++) {
            uint32_t v = 0;
            read_u32(&r, &v);
            l->desc.ints[k] = (int32_t)v;
        }
        l->desc.n_floats = n_floats;
        l->desc.floats = n_floats ? (const float *)(const void *)(p + r.pos) : NULL;
        r.pos += 4u * (size_t)n_floats;
        l->desc.n_words = n_words;
        l->desc.words = n_words ? (const int32_t *)(const void *)(p + r.pos) : NULL;
        r.pos += 4u * (size_t)n_words;
        l->desc.n_bytes = n_bytes;
        l->desc.bytes = n_bytes ? (const int8_t *)(const void *)(p + r.pos) : NULL;
        r.pos += (size_t)padded;
    }
    if (r.pos != body) return KWSN_ERR_TRAILING;
    model->version = version;
    model->sample_rate = sample_rate;
    model->input.ndim = in_ndim;
    model->input.dim[0] = d0;
    model->input.dim[1] = d1;
    model->n_layers = n_layers;
    if (version >= 3u) {
        if (has_q > 1u) return KWSN_ERR_PARAM;
        model->int8 = 1u;
        model->has_input_q = has_q;
        memcpy(&model->input_q.scale, &q_scale, 4);
        model->input_q.zero_point = (int32_t)q_zp;
    }
    return prepare_layers(model, limits);
}

kwsn_status kwsn_model_parse(const void *buf, size_t len, void *storage, size_t storage_bytes,
                             const kwsn_limits *limits, kwsn_model **model) {
    if (!model) return KWSN_ERR_ARG;
    *model = NULL;
    if (!buf || !storage) return KWSN_ERR_ARG;
    clear_error(storage, storage_bytes);
    kwsn_model *m = NULL;
    kwsn_status st = parse(buf, len, storage, storage_bytes, limits, &m);
    return finish(st, m, model);
}

const char *kwsn_parse_error(const void *storage, size_t storage_bytes, uint32_t *layer,
                             uint32_t *type) {
    if (layer) *layer = UINT32_MAX;
    if (type) *type = 0u;
    if (!storage_usable(storage, storage_bytes)) return NULL;
    const kwsn_model *m = (const kwsn_model *)storage;
    if (m->err_layer == 0u) return m->err_why;
    const uint32_t i = m->err_layer - 1u;
    if (i >= KWSN_MAX_LAYERS || storage_bytes < kwsn_model_bytes(i + 1u)) return NULL;
    const kwsn_layer *l =
        (const kwsn_layer *)(const void *)((const uint8_t *)storage + model_header_bytes()) + i;
    if (layer) *layer = i;
    if (type) *type = l->desc.type;
    return l->why;
}

/* ------------------------------------------------------------------ tables */

/* Bytes of layer l's tables (a 64-byte multiple; 0: it has none on this kernel path) and, with
 * dst, their fill: an int8 conv's weights packed for the path's kernel (kernels->conv_q8_pack,
 * rows of R = C_in / groups x taps; the row-wise affine is a grouped 1-tap conv), a FrontEnd's
 * twiddles and mel filter ranges (kwsn_frontend_fill_tables). */
static size_t layer_tables(const kwsn_model *m, const kwsn_layer *l, void *dst) {
    const uint32_t type = l->desc.type & 0xFFu;
    if (type == KWSN_LAYER_FRONTEND) {
        if (!KWSN_FRONTEND_TABLES_LINKED()) return 0;
        const kwsn_frontend fe =
            m->int8 ? frontend_at(&QI(l, 0), l->desc.floats + 1) : frontend_of(l);
        if (dst) kwsn_frontend_fill_tables(&fe, (float *)dst);
        return round_up(kwsn_frontend_tables_floats(&fe) * sizeof(float));
    }
    if (!m->int8) return 0;
    uint32_t R, co;
    if (type == KWSN_LAYER_CONV1D || type == KWSN_LAYER_CONV1D_EX ||
        type == KWSN_LAYER_ROW_AFFINE) {
        const kwsn_conv1d_ex_args a =
            type == KWSN_LAYER_ROW_AFFINE ? row_affine_q8_args(l) : conv_args_at(l, &QI(l, 0));
        R = a.C_in / a.groups * a.k;
        co = a.C_out;
    } else if (type == KWSN_LAYER_CONV2D) {
        const kwsn_conv2d_args a = conv2d_args_at(l, &QI(l, 0));
        R = a.C_in / a.groups * a.kh * a.kw;
        co = a.C_out;
    } else {
        return 0;
    }
    const size_t b = m->kernels->conv_q8_packed_bytes(R, co);
    if (dst && b)
        m->kernels->conv_q8_pack(dst, l->desc.bytes, l->desc.words, R, co, l->in_q.zero_point);
    return b;
}

size_t kwsn_tables_bytes(const kwsn_model *m) {
    if (!m || !m->layers || !m->kernels) return 0;
    size_t total = 0;
    for (uint32_t i = 0; i < m->n_layers; i++) total += layer_tables(m, &m->layers[i], NULL);
    return total;
}

kwsn_status kwsn_model_set_tables(kwsn_model *m, void *buf, size_t bytes) {
    if (!m || !m->layers || !m->kernels) return KWSN_ERR_ARG;
    if (!buf) { /* detach: every layer builds its tables per call again */
        for (uint32_t i = 0; i < m->n_layers; i++) m->layers[i].packed = NULL;
        return KWSN_OK;
    }
    if (((uintptr_t)buf & (KWSN_ARENA_ALIGN - 1u)) != 0 || bytes < kwsn_tables_bytes(m))
        return KWSN_ERR_STORAGE;
    uint8_t *p = (uint8_t *)buf;
    for (uint32_t i = 0; i < m->n_layers; i++) {
        kwsn_layer *l = &m->layers[i];
        const size_t b = layer_tables(m, l, p);
        l->packed = b ? p : NULL;
        p += b;
    }
    return KWSN_OK;
}

/* ------------------------------------------------------------------ forward */

size_t kwsn_arena_bytes(const kwsn_model *m) {
    if (!m || !m->layers) return 0;
    return m->act_bytes + round_up(m->max_scratch * sizeof(float));
}

uint64_t kwsn_model_ops(const kwsn_model *m) { return m ? m->ops : 0u; }

uint64_t kwsn_layer_ops(const kwsn_model *m, uint32_t i) {
    return (m && m->layers && i < m->n_layers) ? m->layers[i].ops : 0u;
}

const char *kwsn_isa_name(const kwsn_model *m) {
    return (m && m->kernels) ? m->kernels->name : "none";
}

size_t kwsn_input_len(const kwsn_model *m) { return m ? shape_numel(m->input) : 0; }

size_t kwsn_layer_out_len(const kwsn_model *m, uint32_t i) {
    if (!m || !m->layers || i >= m->n_layers) return 0;
    return shape_numel(m->layers[i].out);
}

uint32_t kwsn_n_layers(const kwsn_model *m) { return m ? m->n_layers : 0u; }

uint32_t kwsn_layer_type_at(const kwsn_model *m, uint32_t i) {
    return (m && m->layers && i < m->n_layers) ? m->layers[i].desc.type : 0u;
}

size_t kwsn_weight_bytes(const kwsn_model *m) { return m ? m->weight_bytes : 0u; }

size_t kwsn_n_classes(const kwsn_model *m) { return m ? m->n_classes : 0u; }

uint32_t kwsn_sample_rate(const kwsn_model *m) { return m ? m->sample_rate : 0u; }

/* Where tensor t lives while the forward pass runs. */
static const float *tensor_ptr(const kwsn_model *m, uint8_t *arena, const float *input,
                               uint32_t t) {
    if (t == 0) return input;
    return (const float *)(void *)(arena + m->layers[m->layers[t - 1u].slot].slot_off);
}

/* Where int8 tensor t lives (t == 0: the input codes; the caller checked has_input_q). */
static int8_t *qtensor_ptr(const kwsn_model *m, uint8_t *arena, uint32_t t) {
    if (t == 0) return (int8_t *)(void *)(arena + m->in_codes_off);
    return (int8_t *)(void *)(arena + m->layers[m->layers[t - 1u].slot].slot_off);
}

/* int8 model: run layers [from, n_run) (from 0: quantise the input first, if it has a
 * quantiser; from 1: layer 0's output codes are in its slot). */
static void forward_q8(const kwsn_model *m, uint8_t *base, const float *input, uint32_t from,
                       uint32_t n_run) {
    void *scratch = base + m->act_bytes;
    const kwsn_kernel_table *kt = m->kernels;
    if (from == 0u && m->has_input_q)
        kt->quantize_q8(qtensor_ptr(m, base, 0), input, shape_numel(m->input), m->input_q.scale,
                        m->input_q.zero_point, -128);
    for (uint32_t i = from; i < n_run; i++) {
        const kwsn_layer *l = &m->layers[i];
        const kwsn_qop *op = &kwsn_qops[l->op_index];
        /* a FrontEnd's input 0 is the float audio: no code pointer for it */
        const int8_t *a = op->type == KWSN_LAYER_FRONTEND ? NULL
                                                           : qtensor_ptr(m, base, l->desc.inputs[0]);
        const int8_t *b = l->desc.n_inputs > 1 ? qtensor_ptr(m, base, l->desc.inputs[1]) : NULL;
        if (l->fuse_next && i + l->fuse_next < n_run) {
            const kwsn_layer *mp = &m->layers[i + l->fuse_next];
            run_layernorm_pool_q8(kt, l, l->fuse_next == 2u ? &m->layers[i + 1u] : NULL, mp, a,
                                  (int8_t *)(void *)(base + m->layers[mp->slot].slot_off));
            i += l->fuse_next;
            continue;
        }
        int8_t *y = (int8_t *)(void *)(base + m->layers[l->slot].slot_off);
        op->run(kt, l, a, b, y, scratch, input);
    }
}

static kwsn_status arena_ok(const kwsn_model *m, const void *arena, size_t arena_bytes) {
    if (!arena || ((uintptr_t)arena & (KWSN_ARENA_ALIGN - 1u)) != 0 ||
        arena_bytes < kwsn_arena_bytes(m))
        return KWSN_ERR_ARENA;
    return KWSN_OK;
}

static kwsn_status check_run(const kwsn_model *m, void *arena, size_t arena_bytes,
                             const float *input, size_t input_len, uint32_t n_run,
                             const void *out) {
    if (!m || !m->layers || m->act_bytes == 0 || !m->kernels || !input || !out ||
        n_run > m->n_layers)
        return KWSN_ERR_ARG;
    if (input_len != kwsn_input_len(m)) return KWSN_ERR_INPUT_LEN;
    return arena_ok(m, arena, arena_bytes);
}

/* Run layers [from, n_run) (n_run >= 1) and write layer n_run - 1's output to out (an int8
 * model's dequantised); from 1: layer 0's output is already in its slot. */
static void forward_from(const kwsn_model *m, uint8_t *base, const float *input, uint32_t from,
                         uint32_t n_run, float *out) {
    const size_t out_len = shape_numel(m->layers[n_run - 1u].out);
    if (m->int8) {
        forward_q8(m, base, input, from, n_run);
        /* dequantised as kwsnet's dequantize: float(q - zp) * scale in float32 */
        const kwsn_layer *last = &m->layers[n_run - 1u];
        const int8_t *q = qtensor_ptr(m, base, n_run);
        const float scale = last->desc.floats[0];
        const int32_t zp = last->desc.ints[0];
        for (size_t j = 0; j < out_len; j++) out[j] = (float)((int32_t)q[j] - zp) * scale;
        return;
    }
    float *scratch = (float *)(void *)(base + m->act_bytes);
    const kwsn_kernel_table *kt = m->kernels;
    /* the plan: each layer reads its input tensors and writes its slot (an overwrites_input
     * op may write over an input that nobody reads later) */
    for (uint32_t i = from; i < n_run; i++) {
        const kwsn_layer *l = &m->layers[i];
        const kwsn_op *op = &kwsn_ops[l->op_index];
        const float *a = tensor_ptr(m, base, input, l->desc.inputs[0]);
        const float *b = l->desc.n_inputs > 1 ? tensor_ptr(m, base, input, l->desc.inputs[1])
                                              : NULL;
        float *y = (float *)(void *)(base + m->layers[l->slot].slot_off);
        if (l->fuse_next && i + l->fuse_next < n_run) {
            const kwsn_layer *mp = &m->layers[i + l->fuse_next];
            layernorm_run(kt, l, a, (float *)(void *)(base + m->layers[mp->slot].slot_off),
                          l->fuse_next == 2u, mp);
            i += l->fuse_next;
            continue;
        }
        if (l->fuse_relu && i + 1u < n_run) { /* the ReLU writes the same slot */
            layernorm_run(kt, l, a, y, 1, NULL);
            i++;
            continue;
        }
        op->run(kt, l, a, b, y, scratch);
    }
    memcpy(out, tensor_ptr(m, base, input, n_run), out_len * sizeof(float));
}

kwsn_status kwsn_forward_until(const kwsn_model *m, void *arena, size_t arena_bytes,
                               const float *input, size_t input_len, uint32_t n_run,
                               float *out, size_t out_cap) {
    kwsn_status st = check_run(m, arena, arena_bytes, input, input_len, n_run, out);
    if (st != KWSN_OK) return st;
    size_t out_len = n_run ? shape_numel(m->layers[n_run - 1].out) : input_len;
    if (out_cap < out_len) return KWSN_ERR_ARG;
    if (n_run == 0) {
        memcpy(out, input, out_len * sizeof(float));
        return KWSN_OK;
    }
    forward_from(m, (uint8_t *)arena, input, 0u, n_run, out);
    return KWSN_OK;
}

kwsn_status kwsn_model_frontend(const kwsn_model *m, kwsn_frontend *fe) {
    if (!m || !m->layers || !m->features_entry || !fe) return KWSN_ERR_ARG;
    const kwsn_layer *l = &m->layers[0];
    *fe = m->int8 ? frontend_at(&QI(l, 0), l->desc.floats + 1) : frontend_of(l);
    return KWSN_OK;
}

kwsn_status kwsn_forward_features(const kwsn_model *m, void *arena, size_t arena_bytes,
                                  const float *features, size_t n_features, float *logits,
                                  size_t logits_cap) {
    if (!m || !m->layers || !m->features_entry || !features || !logits) return KWSN_ERR_ARG;
    if (n_features != shape_numel(m->layers[0].out)) return KWSN_ERR_INPUT_LEN;
    kwsn_status st = arena_ok(m, arena, arena_bytes);
    if (st != KWSN_OK) return st;
    if (logits_cap < m->n_classes) return KWSN_ERR_ARG;
    uint8_t *base = (uint8_t *)arena;
    const kwsn_layer *l0 = &m->layers[0];
    if (m->int8) /* what the int8 FrontEnd does after computing its float features */
        m->kernels->quantize_q8((int8_t *)(void *)(base + m->layers[l0->slot].slot_off),
                                features, n_features, Q_SCALE(l0), Q_ZP(l0), Q_MIN(l0));
    else
        memcpy(base + m->layers[l0->slot].slot_off, features, n_features * sizeof(float));
    forward_from(m, base, NULL, 1u, m->n_layers, logits);
    return KWSN_OK;
}

kwsn_status kwsn_forward(const kwsn_model *m, void *arena, size_t arena_bytes,
                         const float *input, size_t input_len, float *logits, size_t logits_cap) {
    if (!m) return KWSN_ERR_ARG;
    return kwsn_forward_until(m, arena, arena_bytes, input, input_len, m->n_layers, logits,
                              logits_cap);
}

kwsn_status kwsn_forward_batch(const kwsn_model *m, void *arena, size_t arena_bytes,
                               const float *input, size_t n_rows, size_t input_len,
                               uint32_t n_run, float *out, size_t out_stride) {
    if (!m || !input || !out || n_run > m->n_layers) return KWSN_ERR_ARG;
    for (size_t r = 0; r < n_rows; r++) {
        kwsn_status st = kwsn_forward_until(m, arena, arena_bytes, input + r * input_len,
                                            input_len, n_run, out + r * out_stride, out_stride);
        if (st != KWSN_OK) return st;
    }
    return KWSN_OK;
}

kwsn_status kwsn_forward_codes_batch(const kwsn_model *m, void *arena, size_t arena_bytes,
                                     const float *input, size_t n_rows, size_t input_len,
                                     uint32_t n_run, int8_t *out, size_t out_stride) {
    kwsn_status st = check_run(m, arena, arena_bytes, input, input_len, n_run, out);
    if (st != KWSN_OK) return st;
    if (!m->int8 || (n_run == 0 && !m->has_input_q)) return KWSN_ERR_ARG;
    const size_t out_len = n_run ? shape_numel(m->layers[n_run - 1].out) : input_len;
    if (out_stride < out_len) return KWSN_ERR_ARG;
    uint8_t *base = (uint8_t *)arena;
    for (size_t r = 0; r < n_rows; r++) {
        forward_q8(m, base, input + r * input_len, 0u, n_run);
        memcpy(out + r * out_stride, qtensor_ptr(m, base, n_run), out_len);
    }
    return KWSN_OK;
}

int kwsn_is_int8(const kwsn_model *m) { return (m && m->layers && m->int8) ? 1 : 0; }

kwsn_status kwsn_layer_qparams(const kwsn_model *m, uint32_t i, kwsn_qparams *q) {
    if (!m || !m->layers || !m->int8 || !q || i >= m->n_layers) return KWSN_ERR_ARG;
    q->scale = m->layers[i].desc.floats[0];
    q->zero_point = m->layers[i].desc.ints[0];
    return KWSN_OK;
}

kwsn_status kwsn_input_qparams(const kwsn_model *m, kwsn_qparams *q) {
    if (!m || !m->layers || !m->int8 || !m->has_input_q || !q) return KWSN_ERR_ARG;
    *q = m->input_q;
    return KWSN_OK;
}

uint32_t kwsn_argmax(const float *x, size_t n) {
    uint32_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[i]) && !isnan(x[best]))) best = (uint32_t)i;
    return best;
}

void kwsn_softmax(float *x, size_t n) {
    if (n == 0) return;
    float mx = x[0];
    for (size_t i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    for (size_t i = 0; i < n; i++) x[i] /= s;
}

/* ------------------------------------------------------------------ the streaming path */

#include "kwsn_model_stream.h"

kwsn_status kwsn_model_layer_info(const kwsn_model *m, uint32_t i, kwsn_layer_info *info) {
    if (!m || !m->layers || !info || i >= m->n_layers) return KWSN_ERR_ARG;
    const kwsn_layer *l = &m->layers[i];
    memset(info, 0, sizeof *info);
    info->type = l->desc.type & ~(uint32_t)KWSN_INT8_FLAG;
    info->input = l->desc.inputs[0];
    info->n_inputs = l->desc.n_inputs;
    info->C_in = l->in.dim[0];
    info->L_in = l->in.ndim == 2 ? l->in.dim[1] : 1u;
    info->C_out = l->out.dim[0];
    info->L_out = l->out.ndim == 2 ? l->out.dim[1] : 1u;
    if (info->type == KWSN_LAYER_CONV1D_EX && !m->int8) {
        info->k = (uint32_t)I(l, 2);
        info->stride = (uint32_t)I(l, 3);
        info->pad = (uint32_t)I(l, 4);
        info->dil = (uint32_t)I(l, 5);
    }
    return KWSN_OK;
}

kwsn_status kwsn_model_run_layer_on(const kwsn_model *m, uint32_t i, void *arena,
                                    const float *in, uint32_t L_in, float *out) {
    if (!m || !m->layers || m->int8 || !arena || !in || !out || i >= m->n_layers)
        return KWSN_ERR_ARG;
    kwsn_layer lc = m->layers[i];
    const kwsn_op *op = &kwsn_ops[lc.op_index];
    float *scratch = (float *)(void *)((uint8_t *)arena + m->act_bytes);
    if (op->type == KWSN_LAYER_CONV1D_EX) {
        const uint32_t span = (uint32_t)I(&lc, 5) * ((uint32_t)I(&lc, 2) - 1u);
        if (I(&lc, 3) != 1 || I(&lc, 4) != 0 || L_in <= span || L_in > lc.in.dim[1])
            return KWSN_ERR_ARG;
        lc.in.dim[1] = L_in;
        lc.out.dim[1] = L_in - span;
    } else if (op->type == KWSN_LAYER_RELU) {
        if (lc.in.ndim != 2 || L_in < 1u || L_in > lc.in.dim[1]) return KWSN_ERR_ARG;
        lc.in.dim[1] = L_in;
        lc.out = lc.in;
    } else if (op->type != KWSN_LAYER_FLATTEN && op->type != KWSN_LAYER_LINEAR) {
        return KWSN_ERR_ARG;
    }
    op->run(m->kernels, &lc, in, NULL, out, scratch);
    return KWSN_OK;
}
