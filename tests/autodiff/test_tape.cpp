// The tape, its arena, parameters, no_grad and the misuse errors.
#include "pch.hpp"

namespace vp = vpdarts;
using vpdarts_test::random_parameter;

TEST_CASE("arena reuses its memory after reset", "[autodiff][arena]") {
  vp::arena a(256);
  float* p = a.allocate<float>(10);
  REQUIRE(reinterpret_cast<std::uintptr_t>(p) % vp::arena::alignment == 0);
  a.allocate<float>(1000);  // forces a second chunk
  a.allocate<double>(3000);
  REQUIRE(a.chunk_count() >= 2);
  const std::size_t used = a.bytes_in_use();
  a.reset();
  CHECK(a.chunk_count() == 1);
  CHECK(a.capacity_bytes() == used);  // the chunks' spare tails are not kept
  CHECK(a.bytes_in_use() == 0);
  const std::size_t cap = a.capacity_bytes();
  a.allocate<float>(10);
  a.allocate<float>(1000);
  a.allocate<double>(3000);
  CHECK(a.chunk_count() == 1);
  CHECK(a.capacity_bytes() == cap);
}

TEST_CASE("parameters: frozen ones hold no gradient", "[autodiff][parameter]") {
  vp::parameter<double> p("w", 2, 3);
  CHECK(p.requires_grad());
  CHECK_FALSE(p.has_grad_storage());  // made at the first use: a model built trainable, then frozen, never holds it
  p.zero_grad();
  CHECK_FALSE(p.has_grad_storage());
  CHECK(p.grad().rows() == 2);
  CHECK(p.has_grad_storage());
  p.grad()(1, 2) = 5;
  p.unfreeze();  // already trainable: the gradient stays
  CHECK(p.grad()(1, 2) == 5);
  p.freeze();
  CHECK_FALSE(p.requires_grad());
  CHECK_THROWS_AS(p.grad(), vp::state_error);
  CHECK_THROWS_WITH(p.grad(), Catch::Contains("'w'") && Catch::Contains("2x3") && Catch::Contains("frozen"));
  CHECK_FALSE(p.has_grad_storage());
  p.unfreeze();
  CHECK(p.grad().isZero());
  p.value().resize(3, 3);  // resized after the gradient was made
  CHECK_THROWS_WITH(p.grad(), Catch::Contains("'w'") && Catch::Contains("resized to 3x3"));
  p.unfreeze();
  CHECK(p.grad().rows() == 3);
  CHECK_THROWS_AS(vp::parameter<float>("bad", -1, 2), vp::shape_error);
  // a ViT built trainable and then frozen never held a gradient for its weights
  vp::vit<float> model(vp::vit_config::toy(), 0);
  for (auto* q : model.parameters()) CHECK_FALSE(q->has_grad_storage());
}

TEST_CASE("backward accumulates into trainable parameters only", "[autodiff][tape]") {
  auto w = random_parameter<double>("w", 3, 2, 1);
  auto x = random_parameter<double>("x", 4, 3, 2);
  x.freeze();
  vp::tape<double> t;
  auto vx = t.leaf(x);
  auto vw = t.leaf(w);
  CHECK_FALSE(vx.requires_grad());
  CHECK(vw.requires_grad());
  auto y = vp::matmul(vx, vw);
  auto frozen_only = vp::exp(vx);  // reached by no trainable input
  CHECK_FALSE(frozen_only.requires_grad());
  auto loss = vp::sum(y);
  t.backward(loss);
  // d sum(X W) / d W = X^T 1
  vp::matrix<double> expect = x.value().transpose() * vp::matrix<double>::Ones(4, 2);
  CHECK((w.grad() - expect).norm() < 1e-12);
  CHECK_THROWS_AS(frozen_only.adjoint(), vp::state_error);
  CHECK(vw.adjoint().data() == w.grad().data());  // a parameter's adjoint is its gradient
  // intermediate adjoints are released as the sweep passes them...
  CHECK_THROWS_WITH(y.adjoint(), Catch::Contains("retain_adjoints"));
  CHECK(t.adjoint_memory().bytes_in_use() == 0);
  CHECK(t.adjoint_memory().peak_bytes() > 0);
  // ...unless the tape retains them
  t.reset();
  t.retain_adjoints(true);
  auto y2 = vp::matmul(t.leaf(x), t.leaf(w));
  t.backward(vp::sum(y2));
  CHECK(y2.adjoint().isOnes());
  t.retain_adjoints(false);
  w.zero_grad();
  t.reset();
  t.backward(vp::sum(vp::matmul(t.leaf(x), t.leaf(w))));
  CHECK((w.grad() - expect).norm() < 1e-12);
  // gradients accumulate across steps until zero_grad
  t.reset();
  t.backward(vp::sum(vp::matmul(t.leaf(x), t.leaf(w))));
  CHECK((w.grad() - 2 * expect).norm() < 1e-12);
  w.zero_grad();
  CHECK(w.grad().isZero());
}

