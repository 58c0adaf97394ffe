// Optimisers and schedules against hand-computed (and PyTorch's) values.
#include "pch.hpp"

namespace vp = vpdarts;

TEST_CASE("SGD with momentum and weight decay", "[optim][sgd]") {
  vp::parameter<double> p("p", vp::matrix<double>{{1.0}});
  vp::parameter<double> b("b", vp::matrix<double>{{1.0}});
  vp::optim::sgd<double> opt({{{&p}, 1.0, true, "w"}, {{&b}, 2.0, false, "bias"}}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
  p.grad()(0, 0) = 0.5;
  b.grad()(0, 0) = 0.5;
  opt.step();
  // buf = g + wd p = 0.51; p = 1 - 0.1 * 0.51
  CHECK(p.value()(0, 0) == Approx(0.949).epsilon(1e-14));
  CHECK(b.value()(0, 0) == Approx(1 - 0.2 * 0.5).epsilon(1e-14));  // lr x 2, no decay
  opt.step();
  // buf = 0.9 * 0.51 + 0.5 + 0.01 * 0.949 = 0.96849
  CHECK(p.value()(0, 0) == Approx(0.949 - 0.096849).epsilon(1e-14));
  CHECK(b.value()(0, 0) == Approx(0.9 - 0.2 * (0.9 * 0.5 + 0.5)).epsilon(1e-14));
  opt.zero_grad();
  CHECK(p.grad()(0, 0) == 0);
}

TEST_CASE("Adam and AdamW match PyTorch", "[optim][adam]") {
  // torch.optim.AdamW([w], lr=0.1, weight_decay=0.05) with gradients (0.1 (i+1), -0.3)
  vp::parameter<double> w("w", vp::matrix<double>{{1.0, 2.0}});
  vp::optim::adam<double> opt({&w}, {.lr = 0.1, .weight_decay = 0.05, .decoupled = true});
  const double expect[3][2] = {{0.89500001, 2.09}, {0.79400681, 2.17954999}, {0.69423666, 2.26865224}};
  for (int i = 0; i < 3; ++i) {
    w.grad() << 0.1 * (i + 1), -0.3;
    opt.step();
    CHECK(w.value()(0, 0) == Approx(expect[i][0]).epsilon(1e-7));
    CHECK(w.value()(0, 1) == Approx(expect[i][1]).epsilon(1e-7));
  }
  // L2 (torch.optim.Adam): the decay enters the moments. One step moves by lr * sign(g + wd p).
  vp::parameter<double> a("a", vp::matrix<double>{{1.0}});
  vp::optim::adam<double> l2({&a}, {.lr = 0.01, .beta1 = 0.5, .weight_decay = 1.0});
  a.grad()(0, 0) = -0.5;  // g + wd p = 0.5 > 0
  l2.step();
  CHECK(a.value()(0, 0) == Approx(1.0 - 0.01).epsilon(1e-6));
}

TEST_CASE("gradient-norm clipping", "[optim][clip]") {
  vp::parameter<double> a("a", vp::matrix<double>{{3.0}}), b("b", vp::matrix<double>{{4.0}});
  a.grad()(0, 0) = 3;
  b.grad()(0, 0) = 4;
  std::vector<vp::parameter<double>*> ps{&a, &b};
  CHECK(vp::optim::clip_grad_norm<double>(ps, 1.0) == Approx(5.0));
  CHECK(a.grad()(0, 0) == Approx(0.6).epsilon(1e-6));
  CHECK(b.grad()(0, 0) == Approx(0.8).epsilon(1e-6));
  CHECK(vp::optim::clip_grad_norm<double>(ps, 10.0) == Approx(1.0).epsilon(1e-6));
  CHECK(a.grad()(0, 0) == Approx(0.6).epsilon(1e-6));
  a.grad()(0, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(vp::optim::clip_grad_norm<double>(ps, 1.0), vp::value_error);
}

TEST_CASE("linear warm-up then cosine", "[optim][schedule]") {
  vp::optim::warmup_cosine s{.base = 1.0, .warmup = 4, .total = 14};
  CHECK(s(0) == Approx(0.25));
  CHECK(s(3) == Approx(1.0));
  CHECK(s(4) == Approx(1.0));
  CHECK(s(9) == Approx(0.5));
  CHECK(s(14) == Approx(0.0).margin(1e-12));
  CHECK(s(20) == Approx(0.0).margin(1e-12));
}
