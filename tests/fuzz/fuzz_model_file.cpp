// The ViT, model-file and search-checkpoint loaders, metadata included: a safetensors file from the
// input is loaded as a backbone, as a model file, and as the checkpoint of a tiny search.
#include "fuzz_common.hpp"

namespace {

namespace vp = vpdarts;

struct tiny_search {
  vp::prompted_vit<float> model{vp::vit<float>(vp::vit_config{8, 3, 4, 8, 2, 2, 16, 3}, 1), {.prompts = 2, .classes = 3}};
  vp::data::labelled_images<float> data =
      vp::data::make_synthetic<float>({.image = 8, .count = 12, .seed = 4, .classes = {5, 6, 7}});
  vp::search_options o = [] {
    vp::search_options s;
    s.epochs = 2;
    s.warmup_epochs = 1;
    s.batch = 3;
    s.val_fraction = 0.5;
    s.progress = false;
    return s;
  }();
};

}  // namespace

int fuzz_model_file(const std::uint8_t* data, std::size_t size) {
  std::optional<vp::io::safetensors> f;
  try {
    f.emplace(vp::io::safetensors::parse(vpdarts_fuzz::bytes(data, size), "fuzz.safetensors"));
  } catch (const vp::error&) {
    return 0;
  }
  try {
    vp::load_vit<float>(*f, vp::vit_load_options{.image = 8});
  } catch (const vp::error&) {
  }
  try {
    auto m = vp::load_model<float>(*f);
    vp::tape<float> t;
    vp::no_grad<float> guard(t);
    vp::image_batch<float> x(1, m.config().channels, m.config().image, m.config().image);
    x.pixels.setZero();
    if (m.config().image <= 64) m.logits(t, x);
  } catch (const vp::error&) {
  }
  try {
    static tiny_search s;
    vp::bilevel_optimizer<float, vp::default_ops> opt(s.model, s.o.bilevel);
    vp::search_state::load(*f, s.model, opt, vp::search_fingerprint(s.o, s.model, s.data), s.data.size(), 6, s.o.epochs);
  } catch (const vp::error&) {
  }
  return 0;
}
