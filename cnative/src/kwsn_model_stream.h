/* Private: what the streaming detector's incremental path (kwsn_stream.c) needs from a prepared
 * model. Not part of the public API or ABI. */
#ifndef KWSN_MODEL_STREAM_H
#define KWSN_MODEL_STREAM_H

#include "kwsnet.h"

typedef struct {
    uint32_t type;  /* KWSN_LAYER_* (an int8 model's too, without the flag) */
    uint32_t input; /* tensor id of input 0 */
    uint32_t n_inputs;
    uint32_t C_in, L_in, C_out, L_out; /* [C, L] shapes (a 1-d shape: C = numel, L = 1) */
    uint32_t k, stride, pad, dil;      /* Conv1dEx only, else 0 */
} kwsn_layer_info;

/* Layer i's type, input and shapes; KWSN_ERR_ARG for a bad model or index. */
kwsn_status kwsn_model_layer_info(const kwsn_model *m, uint32_t i, kwsn_layer_info *info);

/* Run layer i of a float model on in (its C_in rows of L_in columns) into out: a Conv1dEx of
 * stride 1 and padding 0 (L_in >= its span; out: C_out rows of L_in - dil (k - 1)), a ReLU
 * (C_in * L_in values), a Flatten or a Linear (their planned shapes, L_in ignored), with the
 * kernels and the arena's scratch forward() uses. */
kwsn_status kwsn_model_run_layer_on(const kwsn_model *m, uint32_t i, void *arena,
                                    const float *in, uint32_t L_in, float *out);

#endif
