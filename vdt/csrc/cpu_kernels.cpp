// Two fp32 kernels for AVX2 CPUs, forward and backward: exact softmax attention, softmax(q k^T / sqrt(hd)) v,
// and the tanh-GELU.
//
// Attention. Why it exists: VDT's heads are 32 wide (cpu-tiny's 16). The products q k^T and dO v^T then have an
// inner dimension of 32 (16), and PyTorch's CPU attention kernels reach a fraction of the machine's matmul peak on
// them (about half at 32). Here every
// (batch, head) task runs in one thread on data that stays in its L1/L2 cache, through register-tiled
// FMA micro-kernels; what is left beside the products is mostly the exponentials.
//
// Layout: q, k, v, o, dO are (G1, G2, L, hd) views with any strides, the last dimension contiguous. The
// outputs are allocated (G1, L, G2, hd) and returned transposed to (G1, G2, L, hd), the layout of SDPA's
// CPU kernel: heads-last, so "(b t) h n d -> b (t n) (h d)" is a view. lse (G1, G2, L) is the log-sum-exp
// of each score row (natural log, scale included), kept for the backward as flash attention does.
//
// Backward, per task, for blocks of QB query rows: recompute P = exp(S - lse); dV += P^T dO;
// dP = dO V^T; dS = P * (dP - rowsum(dO * O)) * scale; dQ = dS K; dK += dS^T Q.
//
// GELU. gelu(h) = h * sigmoid(2u), u = sqrt(2/pi) (h + 0.044715 h^3), the tanh form's identity
// 0.5 (1 + tanh u) = sigmoid(2u); one pass over memory each way, where ATen's kernel is bound by its tanh.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

constexpr int QB = 64;  // query rows per block: a QB x L score block stays in L2 for L up to a few thousand
constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

