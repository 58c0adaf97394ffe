#pragma once
// bf16 x bf16 -> float32 matrix products through oneDNN's matmul (AMX or
// AVX512-BF16 kernels, chosen by oneDNN), for the frozen products of
// precision::bf16. Compiled only with VPDARTS_WITH_DNNL.
//
// A primitive is made once per shape and kept (per thread, with its memory
// objects), the scratchpad is ours and grows only, and execution goes through
// oneDNN's C call with the arguments on the stack: a warm step makes no
// primitive and no memory object.

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL

#include <oneapi/dnnl/dnnl.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../error.hpp"
#include "../fwd.hpp"
#include "format.hpp"

namespace vpdarts::detail {

/// How many bf16 products ran in this process (tests relate a step's allocations to it).
inline std::atomic<std::uint64_t>& bf16_products() {
  static std::atomic<std::uint64_t> n{0};
  return n;
}

/// The products of one thread: c (m x n, float32, row-major) = a (m x k, bf16,
/// row-major) * op(w), where w is bf16 and either n x k row-major (`w_nk`:
/// the product is a * w^T, a linear layer's forward) or k x n row-major (a * w,
/// its input gradient); with `accumulate` c += instead of c =.
class bf16_matmuls {
 public:
  /// The calling thread's instance.
  static bf16_matmuls& here() {
    thread_local bf16_matmuls m;
    return m;
  }

  /// Runs the product (see the class). @throws state_error when oneDNN refuses it.
  void run(index m, index n, index k, const std::uint16_t* a, const std::uint16_t* w, bool w_nk, float* c,
           bool accumulate) {
    entry& e = find(m, n, k, w_nk, accumulate);
    ++bf16_products();
    e.src.set_data_handle(const_cast<std::uint16_t*>(a));
    e.wei.set_data_handle(const_cast<std::uint16_t*>(w));
    e.dst.set_data_handle(c);
    e.pad.set_data_handle(scratch_.data());
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e.src.get()},
                               {DNNL_ARG_WEIGHTS, e.wei.get()},
                               {DNNL_ARG_DST, e.dst.get()},
                               {DNNL_ARG_SCRATCHPAD, e.pad.get()}};
    dnnl_status_t st = dnnl_primitive_execute(e.prim.get(), stream_.get(), 4, args);
    if (st == dnnl_success) st = dnnl_stream_wait(stream_.get());
    if (st != dnnl_success)
      throw state_error(cat("bf16 matmul: oneDNN failed (status ", static_cast<int>(st), ") on ",
                            shape_str(m, k), " x ", shape_str(k, n)));
  }

  /// The oneDNN implementation chosen for a shape (e.g. "brg:avx512_core_amx_bf16"), for reports.
  std::string implementation(index m, index n, index k) { return find(m, n, k, true, false).impl; }

 private:
  struct entry {
    index m, n, k;
    bool w_nk, accumulate;
    dnnl::matmul prim;
    dnnl::memory src, wei, dst, pad;
    std::string impl;
  };

  entry& find(index m, index n, index k, bool w_nk, bool accumulate) {
    for (entry& e : cache_)
      if (e.m == m && e.n == n && e.k == k && e.w_nk == w_nk && e.accumulate == accumulate) return e;
    // Shapes repeat from step to step; a run of new ones (inference at many batch sizes) starts afresh.
    if (cache_.size() >= 256) cache_.clear();
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    try {
      const dnnl::memory::desc a_md({m, k}, dt::bf16, tag::ab), c_md({m, n}, dt::f32, tag::ab);
      const dnnl::memory::desc w_md({k, n}, dt::bf16, w_nk ? tag::ba : tag::ab);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_md, c_md), attr, engine_);
      const std::size_t pad = pd.scratchpad_desc().get_size();
      if (pad > scratch_.size()) scratch_.resize(pad);
      entry e{m, n, k, w_nk, accumulate, dnnl::matmul(pd),
              dnnl::memory(a_md, engine_, DNNL_MEMORY_NONE), dnnl::memory(w_md, engine_, DNNL_MEMORY_NONE),
              dnnl::memory(c_md, engine_, DNNL_MEMORY_NONE),
              dnnl::memory(pd.scratchpad_desc(), engine_, DNNL_MEMORY_NONE), pd.impl_info_str()};
      cache_.push_back(std::move(e));
    } catch (const dnnl::error& err) {
      throw state_error(cat("bf16 matmul: oneDNN cannot make the product ", shape_str(m, k), " x ", shape_str(k, n),
                            ": ", err.what()));
    }
    return cache_.back();
  }

  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  std::vector<entry> cache_;
  std::vector<std::byte> scratch_ = std::vector<std::byte>(64);
};

}  // namespace vpdarts::detail

#endif