TEST_CASE("a parameter is read in place, not copied", "[autodiff][tape]") {
  auto w = random_parameter<float>("w", 2, 2, 3);
  vp::tape<float> t;
  auto v = t.leaf(w);
  CHECK(v.value().data() == w.value().data());
}

TEST_CASE("no_grad records nothing", "[autodiff][tape]") {
  auto w = random_parameter<double>("w", 2, 2, 4);
  vp::tape<double> t;
  {
    vp::no_grad<double> guard(t);
    CHECK_FALSE(t.grad_enabled());
    auto y = vp::sum(vp::tanh(t.leaf(w)));
    CHECK_FALSE(y.requires_grad());
    CHECK(std::abs(y.item() - w.value().array().tanh().sum()) < 1e-12);
    CHECK_THROWS_AS(t.backward(y), vp::state_error);
  }
  CHECK(t.grad_enabled());
  CHECK(vp::sum(t.leaf(w)).requires_grad());
}

TEST_CASE("tape misuse throws state errors", "[autodiff][tape][errors]") {
  auto w = random_parameter<double>("w", 2, 2, 5);
  vp::tape<double> t;
  auto loss = vp::sum(t.leaf(w));
  t.backward(loss);
  CHECK_THROWS_WITH(t.backward(loss), Catch::Contains("already called"));
  t.reset();
  CHECK_THROWS_WITH(t.backward(loss), Catch::Contains("before the tape's last reset"));
  CHECK_THROWS_AS(loss.value(), vp::state_error);
  CHECK_THROWS_AS(vp::exp(loss), vp::state_error);
  auto m = t.leaf(w);
  CHECK_THROWS_WITH(t.backward(m), Catch::Contains("2x2") && Catch::Contains("1x1"));
  vp::tape<double> other;
  auto o = other.leaf(w);
  CHECK_THROWS_WITH(vp::add(m, o), Catch::Contains("add") && Catch::Contains("another tape"));
  CHECK_THROWS_AS(vp::exp(vp::var<double>()), vp::state_error);
  CHECK_THROWS_AS(t.constant(vp::matrix<double>()), vp::shape_error);
  CHECK_THROWS_AS(t.make(0, 3, false), vp::shape_error);
  CHECK_THROWS_AS(m.item(), vp::shape_error);
}

TEST_CASE("memory beyond what the process may use is refused by name, not by std::bad_alloc", "[autodiff][tape][errors]") {
  const double have = vp::detail::usable_memory_bytes();
  const auto too_many = static_cast<std::size_t>(have / sizeof(float) * 2);
  vp::arena a(256);
  CHECK_THROWS_WITH(a.allocate<float>(too_many), Catch::Contains("the tape") && Catch::Contains("GiB of "));
  CHECK_NOTHROW(a.allocate<float>(100));  // still usable
  vp::block_pool<float> p;
  CHECK_THROWS_AS(p.acquire(too_many), vp::config_error);
  CHECK(p.capacity_bytes() == 0);
  // attention over a sequence whose T x T buffers do not fit: qkv itself is small (T x 3)
  const auto seq = static_cast<vp::index>(std::sqrt(have / sizeof(float)) + 16);
  vp::tape<float> t;
  const vp::var<float> qkv = t.constant(vp::matrix<float>::Zero(seq, 3));
  CHECK_THROWS_WITH(vp::attention(qkv, 1, 1), Catch::Contains("attention over ") && Catch::Contains(std::to_string(seq)) &&
                                                  Catch::Contains("more than the "));
}