// 2^x for 8 floats, x >= -126 (scores minus their row max, so x <= 0): 2^round(x) times a degree-5
// polynomial for 2^f, f in [-1/2, 1/2], fitted for relative error (at most 2.4e-7, about 2 ulp).
inline __m256 exp2_8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-126.f));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 y = _mm256_set1_ps(1.3276456e-3f);
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(9.6755410e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(5.5507135e-2f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.4022120e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(6.9314694e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0000001f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

// C[r][c] = sum_d A[r * lda + d] * BT[d][c] for r < ROWS, 16 columns c; BT rows at stride ldb.
template <int HD, int ROWS>
inline void tile_nt(const float* A, int64_t lda, const float* b, int64_t ldb, float* C, int64_t ldc) {
  __m256 c0[ROWS], c1[ROWS];
  for (int r = 0; r < ROWS; ++r) c0[r] = c1[r] = _mm256_setzero_ps();
  for (int d = 0; d < HD; ++d, b += ldb) {
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    for (int r = 0; r < ROWS; ++r) {
      __m256 a = _mm256_broadcast_ss(A + r * lda + d);
      c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    _mm256_storeu_ps(C + r * ldc, c0[r]);
    _mm256_storeu_ps(C + r * ldc + 8, c1[r]);
  }
}

// C (R x NP) = A (R x HD, rows at stride lda) . BT (HD x NP, contiguous); NP a multiple of 16.
template <int HD>
void gemm_nt(const float* A, int64_t lda, const float* BT, int NP, float* C, int R) {
  for (int c = 0; c < NP; c += 16) {
    int r = 0;
    for (; r + 6 <= R; r += 6) tile_nt<HD, 6>(A + r * lda, lda, BT + c, NP, C + r * NP + c, NP);
    for (; r + 2 <= R; r += 2) tile_nt<HD, 2>(A + r * lda, lda, BT + c, NP, C + r * NP + c, NP);
    for (; r < R; ++r) tile_nt<HD, 1>(A + r * lda, lda, BT + c, NP, C + r * NP + c, NP);
  }
}

// C[i][0:32] (+)= sum_k A[i * ai + k * ak] * B[k * ldb + 0:32] for 3 rows i, k < K. The 12 accumulators
// are named variables: held in an array, GCC writes them back to the stack on every iteration.
inline void tile_nn32x3(const float* A, int64_t ai, int64_t ak, const float* B, int64_t ldb, float* C, int64_t ldc,
                        int K, bool accumulate) {
  float *c0 = C, *c1 = C + ldc, *c2 = C + 2 * ldc;
  auto init = [&](const float* c) { return accumulate ? _mm256_loadu_ps(c) : _mm256_setzero_ps(); };
  __m256 x00 = init(c0), x01 = init(c0 + 8), x02 = init(c0 + 16), x03 = init(c0 + 24);
  __m256 x10 = init(c1), x11 = init(c1 + 8), x12 = init(c1 + 16), x13 = init(c1 + 24);
  __m256 x20 = init(c2), x21 = init(c2 + 8), x22 = init(c2 + 16), x23 = init(c2 + 24);
  for (int k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    const __m256 a0 = _mm256_broadcast_ss(A + k * ak), a1 = _mm256_broadcast_ss(A + ai + k * ak),
                 a2 = _mm256_broadcast_ss(A + 2 * ai + k * ak);
    __m256 bv = _mm256_loadu_ps(b);
    x00 = _mm256_fmadd_ps(a0, bv, x00); x10 = _mm256_fmadd_ps(a1, bv, x10); x20 = _mm256_fmadd_ps(a2, bv, x20);
    bv = _mm256_loadu_ps(b + 8);
    x01 = _mm256_fmadd_ps(a0, bv, x01); x11 = _mm256_fmadd_ps(a1, bv, x11); x21 = _mm256_fmadd_ps(a2, bv, x21);
    bv = _mm256_loadu_ps(b + 16);
    x02 = _mm256_fmadd_ps(a0, bv, x02); x12 = _mm256_fmadd_ps(a1, bv, x12); x22 = _mm256_fmadd_ps(a2, bv, x22);
    bv = _mm256_loadu_ps(b + 24);
    x03 = _mm256_fmadd_ps(a0, bv, x03); x13 = _mm256_fmadd_ps(a1, bv, x13); x23 = _mm256_fmadd_ps(a2, bv, x23);
  }
  _mm256_storeu_ps(c0, x00); _mm256_storeu_ps(c0 + 8, x01); _mm256_storeu_ps(c0 + 16, x02); _mm256_storeu_ps(c0 + 24, x03);
  _mm256_storeu_ps(c1, x10); _mm256_storeu_ps(c1 + 8, x11); _mm256_storeu_ps(c1 + 16, x12); _mm256_storeu_ps(c1 + 24, x13);
  _mm256_storeu_ps(c2, x20); _mm256_storeu_ps(c2 + 8, x21); _mm256_storeu_ps(c2 + 16, x22); _mm256_storeu_ps(c2 + 24, x23);
}

inline void tile_nn32x1(const float* A, int64_t ak, const float* B, int64_t ldb, float* C, int K, bool accumulate) {
  auto init = [&](const float* c) { return accumulate ? _mm256_loadu_ps(c) : _mm256_setzero_ps(); };
  __m256 x0 = init(C), x1 = init(C + 8), x2 = init(C + 16), x3 = init(C + 24);
  for (int k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    const __m256 a = _mm256_broadcast_ss(A + k * ak);
    x0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b), x0); x1 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 8), x1);
    x2 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 16), x2); x3 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 24), x3);
  }
  _mm256_storeu_ps(C, x0); _mm256_storeu_ps(C + 8, x1); _mm256_storeu_ps(C + 16, x2); _mm256_storeu_ps(C + 24, x3);
}

