/*
 * kwsnet C runtime: float32 and int8 inference for the keyword-spotting models.
 *
 * C99, libc + libm only. Every public function returns a kwsn_status and never exits.
 * The flow is prepare-then-run:
 *
 *   1. kwsn_model_parse()      model file bytes -> layer descriptors (zero copy; every size is
 *      or kwsn_model_from_table()  checked against the buffer length, CRC32 verified), then
 *                              all shapes are chained and checked once. The prepared model
 *                              lives in caller storage of kwsn_model_bytes(n_layers) bytes
 *                              (KWSN_MODEL_BYTES(n) for static storage); kwsn_model is
 *                              opaque, read through the accessor functions below.
 *   2. kwsn_arena_bytes()      how much scratch memory one inference needs. Prepare also
 *      kwsn_model_ops()        counts each layer's and the model's arithmetic operations and
 *                              refuses a model over the caller's kwsn_limits (op count, arena
 *                              bytes) or with a non-finite weight, before anything is
 *                              allocated or run: a hostile file costs a status, not a hang.
 *   3. kwsn_forward()          runs in the caller's arena: no malloc, no file I/O.
 *
 * The file format (little-endian, every field 4 bytes) is written by
 * kwsnet/export/cnative.py, which mirrors kwsn_model_parse() field by field:
 *
 *   char     magic[4]      "KWSN"
 *   u32      version       1 (a chain) or 2 (a graph); both load
 *   u32      sample_rate   Hz the model was trained at (0 = unknown)
 *   u32      in_ndim       1 or 2
 *   u32      in_dim[2]     input shape per sample ([1, T] for raw audio; unused dim = 1)
 *   u32      n_layers
 *   n_layers x {
 *     u32    type          KWSN_LAYER_*
 *     u32    n_inputs      version 2 only: how many input tensor ids follow (1 or 2)
 *     u32    n_ints
 *     u32    n_floats
 *     u32    inputs[n_inputs]  version 2 only: tensor ids; tensor 0 is the model input and
 *                              layer i produces tensor i + 1, so an id is at most i
 *     i32    ints[n_ints]      shape parameters, see the layer table in kwsn_model.c
 *     f32    floats[n_floats]  eps / weights / biases / front-end tables
 *   }
 *   u32      crc32         zlib CRC-32 of every byte before this field
 *
 * A version-1 layer reads the previous layer's output (tensor i). Prepare plans the
 * activations once (liveness -> reusable 64-byte-aligned slots in the one caller arena).
 *
 * Version 3 is the int8 model (kwsnet/quant/format.py writes it; kwsnet/quant/reference.py
 * defines its arithmetic, which the C kernels equal bit for bit). The header grows by
 *
 *   u32      has_input_q   1: the float input is quantised first (raw audio), 0: it is not
 *                          (a FrontEnd layer reads it and quantises its own output)
 *   f32      input_scale   the input quantiser (ignored when has_input_q == 0)
 *   i32      input_zero_point
 *
 * and every record is {u32 type | KWSN_INT8_FLAG, n_inputs, n_ints, n_floats, n_words,
 * n_bytes; u32 inputs[n_inputs]; i32 ints[n_ints]; f32 floats[n_floats]; i32
 * words[n_words]; i8 bytes[n_bytes], zero padding to a multiple of 4}. ints[0..3) =
 * {out_zero_point, act_min, act_max}, floats[0] = out_scale, then per type (kwsn_model.c's
 * int8 layer table): Conv1dEx / Conv1d ints in, out, kernel, stride, padding, dilation,
 * groups, floats weight_scale[out], words bias[out], multiplier[out], shift[out], bytes
 * weight[out][in / groups][kernel]; Conv2d ints in, out, H_in, W_in, kernel_h, kernel_w,
 * stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, groups (floats, words as a
 * conv, bytes weight[out][in / groups][kernel_h][kernel_w]); Linear ints in, out (words,
 * bytes as a conv); ReLU ints
 * alias (1: a copy, 0: max(q, act_min)); MaxPool1d ints kernel, stride; Flatten nothing;
 * AvgPool1d / AdaptiveAvgPool1d ints kernel, stride, words M, shift; Add ints left_shift,
 * words M_a, s_a, M_b, s_b, M_out, s_out; FrontEnd the v2 FrontEnd's ints / floats (run in
 * float, then quantised); LayerNorm ints norm_ndim, d0, d1, frac_bits, beta_shift, floats
 * gamma_scale, eps, words M, shift, E_lo, E_hi, bytes gamma int8[N] then beta int16 LE [N]
 * (beta << beta_shift in the accumulator's units); AttnStatsPool / L2Norm (float islands:
 * the input codes dequantised, the float op, the output quantised) the float op's ints /
 * floats, act_max 127; RowAffine ints C, H, W (a depthwise kernel-1 conv over the C * H rows
 * of W codes: floats weight_scale[C * H], words bias, multiplier, shift [C * H], bytes
 * weight[C * H]); SiLU nothing (bytes: the 256-entry table, out = table[q + 128], every
 * entry in [act_min, act_max]); BroadcastAdd ints left_shift, C, H, W (words as Add).
 *
 * A tensor's (scale, zero point) is its producer's out_scale / out_zero_point (tensor 0's is
 * the header's input quantiser). Every int8 tensor takes 1 byte per element in the arena.
 * kwsn_forward* on an int8 model return dequantised floats (float)(q - zp) * scale;
 * kwsn_forward_codes_batch returns the codes themselves. Quantising a float (the input, the
 * FrontEnd's features) is clamp(round_half_even(x / scale) + zp, act_min, 127), clamped in
 * float: +-Inf and huge values clamp, NaN gives act_min.
 *
 * Prepare refuses (a status, never undefined behaviour later) an int8 layer whose n_ints /
 * n_floats / n_words / n_bytes are not what its op needs, a multiplier M not 0 or in
 * [2^30, 2^31), a shift outside [-31, 30], a zero point outside [-128, 127], act_min >
 * act_max, a scale not finite and > 0, a weight -128, a conv / Linear output channel whose
 * sum |w| * 255 + |bias| exceeds INT32_MAX (its int32 accumulator could overflow), an Add
 * with an input shift > 0 or left_shift > 22, a LayerNorm with N > 2^20, frac_bits > 12,
 * E outside [0, 2^62) or a gamma -128, a ReLU / MaxPool1d / Flatten whose out params differ
 * from its input's (KWSN_ERR_PARAM), a FrontEnd not reading the float input or another op
 * reading float input (KWSN_ERR_GRAPH), and an int8 type in a v1/v2 file or a float type in
 * a v3 file (KWSN_ERR_LAYER_TYPE). The int8 kernels compute in int32 / int64 (double where
 * every value is an exactly represented integer) and give the same bits on every kernel
 * path; they assume two's complement with an arithmetic >> of negative int32 values, which
 * C leaves implementation-defined (GCC, clang, MSVC and the common embedded compilers shift
 * arithmetically; test_golden checks it).
 */
