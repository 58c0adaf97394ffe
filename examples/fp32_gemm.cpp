// The frozen backbone's float32 products on Eigen's GEMM and on oneDNN's
// float32 matmul: the same DARTS search under each, the time of each, the
// genotypes, and how far the two supernets' logits end up apart (float32
// rounding in another order, nothing more). Built with oneDNN (vpdarts::bf16),
// where fp32_gemm::automatic picks oneDNN.
//
//   examples/fp32_gemm [--epochs 3]
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
  const vp::fp32_gemm_choice automatic = vp::fp32_gemm_automatic();
  std::printf("auto picks %s: %s\n", vp::to_string(automatic.gemm), automatic.reason.c_str());
  try {
    // a frozen backbone of D 192 at 32 px, the synthetic task
    const vp::vit_config c{32, 3, 4, 192, 4, 3, 768, 4};
    const auto data = vp::data::make_synthetic<float>({.image = 32, .count = 192, .seed = 3, .classes = {5, 6, 7, 8}});
    vp::search_options o;
    o.epochs = epochs;
    o.warmup_epochs = 1;
    o.batch = 32;
    o.progress = false;
    vp::matrix<float> logits[2];
    for (vp::fp32_gemm g : {vp::fp32_gemm::eigen, vp::fp32_gemm::onednn}) {
      o.bilevel.execution.fp32_products = g;  // the frozen float32 products of this search run on g
      vp::prompted_vit<float> model(vp::vit<float>(c, 1), {.prompts = 4, .classes = 4, .seed = 1});
      const auto start = std::chrono::steady_clock::now();
      const vp::search_result r = vp::search(model, data, o);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("%s: %.2f s, final search-train loss %.4f, genotype %s\n", vp::to_string(g), seconds,
                  r.train_loss.back(), r.found.str().c_str());
      vp::tape<float> t({.fp32_products = vp::fp32_gemm::eigen});  // both supernets read on Eigen: only the search differs
      vp::no_grad<float> guard(t);
      logits[g == vp::fp32_gemm::onednn] =
          model.logits(t, data.images.select(std::vector<vp::index>{0, 1, 2, 3, 4, 5, 6, 7})).value();
    }
    std::printf("supernet logits after the search, oneDNN vs Eigen: relative difference %.2e\n",
                (logits[1] - logits[0]).norm() / logits[0].norm());
  } catch (const vp::error& e) {
    std::fprintf(stderr, "fp32_gemm: %s\n", e.what());
    return 1;
  }
  return 0;
}