// C[i][0:16] (+)= sum_k A[i * ai + k * ak] * B[k * ldb + 0:16] for ROWS rows i, k < K: the 16-wide heads' tile.
// Two vectors per row, so six rows fit the 12 accumulators of the 32-wide tile; the compiler keeps a fixed-size
// array of them in registers once the row loops are unrolled (ROWS is a constant).
template <int ROWS>
inline void tile_nn16(const float* A, int64_t ai, int64_t ak, const float* B, int64_t ldb, float* C, int64_t ldc,
                      int K, bool accumulate) {
  __m256 x0[ROWS], x1[ROWS];
  for (int r = 0; r < ROWS; ++r) {
    x0[r] = accumulate ? _mm256_loadu_ps(C + r * ldc) : _mm256_setzero_ps();
    x1[r] = accumulate ? _mm256_loadu_ps(C + r * ldc + 8) : _mm256_setzero_ps();
  }
  for (int k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(B + k * ldb), b1 = _mm256_loadu_ps(B + k * ldb + 8);
    for (int r = 0; r < ROWS; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * ai + k * ak);
      x0[r] = _mm256_fmadd_ps(a, b0, x0[r]);
      x1[r] = _mm256_fmadd_ps(a, b1, x1[r]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    _mm256_storeu_ps(C + r * ldc, x0[r]);
    _mm256_storeu_ps(C + r * ldc + 8, x1[r]);
  }
}

// C (M x HD, rows at stride ldc) (+)= A (M x K, element (i, k) at i * ai + k * ak) . B (K x HD, rows at ldb).
// ai = lda, ak = 1 is A; ai = 1, ak = lda is A^T.
template <int HD>
void gemm_nn(const float* A, int64_t ai, int64_t ak, const float* B, int64_t ldb, float* C, int64_t ldc, int M, int K,
             bool accumulate) {
  if constexpr (HD == 16) {
    int i = 0;
    for (; i + 6 <= M; i += 6) tile_nn16<6>(A + i * ai, ai, ak, B, ldb, C + i * ldc, ldc, K, accumulate);
    for (; i + 2 <= M; i += 2) tile_nn16<2>(A + i * ai, ai, ak, B, ldb, C + i * ldc, ldc, K, accumulate);
    for (; i < M; ++i) tile_nn16<1>(A + i * ai, ai, ak, B, ldb, C + i * ldc, ldc, K, accumulate);
    return;
  }
  for (int col = 0; col < HD; col += 32) {
    int i = 0;
    for (; i + 3 <= M; i += 3) tile_nn32x3(A + i * ai, ai, ak, B + col, ldb, C + i * ldc + col, ldc, K, accumulate);
    for (; i < M; ++i) tile_nn32x1(A + i * ai, ak, B + col, ldb, C + i * ldc + col, K, accumulate);
  }
}

// dst[d][j] = src[j * ld + d]: HD x L, rows of NP, the padding columns zero.
template <int HD>
void transpose_into(const float* src, int64_t ld, int L, int NP, float* dst) {
  for (int j = 0; j < L; ++j)
    for (int d = 0; d < HD; ++d) dst[d * NP + j] = src[j * ld + d];
  for (int d = 0; d < HD; ++d) std::fill(dst + d * NP + L, dst + (d + 1) * NP, 0.f);
}

// A (G1, G2, L, hd) tensor's element pointer for task (g1, g2) and its row stride.
struct View {
  float* data;
  int64_t s1, s2, row, G2;
  explicit View(const at::Tensor& t)
      : data(t.data_ptr<float>()), s1(t.stride(0)), s2(t.stride(1)), row(t.stride(2)), G2(t.size(1)) {}
  float* at(int64_t task) const { return data + (task / G2) * s1 + (task % G2) * s2; }
};

// rows[r][0:HD] = src[r * ld + 0:HD] * (scale ? scale[r] : 1) for r < R: strided rows to or from a local block.
template <int HD>
inline void copy_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int R, const float* scale = nullptr) {
  for (int r = 0; r < R; ++r) {
    const __m256 s = _mm256_set1_ps(scale ? scale[r] : 1.f);
    for (int d = 0; d < HD; d += 8)
      _mm256_storeu_ps(dst + r * dst_ld + d, _mm256_mul_ps(_mm256_loadu_ps(src + r * src_ld + d), s));
  }
}

