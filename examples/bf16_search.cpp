// A DARTS search with the frozen backbone's products in bf16 (oneDNN on the
// CPU's AVX512-BF16 or AMX units), next to the same search in float32: the
// time of each, the genotypes, and how far the bf16 logits are from float32.
// Exits 2, saying why, where bf16 is not available (no oneDNN in the build, or
// a CPU without bf16 instructions): bf16 never falls back silently.
//
//   examples/bf16_search [--epochs 3]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <vpdarts/vpdarts.hpp>

namespace vp = vpdarts;

int main(int argc, char** argv) {
  long epochs = 3;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--epochs") == 0) epochs = std::atol(argv[i + 1]);
  const vp::bf16_support s = vp::bf16_supported();
  if (!s.available) {
    std::fprintf(stderr, "bf16_search: bf16 is not available: %s\n", s.reason.c_str());
    return 2;
  }
  std::printf("bf16 kernels: %s\n", s.kernel.c_str());
  try {
    // a frozen backbone of D 192 (the products are what bf16 speeds up), the synthetic task
    const vp::vit_config c{32, 3, 4, 192, 4, 3, 768, 4};
    const auto data = vp::data::make_synthetic<float>({.image = 32, .count = 192, .seed = 3, .classes = {5, 6, 7, 8}});
    vp::search_options o;
    o.epochs = epochs;
    o.warmup_epochs = 1;
    o.batch = 32;
    o.progress = false;
    vp::matrix<float> logits[2];
    for (vp::precision p : {vp::precision::fp32, vp::precision::bf16}) {
      o.bilevel.execution.products = p;  // the products of this search run in p
      vp::prompted_vit<float> model(vp::vit<float>(c, 1), {.prompts = 4, .classes = 4, .seed = 1});
      const auto start = std::chrono::steady_clock::now();
      const vp::search_result r = vp::search(model, data, o);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("%s: %.2f s, final search-train loss %.4f, genotype %s\n", vp::to_string(p), seconds,
                  r.train_loss.back(), r.found.str().c_str());
      // the same images through the searched supernet, for the comparison below
      vp::tape<float> t;  // float32 (the default configuration): both models read alike, only the search differs
      vp::no_grad<float> guard(t);
      logits[p == vp::precision::bf16] = model.logits(t, data.images.select(std::vector<vp::index>{0, 1, 2, 3, 4, 5, 6, 7})).value();
    }
    std::printf("supernet logits after the search, bf16 vs fp32: relative difference %.2e\n",
                (logits[1] - logits[0]).norm() / logits[0].norm());
  } catch (const vp::error& e) {
    std::fprintf(stderr, "bf16_search: %s\n", e.what());
    return 1;
  }
  return 0;
}
