// Fast CPU kernels for the three SAPA window products (see torch_backend.py for the
// maths). Plain C++ with no torch headers, so the just-in-time build takes seconds;
// Python passes raw pointers of contiguous tensors through ctypes.
//
// The trick that makes every inner loop a contiguous, vectorisable FMA: for one
// channel and one low-res row, build the row zero-padded by r and repeated s times
// ("expanded": U[t] = vpad[t / s], length s*(W+2r)). High-res pixel x, tap dx then
// reads U[x + s*dx], so a tap is a shifted contiguous slice of U.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using idx = int64_t;

#include "parallel_for.h"

// Expanded rows of v[c] for low-res rows yy0 .. yy0 + nrows - 1 (zero outside the image).
template <typename T>
void expand_rows(const T* vc, idx H, idx W, idx K, idx s, idx yy0, idx nrows, T* U) {
  const idx r = K / 2, L = s * (W + 2 * r);
  for (idx k = 0; k < nrows; ++k) {
    T* row = U + k * L;
    const idx yy = yy0 + k;
    if (yy < 0 || yy >= H) {
      std::fill(row, row + L, T(0));
      continue;
    }
    std::fill(row, row + s * r, T(0));
    std::fill(row + s * (r + W), row + L, T(0));
    const T* src = vc + yy * W;
    T* dst = row + s * r;
    if (s == 1) {
      std::memcpy(dst, src, W * sizeof(T));
    } else if (s == 2) {  // the common case, in a form the compiler vectorises
      for (idx x = 0; x < W; ++x) dst[2 * x] = dst[2 * x + 1] = src[x];
    } else {
      for (idx x = 0; x < W; ++x)
        for (idx j = 0; j < s; ++j) dst[x * s + j] = src[x];
    }
  }
}

// Low-res rows per task: enough tasks to balance the threads, and enough rows that
// each expanded row (built once per task and channel) serves several output rows.
inline idx rows_per_task(idx B, idx H, int nt) {
  return std::max<idx>(1, std::min<idx>(16, (B * H + 4 * nt - 1) / (4 * nt)));
}

#include "vec.h"

// out[0:n] (+)= sum_t a[t][0:n] * b[t][0:n]. Each chunk of 4 vectors keeps its partial
// sums in registers across all taps: two loads per FMA, one store per chunk.
template <typename T>
void dot_taps(T* __restrict out, bool accumulate, const T* const* a, const T* const* b, idx taps, idx n) {
  using V = typename Vec<T>::type;
  constexpr idx VL = sizeof(V) / sizeof(T);
  idx x0 = 0;
  for (; x0 + 4 * VL <= n; x0 += 4 * VL) {
    V s0 = {}, s1 = {}, s2 = {}, s3 = {};
    if (accumulate) {
      s0 = vload<V>(out + x0); s1 = vload<V>(out + x0 + VL);
      s2 = vload<V>(out + x0 + 2 * VL); s3 = vload<V>(out + x0 + 3 * VL);
    }
    for (idx t = 0; t < taps; ++t) {
      const T* at = a[t] + x0;
      const T* bt = b[t] + x0;
      s0 += vload<V>(at) * vload<V>(bt);
      s1 += vload<V>(at + VL) * vload<V>(bt + VL);
      s2 += vload<V>(at + 2 * VL) * vload<V>(bt + 2 * VL);
      s3 += vload<V>(at + 3 * VL) * vload<V>(bt + 3 * VL);
    }
    vstore(out + x0, s0); vstore(out + x0 + VL, s1);
    vstore(out + x0 + 2 * VL, s2); vstore(out + x0 + 3 * VL, s3);
  }
  for (; x0 + VL <= n; x0 += VL) {
    V s0 = accumulate ? vload<V>(out + x0) : V{};
    for (idx t = 0; t < taps; ++t) s0 += vload<V>(a[t] + x0) * vload<V>(b[t] + x0);
    vstore(out + x0, s0);
  }
  for (; x0 < n; ++x0) {
    T s0 = accumulate ? out[x0] : T(0);
    for (idx t = 0; t < taps; ++t) s0 += a[t][x0] * b[t][x0];
    out[x0] = s0;
  }
}

