// Pretrains a small ViT from scratch on the built-in synthetic task (classes
// 0-4: solid shapes) and saves it as a timm-named safetensors checkpoint.
//
//   pretrain_toy [--out backbone.safetensors] [--epochs 6] [--train 2000] [--test 500]
//                [--image 32] [--patch 4] [--dim 192] [--depth 6] [--heads 3] [--mlp 768] [--seed 0]
//                [--lr 1e-3] [--batch 16] [--init xavier|timm]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <vpdarts/vpdarts.hpp>

namespace vp = vpdarts;

int main(int argc, char** argv) {
  std::string out = "backbone.safetensors";
  vp::vit_config cfg = vp::vit_config::toy();
  cfg.classes = 5;
  vp::pretrain_options opt{.epochs = 6, .batch = 16};
  long n_train = 2000, n_test = 500;
  std::uint64_t seed = 0;
  vp::vit_init scheme = vp::vit_init::xavier;
  for (int i = 1; i < argc; ++i) {
    auto is = [&](const char* flag) { return std::strcmp(argv[i], flag) == 0 && i + 1 < argc; };
    if (is("--out")) out = argv[++i];
    else if (is("--epochs")) opt.epochs = std::atol(argv[++i]);
    else if (is("--train")) n_train = std::atol(argv[++i]);
    else if (is("--test")) n_test = std::atol(argv[++i]);
    else if (is("--image")) cfg.image = std::atol(argv[++i]);
    else if (is("--patch")) cfg.patch = std::atol(argv[++i]);
    else if (is("--dim")) cfg.dim = std::atol(argv[++i]);
    else if (is("--depth")) cfg.depth = std::atol(argv[++i]);
    else if (is("--heads")) cfg.heads = std::atol(argv[++i]);
    else if (is("--mlp")) cfg.mlp = std::atol(argv[++i]);
    else if (is("--lr")) opt.lr = std::atof(argv[++i]);
    else if (is("--batch")) opt.batch = std::atol(argv[++i]);
    else if (is("--init")) scheme = std::strcmp(argv[++i], "timm") == 0 ? vp::vit_init::timm : vp::vit_init::xavier;
    else if (is("--seed")) seed = std::strtoull(argv[++i], nullptr, 10);
    else {
      std::fprintf(stderr, "pretrain_toy: unknown argument '%s' (see the comment at the top of pretrain_toy.cpp)\n", argv[i]);
      return 2;
    }
  }
  try {
    vp::vit<float> model(cfg, seed, scheme);
    std::printf("ViT: %s, %ld backbone parameters\n", cfg.describe().c_str(), static_cast<long>(model.backbone_size()));
    const std::vector<int> classes{0, 1, 2, 3, 4};
    auto train = vp::data::make_synthetic<float>({.image = cfg.image, .channels = cfg.channels, .count = n_train,
                                                  .seed = seed, .classes = classes});
    auto test = vp::data::make_synthetic<float>({.image = cfg.image, .channels = cfg.channels, .count = n_test,
                                                 .seed = seed + 1000, .classes = classes});
    auto r = vp::pretrain(model, train, test, opt);
    vp::save_vit(out, model);
    std::printf("train accuracy %.3f, test accuracy %.3f, %.1f s; saved %s\n", r.train_accuracy, r.test_accuracy,
                r.seconds, out.c_str());
  } catch (const vp::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
