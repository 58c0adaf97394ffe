// The model file (model_file.hpp): a prompted model and a linear probe written
// and read back with their genotype, prompts, class names and normalisation,
// files of version 0.1.0 still load, and bad files are named.
#include <cstring>
#include <fstream>
#include <sstream>

#include "pch.hpp"

#include "custom_ops.hpp"

namespace vp = vpdarts;
using vpdarts_test::tiny_vit;

namespace {

vp::genotype mixed() {
  vp::genotype g = vp::genotype::uniform("concat", 2);
  g.layers[1].op = "cross_attention";
  return g;
}

vp::matrix<float> logits_of(vp::trained_model<float>& m, const vp::image_batch<float>& x) {
  vp::tape<float> t;
  return m.logits(t, x).value();
}

}  // namespace

TEST_CASE("a prompted model and a probe round-trip through the model file", "[model_file]") {
  const vpdarts_test::temp_dir dir("vpdarts-model-file");
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 3), mixed(), {.prompts = 3, .classes = 2, .seed = 4});
  vp::init::engine rng(9);
  for (auto* p : m.weights()) vp::init::normal(*p, 0.5, rng);
  const std::vector<std::string> names{"cats", "dogs"};
  const vp::data::normalization norm{{0.4, 0.5, 0.6}, {0.2, 0.25, 0.3}};
  vp::save_model(dir / "model.safetensors", m, names, norm);

  vp::trained_model<float> back = vp::load_model<float>(dir / "model.safetensors");
  REQUIRE(back.prompted);
  CHECK_FALSE(back.is_probe());
  CHECK(back.class_names == names);
  CHECK(back.norm.str() == norm.str());
  CHECK(back.prompted->options().prompts == 3);
  CHECK(back.prompted->derive().names() == mixed().names());
  CHECK(back.trainable_params() == m.trainable_params());
  vp::image_batch<float> x(2, 3, 8, 8);
  x.pixels.setRandom();
  vp::tape<float> t;
  const vp::matrix<float> want = m.logits(t, x, vp::grad_target::none).value();
  CHECK((logits_of(back, x) - want).norm() == 0);
  // the genotype is stored once, as JSON
  const auto f = vp::io::safetensors::read(dir / "model.safetensors");
  CHECK(vp::genotype::from_json(f.metadata().at(vp::io::keys::genotype)).names() == mixed().names());
  CHECK_FALSE(f.metadata().count(vp::io::keys::legacy_genotype_json));

  // a probe
  vp::vit<float> probe(tiny_vit(), 5);
  probe.reset_head(2);
  probe.head.weight.value().setRandom();
  vp::save_model(dir / "probe.safetensors", probe, names, norm);
  vp::trained_model<float> p = vp::load_model<float>(dir / "probe.safetensors");
  REQUIRE(p.is_probe());
  CHECK(p.trainable_params() == 2 * 8 + 2);
  const vp::matrix<float> probe_logits = probe.logits(t, x).value();
  CHECK((logits_of(p, x) - probe_logits).norm() == 0);

  CHECK_THROWS_WITH(vp::save_model(dir / "x.safetensors", probe, {"one"}, norm), Catch::Contains("1 class names"));
}

TEST_CASE("a model file of version 0.1.0 (genotype under vpdarts.genotype_json) still loads", "[model_file]") {
  const vpdarts_test::temp_dir dir("vpdarts-model-file-old");
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 3), mixed(), {.prompts = 2, .classes = 2});
  std::vector<vp::parameter<float>*> ps = m.backbone().parameters();
  for (auto* p : m.fusion_parameters()) ps.push_back(p);
  // exactly what vpdarts 0.1.0's tool wrote
  vp::io::save_parameters<float>(dir / "old.safetensors", ps,
                                 {{"vpdarts.heads", "2"},
                                  {"vpdarts.classes", "2"},
                                  {"vpdarts.class_names", R"(["a","b"])"},
                                  {"vpdarts.normalize", vp::data::normalization::synthetic().str()},
                                  {"vpdarts.kind", "prompted"},
                                  {"vpdarts.genotype_json", m.derive().to_json().dump()},
                                  {"vpdarts.prompts", "2"}});
  auto back = vp::load_model<float>(dir / "old.safetensors");
  REQUIRE(back.prompted);
  CHECK(back.prompted->derive().names() == mixed().names());
}

