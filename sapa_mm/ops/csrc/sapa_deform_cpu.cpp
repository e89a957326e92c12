// Fast CPU kernels for SAPA-D (see deform.py for the maths). Plain C++, no torch headers.
//
// Python passes channels-last tensors, so every inner loop runs over contiguous channels:
//   q (B, G, N, d), k (B, G, HW, d), v (B, G, HW, c), off (B, G, P, 2, N),
//   out (B, G, N, c), attn (B, G, P, N), with N = sH * sW output pixels.
// Forward: parallel over output rows. Backward scatters into k and v; groups own disjoint
// channels, so it runs in parallel over (batch, group) without atomics.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace {

using idx = int64_t;

#include "parallel_for.h"
#include "vec.h"

struct Dims {
  idx B, G, d, c, H, W, sH, sW, P, s;
};

// The four bilinear corners of the sample at (y, x): inside the image or not, flat index,
// weight and the weight's derivatives in x and y (all 0 outside).
template <typename T>
struct Corners {
  bool inside[4];
  idx index[4];
  T w[4], dwx[4], dwy[4];

  Corners(T y, T x, idx H, idx W) {
    const T y0 = std::floor(y), x0 = std::floor(x), fy = y - y0, fx = x - x0;
    const T wy[2] = {1 - fy, fy}, wx[2] = {1 - fx, fx}, sign[2] = {-1, 1};
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        const int n = 2 * i + j;
        const T yc = y0 + i, xc = x0 + j;
        inside[n] = yc >= 0 && yc <= H - 1 && xc >= 0 && xc <= W - 1;
        index[n] = inside[n] ? static_cast<idx>(yc) * W + static_cast<idx>(xc) : 0;
        w[n] = inside[n] ? wy[i] * wx[j] : T(0);
        dwx[n] = inside[n] ? wy[i] * sign[j] : T(0);
        dwy[n] = inside[n] ? sign[i] * wx[j] : T(0);
      }
  }
};

