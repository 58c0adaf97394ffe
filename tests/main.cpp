// The test runner, and a counting malloc so tests can assert that a warm
// training step makes no heap allocation (Eigen allocates through malloc,
// operator new does too). Sanitizer builds keep their own malloc.
#define CATCH_CONFIG_RUNNER
#include <atomic>
#include <cerrno>
#include <cstddef>

#include <catch2/catch.hpp>

#include "support.hpp"

#ifndef VPDARTS_TEST_SANITIZE
namespace {
std::atomic<std::size_t> g_allocations{0};
}
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);

void* malloc(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t s) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(n, s);
}
void* realloc(void* p, std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
void* memalign(std::size_t a, std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(a, n);
}
void* aligned_alloc(std::size_t a, std::size_t n) { return memalign(a, n); }
int posix_memalign(void** out, std::size_t a, std::size_t n) {
  void* p = memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void free(void* p) { __libc_free(p); }
}
bool vpdarts_test::counting_allocations() { return true; }
std::size_t vpdarts_test::allocations() { return g_allocations.load(); }
#else
bool vpdarts_test::counting_allocations() { return false; }
std::size_t vpdarts_test::allocations() { return 0; }
#endif

// Catch2 reseeds std::rand (Eigen's setRandom) before every test case when the seed is not 0, so the
// data of a test case does not depend on which test cases ran before it (ctest runs one tag at a time,
// and the order of the files differs between builds). --rng-seed N still chooses another seed.
int main(int argc, char* argv[]) {
  Catch::Session session;
  session.configData().rngSeed = 20261205;
  if (const int status = session.applyCommandLine(argc, argv); status != 0) return status;
  return session.run();
}
