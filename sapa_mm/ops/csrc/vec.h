// Shared by the CPU kernels (included inside their anonymous namespace; idx = int64_t).
#pragma once
// 64-byte vectors (GCC/Clang vector extensions): one AVX-512 register, or two AVX2
// ones where the compiler has no AVX-512. Loads and stores go through memcpy, which
// compiles to unaligned vector moves.
template <typename T> struct Vec;
template <> struct Vec<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct Vec<double> { typedef double type __attribute__((vector_size(64))); };

template <typename V, typename T> inline V vload(const T* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
template <typename V, typename T> inline void vstore(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
