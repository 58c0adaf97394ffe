#pragma once
// Matrix products through oneDNN's matmul, for the frozen products: bf16 x
// bf16 -> float32 (AMX or AVX512-BF16 kernels, chosen by oneDNN) under
// precision::bf16, and float32 x float32 where fp32_gemm() is oneDNN (its
// AVX-512 kernels on CPUs that have them). Compiled only with VPDARTS_WITH_DNNL.
//
// A primitive is made once per shape and kept (per thread, with its memory
// objects), the scratchpad is ours and grows only, and execution goes through
// oneDNN's C call with the arguments on the stack: a warm step makes no
// primitive and no memory object.

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL

#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../fwd.hpp"
#include "format.hpp"
#include "profile.hpp"

namespace vpdarts::detail {

/// How many bf16 products ran in this process (tests relate a step's allocations to it).
inline std::atomic<std::uint64_t>& bf16_products() {
  static std::atomic<std::uint64_t> n{0};
  return n;
}
/// How many of them were batched (4-d) products.
inline std::atomic<std::uint64_t>& bf16_batched_products() {
  static std::atomic<std::uint64_t> n{0};
  return n;
}
/// How many float32 products ran on oneDNN in this process.
inline std::atomic<std::uint64_t>& onednn_f32_products() {
  static std::atomic<std::uint64_t> n{0};
  return n;
}

/// The products of one thread: c (m x n, float32, row-major) = a (m x k, bf16,
/// row-major) * op(w), where w is bf16 and either n x k row-major (`w_nk`:
/// the product is a * w^T, a linear layer's forward) or k x n row-major (a * w,
/// its input gradient); with `accumulate` c += instead of c =. run_f32 is the
/// same product with a and w in float32.
class onednn_matmuls {
 public:
  /// The calling thread's instance.
  static onednn_matmuls& here() {
    thread_local onednn_matmuls m;
    return m;
  }

  /// Runs the product (see the class) in float32: a and w are float32, read where they are.
  /// @throws state_error when oneDNN refuses it.
  void run_f32(index m, index n, index k, const float* a, const float* w, bool w_nk, float* c, bool accumulate) {
    profile_scope profiled(profile_kind::weight_product);
    shape s = plain(m, n, k, w_nk, accumulate);
    s.f32 = true;
    ++onednn_f32_products();
    execute(find(s), a, w, c);
  }

  /// Runs the product (see the class). @throws state_error when oneDNN refuses it.
  void run(index m, index n, index k, const std::uint16_t* a, const std::uint16_t* w, bool w_nk, float* c,
           bool accumulate) {
    profile_scope profiled(profile_kind::weight_product);
    ++bf16_products();
    execute(find(plain(m, n, k, w_nk, accumulate)), a, w, c);
  }

  /// c (m x n) = a (m x k, bf16) * W^T for a weight W (n x k) that oneDNN reads in the layout
  /// it prefers for its matrix unit (packed for the kernel, so that no call repacks it):
  /// `weights(desc)` returns W laid out as `desc`, made once by the caller with pack().
  template <class Weights>
  void run_laid_out(index m, index n, index k, const std::uint16_t* a, Weights&& weights, float* c) {
    profile_scope profiled(profile_kind::weight_product);
    shape s;
    s.rank = 2;
    s.a = {m, k, 0, 0};
    s.as = {k, 1, 0, 0};
    s.w = {k, n, 0, 0};
    s.ws = {-1, -1, 0, 0};  // any: oneDNN's choice
    s.c = {m, n, 0, 0};
    s.cs = {n, 1, 0, 0};
    entry& e = find(s);
    const std::byte* w = weights(e.weights);
    ++bf16_products();
    execute(e, a, w, c);
  }

  /// Writes the float32 weight w (n x k, row-major) into dst, laid out as `target` in bf16.
  void pack(const float* w, index n, index k, const dnnl::memory::desc& target, std::byte* dst) {
    try {
      const dnnl::memory::desc plain({k, n}, dnnl::memory::data_type::f32, dnnl::memory::dims{1, k});
      dnnl::memory from(plain, engine_, const_cast<float*>(w)), to(target, engine_, dst);
      dnnl::reorder(from, to).execute(stream_, from, to);
      stream_.wait();
    } catch (const dnnl::error& err) {
      throw state_error(cat("bf16 matmul: oneDNN cannot lay out a weight of ", shape_str(n, k), ": ", err.what()));
    }
  }

  /// Dimensions or strides of a 4-d operand (the first `rank` used).
  using dims4 = std::array<dnnl::memory::dim, 4>;