#ifndef KWSNET_H
#define KWSNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KWSN_MAGIC "KWSN"
#define KWSN_FORMAT_VERSION 3u
/* Oldest format version kwsn_model_parse still reads (a chain of layers). */
#define KWSN_FORMAT_VERSION_MIN 1u
/* Most input tensors of one layer (Add takes two). */
#define KWSN_MAX_INPUTS 2
/* ints per layer (the int8 Conv2d has 16: 3 common + the geometry's 13). */
#define KWSN_MAX_INTS 16
/* Set in the type of every int8 (format-3) layer: KWSN_LAYER_* | KWSN_INT8_FLAG. */
#define KWSN_INT8_FLAG 0x100u
#define KWSN_MAX_LAYERS 256
/* Upper bound on any activation or weight count, so size arithmetic never overflows. */
#define KWSN_MAX_ELEMS (1u << 26)
/* Largest AvgPool1d/MaxPool1d window (its cost is also counted against kwsn_limits). */
#define KWSN_MAX_POOL_WINDOW (1u << 16)
/* Largest kernel, stride, dilation and padding of a Conv1dEx layer (and per axis of a
 * Conv2d). */
#define KWSN_MAX_CONV_KERNEL 128
#define KWSN_MAX_CONV_STRIDE 64
#define KWSN_MAX_CONV_DILATION 64
/* Default limits: the full-size RawConv (16000 samples, channels 16/32/64) needs ~1.7e6 ops
 * and ~94 kB of arena, kws_cnn_mel (log-mel front end included) ~8.3e6 ops and ~51 kB, so
 * these leave room for models hundreds to thousands of times bigger. */
