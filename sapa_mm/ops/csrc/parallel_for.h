// Shared by the CPU kernels (included inside their anonymous namespace; idx = int64_t).
// The build hashes every file in csrc/, so editing this rebuilds both libraries.
#pragma once
// Run body(begin, end) over [0, n) split across nthreads threads.
template <typename F>
void parallel_for(int64_t n, int nthreads, F body) {
  nthreads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, n)));
  if (nthreads == 1) {
    body(0, n);
    return;
  }
  std::vector<std::thread> pool;
  int64_t chunk = (n + nthreads - 1) / nthreads;
  for (int t = 1; t < nthreads; ++t) {
    int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(body, b, e);
  }
  body(0, std::min(n, chunk));
  for (auto& th : pool) th.join();
}
