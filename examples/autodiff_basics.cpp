// The tape in a few lines: a two-layer network fitted to random data by SGD.
#include <cstdio>
#include <random>
#include <vector>

#include <vpdarts/vpdarts.hpp>

namespace vp = vpdarts;

int main() {
  std::mt19937 rng(0);
  std::normal_distribution<float> n(0.f, 1.f);
  auto randn = [&](vp::index r, vp::index c, float s) {
    vp::matrix<float> m(r, c);
    for (vp::index i = 0; i < m.size(); ++i) m.data()[i] = s * n(rng);
    return m;
  };
  // 64 points of 8 features, 3 classes given by a fixed random linear rule
  const vp::matrix<float> x = randn(64, 8, 1.f);
  const vp::matrix<float> rule = randn(3, 8, 1.f);
  std::vector<int> labels(64);
  for (vp::index i = 0; i < 64; ++i) (x.row(i) * rule.transpose()).maxCoeff(&labels[i]);

  vp::parameter<float> w1("fc1.weight", randn(16, 8, 0.3f)), b1("fc1.bias", 1, 16);
  vp::parameter<float> w2("fc2.weight", randn(3, 16, 0.3f)), b2("fc2.bias", 1, 3);
  std::vector<vp::parameter<float>*> params{&w1, &b1, &w2, &b2};

  vp::tape<float> tape;
  for (int step = 0; step <= 200; ++step) {
    tape.reset();  // keeps the memory: no allocation once warm
    auto h = vp::gelu(vp::linear(tape.constant(x), tape.leaf(w1), tape.leaf(b1)));
    auto loss = vp::cross_entropy(vp::linear(h, tape.leaf(w2), tape.leaf(b2)), labels);
    tape.backward(loss);
    for (auto* p : params) {
      p->value() -= 0.5f * p->grad();
      p->zero_grad();
    }
    if (step % 50 == 0) std::printf("step %3d  loss %.4f\n", step, static_cast<double>(loss.item()));
  }
}