template <int HD>
void forward_impl(View q, View k, View v, View o, float* lse, int64_t tasks, int L, float scale) {
  const int NP = (L + 15) / 16 * 16;
  const float c = scale * float(M_LOG2E);  // scores to base-2 exponents
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(HD * NP), vb(L * HD), s(QB * NP), ob(QB * HD), inv(QB);
    for (int64_t task = begin; task < end; ++task) {
      const float* qt = q.at(task);
      float *ot = o.at(task), *lt = lse + task * L;
      transpose_into<HD>(k.at(task), k.row, L, NP, kt.data());
      copy_rows<HD>(v.at(task), v.row, vb.data(), HD, L);
      for (int i0 = 0; i0 < L; i0 += QB) {
        const int R = std::min(QB, L - i0);
        gemm_nt<HD>(qt + i0 * q.row, q.row, kt.data(), NP, s.data(), R);
        for (int r = 0; r < R; ++r) {  // s = 2^(c (s - max)); 1 / row sum; lse = scale max + ln(row sum)
          float* sr = s.data() + r * NP;
          std::fill(sr + L, sr + NP, NEG_INF);
          __m256 mx = _mm256_set1_ps(NEG_INF);
          for (int j = 0; j < NP; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(sr + j));
          const float m = hmax(mx);
          const __m256 cv = _mm256_set1_ps(c), mc = _mm256_set1_ps(m * c);
          __m256 sum = _mm256_setzero_ps();
          for (int j = 0; j < NP; j += 8) {
            const __m256 e = exp2_8(_mm256_fmsub_ps(_mm256_loadu_ps(sr + j), cv, mc));
            _mm256_storeu_ps(sr + j, e);
            sum = _mm256_add_ps(sum, e);
          }
          const float total = hsum(sum);
          inv[r] = 1.f / total;
          lt[i0 + r] = m * scale + std::log(total);
        }
        gemm_nn<HD>(s.data(), NP, 1, vb.data(), HD, ob.data(), HD, R, L, false);
        copy_rows<HD>(ob.data(), HD, ot + i0 * o.row, o.row, R, inv.data());  // normalised here, once per row
      }
    }
  });
}

template <int HD>
void backward_impl(View dout, View q, View k, View v, View o, const float* lse, View dq, View dk, View dv,
                   int64_t tasks, int L, float scale) {
  const int NP = (L + 15) / 16 * 16;
  const float c = scale * float(M_LOG2E);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(HD * NP), vt(HD * NP), kb(L * HD), qb(QB * HD), dob(QB * HD), dqb(QB * HD);
    std::vector<float> p(QB * NP), ds(QB * NP), dk_acc(L * HD), dv_acc(L * HD), delta(QB);
    for (int64_t task = begin; task < end; ++task) {
      const float *qt = q.at(task), *dot = dout.at(task), *ot = o.at(task), *lt = lse + task * L;
      transpose_into<HD>(k.at(task), k.row, L, NP, kt.data());
      transpose_into<HD>(v.at(task), v.row, L, NP, vt.data());
      copy_rows<HD>(k.at(task), k.row, kb.data(), HD, L);
      for (int i0 = 0; i0 < L; i0 += QB) {
        const int R = std::min(QB, L - i0);
        copy_rows<HD>(qt + i0 * q.row, q.row, qb.data(), HD, R);
        copy_rows<HD>(dot + i0 * dout.row, dout.row, dob.data(), HD, R);
        for (int r = 0; r < R; ++r) {  // delta_i = sum_d dO[i][d] O[i][d]
          __m256 acc = _mm256_setzero_ps();
          for (int d = 0; d < HD; d += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(dob.data() + r * HD + d), _mm256_loadu_ps(ot + (i0 + r) * o.row + d), acc);
          delta[r] = hsum(acc);
        }
        gemm_nt<HD>(qb.data(), HD, kt.data(), NP, p.data(), R);    // S
        gemm_nt<HD>(dob.data(), HD, vt.data(), NP, ds.data(), R);  // dP
        const __m256 cv = _mm256_set1_ps(c), sc = _mm256_set1_ps(scale);
        for (int r = 0; r < R; ++r) {  // P = 2^(c s - log2(e) lse); dS = P (dP - delta) scale
          float *pr = p.data() + r * NP, *dr = ds.data() + r * NP;
          const __m256 l = _mm256_set1_ps(lt[i0 + r] * float(M_LOG2E)), dl = _mm256_set1_ps(delta[r]);
          for (int j = 0; j < NP; j += 8) {
            const __m256 pv = exp2_8(_mm256_fmsub_ps(_mm256_loadu_ps(pr + j), cv, l));
            _mm256_storeu_ps(pr + j, pv);
            _mm256_storeu_ps(dr + j, _mm256_mul_ps(_mm256_mul_ps(pv, _mm256_sub_ps(_mm256_loadu_ps(dr + j), dl)), sc));
          }
        }
        // dV += P^T dO and dK += dS^T Q, over query blocks; dQ = dS K.
        gemm_nn<HD>(p.data(), 1, NP, dob.data(), HD, dv_acc.data(), HD, L, R, i0 > 0);
        gemm_nn<HD>(ds.data(), 1, NP, qb.data(), HD, dk_acc.data(), HD, L, R, i0 > 0);
        gemm_nn<HD>(ds.data(), NP, 1, kb.data(), HD, dqb.data(), HD, R, L, false);
        copy_rows<HD>(dqb.data(), HD, dq.at(task) + i0 * dq.row, dq.row, R);
      }
      copy_rows<HD>(dk_acc.data(), HD, dk.at(task), dk.row, L);
      copy_rows<HD>(dv_acc.data(), HD, dv.at(task), dv.row, L);
    }
  });
}