TEST_CASE("files that are not model files are named", "[model_file][errors]") {
  const vpdarts_test::temp_dir dir("vpdarts-model-file-bad");
  CHECK_THROWS_WITH(vp::load_model<float>(dir / "none.safetensors"), Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(vp::load_model<float>(dir.path), Catch::Contains("is a folder"));
  vp::vit<float> bb(tiny_vit(), 1);
  vp::save_vit(dir / "bb.safetensors", bb);
  CHECK_THROWS_WITH(vp::load_model<float>(dir / "bb.safetensors"),
                    Catch::Contains("bb.safetensors") && Catch::Contains("not a vpdarts model file"));
  auto ps = bb.parameters();
  vp::io::save_parameters<float>(dir / "kind.safetensors", ps,
                                 {{"vpdarts.kind", "mystery"}, {"vpdarts.class_names", "[]"}, {"vpdarts.normalize", "x"}});
  CHECK_THROWS_WITH(vp::load_model<float>(dir / "kind.safetensors"), Catch::Contains("unknown model kind 'mystery'"));
}

TEST_CASE("model files with no head, NaN, stray tensors or impossible sizes are refused", "[model_file][errors]") {
  const vpdarts_test::temp_dir dir("vpdarts-model-file-hostile");
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 3), mixed(), {.prompts = 2, .classes = 2});
  const std::map<std::string, std::string> meta{{"vpdarts.heads", "2"},
                                                {"vpdarts.classes", "2"},
                                                {"vpdarts.class_names", R"(["a","b"])"},
                                                {"vpdarts.normalize", "0.5;0.25"},
                                                {"vpdarts.kind", "prompted"},
                                                {"vpdarts.genotype", m.derive().to_json().dump()},
                                                {"vpdarts.prompts", "2"}};
  auto write = [&](const std::string& name, std::vector<vp::parameter<float>*> ps, std::map<std::string, std::string> md) {
    vp::io::save_parameters<float>(dir / name, ps, md);
    return dir / name;
  };
  std::vector<vp::parameter<float>*> all = m.backbone().parameters();
  for (auto* p : m.fusion_parameters()) all.push_back(p);
  std::vector<vp::parameter<float>*> headless;
  for (auto* p : all)
    if (p->name().rfind("head.", 0) != 0) headless.push_back(p);
  CHECK_THROWS_WITH(vp::load_model<float>(write("headless.safetensors", headless, meta)), Catch::Contains("has no head"));
  auto probe_meta = meta;
  probe_meta["vpdarts.kind"] = "probe";
  CHECK_THROWS_WITH(vp::load_model<float>(write("probe.safetensors", all, probe_meta)),
                    Catch::Contains("marked as a linear probe but holds fusion parameters"));
  auto huge = meta;
  huge["vpdarts.prompts"] = "1000000000";
  CHECK_THROWS_WITH(vp::load_model<float>(write("huge.safetensors", all, huge)),
                    Catch::Contains("1000000000 prompts") && Catch::Contains("GiB"));
  // NaN cannot be written by vpdarts: forge a file with one in a fusion tensor
  write("ok.safetensors", all, meta);
  auto bytes = vpdarts_test::read_bytes(dir / "ok.safetensors");
  const auto f = vp::io::safetensors::read(dir / "ok.safetensors");
  const auto& t = f.at("fusion.0.concat.P");
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bytes.data() + 8 + header + t.begin, &nan, sizeof nan);
  vpdarts_test::write_bytes(dir / "nan.safetensors", bytes);
  CHECK_THROWS_WITH(vp::load_model<float>(dir / "nan.safetensors"), Catch::Contains("fusion.0.concat.P") && Catch::Contains("NaN"));
}

TEST_CASE("a model file whose head does not fit its classes and backbone is refused, naming both shapes",
          "[model_file][errors]") {
  const vpdarts_test::temp_dir dir("vpdarts-model-file-head");
  vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 3), mixed(), {.prompts = 2, .classes = 2});
  vp::vit<float> probe(tiny_vit(), 3);
  probe.reset_head(2);
  const vp::index dim = tiny_vit().dim;
  const std::vector<std::string> names{"a", "b"};
  const auto norm = vp::data::normalization::synthetic();
  vp::save_model(dir / "prompted.safetensors", m, names, norm);
  vp::save_model(dir / "probe.safetensors", probe, names, norm);
  // the same file with head.weight (or head.bias) rewritten to `shape`, its values repeated to fill it
  auto forge = [&](const std::string& from, const std::string& tensor, std::vector<std::int64_t> shape) {
    const auto f = vp::io::safetensors::read(dir / from);
    std::vector<std::vector<float>> values;
    std::vector<vp::io::tensor_view<float>> views;
    values.reserve(f.tensors().size());
    for (const auto& t : f.tensors()) {
      std::vector<float> v(static_cast<std::size_t>(t.numel()));
      f.copy_to<float>(t, v);
      std::vector<std::int64_t> s = t.shape;
      if (t.name == tensor) {
        s = shape;
        std::int64_t n = 1;
        for (auto d : s) n *= d;
        std::vector<float> w(static_cast<std::size_t>(n));
        for (std::size_t i = 0; i < w.size(); ++i) w[i] = v[i % v.size()];
        v = std::move(w);
      }
      values.push_back(std::move(v));
      views.push_back({t.name, s, values.back()});
    }
    const std::filesystem::path out = dir / ("forged-" + from);
    vp::io::write_safetensors<float>(out, views, f.metadata());
    return out;
  };
  for (const char* file : {"prompted.safetensors", "probe.safetensors"}) {
    REQUIRE_NOTHROW(vp::load_model<float>(dir / file));
    const std::vector<std::pair<std::string, std::vector<std::int64_t>>> bad{
        {"head.weight", {2, dim - 1}}, {"head.weight", {2 * dim}}, {"head.weight", {1, 2, dim}},
        {"head.weight", {3, dim}},     {"head.bias", {3}},         {"head.bias", {1, 2}}};
    for (const auto& [tensor, shape] : bad) {
      INFO(file << " " << tensor << " of rank " << shape.size());
      const std::filesystem::path forged = forge(file, tensor, shape);
      const std::string need = tensor == "head.bias" ? "need (2)" : "need (2, " + std::to_string(dim) + ")";
      CHECK_THROWS_WITH(vp::load_model<float>(forged), Catch::Contains("'" + tensor + "' is (") && Catch::Contains(need) &&
                                                           Catch::Contains(forged.filename().string()));
    }
  }
}