#define KWSN_DEFAULT_MAX_OPS 4000000000ull
#define KWSN_DEFAULT_MAX_ARENA_BYTES ((size_t)128u << 20)
/* Bumped whenever a public struct or function signature changes (see kwsn_abi_version). */
#define KWSN_ABI_VERSION 7u
/* The arena passed to kwsn_forward must be aligned to this many bytes. */
#define KWSN_ARENA_ALIGN 64u

typedef enum {
    KWSN_OK = 0,
    KWSN_ERR_ARG,        /* NULL pointer or out-of-range argument */
    KWSN_ERR_IO,         /* file could not be opened or read */
    KWSN_ERR_NOMEM,      /* allocation failed (file helpers only) */
    KWSN_ERR_TRUNCATED,  /* a field or payload runs past the end of the buffer */
    KWSN_ERR_MAGIC,      /* not a kwsnet model file */
    KWSN_ERR_VERSION,    /* unsupported format version */
    KWSN_ERR_CRC,        /* checksum mismatch */
    KWSN_ERR_ALIGN,      /* buffer not 4-byte aligned or host not little-endian */
    KWSN_ERR_LAYER_TYPE, /* unknown layer type */
    KWSN_ERR_PARAM,      /* bad layer parameter or parameter/weight count */
    KWSN_ERR_SHAPE,      /* layer shapes do not chain */
    KWSN_ERR_TOO_BIG,    /* a size exceeds KWSN_MAX_ELEMS / KWSN_MAX_LAYERS */
    KWSN_ERR_TRAILING,   /* bytes left between the last layer and the CRC */
    KWSN_ERR_ARENA,      /* arena too small or misaligned */
    KWSN_ERR_INPUT_LEN,  /* input length does not match the model */
    KWSN_ERR_OPS_LIMIT,  /* the model's op count exceeds kwsn_limits.max_ops */
    KWSN_ERR_ARENA_LIMIT, /* the model's arena exceeds kwsn_limits.max_arena_bytes */
    KWSN_ERR_NONFINITE,  /* a weight, bias or eps is NaN or infinite */
    KWSN_ERR_STORAGE,    /* model storage too small or misaligned */
    KWSN_ERR_GRAPH,      /* a layer names a tensor id that is not produced before it */
    KWSN_ERR_STREAM_LIMIT, /* stream storage (kwsnet_stream.h) exceeds max_arena_bytes */
    KWSN_STATUS_COUNT
} kwsn_status;

typedef enum {
    KWSN_LAYER_AVGPOOL1D = 1,
    KWSN_LAYER_CONV1D = 2,
    KWSN_LAYER_LAYERNORM = 3,
    KWSN_LAYER_RELU = 4,
    KWSN_LAYER_MAXPOOL1D = 5,
    KWSN_LAYER_ADAPTIVE_AVGPOOL1D = 6,
    KWSN_LAYER_FLATTEN = 7,
    KWSN_LAYER_LINEAR = 8,
    KWSN_LAYER_FRONTEND = 9,  /* log-mel / MFCC (src/kwsn_frontend.h): [1, T] -> [n_out, frames] */
    KWSN_LAYER_CONV1D_EX = 10, /* Conv1d with stride, zero padding, dilation, groups */
    KWSN_LAYER_ADD = 11,       /* elementwise sum of two tensors of one shape */
    KWSN_LAYER_ATTN_POOL = 12, /* self-attentive pooling over time: [C, L] -> [C] */
    KWSN_LAYER_CONV2D = 13,    /* Conv2d with stride, zero padding, groups: [C, H*W] tensors */
    KWSN_LAYER_ATTN_STATS_POOL = 14, /* attentive statistics pooling: [C, L] -> [2C] */
    KWSN_LAYER_L2NORM = 15,    /* x / max(||x||_2, eps): [F] -> [F] */
    KWSN_LAYER_ROW_AFFINE = 16, /* x[c, h, w] * scale[c, h] + shift[c, h]: [C, H*W] tensors */
    KWSN_LAYER_SILU = 17,      /* x * sigmoid(x), elementwise */
    KWSN_LAYER_BROADCAST_ADD = 18 /* a [C, H*W] + b [C, W] broadcast over the H rows */
} kwsn_layer_type;

