#pragma once
/// @file onednn_matmul.hpp
/// oneDNN's matmul as vpdarts runs it: a per-thread cache of primitives (`matmuls`) for the 2-d
/// weight products (bf16 x bf16 or float32 x float32 -> float32, or bf16 x bf16 -> bf16 times an
/// elementwise factor, with the product's epilogue in the kernel where oneDNN can) and the 4-d batched
/// products of attention, plus what this program and CPU
/// offer (`built`, `bf16_kernel`, `cpu_isa`). With onednn.hpp, the kernels built on it, the only
/// files of vpdarts that know oneDNN exists; compiled in only with VPDARTS_WITH_DNNL (the CMake
/// target vpdarts::bf16), without which `built` is false.
///
/// A primitive is made once per shape and kept (per thread, with its memory objects), the
/// scratchpad is ours and grows only, and execution goes through oneDNN's C call with the arguments
/// on the stack: a warm step makes no primitive and no memory object.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../fwd.hpp"
#include "../detail/format.hpp"
#include "../detail/profile.hpp"
#include "operand.hpp"

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

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
}  // namespace vpdarts::detail

namespace vpdarts::kernels::onednn {

#if defined(VPDARTS_WITH_DNNL) && VPDARTS_WITH_DNNL
/// True in a build with oneDNN.
inline constexpr bool built = true;

namespace impl {
inline bool has_isa(dnnl_cpu_isa_t want) {
  const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());  // bit masks, each containing those it extends
  return (isa & static_cast<unsigned>(want)) == static_cast<unsigned>(want);
}
}  // namespace impl

/// The instructions oneDNN's bf16 products use on this CPU: "AMX", "AVX512-BF16", or empty (none).
inline std::string bf16_kernel() {
  if (impl::has_isa(dnnl_cpu_isa_avx512_core_amx)) return "AMX";
  if (impl::has_isa(dnnl_cpu_isa_avx512_core_bf16)) return "AVX512-BF16";
  return {};
}

/// The widest vector instructions of oneDNN's kernels here: "AVX-512", "AVX2", "SSE4.1".
inline std::string cpu_isa() {
  if (impl::has_isa(dnnl_cpu_isa_avx512_core)) return "AVX-512";
  if (impl::has_isa(dnnl_cpu_isa_avx2)) return "AVX2";
  return "SSE4.1";
}

/// The products of one thread: c (m x n, float32, row-major) = a (m x k, bf16,
/// row-major) * op(w), where w is bf16 and either n x k row-major (`w_nk`:
/// the product is a * w^T, a linear layer's forward) or k x n row-major (a * w,
/// its input gradient); with `accumulate` c += instead of c =. run_f32 is the
/// same product with a and w in float32.
class matmuls {
 public:
  /// The calling thread's instance.
  static matmuls& here() {
    thread_local matmuls m;
    return m;
  }

  /// Runs the product (see the class) in float32: a and w are float32, read where they are. Without
  /// `accumulate`, the epilogue e (bias, LayerScale, residual) is applied by the product's kernel where
  /// oneDNN can (returns true), else not at all (false: the caller applies it).
  /// @throws state_error when oneDNN refuses it.
  bool run_f32(index m, index n, index k, const float* a, const float* w, bool w_nk, float* c, bool accumulate,
               const epilogue<float>& e = {}) {
    detail::profile_scope profiled(detail::profile_kind::weight_product);
    shape s = plain(m, n, k, w_nk, accumulate);
    s.f32 = true;
    if (!accumulate) s.post = post_of(e);
    ++detail::onednn_f32_products();
    entry& en = find(s);
    execute(en, a, w, c, en.fused ? &e : nullptr);
    return en.fused;
  }

