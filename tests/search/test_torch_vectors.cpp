// Cross-check against the PyTorch peer: the files of ../shared/peers/torch_vectors.py
// (config `small`, committed in tests/fixtures/torch_small) load as they are, and
// the search model's logits, loss and gradients with respect to alpha, every
// operator parameter and the head match PyTorch's float64 values. Set
// VPDARTS_TORCH_VECTORS to another folder made by that script (e.g. `toy`) and
// run the hidden case `vpdarts_tests "[torch_env]"` to check it too.
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "pch.hpp"

namespace vp = vpdarts;

namespace {

template <class S>
struct torch_case {
  vp::prompted_vit<S> model;
  vp::image_batch<S> images;
  std::vector<int> labels;
  nlohmann::json expected;
};

template <class S>
torch_case<S> load_case(const std::string& dir) {
  std::ifstream in(dir + "/expected.json");
  REQUIRE(in);
  nlohmann::json expected = nlohmann::json::parse(in);
  const auto& cfg = expected["config"];
  const vp::index heads = cfg["heads"], classes = cfg["classes"], dim = cfg["dim"], depth = cfg["depth"],
                  image = cfg["image"], prompts = cfg["prompts"];
  auto backbone = vp::load_vit<S>(dir + "/backbone.safetensors", heads, classes);
  REQUIRE(backbone.config().dim == dim);
  REQUIRE(backbone.config().depth == depth);
  REQUIRE(backbone.config().image == image);
  vp::prompted_vit<S> model(std::move(backbone), {.prompts = prompts});
  model.load_state(dir + "/fusion.safetensors");
  auto input = vp::io::safetensors::read(dir + "/input.safetensors");
  const auto& img = input.at("images");
  vp::image_batch<S> images(img.shape[0], img.shape[1], img.shape[2], img.shape[3]);
  input.copy_to<S>(img, std::span<S>(images.pixels.data(), static_cast<std::size_t>(images.pixels.size())));
  std::vector<int> labels;
  for (auto v : input.integers("labels")) labels.push_back(static_cast<int>(v));
  return {std::move(model), std::move(images), std::move(labels), std::move(expected)};
}

double rel_err(const vp::matrix<double>& a, const nlohmann::json& b) {
  vp::matrix<double> e(a.rows(), a.cols());
  if (b.is_array() && !b.empty() && b[0].is_array()) {
    for (vp::index i = 0; i < a.rows(); ++i)
      for (vp::index j = 0; j < a.cols(); ++j) e(i, j) = b[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
  } else {
    for (vp::index i = 0; i < a.size(); ++i) e.data()[i] = b[static_cast<std::size_t>(i)];
  }
  return (a - e).norm() / std::max(e.norm(), 1e-30);
}

template <class S>
void check_case(const std::string& dir, double tol) {
  auto c = load_case<S>(dir);
  vp::tape<S> t;
  auto logits = c.model.logits(t, c.images);
  auto loss = vp::cross_entropy(logits, c.labels);
  t.backward(loss);
  INFO("vectors in " << dir);
  CHECK(rel_err(logits.value().template cast<double>(), c.expected["logits"]) < tol);
  const double want_loss = c.expected["loss"];
  CHECK(std::abs(static_cast<double>(loss.item()) - want_loss) < tol * std::abs(want_loss));
  CHECK(rel_err(c.model.alpha().grad().template cast<double>(), c.expected["grad_alpha"]) < tol);
  std::size_t checked = 0;
  for (auto* p : c.model.weights()) {
    INFO("gradient of " << p->name());
    REQUIRE(c.expected["grads"].contains(p->name()));
    CHECK(rel_err(p->grad().template cast<double>(), c.expected["grads"][p->name()]) < tol);
    ++checked;
  }
  CHECK(checked == c.expected["grads"].size());
  // the genotype, and the derived model with the same operator parameters
  auto g = c.model.derive();
  std::vector<std::string> want = c.expected["derived"]["genotype"];
  CHECK(g.names() == want);
  auto d = load_case<S>(dir);
  vp::prompted_vit<S> derived(std::move(d.model.backbone()), g, {.prompts = c.model.options().prompts});
  derived.load_state(dir + "/fusion.safetensors", /*allow_unexpected=*/true);
  vp::tape<S> u;
  vp::no_grad<S> guard(u);
  CHECK(rel_err(derived.logits(u, c.images).value().template cast<double>(), c.expected["derived"]["logits"]) < tol);
}

}  // namespace

TEST_CASE("search model matches the PyTorch peer (small vectors)", "[search][torch]") {
  const std::string dir = VPDARTS_TEST_FIXTURES "/torch_small";
  SECTION("double") { check_case<double>(dir, 1e-10); }
  SECTION("float") { check_case<float>(dir, 1e-4); }
}

// Hidden (run only when asked for by its tag): it needs vectors outside the repository.
TEST_CASE("search model matches the PyTorch peer (vectors from VPDARTS_TORCH_VECTORS)", "[.torch_env]") {
  const char* dir = std::getenv("VPDARTS_TORCH_VECTORS");
  if (!dir) FAIL("set VPDARTS_TORCH_VECTORS to a folder made by torch_vectors.py");
  SECTION("double") { check_case<double>(dir, 1e-10); }
  SECTION("float") { check_case<float>(dir, 1e-4); }
}