TEST_CASE("the block pool serves nearly equal sizes from one block, and a repeated step from its own", "[autodiff][tape][alloc]") {
  using pool = vp::block_pool<float>;
  // size classes: at most 25 % above the request, four per power of two, never below it
  for (std::size_t n : {1, 7, 8, 9, 100, 1000, 4097, 123457, 2336 * 192})
    CHECK((pool::size_class(n) >= n && pool::size_class(n) * 4 <= n * 5 + 4 * 8));
  CHECK(pool::size_class(2112 * 192) == pool::size_class(2336 * 192));  // unprompted and prompted rows share
  CHECK(pool::size_class(1000) != pool::size_class(2000));
  pool p;
  float* a = p.acquire(2336 * 192);
  p.release(a, 2336 * 192);
  CHECK(p.acquire(2112 * 192) == a);  // the same class: the block is reused
  const std::size_t held = p.capacity_bytes();
  float* b = p.acquire(100);
  p.release(b, 100);
  p.release(a, 2112 * 192);
  CHECK(p.capacity_bytes() > held);
  // the same requests again allocate nothing
  const std::size_t before = p.capacity_bytes();
  for (int step = 0; step < 3; ++step) {
    float* x = p.acquire(2336 * 192);
    float* y = p.acquire(100);
    p.release(y, 100);
    p.release(x, 2336 * 192);
  }
  CHECK(p.capacity_bytes() == before);
  CHECK(p.bytes_in_use() == 0);
}

TEST_CASE("a warm training step allocates nothing", "[autodiff][tape][alloc]") {
  if (!vpdarts_test::counting_allocations()) {
    WARN("allocation counting is off in sanitizer builds");
    return;
  }
  // A miniature transformer step: layer norm, qkv, attention, projection, GELU MLP, cross-entropy.
  const vp::index batch = 4, seq = 5, dim = 8, heads = 2;
  auto g = random_parameter<float>("g", 1, dim, 1, 0.1, 1.0);
  auto b = random_parameter<float>("b", 1, dim, 2, 0.1);
  auto wqkv = random_parameter<float>("qkv", 3 * dim, dim, 3, 0.3);
  auto wp = random_parameter<float>("proj", dim, dim, 4, 0.3);
  auto head = random_parameter<float>("head", 3, dim, 5, 0.3);
  wqkv.freeze();
  const vp::matrix<float> images = vpdarts_test::random_matrix<float>(batch * seq, dim, 6);
  const std::vector<int> labels{0, 1, 2, 1};
  std::vector<vp::index> cls_rows{0, 5, 10, 15};
  vp::tape<float> t;
  auto step = [&] {
    t.reset();
    auto x = t.constant(images);
    auto h = vp::layer_norm(x, t.leaf(g), t.leaf(b));
    auto a = vp::attention(vp::linear(h, t.leaf(wqkv)), batch, heads);
    auto y = vp::add(x, vp::gelu(vp::linear(a, t.leaf(wp))));
    auto cls = vp::gather_rows(y, std::span<const vp::index>(cls_rows));
    auto loss = vp::cross_entropy(vp::linear(cls, t.leaf(head)), labels);
    t.backward(loss);
  };
  step();
  step();
  const std::size_t before = vpdarts_test::allocations();
  for (int i = 0; i < 5; ++i) step();
  const std::size_t after = vpdarts_test::allocations();
  CHECK(after - before == 0);
  CHECK(t.memory().chunk_count() == 1);
}