namespace {
// An operator of the user's own with its PyTorch form (gated_add of custom_ops.hpp has none).
struct shift_op {};
}  // namespace

template <>
struct vpdarts::fusion_traits<shift_op> {
  static constexpr std::string_view name = "shift";
  static constexpr std::string_view torch_source = R"py(class Shift(FusionOp):
    name = "shift"

    def pre(self, x):
        return x + self.b
)py";
  static std::vector<param_spec> params(const fusion_context& c) { return {{"b", 1, c.dim(), param_init::zeros()}}; }
  template <Scalar S>
  static var<S> pre(const var<S>& x, const op_params<S>& p, index) {
    return add(x, p["b"]);
  }
  template <Scalar S>
  static var<S> post(const var<S>& y, const op_params<S>&, index) {
    return y;
  }
};

TEST_CASE("export_torch writes the module, its config and weights; an operator without a PyTorch form is refused by name",
          "[model_file][torch_export]") {
  const vpdarts_test::temp_dir dir("vpdarts-torch-export");
  const std::vector<std::string> names{"cats", "dogs"};
  const vp::data::normalization norm{{0.5}, {0.25}};
  auto read = [](const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  {
    vp::prompted_vit<float> m(vp::vit<float>(tiny_vit(), 3), mixed(), {.prompts = 3, .classes = 2, .seed = 4});
    vp::save_model(dir / "m.safetensors", m, names, norm);
    vp::trained_model<float> t = vp::load_model<float>(dir / "m.safetensors");
    vp::export_torch(t, dir / "out");
    const std::string py = read(dir / "out" / "vpdarts_model.py");
    CHECK(py.find("class Concat(FusionOp)") != std::string::npos);
    CHECK(py.find("class CrossAttention(FusionOp)") != std::string::npos);
    CHECK(py.find("class Affine(FusionOp)") == std::string::npos);  // only the operators the genotype uses
    const auto cfg = nlohmann::json::parse(read(dir / "out" / "config.json"));
    CHECK(cfg["genotype"] == nlohmann::json(mixed().names()));
    CHECK(cfg["prompts"] == 3);
    CHECK(cfg["class_names"] == nlohmann::json(names));
    CHECK(cfg["vit"]["depth"] == tiny_vit().depth);
    CHECK(vp::load_model<float>(dir / "out" / "model.safetensors").prompted->derive().names() == mixed().names());
  }
  using ops = vp::op_list<vp::add_prompt, shift_op, vpdarts_test::gated_add>;
  vp::genotype g = vp::genotype::uniform("shift", 2);
  g.layers[0].op = "add";
  {
    vp::prompted_vit<float, ops> m(vp::vit<float>(tiny_vit(), 3), g, {.prompts = 3, .classes = 2, .seed = 4});
    vp::save_model(dir / "shift.safetensors", m, names, norm);
    auto t = vp::load_model<float, ops>(dir / "shift.safetensors");
    vp::export_torch(t, dir / "shift");
    const std::string py = read(dir / "shift" / "vpdarts_model.py");
    CHECK(py.find("class Shift(FusionOp)") != std::string::npos);
    CHECK(py.find("class Add(FusionOp)") != std::string::npos);
  }
  g.layers[1].op = "gated_add";
  vp::prompted_vit<float, ops> m(vp::vit<float>(tiny_vit(), 3), g, {.prompts = 3, .classes = 2, .seed = 4});
  vp::save_model(dir / "gated.safetensors", m, names, norm);
  auto t = vp::load_model<float, ops>(dir / "gated.safetensors");
  CHECK_THROWS_AS(vp::export_torch(t, dir / "gated"), vp::config_error);
  CHECK_THROWS_WITH(vp::export_torch(t, dir / "gated"),
                    Catch::Contains("'gated_add' has no PyTorch form") && Catch::Contains("torch_source"));
  CHECK_FALSE(std::filesystem::exists(dir / "gated"));  // refused before anything was written
  // a file where the folder should be
  std::ofstream(dir / "a-file") << "x";
  vp::trained_model<float> plain = vp::load_model<float>(dir / "m.safetensors");
  CHECK_THROWS_WITH(vp::export_torch(plain, dir / "a-file"), Catch::Contains("is not a folder"));
}
