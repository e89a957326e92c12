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

// Run body(begin, end) over [0, n) split across nthreads threads.
template <typename F>
void parallel_for(idx n, int nthreads, F body) {
  nthreads = static_cast<int>(std::max<idx>(1, std::min<idx>(nthreads, n)));
  if (nthreads == 1) {
    body(0, n);
    return;
  }
  std::vector<std::thread> pool;
  idx chunk = (n + nthreads - 1) / nthreads;
  for (int t = 1; t < nthreads; ++t) {
    idx b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(body, b, e);
  }
  body(0, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

// Expanded rows of v[c] for low-res rows y0 - r .. y0 + r (zero outside the image).
template <typename T>
void expand_rows(const T* vc, idx H, idx W, idx K, idx s, idx y0, T* U) {
  const idx r = K / 2, L = s * (W + 2 * r);
  for (idx dy = 0; dy < K; ++dy) {
    T* row = U + dy * L;
    const idx yy = y0 + dy - r;
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
    } else {
      for (idx x = 0; x < W; ++x)
        for (idx j = 0; j < s; ++j) dst[x * s + j] = src[x];
    }
  }
}

// out[0:n] (+)= sum_t a[t][0:n] * b[t][0:n]. The n-loop is cut into chunks whose
// partial sums stay in vector registers across all taps: two loads per FMA and one
// store per chunk instead of a load-modify-store per tap.
template <typename T>
void dot_taps(T* __restrict out, bool accumulate, const T* const* a, const T* const* b, idx taps, idx n) {
  constexpr idx XB = 64 / sizeof(T) * 4;  // four 512-bit registers' worth
  idx x0 = 0;
  for (; x0 + XB <= n; x0 += XB) {
    T acc[XB];
    for (idx x = 0; x < XB; ++x) acc[x] = accumulate ? out[x0 + x] : T(0);
    for (idx t = 0; t < taps; ++t) {
      const T* __restrict at = a[t] + x0;
      const T* __restrict bt = b[t] + x0;
      for (idx x = 0; x < XB; ++x) acc[x] += at[x] * bt[x];
    }
    for (idx x = 0; x < XB; ++x) out[x0 + x] = acc[x];
  }
  if (x0 < n) {
    if (!accumulate) std::fill(out + x0, out + n, T(0));
    for (idx t = 0; t < taps; ++t)
      for (idx x = x0; x < n; ++x) out[x] += a[t][x] * b[t][x];
  }
}

// out[b,c,y,x] = sum_n w[b,n,y,x] * v[b,c,y/s+dy-r,x/s+dx-r]; parallel over (b, y0).
template <typename T>
void aggregate(const T* w, const T* v, T* out, idx B, idx C, idx H, idx W, idx K, idx s, int nt) {
  const idx K2 = K * K, r = K / 2, sH = s * H, sW = s * W, L = s * (W + 2 * r);
  parallel_for(B * H, nt, [=](idx begin, idx end) {
    std::vector<T> U(K * L);
    std::vector<const T*> wrows(K2), urows(K2);
    for (idx n = 0; n < K2; ++n) urows[n] = U.data() + (n / K) * L + (n % K) * s;
    for (idx t = begin; t < end; ++t) {
      const idx b = t / H, y0 = t % H;
      for (idx c = 0; c < C; ++c) {
        expand_rows(v + (b * C + c) * H * W, H, W, K, s, y0, U.data());
        for (idx i = 0; i < s; ++i) {
          const idx y = y0 * s + i;
          for (idx n = 0; n < K2; ++n) wrows[n] = w + ((b * K2 + n) * sH + y) * sW;
          dot_taps(out + ((b * C + c) * sH + y) * sW, false, wrows.data(), urows.data(), K2, sW);
        }
      }
    }
  });
}

// out[b,n,y,x] = sum_c g[b,c,y,x] * v[b,c,y/s+dy-r,x/s+dx-r]; parallel over (b, y0),
// channels in blocks so that the sum over a block stays in registers.
template <typename T>
void correlate(const T* g, const T* v, T* out, idx B, idx C, idx H, idx W, idx K, idx s, int nt) {
  constexpr idx CB = 16;
  const idx K2 = K * K, r = K / 2, sH = s * H, sW = s * W, L = s * (W + 2 * r);
  parallel_for(B * H, nt, [=](idx begin, idx end) {
    std::vector<T> U(CB * K * L), acc(K2 * s * sW);
    std::vector<const T*> grows(CB), urows(CB);
    for (idx t = begin; t < end; ++t) {
      const idx b = t / H, y0 = t % H;
      for (idx c0 = 0; c0 < C; c0 += CB) {
        const idx cb = std::min(CB, C - c0);
        for (idx c = 0; c < cb; ++c)
          expand_rows(v + (b * C + c0 + c) * H * W, H, W, K, s, y0, U.data() + c * K * L);
        for (idx i = 0; i < s; ++i) {
          for (idx c = 0; c < cb; ++c) grows[c] = g + ((b * C + c0 + c) * sH + y0 * s + i) * sW;
          for (idx n = 0; n < K2; ++n) {
            for (idx c = 0; c < cb; ++c) urows[c] = U.data() + (c * K + n / K) * L + (n % K) * s;
            dot_taps(acc.data() + (n * s + i) * sW, c0 > 0, grows.data(), urows.data(), cb, sW);
          }
        }
      }
      for (idx n = 0; n < K2; ++n)
        for (idx i = 0; i < s; ++i)
          std::memcpy(out + ((b * K2 + n) * sH + y0 * s + i) * sW, acc.data() + (n * s + i) * sW, sW * sizeof(T));
    }
  });
}

inline void fma_row(float* __restrict o, const float* __restrict a, const float* __restrict b, idx n) {
  for (idx x = 0; x < n; ++x) o[x] += a[x] * b[x];
}
inline void fma_row(double* __restrict o, const double* __restrict a, const double* __restrict b, idx n) {
  for (idx x = 0; x < n; ++x) o[x] += a[x] * b[x];
}

// Adjoint of aggregate in v, as a gather: each task owns one low-res row (b, yy) and
// visits the high-res rows whose windows reach it, so no two threads write one place.
template <typename T>
void scatter(const T* w, const T* g, T* out, idx B, idx C, idx H, idx W, idx K, idx s, int nt) {
  const idx K2 = K * K, r = K / 2, sH = s * H, sW = s * W, L = s * (W + 2 * r);
  parallel_for(B * H, nt, [=](idx begin, idx end) {
    std::vector<T> G(L);
    for (idx t = begin; t < end; ++t) {
      const idx b = t / H, yy = t % H;
      for (idx c = 0; c < C; ++c) {
        std::fill(G.begin(), G.end(), T(0));
        for (idx y0 = std::max<idx>(0, yy - r); y0 <= std::min(H - 1, yy + r); ++y0) {
          const idx dy = yy - y0 + r;
          for (idx i = 0; i < s; ++i) {
            const idx y = y0 * s + i;
            const T* gr = g + ((b * C + c) * sH + y) * sW;
            for (idx dx = 0; dx < K; ++dx)
              fma_row(G.data() + dx * s, w + ((b * K2 + dy * K + dx) * sH + y) * sW, gr, sW);
          }
        }
        T* o = out + ((b * C + c) * H + yy) * W;
        const T* Gc = G.data() + r * s;
        for (idx x = 0; x < W; ++x) {
          T sum = 0;
          for (idx j = 0; j < s; ++j) sum += Gc[x * s + j];
          o[x] = sum;
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