  /// c (m x n) (+)= a (m x k) * w (k x n), all float32 and dense row-major, on oneDNN's own GEMM
  /// (dnnl_sgemm, its JIT GEMM) rather than its matmul primitive: see onednn::gemm_weight_values.
  /// @throws state_error when oneDNN fails.
  void run_f32_gemm(index m, index n, index k, const float* a, const float* w, float* c, bool accumulate) {
    detail::profile_scope profiled(detail::profile_kind::weight_product);
    ++detail::onednn_f32_products();
    const dnnl_status_t st = dnnl_sgemm('N', 'N', m, n, k, 1.0f, a, k, w, n, accumulate ? 1.0f : 0.0f, c, n);
    if (st != dnnl_success)
      throw state_error(detail::cat("float32 GEMM: oneDNN failed (status ", static_cast<int>(st), ") on ", m, "x", k,
                                    " by ", k, "x", n));
  }

  /// Runs the product (see the class). Without `accumulate`, the epilogue e goes as for run_f32 (the
  /// return value says whether it was applied). @throws state_error when oneDNN refuses it.
  bool run(index m, index n, index k, const std::uint16_t* a, const std::uint16_t* w, bool w_nk, float* c,
           bool accumulate, const epilogue<float>& e = {}) {
    detail::profile_scope profiled(detail::profile_kind::weight_product);
    shape s = plain(m, n, k, w_nk, accumulate);
    if (!accumulate) s.post = post_of(e);
    ++detail::bf16_products();
    entry& en = find(s);
    execute(en, a, w, c, en.fused ? &e : nullptr);
    return en.fused;
  }

  /// c (m x n, bf16) = (a (m x k, bf16) * w (k x n, bf16, row-major)) * factor (m x n, bf16) elementwise,
  /// rounded once, the multiplication in the kernel's epilogue. False, with nothing computed, where
  /// oneDNN has no kernel with that epilogue here. @throws state_error when oneDNN refuses the product.
  bool run_times(index m, index n, index k, const std::uint16_t* a, const std::uint16_t* w,
                 const std::uint16_t* factor, std::uint16_t* c) {
    detail::profile_scope profiled(detail::profile_kind::weight_product);
    shape s = plain(m, n, k, false, false);
    s.c16 = true;
    epilogue<float> ep;
    ep.factor = factor;
    s.post = post_of(ep);
    entry& e = find(s);
    if (!e.fused) return false;
    ++detail::bf16_products();
    execute(e, a, w, c, &ep);
    return true;
  }

  /// c (m x n) = a (m x k, bf16) * W^T for a weight W (n x k) that oneDNN reads in the layout
  /// it prefers for its matrix unit (packed for the kernel, so that no call repacks it):
  /// `weights(desc)` returns W laid out as `desc`, made once by the caller with pack().
  /// The epilogue e goes as for run_f32 (the return value says whether it was applied).
  template <class Weights>
  bool run_laid_out(index m, index n, index k, const std::uint16_t* a, Weights&& weights, float* c,
                    const epilogue<float>& ep = {}) {
    detail::profile_scope profiled(detail::profile_kind::weight_product);
    shape s = plain(m, n, k, true, false);
    s.ws = {-1, -1, 0, 0};  // any: oneDNN's choice
    s.post = post_of(ep);
    entry& e = find(s);
    const std::byte* w = weights(e.weights);
    ++detail::bf16_products();
    execute(e, a, w, c, e.fused ? &ep : nullptr);
    return e.fused;
  }

  /// Writes the float32 weight w (n x k, row-major) into dst, laid out as `target` in bf16.
  void pack(const float* w, index n, index k, const dnnl::memory::desc& target, std::byte* dst) {
    try {
      const dnnl::memory::desc plain({k, n}, dnnl::memory::data_type::f32, dnnl::memory::dims{1, k});
      dnnl::memory from(plain, engine_, const_cast<float*>(w)), to(target, engine_, dst);
      dnnl::reorder(from, to).execute(stream_, from, to);
      stream_.wait();
    } catch (const dnnl::error& err) {
      throw state_error(detail::cat("bf16 matmul: oneDNN cannot lay out a weight of ", detail::shape_str(n, k), ": ", err.what()));
    }
  }

