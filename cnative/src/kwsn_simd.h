/* x86 vector idioms shared by the kernels (kwsn_kernels.c, compiled once per path) and the
 * front end (kwsn_frontend.c, whose wide copies are functions with target attributes). Macros,
 * not inline functions: an inline function without the caller's target attribute does not
 * inline into one (gcc: "target specific option mismatch"); a macro expands in the caller's
 * target. Include after <immintrin.h>, use only where AVX is enabled. */
#ifndef KWSN_SIMD_H
#define KWSN_SIMD_H

/* col[c] = (row[0][c], .., row[7][c]) for c < 8: an 8 x 8 float transpose in registers
 * (unpacks within 128-bit lanes, shuffles, 128-bit permutes; 24 shuffles). row and col are
 * arrays of 8 __m256 (distinct). */
#define KWSN_TRANSPOSE8_PS(row, col)                                                       \
    do {                                                                                   \
        __m256 kt_a_[8], kt_b_[8];                                                         \
        for (unsigned kt_l_ = 0; kt_l_ < 8u; kt_l_ += 2u) { /* a[l]: 0 1 4 5, a[l+1]: 2 3 6 7 */ \
            kt_a_[kt_l_] = _mm256_unpacklo_ps((row)[kt_l_], (row)[kt_l_ + 1u]);           \
            kt_a_[kt_l_ + 1u] = _mm256_unpackhi_ps((row)[kt_l_], (row)[kt_l_ + 1u]);      \
        }                                                                                  \
        for (unsigned kt_q_ = 0; kt_q_ < 8u; kt_q_ += 4u) /* b[q+h]: 2h, 2h + 4 of 4 rows */ \
            for (unsigned kt_h_ = 0; kt_h_ < 2u; kt_h_++) {                                \
                kt_b_[kt_q_ + kt_h_] =                                                     \
                    _mm256_shuffle_ps(kt_a_[kt_q_ + kt_h_], kt_a_[kt_q_ + 2u + kt_h_], 0x44); \
                kt_b_[kt_q_ + 2u + kt_h_] =                                                \
                    _mm256_shuffle_ps(kt_a_[kt_q_ + kt_h_], kt_a_[kt_q_ + 2u + kt_h_], 0xEE); \
            }                                                                              \
        /* b[i]: columns c_of(i) = 0, 2, 1, 3 and c_of(i) + 4 */                          \
        for (unsigned kt_i_ = 0; kt_i_ < 4u; kt_i_++) {                                    \
            const unsigned kt_c_ = (kt_i_ == 1u) ? 2u : (kt_i_ == 2u ? 1u : kt_i_);        \
            (col)[kt_c_] = _mm256_permute2f128_ps(kt_b_[kt_i_], kt_b_[4u + kt_i_], 0x20);  \
            (col)[kt_c_ + 4u] = _mm256_permute2f128_ps(kt_b_[kt_i_], kt_b_[4u + kt_i_], 0x31); \
        }                                                                                  \
    } while (0)

#endif