/* Per-sample activation shape: ndim 2 is [C, L], ndim 1 is [F] (dim[1] == 1). */
typedef struct {
    uint32_t ndim;
    uint32_t dim[2];
} kwsn_shape;

/* One layer as stored: what the file holds, or what a generated C header declares.
 * n_inputs 0 means "the previous layer's output" (version-1 files, chain tables); otherwise
 * inputs[0..n_inputs) are tensor ids (0 = the model input, layer i produces tensor i + 1).
 * words / bytes: the int8 layer's int32 and int8 payloads (format 3; 0 / NULL for float). */
typedef struct {
    uint32_t type;
    uint32_t n_ints;
    int32_t ints[KWSN_MAX_INTS];
    uint32_t n_floats;
    const float *floats;
    uint32_t n_inputs;
    uint32_t inputs[KWSN_MAX_INPUTS];
    uint32_t n_words;
    const int32_t *words;
    uint32_t n_bytes;
    const int8_t *bytes;
} kwsn_layer_desc;

/* Per-tensor affine int8 parameters: real = scale * (q - zero_point). */
typedef struct {
    float scale;
    int32_t zero_point;
} kwsn_qparams;


/* Caller limits checked at prepare time. Zero in a field means "use the default". */
typedef struct {
    uint64_t max_ops;       /* op count of one forward pass (sum over layers) */
    size_t max_arena_bytes; /* kwsn_arena_bytes() */
} kwsn_limits;

/* A prepared model: opaque (its layout may change without an ABI break of the functions).
 * It lives in caller storage: kwsn_model_bytes(n_layers) bytes, aligned for uint64_t and
 * pointers (a uint64_t array is). KWSN_MODEL_BYTES(n) is a compile-time upper bound of
 * kwsn_model_bytes(n) for static allocation: static uint64_t s[KWSN_MODEL_WORDS(n)]. */
typedef struct kwsn_model kwsn_model;
#define KWSN_MODEL_BYTES(n_layers) (256u + (size_t)(n_layers) * 320u)
#define KWSN_MODEL_WORDS(n_layers) ((KWSN_MODEL_BYTES(n_layers) + 7u) / 8u)

/* Exact storage bytes for a model of n_layers layers (<= KWSN_MODEL_BYTES(n_layers)). */
size_t kwsn_model_bytes(uint32_t n_layers);

/* KWSN_ABI_VERSION of the library actually linked (compare with the header's). */
uint32_t kwsn_abi_version(void);

/* Human-readable name of a status (never NULL). */
const char *kwsn_status_str(kwsn_status s);
/* Human-readable name of a layer type ("?" if unknown; an int8 type, | KWSN_INT8_FLAG, has
 * its float twin's name). */
const char *kwsn_layer_name(uint32_t type);

/* zlib-compatible CRC-32 of buf[0..len). */
uint32_t kwsn_crc32(const void *buf, size_t len);

/* Parse a model file held in memory, under the caller's limits (NULL: the defaults). buf
 * must be 4-byte aligned and outlive the model (weights point into it). storage: caller
 * memory of storage_bytes (KWSN_ERR_STORAGE if smaller than kwsn_model_bytes(n_layers) or
 * misaligned). *model points into storage on success and is NULL on any failure. */
kwsn_status kwsn_model_parse(const void *buf, size_t len, void *storage, size_t storage_bytes,
                             const kwsn_limits *limits, kwsn_model **model);

/* Why the last kwsn_model_parse / kwsn_model_from_table(_q) into storage failed: the check
 * that refused a parameter (its source text, e.g. "ci < 1 || co < 1 || k < 1"), or NULL when
 * there is none to give (another status, or a failure before the layers). *layer (if not
 * NULL) gets the failing layer's index, or UINT32_MAX when the failure is not a layer's, and
 * *type (if not NULL) its type (0 when none); they are set for every status a layer's checks
 * return (shapes, sizes, tensor ids, parameters).
 * The string is static; read it before storage is reused. */
const char *kwsn_parse_error(const void *storage, size_t storage_bytes, uint32_t *layer,
                             uint32_t *type);

