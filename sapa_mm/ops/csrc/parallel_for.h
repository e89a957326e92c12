// Shared by the CPU kernels (included inside their anonymous namespace; idx = int64_t).
// The build hashes every file in csrc/, so editing this rebuilds every library.
#pragma once
// Run body(begin, end) over [0, n) split across nthreads threads.
//
// Built with OpenMP (cpu_backend links torch's own OpenMP runtime), the work goes to the
// thread team torch's ops use: after a torch op those threads spin for a while before
// they sleep, and threads of our own would share the cores with them (measured, a
// kernel called between torch ops ran up to 1.7x slower on two cores). Without it,
// std::thread.
template <typename F>
void parallel_for(int64_t n, int nthreads, F body) {
  nthreads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, n)));
  const int64_t chunk = (n + nthreads - 1) / nthreads;
  if (nthreads == 1) {
    body(0, n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
  for (int t = 0; t < nthreads; ++t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) body(b, e);
  }
#else
  std::vector<std::thread> pool;
  for (int t = 1; t < nthreads; ++t) {
    int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(body, b, e);
  }
  body(0, std::min(n, chunk));
  for (auto& th : pool) th.join();
#endif
}