// out[c][0:n] = sum_t a[t][0:n] * b[c * taps + t][0:n] for NC channels that share the
// rows a (the attention weights): each loaded weight vector serves NC channels, so an
// FMA costs 1 + 1/NC loads instead of 2 (aggregate and scatter are load-bound).
template <int NC, typename T>
void dot_taps_shared(T* const* out, const T* const* a, const T* const* b, idx taps, idx n) {
  using V = typename Vec<T>::type;
  constexpr idx VL = sizeof(V) / sizeof(T);
  idx x0 = 0;
  for (; x0 + 2 * VL <= n; x0 += 2 * VL) {
    V acc0[NC] = {}, acc1[NC] = {};
    for (idx t = 0; t < taps; ++t) {
      const V a0 = vload<V>(a[t] + x0), a1 = vload<V>(a[t] + x0 + VL);
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        const T* bt = b[c * taps + t] + x0;
        acc0[c] += a0 * vload<V>(bt);
        acc1[c] += a1 * vload<V>(bt + VL);
      }
    }
    for (int c = 0; c < NC; ++c) {
      vstore(out[c] + x0, acc0[c]);
      vstore(out[c] + x0 + VL, acc1[c]);
    }
  }
  for (; x0 + VL <= n; x0 += VL) {
    V acc[NC] = {};
    for (idx t = 0; t < taps; ++t) {
      const V a0 = vload<V>(a[t] + x0);
      for (int c = 0; c < NC; ++c) acc[c] += a0 * vload<V>(b[c * taps + t] + x0);
    }
    for (int c = 0; c < NC; ++c) vstore(out[c] + x0, acc[c]);
  }
  for (; x0 < n; ++x0)
    for (int c = 0; c < NC; ++c) {
      T sum = 0;
      for (idx t = 0; t < taps; ++t) sum += a[t][x0] * b[c * taps + t][x0];
      out[c][x0] = sum;
    }
}

// Channels handled together by the shared-weight kernels: 2·NCH accumulator vectors
// stay in registers (32 of 64 bytes with AVX-512; 16 of 32 bytes with AVX2 alone).
#ifdef __AVX512F__
constexpr int NCH = 8;
#else
constexpr int NCH = 2;
#endif

template <typename T>
void dot_taps_channels(idx nc, T* const* out, const T* const* a, const T* const* b, idx taps, idx n) {
  if (nc == NCH) {
    dot_taps_shared<NCH>(out, a, b, taps, n);
  } else {
    for (idx c = 0; c < nc; ++c) dot_taps_shared<1>(out + c, a, b + c * taps, taps, n);
  }
}

// out[b,c,y,x] = sum_n w[b,n,y,x] * v[b,c,y/s+dy-r,x/s+dx-r]; parallel over blocks of
// low-res rows of one image, channels inside.
template <typename T>
void aggregate(const T* w, const T* v, T* out, idx B, idx C, idx H, idx W, idx K, idx s, int nt) {
  const idx K2 = K * K, r = K / 2, sH = s * H, sW = s * W, L = s * (W + 2 * r);
  const idx RB = rows_per_task(B, H, nt), nblk = (H + RB - 1) / RB, UR = RB + 2 * r;
  parallel_for(B * nblk, nt, [=](idx begin, idx end) {
    std::vector<T> U(NCH * UR * L);
    std::vector<const T*> wrows(K2), urows(NCH * K2);
    T* outs[NCH];
    for (idx t = begin; t < end; ++t) {
      const idx b = t / nblk, ylo = (t % nblk) * RB, yhi = std::min(H, ylo + RB);
      for (idx c0 = 0; c0 < C; c0 += NCH) {
        const idx nc = std::min<idx>(NCH, C - c0);
        for (idx c = 0; c < nc; ++c)
          expand_rows(v + (b * C + c0 + c) * H * W, H, W, K, s, ylo - r, yhi - ylo + 2 * r, U.data() + c * UR * L);
        for (idx y0 = ylo; y0 < yhi; ++y0) {
          for (idx c = 0; c < nc; ++c)
            for (idx n = 0; n < K2; ++n)
              urows[c * K2 + n] = U.data() + (c * UR + y0 - ylo + n / K) * L + (n % K) * s;
          for (idx i = 0; i < s; ++i) {
            const idx y = y0 * s + i;
            for (idx n = 0; n < K2; ++n) wrows[n] = w + ((b * K2 + n) * sH + y) * sW;
            for (idx c = 0; c < nc; ++c) outs[c] = out + ((b * C + c0 + c) * sH + y) * sW;
            dot_taps_channels(nc, outs, wrows.data(), urows.data(), K2, sW);
          }
        }
      }
    }
  });
}

