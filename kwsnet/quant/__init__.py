"""int8 post-training quantisation of the exported graph, and its integer reference.

The float model is the graph the C runtime runs (``kwsnet.export.graph``: ``trace_model`` for
the log-mel models, ``graph_from_layers`` for raw_conv's chain), with BatchNorm already folded
into the convs. ``kwsnet.quant.ptq`` turns it into a :class:`~kwsnet.quant.ptq.QuantGraph`,
``kwsnet.quant.reference`` defines the int8 model's output from it with torch integer tensors,
``kwsnet.quant.format`` writes the file (format version 3, which the C runtime loads),
``kwsnet.quant.parity`` is the bit-exact C gate and ``kwsnet.quant.report`` is ``kwsnet
quant-report``. docs/quantization.md has the measured accuracy.

Choices (TFLite's int8 scheme where it has one, so its kernels and CMSIS-NN's can be compared):

- **Calibration**: the float (folded) graph on ``N`` training clips, evenly spaced over the
  training split (``--calibration``, default 512; the split is often sorted by class). Per
  tensor, the ``100 - p`` and ``p`` percentiles of all values (numpy, linear interpolation),
  ``p`` = ``--percentile``, default 99.99 (``ptq.DEFAULT_PERCENTILE``: min/max lost 1.2-1.4
  points on DS-CNN and BC-ResNet on recorded speech, 99.99 at most 0.34); ``--percentile 100``
  is ``[min, max]``. The range is widened to include 0.
- **Activations**: asymmetric per tensor, ``real = scale * (q - zp)``, ``q`` in
  ``[-128, 127]``, ``scale = (hi - lo) / 255`` stored as float32, ``zp = round(-128 -
  lo / scale)``; real 0 is exactly ``zp``, so zero padding is exact.
- **Weights**: symmetric per output channel, zero-point 0, ``[-127, 127]`` (not -128, so
  ``-w`` is representable), ``s_w[o] = max |w[o]| / 127``, round half to even.
- **Biases**: int32 ``round_half_even(b / (s_in * s_w[o]))`` (float64); the accumulator is
  int32 (checked at quantisation: ``Σ|w_q| * 255 + |bias| <= 2^31 - 1`` per channel, else
  ``QuantError``).
- **Requantisation**: real multiplier ``s_in * s_w[o] / s_out`` as a Q31 ``M`` in
  ``[2^30, 2^31)`` and a shift (TFLite's QuantizeMultiplier); ``mbqm`` =
  SaturatingRoundingDoublingHighMul (round to nearest, ties toward +infinity) then
  RoundingDivideByPOT (ties away from zero): TFLite's / gemmlowp's double rounding, chosen
  over a single rounding so that an existing kernel library is an independent check. Then
  ``+ zp_out`` and saturation to ``[act_min, 127]``. Exact definitions:
  ``kwsnet/quant/fixedpoint.py``.
- **ReLU** is folded into its producer's clamp (``act_min = zp_out``, the producer's range is
  the ReLU output's) when the producer's only reader is that ReLU; the ReLU record is then a
  copy. A ReLU on its own is ``max(q, zp)``.
- **Add**: TFLite's: both inputs ``(q - zp) << 20`` rescaled to ``2 * max(s_a, s_b)`` by their
  own multipliers, summed in int32, requantised to the output scale (the residual ReLU fused).
- **Mean pooling** (``AdaptiveAvgPool1d``, the masked mean over a fixed-length clip) and
  ``AvgPool1d``: int32 sum of ``q - zp`` over the window, requantised with ``s_in / (k * s_out)``
  (no integer division). **MaxPool1d**, **Flatten**: on the codes, same parameters.
- **Linear**: a kernel-1 conv. **Output**: the last Linear's **int8 logits** with their
  (scale, zp); the prediction is the argmax of the codes (first maximum on a tie), and the
  float logits are their dequantisation. (int8 rather than the int32 accumulators: one output
  type for every op, and a per-class accumulator scale would make the raw argmax wrong.)
- **LayerNorm** (raw_conv's per-conv norm) is integer: int64 moments, an integer square root,
  the normalised value in Q12, int8 gamma, int16 beta added in the accumulator, one
  requantisation (``kwsnet.quant.reference`` has the formulas). **Stays float**: the **front
  end** only (framing, FFT, log-mel, normalisation: a log and an FFT have no useful int8 form,
  and its numerics are already gated against torchaudio), whose output is quantised with its
  own scale. Its C output is not bit-identical to torch's (a code on a rounding boundary can
  move by one), so the int8 parity gate starts the reference from the C front end's codes.
  **AttnPool** (softmax) has no int8 form here: ``QuantError``.
- **float → int8** (the front end's output, raw audio input):
  ``clamp(round_half_even(x / scale) + zp, act_min, act_max)``, ``x / scale`` one float32
  division (C: the same division and an exact ties-to-even rounding).
"""