  /// A batched product over two leading dimensions: c[i, j] (+)= a[i, j] * w[i, j] for the
  /// (i, j) of a's first two dimensions, each operand given by its dims and strides (in
  /// elements), so strided views (the heads of a qkv matrix, a transposed probability
  /// matrix) are read in place. a and w are bf16, c float32.
  void run_batched(const dims4& a_dims, const dims4& a_strides, const dims4& w_dims, const dims4& w_strides,
                   const dims4& c_dims, const dims4& c_strides, const std::uint16_t* a, const std::uint16_t* w,
                   float* c, bool accumulate) {
    profile_scope profiled(profile_kind::attention_product);
    shape s{4, a_dims, a_strides, w_dims, w_strides, c_dims, c_strides, accumulate};
    ++bf16_products();
    ++bf16_batched_products();
    execute(find(s), a, w, c);
  }

 private:
  struct shape {
    int rank = 2;
    dims4 a{}, as{}, w{}, ws{}, c{}, cs{};
    bool accumulate = false;
    bool f32 = false;  ///< a and w in float32 (else bf16)
    bool operator==(const shape&) const = default;
  };

  /// The 2-d product c (m x n) (+)= a (m x k) * op(w), all dense row-major (see the class).
  static shape plain(index m, index n, index k, bool w_nk, bool accumulate) {
    shape s;
    s.rank = 2;
    s.a = {m, k, 0, 0};
    s.as = {k, 1, 0, 0};
    s.w = {k, n, 0, 0};
    s.ws = w_nk ? dims4{1, k, 0, 0} : dims4{n, 1, 0, 0};
    s.c = {m, n, 0, 0};
    s.cs = {n, 1, 0, 0};
    s.accumulate = accumulate;
    return s;
  }
  struct entry {
    shape key;
    dnnl::matmul prim;
    dnnl::memory src, wei, dst, pad;
    dnnl::memory::desc weights;  ///< the weights' layout (oneDNN's choice for an `any` shape)
  };

  void execute(entry& e, const void* a, const void* w, float* c) {
    e.src.set_data_handle(const_cast<void*>(a));
    e.wei.set_data_handle(const_cast<void*>(w));
    e.dst.set_data_handle(c);
    e.pad.set_data_handle(scratch_.data());
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e.src.get()},
                               {DNNL_ARG_WEIGHTS, e.wei.get()},
                               {DNNL_ARG_DST, e.dst.get()},
                               {DNNL_ARG_SCRATCHPAD, e.pad.get()}};
    dnnl_status_t st = dnnl_primitive_execute(e.prim.get(), stream_.get(), 4, args);
    if (st == dnnl_success) st = dnnl_stream_wait(stream_.get());
    if (st != dnnl_success)
      throw state_error(cat(e.key.f32 ? "float32" : "bf16", " matmul: oneDNN failed (status ", static_cast<int>(st),
                            ") on ", describe(e.key)));
  }

  static std::string describe(const shape& s) {
    std::string out;
    for (int i = 0; i < s.rank; ++i) out += cat(i ? "x" : "", s.a[static_cast<std::size_t>(i)]);
    out += " by ";
    for (int i = 0; i < s.rank; ++i) out += cat(i ? "x" : "", s.w[static_cast<std::size_t>(i)]);
    return out;
  }

  entry& find(const shape& s) {
    for (entry& e : cache_)
      if (e.key == s) return e;
    // Shapes repeat from step to step; a run of new ones (inference at many batch sizes) starts afresh.
    if (cache_.size() >= 256) cache_.clear();
    using dt = dnnl::memory::data_type;
    const auto desc = [&](const dims4& d, const dims4& st, dt type) {
      return dnnl::memory::desc(dnnl::memory::dims(d.begin(), d.begin() + s.rank),
                                type, dnnl::memory::dims(st.begin(), st.begin() + s.rank));
    };
    try {
      const bool any = s.ws[0] < 0;
      const dt in = s.f32 ? dt::f32 : dt::bf16;
      const dnnl::memory::desc a_md = desc(s.a, s.as, in), c_md = desc(s.c, s.cs, dt::f32),
                               w_md = any ? dnnl::memory::desc({s.w[0], s.w[1]}, in, dnnl::memory::format_tag::any)
                                          : desc(s.w, s.ws, in);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (s.accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_md, c_md), attr, engine_);
      const std::size_t pad = pd.scratchpad_desc().get_size();
      if (pad > scratch_.size()) scratch_.resize(pad);
      cache_.push_back(entry{s, dnnl::matmul(pd), dnnl::memory(a_md, engine_, DNNL_MEMORY_NONE),
                             dnnl::memory(pd.weights_desc(), engine_, DNNL_MEMORY_NONE),
                             dnnl::memory(c_md, engine_, DNNL_MEMORY_NONE),
                             dnnl::memory(pd.scratchpad_desc(), engine_, DNNL_MEMORY_NONE), pd.weights_desc()});
    } catch (const dnnl::error& err) {
      throw state_error(cat(s.f32 ? "float32" : "bf16", " matmul: oneDNN cannot make the product ", describe(s), ": ",
                            err.what()));
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