// out[b,n,y,x] = sum_c g[b,c,y,x] * v[b,c,y/s+dy-r,x/s+dx-r]; parallel over blocks of
// low-res rows of one image; channels in blocks so their sum stays in registers.
template <typename T>
void correlate(const T* g, const T* v, T* out, idx B, idx C, idx H, idx W, idx K, idx s, int nt) {
  constexpr idx CB = 16;
  const idx K2 = K * K, r = K / 2, sH = s * H, sW = s * W, L = s * (W + 2 * r);
  const idx RB = rows_per_task(B, H, nt), nblk = (H + RB - 1) / RB, UR = RB + 2 * r;
  parallel_for(B * nblk, nt, [=](idx begin, idx end) {
    std::vector<T> U(CB * UR * L), acc(RB * K2 * s * sW);
    std::vector<const T*> grows(CB), urows(CB);
    for (idx t = begin; t < end; ++t) {
      const idx b = t / nblk, ylo = (t % nblk) * RB, yhi = std::min(H, ylo + RB);
      for (idx c0 = 0; c0 < C; c0 += CB) {
        const idx cb = std::min(CB, C - c0);
        for (idx c = 0; c < cb; ++c)
          expand_rows(v + (b * C + c0 + c) * H * W, H, W, K, s, ylo - r, yhi - ylo + 2 * r, U.data() + c * UR * L);
        for (idx y0 = ylo; y0 < yhi; ++y0) {
          T* acc0 = acc.data() + (y0 - ylo) * K2 * s * sW;
          for (idx i = 0; i < s; ++i) {
            for (idx c = 0; c < cb; ++c) grows[c] = g + ((b * C + c0 + c) * sH + y0 * s + i) * sW;
            for (idx n = 0; n < K2; ++n) {
              for (idx c = 0; c < cb; ++c) urows[c] = U.data() + (c * UR + y0 - ylo + n / K) * L + (n % K) * s;
              dot_taps(acc0 + (n * s + i) * sW, c0 > 0, grows.data(), urows.data(), cb, sW);
            }
          }
        }
      }
      for (idx y0 = ylo; y0 < yhi; ++y0)
        for (idx n = 0; n < K2; ++n)
          for (idx i = 0; i < s; ++i)
            std::memcpy(out + ((b * K2 + n) * sH + y0 * s + i) * sW,
                        acc.data() + (((y0 - ylo) * K2 + n) * s + i) * sW, sW * sizeof(T));
    }
  });
}