  /// Dimensions or strides of a 4-d operand (the first `rank` used).
  using dims4 = std::array<dnnl::memory::dim, 4>;

  /// A batched product over two leading dimensions: c[i, j] (+)= a[i, j] * w[i, j] for the
  /// (i, j) of a's first two dimensions, each operand given by its dims and strides (in
  /// elements), so strided views (the heads of a qkv matrix, a transposed probability
  /// matrix) are read in place. a and w are bf16, c float32 or (c_bf16, not accumulating) bf16,
  /// rounded to nearest even from the float32 sums.
  void run_batched(const dims4& a_dims, const dims4& a_strides, const dims4& w_dims, const dims4& w_strides,
                   const dims4& c_dims, const dims4& c_strides, const std::uint16_t* a, const std::uint16_t* w,
                   void* c, bool accumulate, bool c_bf16 = false) {
    detail::profile_scope profiled(detail::profile_kind::attention_product);
    shape s{4, a_dims, a_strides, w_dims, w_strides, c_dims, c_strides, accumulate};
    s.c16 = c_bf16;
    ++detail::bf16_products();
    ++detail::bf16_batched_products();
    execute(find(s), a, w, c);
  }

 private:
  struct shape {
    int rank = 2;
    dims4 a{}, as{}, w{}, ws{}, c{}, cs{};
    bool accumulate = false;
    bool f32 = false;  ///< a and w in float32 (else bf16)
    bool c16 = false;  ///< c in bf16 (else float32)
    std::uint8_t post = 0;  ///< the epilogue's parts: 1 bias, 2 LayerScale, 4 residual, 8 factor
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
  static std::uint8_t post_of(const epilogue<float>& e) {
    return static_cast<std::uint8_t>((e.bias ? 1 : 0) | (e.scale ? 2 : 0) | (e.residual ? 4 : 0) | (e.factor ? 8 : 0));
  }

  struct entry {
    shape key;
    dnnl::matmul prim;
    dnnl::memory src, wei, dst, pad;
    dnnl::memory::desc weights;  ///< the weights' layout (oneDNN's choice for an `any` shape)
    bool fused = false;          ///< the epilogue (key.post) is part of the primitive
    dnnl::memory bias, scale, residual, factor;  ///< its operands, where fused
  };

  void execute(entry& e, const void* a, const void* w, void* c, const epilogue<float>* ep = nullptr) {
    e.src.set_data_handle(const_cast<void*>(a));
    e.wei.set_data_handle(const_cast<void*>(w));
    e.dst.set_data_handle(c);
    e.pad.set_data_handle(scratch_.data());
    dnnl_exec_arg_t args[7] = {{DNNL_ARG_SRC, e.src.get()},
                               {DNNL_ARG_WEIGHTS, e.wei.get()},
                               {DNNL_ARG_DST, e.dst.get()},
                               {DNNL_ARG_SCRATCHPAD, e.pad.get()}};
    int count = 4, post = 0;
    if (ep != nullptr) {  // the operands of the fused epilogue: the bias, then the post-ops in order
      const auto arg = [&](int kind, dnnl::memory& m, const void* p) {
        m.set_data_handle(const_cast<void*>(p));
        args[count++] = {kind, m.get()};
      };
      if (ep->bias) arg(DNNL_ARG_BIAS, e.bias, ep->bias);
      if (ep->scale) arg(DNNL_ARG_ATTR_MULTIPLE_POST_OP(post++) | DNNL_ARG_SRC_1, e.scale, ep->scale);
      if (ep->residual) arg(DNNL_ARG_ATTR_MULTIPLE_POST_OP(post++) | DNNL_ARG_SRC_1, e.residual, ep->residual);
      if (ep->factor) arg(DNNL_ARG_ATTR_MULTIPLE_POST_OP(post++) | DNNL_ARG_SRC_1, e.factor, ep->factor);
    }
    dnnl_status_t st = dnnl_primitive_execute(e.prim.get(), stream_.get(), count, args);
    if (st == dnnl_success) st = dnnl_stream_wait(stream_.get());
    if (st != dnnl_success)
      throw state_error(detail::cat(e.key.f32 ? "float32" : "bf16", " matmul: oneDNN failed (status ", static_cast<int>(st),
                            ") on ", describe(e.key)));
  }