constexpr float GELU_K = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float GELU_A = 0.044715f;

// sigmoid(2u) for 8 h: 1 / (1 + e), e = 2^(-2 log2(e) u), the exponent clamped to +-126 (sigmoid 0 or 1 there).
// With e, 1 - sigmoid(2u) = e * sigmoid(2u), exact where sigmoid(2u) is close to 1.
inline __m256 gelu_sigmoid(__m256 h, __m256* e_out, __m256* du) {
  const __m256 h2 = _mm256_mul_ps(h, h);
  const __m256 u = _mm256_mul_ps(_mm256_mul_ps(h, _mm256_set1_ps(GELU_K)),
                                 _mm256_fmadd_ps(h2, _mm256_set1_ps(GELU_A), _mm256_set1_ps(1.f)));
  if (du)  // du/dh = sqrt(2/pi) (1 + 3 * 0.044715 h^2)
    *du = _mm256_mul_ps(_mm256_set1_ps(GELU_K), _mm256_fmadd_ps(h2, _mm256_set1_ps(3 * GELU_A), _mm256_set1_ps(1.f)));
  const __m256 x = _mm256_min_ps(_mm256_mul_ps(u, _mm256_set1_ps(-2.f * float(M_LOG2E))), _mm256_set1_ps(126.f));
  const __m256 e = exp2_8(x);
  if (e_out) *e_out = e;
  return _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_add_ps(_mm256_set1_ps(1.f), e));
}

constexpr int64_t GELU_GRAIN = 1 << 14;

void gelu_forward_impl(const float* h, float* y, int64_t n) {
  at::parallel_for(0, n, GELU_GRAIN, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
      const __m256 hv = _mm256_loadu_ps(h + i);
      _mm256_storeu_ps(y + i, _mm256_mul_ps(hv, gelu_sigmoid(hv, nullptr, nullptr)));
    }
    for (; i < end; ++i) {
      const float u = GELU_K * (h[i] + GELU_A * h[i] * h[i] * h[i]);
      y[i] = 0.5f * h[i] * (1.f + std::tanh(u));
    }
  });
}

// d gelu / dh = s + 2 h s (1 - s) du/dh, s = sigmoid(2u), s (1 - s) = e s^2.
void gelu_backward_impl(const float* g, const float* h, float* dh, int64_t n) {
  at::parallel_for(0, n, GELU_GRAIN, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    const __m256 two = _mm256_set1_ps(2.f);
    for (; i + 8 <= end; i += 8) {
      const __m256 hv = _mm256_loadu_ps(h + i);
      __m256 e, du;
      const __m256 s = gelu_sigmoid(hv, &e, &du);
      const __m256 ds = _mm256_mul_ps(_mm256_mul_ps(two, hv), _mm256_mul_ps(_mm256_mul_ps(e, _mm256_mul_ps(s, s)), du));
      _mm256_storeu_ps(dh + i, _mm256_mul_ps(_mm256_loadu_ps(g + i), _mm256_add_ps(s, ds)));
    }
    for (; i < end; ++i) {
      const float x = h[i], t = std::tanh(GELU_K * (x + GELU_A * x * x * x));
      const float du = GELU_K * (1.f + 3.f * GELU_A * x * x);
      dh[i] = g[i] * (0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * du);
    }
  });
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, ": expected a float32 CPU tensor");
  TORCH_CHECK(t.dim() == 4 && t.stride(3) == 1, name, ": expected (G1, G2, L, hd) with a contiguous last dim");
}