// Adjoint of aggregate in v, as a gather: each low-res row (b, yy) visits the high-res
// rows whose windows reach it, so no two threads write one place. In expanded
// coordinates (see expand_rows) tap (y, dx) adds w[y, t - s*dx] * g[y, t - s*dx] to G[t].
// Copies of the rows zero-padded by s*(K-1) on both sides (and by one vector more on the
// right, so the sums run over whole vectors) make every tap a full-length shifted slice;
// NCH channels share each weight load (dot_taps_shared). A task takes a block of low-res
// rows: the rows of g it copies serve every row of the block whose windows reach them
// (one row per task copied each g row K times).
template <typename T>
void scatter(const T* w, const T* g, T* out, idx B, idx C, idx H, idx W, idx K, idx s, int nt) {
  using V = typename Vec<T>::type;
  constexpr idx VL = sizeof(V) / sizeof(T);
  const idx K2 = K * K, r = K / 2, sH = s * H, sW = s * W, L = s * (W + 2 * r);
  const idx Lv = (L + VL - 1) / VL * VL;  // L rounded up to whole vectors
  const idx pad = s * (K - 1), P = sW + 2 * pad + VL;  // padded row length
  const idx RB = std::min<idx>(8, rows_per_task(B, H, nt)), nblk = (H + RB - 1) / RB;
  const idx rows_max = K * s, block_rows_max = (RB + 2 * r) * s;
  parallel_for(B * nblk, nt, [=](idx begin, idx end) {
    std::vector<T> G(NCH * Lv), wpad(RB * rows_max * K * P, T(0)), gpad(NCH * block_rows_max * P, T(0));
    std::vector<const T*> wt(RB * rows_max * K), gt(NCH * rows_max * K);
    T* Gs[NCH];
    for (idx c = 0; c < NCH; ++c) Gs[c] = G.data() + c * Lv;
    for (idx task = begin; task < end; ++task) {
      const idx b = task / nblk, ylo = (task % nblk) * RB, yhi = std::min(H, ylo + RB);
      const idx first = std::max<idx>(0, ylo - r) * s;  // first high-res row the block reads
      const idx nrows = (std::min(H - 1, yhi - 1 + r) + 1) * s - first;
      // weight rows of every tap of every row of the block, padded; the same for all channels
      for (idx yy = ylo; yy < yhi; ++yy) {
        const idx y0_lo = std::max<idx>(0, yy - r), rows = (std::min(H - 1, yy + r) - y0_lo + 1) * s;
        for (idx row = 0; row < rows; ++row) {
          const idx y = y0_lo * s + row, dy = yy - y / s + r;
          for (idx dx = 0; dx < K; ++dx) {
            T* dst = wpad.data() + (((yy - ylo) * rows_max + row) * K + dx) * P;
            std::memcpy(dst + pad, w + ((b * K2 + dy * K + dx) * sH + y) * sW, sW * sizeof(T));
            wt[((yy - ylo) * rows_max + row) * K + dx] = dst + pad - s * dx;
          }
        }
      }
      for (idx c0 = 0; c0 < C; c0 += NCH) {
        const idx nc = std::min<idx>(NCH, C - c0);
        for (idx c = 0; c < nc; ++c)
          for (idx row = 0; row < nrows; ++row)
            std::memcpy(gpad.data() + (c * block_rows_max + row) * P + pad,
                        g + ((b * C + c0 + c) * sH + first + row) * sW, sW * sizeof(T));
        for (idx yy = ylo; yy < yhi; ++yy) {
          const idx y0_lo = std::max<idx>(0, yy - r), rows = (std::min(H - 1, yy + r) - y0_lo + 1) * s;
          const idx taps = rows * K;
          for (idx c = 0; c < nc; ++c)
            for (idx row = 0; row < rows; ++row)
              for (idx dx = 0; dx < K; ++dx)
                gt[c * taps + row * K + dx] =
                    gpad.data() + (c * block_rows_max + y0_lo * s - first + row) * P + pad - s * dx;
          dot_taps_channels(nc, Gs, wt.data() + (yy - ylo) * rows_max * K, gt.data(), taps, Lv);
          for (idx c = 0; c < nc; ++c) {
            T* o = out + ((b * C + c0 + c) * H + yy) * W;
            const T* Gc = Gs[c] + r * s;
            for (idx x = 0; x < W; ++x) {
              T sum = 0;
              for (idx j = 0; j < s; ++j) sum += Gc[x * s + j];
              o[x] = sum;
            }
          }
        }
      }
    }
  });
}

}  // namespace

#define SAPA_EXPORT(name, T, suffix)                                                             \
  extern "C" void sapa_##name##_##suffix(const T* a, const T* b, T* out, idx B, idx C, idx H,  \
                                         idx W, idx K, idx s, int nthreads) {                  \
    name<T>(a, b, out, B, C, H, W, K, s, nthreads);                                             \
  }

SAPA_EXPORT(aggregate, float, f32)
SAPA_EXPORT(aggregate, double, f64)
SAPA_EXPORT(correlate, float, f32)
SAPA_EXPORT(correlate, double, f64)
SAPA_EXPORT(scatter, float, f32)
SAPA_EXPORT(scatter, double, f64)