/* Prepare a model from a static descriptor table (the generated C header path). */
kwsn_status kwsn_model_from_table(const kwsn_layer_desc *descs, uint32_t n_layers,
                                  kwsn_shape input, uint32_t sample_rate, void *storage,
                                  size_t storage_bytes, const kwsn_limits *limits,
                                  kwsn_model **model);

/* Prepare an int8 model (format 3) from a descriptor table: every type carries
 * KWSN_INT8_FLAG; input_q is the input quantiser (NULL: the input stays float, a FrontEnd
 * layer reads it). The float kwsn_model_from_table refuses int8 tables and vice versa. */
kwsn_status kwsn_model_from_table_q(const kwsn_layer_desc *descs, uint32_t n_layers,
                                    kwsn_shape input, uint32_t sample_rate,
                                    const kwsn_qparams *input_q, void *storage,
                                    size_t storage_bytes, const kwsn_limits *limits,
                                    kwsn_model **model);

/* The limits used when none are given. */
kwsn_limits kwsn_default_limits(void);

/* Scratch bytes kwsn_forward needs: the activation slots of the static memory plan (each
 * tensor lives in a slot from its layer to its last reader; a slot is reused once its tensor
 * is dead, and ReLU / LayerNorm / Flatten / Add write over an input read for the last time;
 * 4 bytes per float element, 1 per int8 code, plus the input codes of an int8 model with an
 * input quantiser) plus the largest layer scratch (a conv's padded input, float or the int8
 * conv's centred int32 copy, the front end's FFT buffers and, int8, its float features
 * before quantising), each 64-byte aligned. The arena itself must be KWSN_ARENA_ALIGN (64)
 * byte aligned. */
size_t kwsn_arena_bytes(const kwsn_model *model);

/* Tables built once instead of on every kwsn_forward (ABI 7): each int8 conv's weights
 * packed for the kernel path the model runs (int32 rows 4 deep for vpdpbusd or 2 for
 * vpmaddwd, the zero-point term folded into the accumulator's start; nothing on the portable
 * path, which reads the weights as stored) and a FrontEnd's FFT twiddles and mel filter
 * ranges. Optional: a model without them builds them per call, with the same bits.
 * kwsn_tables_bytes: how much memory they take (0: none on this path); kwsn_model_set_tables
 * fills buf (KWSN_ARENA_ALIGN-aligned, at least that many bytes: else KWSN_ERR_STORAGE) and
 * makes the model read it: buf must outlive the model and stay unchanged, like the weights;
 * buf NULL detaches. Not safe while another thread runs the model. kwsn_load_file does it
 * itself. */
size_t kwsn_tables_bytes(const kwsn_model *model);
kwsn_status kwsn_model_set_tables(kwsn_model *model, void *buf, size_t bytes);

/* Number of input floats per sample (product of the input shape). */
size_t kwsn_input_len(const kwsn_model *model);

/* Number of output elements of layer i (0 <= i < n_layers): floats, or int8 codes. */
size_t kwsn_layer_out_len(const kwsn_model *model, uint32_t i);

/* Accessors (kwsn_model is opaque). */
uint32_t kwsn_n_layers(const kwsn_model *model);
uint32_t kwsn_layer_type_at(const kwsn_model *model, uint32_t i);
size_t kwsn_weight_bytes(const kwsn_model *model);
size_t kwsn_n_classes(const kwsn_model *model);
uint32_t kwsn_sample_rate(const kwsn_model *model);
/* Operations per sample of the whole model / of layer i (0 if out of range). */
uint64_t kwsn_model_ops(const kwsn_model *model);
uint64_t kwsn_layer_ops(const kwsn_model *model, uint32_t i);
/* Name of the kernel path the model runs ("default" = portable x86-64/C baseline, "avx2",
 * "avx512"). The build for x86-64 carries all three and picks the widest the CPU supports;
 * the environment variable KWSN_ISA=default|avx2|avx512 forces one (if the CPU has it). Every
 * path computes byte-identical results. */
const char *kwsn_isa_name(const kwsn_model *model);

/* Run layers [0, n_run) on one sample. input_len must equal kwsn_input_len(); out receives
 * layer n_run-1's output (out_cap floats at least; n_run == 0 copies the input; an int8
 * model's output dequantised). */