at::Tensor heads_last(const at::Tensor& like) {  // (G1, L, G2, hd) memory, seen as (G1, G2, L, hd)
  return at::empty({like.size(0), like.size(2), like.size(1), like.size(3)}, like.options()).transpose(1, 2);
}

}  // namespace

std::vector<at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check(q, "q"); check(k, "k"); check(v, "v");
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "q, k, v: expected equal shapes");
  const int64_t hd = q.size(3), tasks = q.size(0) * q.size(1);
  const int L = q.size(2);
  auto o = heads_last(q);
  auto lse = at::empty({q.size(0), q.size(1), L}, q.options());
  const float scale = 1.f / std::sqrt(float(hd));
  if (hd == 16) forward_impl<16>(View(q), View(k), View(v), View(o), lse.data_ptr<float>(), tasks, L, scale);
  else if (hd == 32) forward_impl<32>(View(q), View(k), View(v), View(o), lse.data_ptr<float>(), tasks, L, scale);
  else if (hd == 64) forward_impl<64>(View(q), View(k), View(v), View(o), lse.data_ptr<float>(), tasks, L, scale);
  else TORCH_CHECK(false, "head dim ", hd, ": this kernel takes 16, 32 or 64");
  return {o, lse};
}

std::vector<at::Tensor> attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, const at::Tensor& o, const at::Tensor& lse) {
  check(dout, "grad_out"); check(q, "q"); check(k, "k"); check(v, "v"); check(o, "out");
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes() && o.sizes() == q.sizes() && dout.sizes() == q.sizes(),
              "grad_out, q, k, v, out: expected equal shapes");
  TORCH_CHECK(lse.is_contiguous() && lse.scalar_type() == at::kFloat && lse.dim() == 3 && lse.size(0) == q.size(0) &&
              lse.size(1) == q.size(1) && lse.size(2) == q.size(2), "lse: expected a contiguous (G1, G2, L) float32 tensor");
  const int64_t hd = q.size(3), tasks = q.size(0) * q.size(1);
  const int L = q.size(2);
  auto dq = heads_last(q), dk = heads_last(q), dv = heads_last(q);
  const float scale = 1.f / std::sqrt(float(hd));
  if (hd == 16)
    backward_impl<16>(View(dout), View(q), View(k), View(v), View(o), lse.data_ptr<float>(), View(dq), View(dk),
                      View(dv), tasks, L, scale);
  else if (hd == 32)
    backward_impl<32>(View(dout), View(q), View(k), View(v), View(o), lse.data_ptr<float>(), View(dq), View(dk),
                      View(dv), tasks, L, scale);
  else if (hd == 64)
    backward_impl<64>(View(dout), View(q), View(k), View(v), View(o), lse.data_ptr<float>(), View(dq), View(dk),
                      View(dv), tasks, L, scale);
  else TORCH_CHECK(false, "head dim ", hd, ": this kernel takes 16, 32 or 64");
  return {dq, dk, dv};
}

at::Tensor gelu_forward(const at::Tensor& h) {
  TORCH_CHECK(h.device().is_cpu() && h.scalar_type() == at::kFloat && h.is_contiguous(), "h: expected a contiguous float32 CPU tensor");
  auto y = at::empty_like(h);
  gelu_forward_impl(h.data_ptr<float>(), y.data_ptr<float>(), h.numel());
  return y;
}

at::Tensor gelu_backward(const at::Tensor& grad, const at::Tensor& h) {
  TORCH_CHECK(h.device().is_cpu() && h.scalar_type() == at::kFloat && h.is_contiguous(), "h: expected a contiguous float32 CPU tensor");
  TORCH_CHECK(grad.sizes() == h.sizes() && grad.is_contiguous() && grad.scalar_type() == at::kFloat, "grad: expected h's shape, contiguous");
  auto dh = at::empty_like(h);
  gelu_backward_impl(grad.data_ptr<float>(), h.data_ptr<float>(), dh.data_ptr<float>(), h.numel());
  return dh;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_forward", &attention_forward, "(q, k, v) -> (out, lse)");
  m.def("attention_backward", &attention_backward, "(grad_out, q, k, v, out, lse) -> (dq, dk, dv)");
  m.def("gelu_forward", &gelu_forward, "h -> gelu_tanh(h)");
  m.def("gelu_backward", &gelu_backward, "(grad, h) -> grad * gelu_tanh'(h)");
}