  static std::string describe(const shape& s) {
    std::string out;
    for (int i = 0; i < s.rank; ++i) out += detail::cat(i ? "x" : "", s.a[static_cast<std::size_t>(i)]);
    out += " by ";
    for (int i = 0; i < s.rank; ++i) out += detail::cat(i ? "x" : "", s.w[static_cast<std::size_t>(i)]);
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
      const dnnl::memory::desc a_md = desc(s.a, s.as, in), c_md = desc(s.c, s.cs, s.c16 ? dt::bf16 : dt::f32),
                               w_md = any ? dnnl::memory::desc({s.w[0], s.w[1]}, in, dnnl::memory::format_tag::any)
                                          : desc(s.w, s.ws, in);
      // the epilogue as oneDNN's bias and post-ops: (a w + bias) * scale + residual, in float32
      const index m = s.c[0], n = s.c[1];
      const dnnl::memory::desc row_md({1, n}, dt::f32, dnnl::memory::dims{n, 1}),
          full_md({m, n}, dt::f32, dnnl::memory::dims{n, 1}), factor_md({m, n}, dt::bf16, dnnl::memory::dims{n, 1});
      const auto make = [&](bool fused) {
        dnnl::primitive_attr attr;
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        dnnl::post_ops ops;
        if (s.accumulate) ops.append_sum(1.0f);
        if (fused && (s.post & 2)) ops.append_binary(dnnl::algorithm::binary_mul, row_md);
        if (fused && (s.post & 4)) ops.append_binary(dnnl::algorithm::binary_add, full_md);
        if (fused && (s.post & 8)) ops.append_binary(dnnl::algorithm::binary_mul, factor_md);
        attr.set_post_ops(ops);
        const dnnl::matmul::desc md = fused && (s.post & 1) ? dnnl::matmul::desc(a_md, w_md, row_md, c_md)
                                                             : dnnl::matmul::desc(a_md, w_md, c_md);
        return dnnl::matmul::primitive_desc(md, attr, engine_);
      };
      bool fused = s.post != 0;
      dnnl::matmul::primitive_desc pd;
      try {
        pd = make(fused);
      } catch (const dnnl::error&) {
        if (!fused) throw;
        fused = false;  // oneDNN has no kernel with this epilogue here: the caller applies it
        pd = make(false);
      }
      const std::size_t pad = pd.scratchpad_desc().get_size();
      if (pad > scratch_.size()) scratch_.resize(pad);
      const auto none = [&](const dnnl::memory::desc& d) { return dnnl::memory(d, engine_, DNNL_MEMORY_NONE); };
      cache_.push_back(entry{s, dnnl::matmul(pd), none(a_md), none(pd.weights_desc()), none(c_md),
                             none(pd.scratchpad_desc()), pd.weights_desc(), fused && s.post != 0, none(row_md),
                             none(row_md), none(full_md), none(factor_md)});
    } catch (const dnnl::error& err) {
      throw state_error(detail::cat(s.f32 ? "float32" : "bf16", " matmul: oneDNN cannot make the product ", describe(s), ": ",
                            err.what()));
    }
    return cache_.back();
  }

  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  std::vector<entry> cache_;
  std::vector<std::byte> scratch_ = std::vector<std::byte>(64);
};

#else
/// False: this build has no oneDNN.
inline constexpr bool built = false;
/// Empty: no bf16 products without oneDNN.
inline std::string bf16_kernel() { return {}; }
/// Empty: no oneDNN kernels.
inline std::string cpu_isa() { return {}; }
#endif

}  // namespace vpdarts::kernels::onednn