kwsn_status kwsn_forward_until(const kwsn_model *model, void *arena, size_t arena_bytes,
                               const float *input, size_t input_len, uint32_t n_run,
                               float *out, size_t out_cap);

/* Run the whole model: logits[n_classes]. */
kwsn_status kwsn_forward(const kwsn_model *model, void *arena, size_t arena_bytes,
                         const float *input, size_t input_len, float *logits,
                         size_t logits_cap);

/* Run layers [1, n) on features given for layer 0's output: a model whose layer 0 is the
 * FrontEnd (and no later layer reads the audio), features[n_features] in that layer's output
 * layout ([n_out, frames] channel-major, normalised as the front end leaves them;
 * kwsn_layer_out_len(model, 0) floats). An int8 model quantises them with layer 0's output
 * quantiser first, as its FrontEnd does. The same logits as kwsn_forward on audio whose front
 * end gives those features (bit for bit): the streaming frame cache computes only a window's
 * new frames and enters here. KWSN_ERR_ARG when layer 0 is not such a FrontEnd,
 * KWSN_ERR_INPUT_LEN for another n_features, KWSN_ERR_ARENA as kwsn_forward. */
kwsn_status kwsn_forward_features(const kwsn_model *model, void *arena, size_t arena_bytes,
                                  const float *features, size_t n_features, float *logits,
                                  size_t logits_cap);

/* Run layers [0, n_run) on n_rows samples: row r reads input[r * input_len ..] and writes
 * out[r * out_stride ..] (out_stride >= the layer's output length). One call per batch. */
kwsn_status kwsn_forward_batch(const kwsn_model *model, void *arena, size_t arena_bytes,
                               const float *input, size_t n_rows, size_t input_len,
                               uint32_t n_run, float *out, size_t out_stride);

/* 1 for an int8 (format 3) model, else 0. */
int kwsn_is_int8(const kwsn_model *model);

/* Layer i's output quantisation (KWSN_ERR_ARG for a float model or i out of range). */
kwsn_status kwsn_layer_qparams(const kwsn_model *model, uint32_t i, kwsn_qparams *q);

/* The input quantiser (KWSN_ERR_ARG when the input stays float: a float model, or an int8
 * model whose first layer is a FrontEnd). */
kwsn_status kwsn_input_qparams(const kwsn_model *model, kwsn_qparams *q);

/* int8 model: run layers [0, n_run) on n_rows samples and write layer n_run-1's int8 codes
 * of row r to out[r * out_stride ..] (out_stride >= its length). n_run == 0 writes the
 * input codes (KWSN_ERR_ARG when there is no input quantiser). KWSN_ERR_ARG for a float
 * model. */
kwsn_status kwsn_forward_codes_batch(const kwsn_model *model, void *arena, size_t arena_bytes,
                                     const float *input, size_t n_rows, size_t input_len,
                                     uint32_t n_run, int8_t *out, size_t out_stride);

/* Index of the largest value (first on ties, as torch.argmax). */
uint32_t kwsn_argmax(const float *x, size_t n);

/* In-place numerically stable softmax. */
void kwsn_softmax(float *x, size_t n);

/* ---- file helpers (malloc + stdio; not used by the inference path, not for MCU builds) ---- */

typedef struct kwsn_loaded kwsn_loaded;

/* Read, parse and prepare a model file. On error *out is NULL. */
kwsn_status kwsn_load_file(const char *path, kwsn_loaded **out);
/* As kwsn_load_file, under the caller's limits (NULL or a zero field: the defaults). */
kwsn_status kwsn_load_file_ex(const char *path, const kwsn_limits *limits, kwsn_loaded **out);
/* As kwsn_load_file_ex; on failure, also writes why into why[0..why_len) (NUL-terminated;
 * "" when there is nothing more than the status): "layer 3 (Conv1d): <check>" or "layer 3
 * (Conv1d)" (kwsn_parse_error). */
kwsn_status kwsn_load_file_why(const char *path, const kwsn_limits *limits, kwsn_loaded **out,
                               char *why, size_t why_len);
/* The prepared model inside a loaded file. */
const kwsn_model *kwsn_loaded_model(const kwsn_loaded *lm);
void kwsn_free(kwsn_loaded *lm);

#ifdef __cplusplus
}
#endif

#endif /* KWSNET_H */
