// Runs every fuzz target, built with g++ and no libFuzzer, over files: the seed corpora and the
// inputs that once crashed a target (tests/fuzz/regressions/TARGET/), so a fixed crash stays fixed.
//   vpdarts_fuzz_replay TARGET FILE_OR_FOLDER...    each file through that target
//   vpdarts_fuzz_replay --make-seeds DIR            writes valid seed files, DIR/TARGET/*
#include "targets.hpp"

#include <cstdio>
#include <zlib.h>

namespace {

namespace fs = std::filesystem;
using vpdarts_fuzz::target;
using vpdarts_fuzz::targets;

void put(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void make_seeds(const fs::path& dir) {
  const fs::path work = vpdarts_fuzz::scratch() / "seeds";
  fs::create_directories(work);
  // a model file and a search checkpoint of the tiny search fuzz_model_file loads into
  tiny_search s;
  s.o.checkpoint = work / "search.safetensors";
  vp::search(s.model, s.data, s.o);
  vp::prompted_vit<float> derived(vp::vit<float>(vp::vit_config{8, 3, 4, 8, 2, 2, 16, 3}, 1), s.model.derive(),
                                  {.prompts = 2, .classes = 3});
  vp::save_model(work / "model.safetensors", derived, {"a", "b", "c"}, vp::data::normalization::synthetic());
  vp::vit<float> bb(vp::vit_config{8, 3, 4, 8, 2, 2, 16, 3}, 2);
  vp::save_vit(work / "backbone.safetensors", bb);
  for (const char* f : {"search.safetensors", "model.safetensors", "backbone.safetensors"}) {
    put(dir / "model_file" / f, slurp(work / f));
    put(dir / "safetensors" / f, slurp(work / f));
  }
  // the model file with heads of other shapes (a row short, 1-d, 3-d, a 2-d bias): the loader must refuse them
  const std::vector<std::pair<std::string, std::vector<std::int64_t>>> heads{
      {"head.weight", {3, 7}}, {"head.weight", {24}}, {"head.weight", {1, 3, 8}}, {"head.bias", {1, 3}}};
  for (std::size_t k = 0; k < heads.size(); ++k) {
    const auto f = vp::io::safetensors::read(work / "model.safetensors");
    std::vector<std::vector<float>> values;
    std::vector<vp::io::tensor_view<float>> views;
    values.reserve(f.tensors().size());
    for (const auto& t : f.tensors()) {
      std::vector<std::int64_t> shape = t.name == heads[k].first ? heads[k].second : t.shape;
      std::int64_t n = 1;
      for (auto d : shape) n *= d;
      std::vector<float> v(static_cast<std::size_t>(t.numel()));
      f.copy_to<float>(t, v);
      v.resize(static_cast<std::size_t>(n), 0.5f);
      values.push_back(std::move(v));
      views.push_back({t.name, shape, values.back()});
    }
    const fs::path out = work / ("head-" + std::to_string(k) + ".safetensors");
    vp::io::write_safetensors<float>(out, views, f.metadata());
    put(dir / "model_file" / out.filename(), slurp(out));
  }
  put(dir / "genotype" / "genotype.json", derived.derive().to_json().dump());
  put(dir / "genotype" / "searched.json", s.model.derive().to_json().dump());
  put(dir / "config" / "config.json", R"({"epochs": 3, "order": "second", "w_lr": 0.1, "resume": true, "batch": 8})");
  put(dir / "list" / "list.txt", "a.png 0\n\"a.png\" 1\n# comment\n\na.png\t2\n");
  std::string idx{'\0', '\0', '\x08', '\x03', '\0', '\0', '\0', '\x02', '\0', '\0', '\0', '\x02', '\0', '\0', '\0', '\x02'};
  idx += std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8);
  put(dir / "idx" / "images", idx);
  const fs::path gz = dir / "idx" / "images.gz";
  gzFile g = gzopen(gz.c_str(), "wb");
  gzwrite(g, idx.data(), static_cast<unsigned>(idx.size()));
  gzclose(g);
  const unsigned char px[12] = {0, 50, 100, 150, 200, 250, 10, 20, 30, 40, 50, 60};
  fs::create_directories(dir / "image_folder");
  vp::report::canvas::write_png_bytes(dir / "image_folder" / "seed.png", 2, 2, 3, px);
  std::printf("seeds written to %s\n", dir.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--make-seeds") {
    make_seeds(argv[2]);
    return 0;
  }
  if (argc < 3 || !targets().count(argv[1])) {
    std::fprintf(stderr, "usage: vpdarts_fuzz_replay TARGET FILE_OR_FOLDER... | --make-seeds DIR\ntargets:");
    for (const auto& [name, fn] : targets()) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  const target fn = targets().at(argv[1]);
  long n = 0;
  for (int i = 2; i < argc; ++i) {
    std::vector<fs::path> files;
    if (fs::is_directory(argv[i])) {
      for (const auto& e : fs::recursive_directory_iterator(argv[i]))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (fs::exists(argv[i])) {
      files.emplace_back(argv[i]);
    }
    for (const auto& f : files) {
      const std::string b = slurp(f);
      fn(reinterpret_cast<const std::uint8_t*>(b.data()), b.size());
      ++n;
    }
  }
  std::printf("fuzz replay %s: %ld input(s), no crash\n", argv[1], n);
  std::error_code ec;
  fs::remove_all(vpdarts_fuzz::scratch(), ec);
  return 0;
}