// A vector accumulator: a plain loop's sum is a chain the compiler may not reorder
// (no -ffast-math), so it would stay scalar.
template <typename T>
inline T dot(const T* a, const T* b, idx n) {
  using V = typename Vec<T>::type;
  constexpr idx VL = sizeof(V) / sizeof(T);
  V acc = {};
  idx i = 0;
  for (; i + VL <= n; i += VL) acc += vload<V>(a + i) * vload<V>(b + i);
  T sum = 0;
  for (idx j = 0; j < VL; ++j) sum += acc[j];
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

template <typename T>
inline void axpy(T alpha, const T* x, T* y, idx n) {
  for (idx i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <typename T>
inline Corners<T> corners_at(const T* off, idx p, idx n, idx y, idx x, const Dims& D) {
  const T* o = off + 2 * p * D.sH * D.sW;
  return Corners<T>(T(y / D.s) + o[D.sH * D.sW + n], T(x / D.s) + o[n], D.H, D.W);
}

template <typename T>
void forward(const T* q, const T* k, const T* v, const T* off, T* out, T* attn, Dims D, int nt) {
  const idx N = D.sH * D.sW, HW = D.H * D.W;
  parallel_for(D.B * D.G * D.sH, nt, [=](idx begin, idx end) {
    std::vector<T> logit(D.P);
    for (idx t = begin; t < end; ++t) {
      const idx bg = t / D.sH, y = t % D.sH;
      const T *kg = k + bg * HW * D.d, *vg = v + bg * HW * D.c, *og = off + bg * D.P * 2 * N;
      for (idx x = 0; x < D.sW; ++x) {
        const idx n = y * D.sW + x;
        const T* qn = q + (bg * N + n) * D.d;
        T top = -std::numeric_limits<T>::infinity();
        for (idx p = 0; p < D.P; ++p) {
          const Corners<T> cs = corners_at(og, p, n, y, x, D);
          T l = 0;
          for (int i = 0; i < 4; ++i)
            if (cs.w[i] != 0) l += cs.w[i] * dot(qn, kg + cs.index[i] * D.d, D.d);
          logit[p] = l;
          top = std::max(top, l);
        }
        T total = 0;
        for (idx p = 0; p < D.P; ++p) total += logit[p] = std::exp(logit[p] - top);
        T* on = out + (bg * N + n) * D.c;
        std::fill(on, on + D.c, T(0));
        for (idx p = 0; p < D.P; ++p) {
          const T a = logit[p] / total;
          attn[(bg * D.P + p) * N + n] = a;
          const Corners<T> cs = corners_at(og, p, n, y, x, D);
          for (int i = 0; i < 4; ++i)
            if (cs.w[i] != 0) axpy(a * cs.w[i], vg + cs.index[i] * D.c, on, D.c);
        }
      }
    }
  });
}

// gk, gv must be zero on entry.
template <typename T>
void backward(const T* q, const T* k, const T* v, const T* off, const T* attn, const T* grad, T* gq,
              T* gk, T* gv, T* goff, Dims D, int nt) {
  const idx N = D.sH * D.sW, HW = D.H * D.W;
  parallel_for(D.B * D.G, nt, [=](idx begin, idx end) {
    std::vector<T> ga(D.P), qk(4 * D.P), gv_dot(4 * D.P);
    for (idx bg = begin; bg < end; ++bg) {
      const T *kg = k + bg * HW * D.d, *vg = v + bg * HW * D.c, *og = off + bg * D.P * 2 * N;
      T *gkg = gk + bg * HW * D.d, *gvg = gv + bg * HW * D.c, *gog = goff + bg * D.P * 2 * N;
      for (idx n = 0; n < N; ++n) {
        const idx y = n / D.sW, x = n % D.sW;
        const T *qn = q + (bg * N + n) * D.d, *gn = grad + (bg * N + n) * D.c;
        T* gqn = gq + (bg * N + n) * D.d;
        std::fill(gqn, gqn + D.d, T(0));
        // ga_p = grad . v(sampled at p); sum_p a_p ga_p
        T mean = 0;
        for (idx p = 0; p < D.P; ++p) {
          const Corners<T> cs = corners_at(og, p, n, y, x, D);
          ga[p] = 0;
          for (int i = 0; i < 4; ++i) {
            // inside corners of weight 0 (integer positions) still have weight gradients
            qk[4 * p + i] = cs.inside[i] ? dot(qn, kg + cs.index[i] * D.d, D.d) : T(0);
            gv_dot[4 * p + i] = cs.inside[i] ? dot(gn, vg + cs.index[i] * D.c, D.c) : T(0);
            ga[p] += cs.w[i] * gv_dot[4 * p + i];
          }
          mean += attn[(bg * D.P + p) * N + n] * ga[p];
        }
        for (idx p = 0; p < D.P; ++p) {
          const T a = attn[(bg * D.P + p) * N + n], gl = a * (ga[p] - mean);
          const Corners<T> cs = corners_at(og, p, n, y, x, D);
          T gx = 0, gy = 0;
          for (int i = 0; i < 4; ++i) {
            if (!cs.inside[i]) continue;
            const T gw = gl * qk[4 * p + i] + a * gv_dot[4 * p + i];
            gx += gw * cs.dwx[i];
            gy += gw * cs.dwy[i];
            if (cs.w[i] == 0) continue;
            axpy(gl * cs.w[i], kg + cs.index[i] * D.d, gqn, D.d);
            axpy(gl * cs.w[i], qn, gkg + cs.index[i] * D.d, D.d);
            axpy(a * cs.w[i], gn, gvg + cs.index[i] * D.c, D.c);
          }
          gog[2 * p * N + n] = gx;
          gog[(2 * p + 1) * N + n] = gy;
        }
      }
    }
  });
}

}  // namespace

#define SAPA_DEFORM_EXPORT(T, suffix)                                                              \
  extern "C" void sapa_deform_forward_##suffix(const T* q, const T* k, const T* v, const T* off,  \
                                               T* out, T* attn, idx B, idx G, idx d, idx c, idx H, \
                                               idx W, idx P, idx s, int nthreads) {                \
    forward<T>(q, k, v, off, out, attn, Dims{B, G, d, c, H, W, s * H, s * W, P, s}, nthreads);     \
  }                                                                                                \
  extern "C" void sapa_deform_backward_##suffix(                                                   \
      const T* q, const T* k, const T* v, const T* off, const T* attn, const T* grad, T* gq,      \
      T* gk, T* gv, T* goff, idx B, idx G, idx d, idx c, idx H, idx W, idx P, idx s,              \
      int nthreads) {                                                                              \
    backward<T>(q, k, v, off, attn, grad, gq, gk, gv, goff,                                        \
                Dims{B, G, d, c, H, W, s * H, s * W, P, s}, nthreads);                             \
  }

SAPA_DEFORM_EXPORT(float, f32)
SAPA_DEFORM_EXPORT(double, f64)
