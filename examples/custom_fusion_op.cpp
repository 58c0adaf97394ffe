// Adding a fusion operator without touching vpdarts: specialise
// vpdarts::fusion_traits for your type, put it in an op_list, and it is
// searched, derived, counted and saved like the built-in four.
//
// Here: `gated_add`, an additive prompt behind a learnable tanh gate
// (x + tanh(g) * A; the identity at init since g = 0), searched with the four
// built-in operators on a small randomly initialised ViT for a few
// first-order DARTS steps.
#include <cstdio>

#include <vpdarts/vpdarts.hpp>

namespace vp = vpdarts;

struct gated_add {};

template <>
struct vpdarts::fusion_traits<gated_add> {
  static constexpr std::string_view name = "gated_add";
  static std::vector<param_spec> params(const fusion_context& c) {
    return {{"A", c.tokens(), c.dim(), param_init::normal(0.02)}, {"g", 1, 1, param_init::zeros()}};
  }
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index /*batch*/) {
    return add(x, mul(p["A"], tanh(p["g"])));
  }
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

int main() {
  using ops = vp::op_list<vp::concat, vp::add_prompt, vp::affine, vp::cross_attention, gated_add>;
  const vp::vit_config cfg{32, 3, 4, 64, 4, 2, 128, 5};
  vp::prompted_vit<float, ops> model(vp::vit<float>(cfg, 1), {.prompts = 4, .seed = 1});
  std::printf("search space: %zu operators per layer, %ld trainable values (%.2f%% of the backbone)\n",
              ops::size, static_cast<long>(model.trainable_params()), model.trainable_percent());

  auto data = vp::data::make_synthetic<float>({.image = 32, .count = 64, .seed = 3, .classes = {5, 6, 7, 8, 9}});
  std::vector<vp::index> val_rows, train_rows;
  for (vp::index i = 0; i < 64; ++i) (i % 2 ? val_rows : train_rows).push_back(i);
  auto train = data.select(train_rows), val = data.select(val_rows);

  // First-order DARTS: alpha on a search-val batch (Adam), then w on a search-train batch (Adam here for brevity).
  std::vector<vp::parameter<float>*> arch{&model.alpha()};
  vp::optim::adam<float> alpha_opt(arch, {.lr = 0.03, .beta1 = 0.5, .weight_decay = 1e-3});
  vp::optim::adam<float> w_opt(model.weights(), {.lr = 3e-3});
  vp::tape<float> tape;
  for (int step = 1; step <= 10; ++step) {
    tape.reset();  // the alpha pass computes no gradient for w ...
    tape.backward(vp::cross_entropy(model.logits(tape, val.images, vp::grad_target::alpha), val.labels));
    alpha_opt.step();
    alpha_opt.zero_grad();
    tape.reset();  // ... and the w pass none for alpha
    auto loss = vp::cross_entropy(model.logits(tape, train.images, vp::grad_target::weights), train.labels);
    tape.backward(loss);
    w_opt.step();
    w_opt.zero_grad();
    std::printf("step %2d  train loss %.4f\n", step, static_cast<double>(loss.item()));
  }
  vp::genotype g = model.derive();
  std::printf("genotype: %s\n", g.str().c_str());
  vp::prompted_vit<float, ops> derived(vp::vit<float>(cfg, 1), g, {.prompts = 4});
  std::printf("derived model: %ld trainable values\n", static_cast<long>(derived.trainable_params()));
}
