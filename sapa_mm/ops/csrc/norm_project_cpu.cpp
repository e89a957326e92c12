// LayerNorm over the channels fused with a 1x1 projection (the maths: sapa_mm/layers/norm.py).
// t is (B, C, P) channel-major; per pixel p, mean and rstd over its C channels, and
//
//   forward:     z[j, p]  = rstd[p] * (sum_c wg[j, c] t[c, p] - mean[p] * wsum[j]) + bias[j]
//   input grad:  gt[c, p] = sum_j wg[j, c] u[j, p] + k[p] - alpha[p] * t[c, p]
//
// Each reads t once and writes its result once: a block of PB pixels of every channel is
// packed into a contiguous buffer (the rows of t are P apart, which would put a block's
// channels in one cache set) and all sums over the block run from it, in registers.
// Weights arrive transposed and zero-padded to whole blocks: wt[c * Dp + j], (Cp, Dp)
// multiples of JB.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using idx = int64_t;

#include "parallel_for.h"
#include "vec.h"

// Projections computed together (forward) and channels together (input gradient):
// 2 vectors each, so 16 (8) accumulators stay in the registers of AVX-512 (AVX2).
#ifdef __AVX512F__
constexpr int JB = 8;
#else
constexpr int JB = 4;
#endif

// Tasks take TB pixels of every channel: each row's TB pixels are one contiguous read
// (streamed from memory; a block as narrow as the vectors would make C scattered
// reads, one cache miss each). Inside, the rows are repacked by groups of PB pixels
// ("tiles", all channels of a tile contiguous) that the sums then read from cache.
constexpr idx TILES = 16;

// rows[0 .. R) (each P apart) at pixels [p0, p0 + n) -> tile-major dst[tile][row][PB],
// zero past n.
template <typename T>
void pack_tiles(const T* rows, idx R, idx P, idx n, idx PB, T* dst) {
  const idx tiles = (n + PB - 1) / PB;
  for (idx c = 0; c < R; ++c) {
    const T* src = rows + c * P;
    for (idx i = 0; i < tiles; ++i) {
      T* d = dst + (i * R + c) * PB;
      const idx m = std::min(PB, n - i * PB);
      std::memcpy(d, src + i * PB, m * sizeof(T));
      std::fill(d + m, d + PB, T(0));
    }
  }
}

template <typename T>
void ln_project(const T* t, const T* wt, const T* wsum, const T* bias, T* z, T* mean, T* rstd,
                idx B, idx C, idx P, idx D, idx Dp, double eps, int nt) {
  using V = typename Vec<T>::type;
  constexpr idx VL = sizeof(V) / sizeof(T), PB = 2 * VL, TB = TILES * PB;
  const idx nblk = (P + TB - 1) / TB;
  parallel_for(B * nblk, nt, [=](idx begin, idx end) {
    std::vector<T> pack(TILES * C * PB);
    alignas(64) T mu[PB], rs[PB], out[PB];
    for (idx task = begin; task < end; ++task) {
      const idx b = task / nblk, q0 = (task % nblk) * TB, nq = std::min(TB, P - q0);
      pack_tiles(t + b * C * P + q0, C, P, nq, PB, pack.data());
      for (idx tile = 0; tile * PB < nq; ++tile) {
        const idx p0 = q0 + tile * PB, n = std::min(PB, P - p0);
        const T* x = pack.data() + tile * C * PB;
        // sums shifted by the first channel: no cancellation when |mean| >> std
        const V f0 = vload<V>(x), f1 = vload<V>(x + VL);
        V s0{}, s1{}, q0v{}, q1v{};
        for (idx c = 0; c < C; ++c) {
          const V d0 = vload<V>(x + c * PB) - f0, d1 = vload<V>(x + c * PB + VL) - f1;
          s0 += d0; s1 += d1; q0v += d0 * d0; q1v += d1 * d1;
        }
        for (idx i = 0; i < PB; ++i) {
          const double sm = i < VL ? s0[i] : s1[i - VL], sq = i < VL ? q0v[i] : q1v[i - VL];
          const double m = sm / C, var = std::max(sq / C - m * m, 0.0);
          mu[i] = T(m + x[i]);
          rs[i] = T(1.0 / std::sqrt(var + eps));
        }
        std::memcpy(mean + b * P + p0, mu, n * sizeof(T));
        std::memcpy(rstd + b * P + p0, rs, n * sizeof(T));
        const V m0 = vload<V>(mu), m1 = vload<V>(mu + VL), r0 = vload<V>(rs), r1 = vload<V>(rs + VL);
        for (idx j0 = 0; j0 < D; j0 += JB) {
          V a0[JB] = {}, a1[JB] = {};
          for (idx c = 0; c < C; ++c) {
            const V x0 = vload<V>(x + c * PB), x1 = vload<V>(x + c * PB + VL);
            const T* w = wt + c * Dp + j0;
#pragma GCC unroll 8
            for (int j = 0; j < JB; ++j) {
              a0[j] += w[j] * x0;
              a1[j] += w[j] * x1;
            }
          }
          for (int j = 0; j < JB && j0 + j < D; ++j) {
            const T ws = wsum[j0 + j], bj = bias[j0 + j];
            vstore(out, r0 * (a0[j] - m0 * ws) + bj);
            vstore(out + VL, r1 * (a1[j] - m1 * ws) + bj);
            std::memcpy(z + (b * D + j0 + j) * P + p0, out, n * sizeof(T));
          }
        }
      }
    }
  });
}

