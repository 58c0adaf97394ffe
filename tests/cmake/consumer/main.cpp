// A user's program: one include, a prompted ViT, one forward pass.
#include <cmath>
#include <cstdio>

#include <vpdarts/vpdarts.hpp>

namespace vp = vpdarts;

int main() {
  vp::prompted_vit<float> model(vp::vit<float>(vp::vit_config{16, 3, 4, 16, 2, 2, 32, 3}, 0), {.prompts = 2, .seed = 1});
  auto data = vp::data::make_synthetic<float>({.image = 16, .count = 4, .classes = {5, 6, 7}});
  vp::tape<float> t;
  auto loss = vp::cross_entropy(model.logits(t, data.images), data.labels);
  t.backward(loss);
  const bool ok = std::isfinite(loss.item()) && model.alpha().grad().allFinite();
  std::printf("consumer: vpdarts %s, loss %.4f (%s)\n", vp::version_string, static_cast<double>(loss.item()), ok ? "ok" : "NOT FINITE");
  return ok ? 0 : 1;
}