template <typename T>
void ln_project_input_grad(const T* t, const T* u, const T* k, const T* alpha, const T* wt, T* gt,
                           idx B, idx C, idx P, idx D, idx Dp, int nt) {
  using V = typename Vec<T>::type;
  constexpr idx VL = sizeof(V) / sizeof(T), PB = 2 * VL, TB = TILES * PB;
  const idx nblk = (P + TB - 1) / TB;
  parallel_for(B * nblk, nt, [=](idx begin, idx end) {
    std::vector<T> pack(TILES * D * PB), kb(TILES * PB), ab(TILES * PB), tc(JB * TB);
    alignas(64) T out[PB];
    for (idx task = begin; task < end; ++task) {
      const idx b = task / nblk, q0 = (task % nblk) * TB, nq = std::min(TB, P - q0);
      const idx tiles = (nq + PB - 1) / PB;
      pack_tiles(u + b * D * P + q0, D, P, nq, PB, pack.data());
      pack_tiles(k + b * P + q0, 1, P, nq, PB, kb.data());
      pack_tiles(alpha + b * P + q0, 1, P, nq, PB, ab.data());
      for (idx c0 = 0; c0 < C; c0 += JB) {
        const idx cb = std::min<idx>(JB, C - c0);
        pack_tiles(t + (b * C + c0) * P + q0, cb, P, nq, PB, tc.data());
        for (idx tile = 0; tile < tiles; ++tile) {
          const T* ut = pack.data() + tile * D * PB;
          V a0[JB] = {}, a1[JB] = {};
          for (idx j = 0; j < D; ++j) {
            const V u0 = vload<V>(ut + j * PB), u1 = vload<V>(ut + j * PB + VL);
#pragma GCC unroll 8
            for (int i = 0; i < JB; ++i) {
              const T w = wt[(c0 + i) * Dp + j];  // zero past C
              a0[i] += w * u0;
              a1[i] += w * u1;
            }
          }
          const V k0 = vload<V>(kb.data() + tile * PB), k1 = vload<V>(kb.data() + tile * PB + VL);
          const V al0 = vload<V>(ab.data() + tile * PB), al1 = vload<V>(ab.data() + tile * PB + VL);
          for (idx i = 0; i < cb; ++i) {
            const T* ti = tc.data() + (tile * cb + i) * PB;
            vstore(out, a0[i] + k0 - al0 * vload<V>(ti));
            vstore(out + VL, a1[i] + k1 - al1 * vload<V>(ti + VL));
            std::memcpy(gt + (b * C + c0 + i) * P + q0 + tile * PB, out, std::min(PB, nq - tile * PB) * sizeof(T));
          }
        }
      }
    }
  });
}

}  // namespace

#define NORM_PROJECT_EXPORT(T, suffix)                                                               \
  extern "C" void ln_project_##suffix(const T* t, const T* wt, const T* wsum, const T* bias, T* z,   \
                                      T* mean, T* rstd, idx B, idx C, idx P, idx D, idx Dp,        \
                                      double eps, int nt) {                                        \
    ln_project<T>(t, wt, wsum, bias, z, mean, rstd, B, C, P, D, Dp, eps, nt);                      \
  }                                                                                                 \
  extern "C" void ln_project_input_grad_##suffix(const T* t, const T* u, const T* k, const T* alpha, \
                                                 const T* wt, T* gt, idx B, idx C, idx P, idx D,    \
                                                 idx Dp, int nt) {                                  \
    ln_project_input_grad<T>(t, u, k, alpha, wt, gt, B, C, P, D, Dp, nt);                           \
  }                                                                                                 \
  extern "C" int ln_project_block_##suffix() { return JB; }

NORM_PROJECT_EXPORT(float, f32)
NORM_PROJECT_EXPORT(double, f64)
