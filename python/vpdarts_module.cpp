// vpdarts._vpdarts: the Python module's native part (pybind11). The options are the tool's flags
// (python/vpdarts/__init__.py turns keyword arguments into them), parsed and checked by the tool's own
// settings (tools/vpdarts/commands.hpp), so a search or a retraining from Python says, writes and
// finds what `vpdarts search` / `vpdarts retrain` do with the same flags.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cmath>
#include <cstring>
#include <optional>

#include "../tools/vpdarts/commands.hpp"

#ifdef VPDARTS_WITH_MPI
#include <vpdarts/distributed.hpp>
#endif

namespace py = pybind11;
namespace vp = vpdarts;
using vpdarts_cli::flags;

namespace {

/// Parses `args` ("--name=value", "--switch", "--no-switch") as the tool's `command` would.
void parse_args(flags& f, const char* command, const std::vector<std::string>& args) {
  std::vector<std::string> all{"vpdarts", command};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  vpdarts_cli::parse_flags(f, static_cast<int>(argv.size()), argv.data());
}

/// A loaded backbone and the file it came from.
struct backbone {
  vp::vit<float> vit;
  std::string path;
};

py::dict config_dict(const vp::vit_config& c) {
  py::dict d;
  d["image"] = c.image, d["channels"] = c.channels, d["patch"] = c.patch, d["dim"] = c.dim, d["depth"] = c.depth;
  d["heads"] = c.heads, d["mlp"] = c.mlp, d["classes"] = c.classes, d["class_token"] = c.class_token;
  d["reg_tokens"] = c.reg_tokens, d["no_embed_class"] = c.no_embed_class, d["pre_norm"] = c.pre_norm;
  d["layer_scale"] = c.layer_scale, d["fc_norm"] = c.fc_norm, d["norm_eps"] = c.norm_eps;
  d["act"] = vp::to_string(c.act), d["pool"] = vp::to_string(c.pool);
  return d;
}

py::object to_python(const nlohmann::json& j) { return py::module_::import("json").attr("loads")(j.dump()); }

/// A row-major matrix (softmax(alpha)) as a NumPy array of its shape.
py::array_t<double> to_numpy(const vp::matrix<double>& a) {
  py::array_t<double> out({a.rows(), a.cols()});
  std::memcpy(out.mutable_data(), a.data(), static_cast<std::size_t>(a.size()) * sizeof(double));
  return out;
}

/// Images (N, C, H, W) for a model of `c`: float32 (or float64, converted) as given, or uint8 divided by
/// 255 and normalised as `norm` says. One copy into vpdarts' storage; C-contiguous float32 is copied
/// whole, row by row, without any temporary.
/// @throws value_error naming `what` for a wrong shape or type, or a value that is not finite.
vp::image_batch<float> images_from(py::array a, const vp::vit_config& c, const std::optional<vp::data::normalization>& norm,
                                   const std::string& what) {
  auto shape_str = [&] {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
  };
  if (a.ndim() != 4 || a.shape(1) != c.channels || a.shape(2) != c.image || a.shape(3) != c.image)
    throw vp::value_error(vp::detail::cat(what, " are ", shape_str(), ", but the model takes (N, ", c.channels, ", ", c.image,
                                          ", ", c.image, ") images"));
  const vp::index n = a.shape(0), pixels = c.channels * c.image * c.image;
  if (n == 0) throw vp::value_error(what + " hold no image");
  vp::image_batch<float> out(n, c.channels, c.image, c.image);
  const auto kind = a.dtype().kind();
  if (kind == 'u' && a.dtype().itemsize() == 1) {
    if (!norm) throw vp::value_error(what + " are uint8: give normalization=(mean, std) (for example 'imagenet') to turn them into the model's input");
    norm->check(c.channels);
    auto u = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>::ensure(a);
    const std::uint8_t* src = u.data();
    const vp::index plane = c.image * c.image;
    for (vp::index i = 0; i < n; ++i)
      for (vp::index ch = 0; ch < c.channels; ++ch) {
        const auto [m, s] = norm->channel(static_cast<std::size_t>(ch));
        float* dst = out.pixels.row(i).data() + ch * plane;
        const std::uint8_t* p = src + i * pixels + ch * plane;
        for (vp::index k = 0; k < plane; ++k) dst[k] = static_cast<float>((p[k] / 255.0 - m) / s);
      }
    return out;
  }
  if (kind != 'f')
    throw vp::value_error(vp::detail::cat(what, " are of dtype ", std::string(py::str(a.dtype())),
                                          "; vpdarts takes float32 (normalised) or uint8 (with normalization=...)"));
  auto f = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);  // no copy for C-contiguous float32
  const float* src = f.data();
  for (vp::index i = 0; i < n; ++i) {
    std::memcpy(out.pixels.row(i).data(), src + i * pixels, static_cast<std::size_t>(pixels) * sizeof(float));
    if (!out.pixels.row(i).allFinite())
      throw vp::value_error(vp::detail::cat(what, ": image ", i, " holds NaN or Inf"));
  }
  return out;
}

/// The name of the capsules that own the datasets load_data returns.
constexpr const char* dataset_capsule = "vpdarts.labelled_images";

/// The dataset vpdarts owns behind `images` and `labels` when both are load_data's arrays, whole and
/// unchanged in layout, with the same class names: then nothing is copied (null otherwise).
const vp::data::labelled_images<float>* owned_dataset(const py::array& images, const py::array& labels,
                                                      const std::vector<std::string>& class_names) {
  for (const py::array* a : {&images, &labels})
    if (!a->base() || !py::isinstance<py::capsule>(a->base())) return nullptr;
  const auto c = py::reinterpret_borrow<py::capsule>(images.base());
  if (c.name() == nullptr || std::strcmp(c.name(), dataset_capsule) != 0 || labels.base().ptr() != c.ptr()) return nullptr;
  const auto* d = c.get_pointer<vp::data::labelled_images<float>>();
  const auto& x = d->images;
  const bool whole = images.data() == x.pixels.data() && images.ndim() == 4 && images.shape(0) == x.size() &&
                     images.shape(1) == x.channels && images.shape(2) == x.height && images.shape(3) == x.width &&
                     (images.flags() & py::array::c_style) && labels.data() == d->labels.data() && labels.ndim() == 1 &&
                     labels.shape(0) == static_cast<py::ssize_t>(d->labels.size()) && d->class_names == class_names;
  if (!whole) return nullptr;
  // the arrays are writable: a value changed in place is checked as the copy path would
  for (int y : d->labels)
    if (y < 0 || y >= static_cast<int>(class_names.size())) return nullptr;
  return x.pixels.allFinite() ? d : nullptr;
}

vp::data::labelled_images<float> dataset_from(py::array images, py::array labels, const std::vector<std::string>& class_names,
                                              const vp::vit_config& c, const std::optional<vp::data::normalization>& norm,
                                              const std::string& what);

/// The dataset of the arrays: load_data's own (no copy) or, for any other arrays, a copy (`copy` holds it).
const vp::data::labelled_images<float>& dataset_of(py::array images, py::array labels, const std::vector<std::string>& class_names,
                                                   const vp::vit_config& c, const std::optional<vp::data::normalization>& norm,
                                                   const std::string& what, std::optional<vp::data::labelled_images<float>>& copy) {
  const auto* d = owned_dataset(images, labels, class_names);
  if (d && d->images.channels == c.channels && d->images.height == c.image && d->images.width == c.image) return *d;
  return copy.emplace(dataset_from(images, labels, class_names, c, norm, what));
}

/// A labelled set from arrays: labels are integers in [0, classes).
vp::data::labelled_images<float> dataset_from(py::array images, py::array labels, const std::vector<std::string>& class_names,
                                              const vp::vit_config& c, const std::optional<vp::data::normalization>& norm,
                                              const std::string& what) {
  vp::data::labelled_images<float> d;
  d.images = images_from(images, c, norm, what + " images");
  if (labels.ndim() != 1 || labels.shape(0) != d.images.size())
    throw vp::value_error(vp::detail::cat(what, " labels: ", labels.ndim() == 1 ? std::to_string(labels.shape(0)) : "a non-1-D array of",
                                          " labels for ", d.images.size(), " images (one integer per image)"));
  if (labels.dtype().kind() != 'i' && labels.dtype().kind() != 'u')
    throw vp::value_error(vp::detail::cat(what, " labels are of dtype ", std::string(py::str(labels.dtype())), "; integers are needed"));
  if (class_names.size() < 2) throw vp::value_error(vp::detail::cat(what, ": ", class_names.size(), " class names; at least two classes are needed"));
  auto l = py::array_t<long long, py::array::c_style | py::array::forcecast>::ensure(labels);
  d.labels.resize(static_cast<std::size_t>(l.size()));
  for (py::ssize_t i = 0; i < l.size(); ++i) {
    const long long v = l.data()[i];
    if (v < 0 || v >= static_cast<long long>(class_names.size()))
      throw vp::value_error(vp::detail::cat(what, " labels: label ", v, " of image ", i, " is not in 0..", class_names.size() - 1,
                                            " (", class_names.size(), " classes)"));
    d.labels[static_cast<std::size_t>(i)] = static_cast<int>(v);
  }
  d.class_names = class_names;
  return d;
}

std::optional<vp::data::normalization> norm_from(const std::optional<std::pair<std::vector<double>, std::vector<double>>>& n) {
  if (!n) return std::nullopt;
  vp::data::normalization out{n->first, n->second};
  out.check(0);
  return out;
}

/// Ctrl-C and the progress callback's exceptions while vpdarts computes without the GIL: the training
/// loops poll this after every step; a pending signal (or an exception the callback raised) stops them
/// there (vpdarts::interrupted), and the Python exception is raised once the GIL is back.
struct python_stop {
  std::optional<py::error_already_set> pending;
  bool poll() {
    if (pending) return true;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) pending.emplace();
    return pending.has_value();
  }
  /// Runs `work` without the GIL, with this as its interrupt poll; re-raises what stopped it.
  template <class Work>
  auto run(Work&& work) {
    vp::interrupt_scope scope([this] { return poll(); });
    try {
      auto result = [&] {
        py::gil_scoped_release nogil;
        return work();
      }();
      if (pending) throw *pending;  // the callback failed in the last epoch
      return result;
    } catch (const vp::interrupted&) {
      if (pending) throw *pending;
      throw;
    }
  }
};

py::dict search(backbone& b, py::array images, py::array labels, const std::vector<std::string>& class_names,
                const std::optional<std::pair<std::vector<double>, std::vector<double>>>& normalization,
                const std::vector<std::string>& args, py::object progress) {
  vpdarts_cli::search_settings s;
  vpdarts_cli::common_settings common;
  flags f("search", "");
  s.add_to(f);
  common.add_to(f);
  parse_args(f, "search", args);
  s.note_given(f);
  const std::vector<double> grid = vpdarts_cli::prepare_search(s, common);
  std::optional<vp::data::labelled_images<float>> copy;
  const auto& train = dataset_of(images, labels, class_names, b.vit.config(), norm_from(normalization), "search", copy);
  python_stop stop;
  if (!progress.is_none()) {
    s.on_epoch = [&](std::uint64_t seed, long epoch, const vp::matrix<double>& a, double tl, double vl) {
      if (stop.pending) return;
      py::gil_scoped_acquire gil;
      try {
        py::dict e;
        e["seed"] = seed, e["epoch"] = epoch, e["epochs"] = s.o.epochs, e["alpha"] = to_numpy(a);
        e["train_loss"] = tl, e["val_loss"] = vl;
        progress(e);
      } catch (py::error_already_set& err) {
        stop.pending = err;  // stops the search at its next step, and is raised then
      }
    };
  }
  const vpdarts_cli::search_outcome r =
      stop.run([&] { return vpdarts_cli::run_search(s, grid, b.vit, train, b.path, "given by the caller"); });
  py::dict out;
  out["genotype"] = to_python(r.found.to_json());
  out["alpha"] = to_numpy(r.alpha);
  out["metrics"] = to_python(r.metrics);
  out["out"] = s.out;
  return out;
}

py::dict retrain(backbone& b, py::array images, py::array labels, const std::vector<std::string>& class_names,
                 const std::optional<std::pair<std::vector<double>, std::vector<double>>>& normalization,
                 std::optional<py::array> test_images, std::optional<py::array> test_labels, const std::string& genotype_json,
                 const std::vector<std::string>& args) {
  vpdarts_cli::retrain_settings s;
  vpdarts_cli::common_settings common;
  flags f("retrain", "");
  s.add_to(f);
  common.add_to(f);
  parse_args(f, "retrain", args);
  s.note_given(f);
  if (!genotype_json.empty()) {
    try {
      s.given = vp::genotype::from_json(genotype_json, "the genotype given");
    } catch (const vp::io_error& e) {
      throw vp::config_error(e.message());
    }
  }
  const std::vector<double> grid = vpdarts_cli::prepare_retrain(s, common);
  const auto norm = norm_from(normalization);
  std::optional<vp::data::labelled_images<float>> copy, test_copy;
  const auto& train = dataset_of(images, labels, class_names, b.vit.config(), norm, "retrain", copy);
  if (test_images.has_value() != test_labels.has_value())
    throw vp::value_error("retrain: give test_images and test_labels together");
  const vp::data::labelled_images<float> none;
  const auto& test = test_images ? dataset_of(*test_images, *test_labels, class_names, b.vit.config(), norm, "retrain (test)", test_copy)
                                 : none;
  const vp::data::normalization model_norm = norm ? *norm : vp::data::normalization{{0.0}, {1.0}};
  python_stop stop;
  const nlohmann::json m = stop.run([&] {
    return vpdarts_cli::run_retrain(s, grid, common.quiet, b.vit, train, test, b.path, model_norm);
  });
  py::dict out;
  out["metrics"] = to_python(m);
  out["model"] = (std::filesystem::path(s.out) / "model.safetensors").string();
  out["out"] = s.out;
  return out;
}

/// A model file, loaded.
struct model {
  vp::trained_model<float> m;

  py::array_t<float> predict(py::array images, long batch) {
    if (batch < 1) throw vp::value_error(vp::detail::cat("predict: batch must be >= 1, got ", batch));
    const vp::image_batch<float> x = images_from(images, m.config(), m.norm, "predict: the images");
    py::array_t<float> out({x.size(), m.config().classes});
    float* dst = out.mutable_data();
    python_stop stop;
    stop.run([&] {
      vp::tape<float> t;
      vp::no_grad<float> guard(t);
      std::vector<vp::index> rows;
      vp::image_batch<float> chunk;
      for (vp::index first = 0; first < x.size(); first += batch) {
        const vp::index n = std::min<vp::index>(batch, x.size() - first);
        rows.resize(static_cast<std::size_t>(n));
        for (vp::index i = 0; i < n; ++i) rows[static_cast<std::size_t>(i)] = first + i;
        x.gather(rows, chunk);
        t.reset();
        const vp::matrix<float> logits = m.logits(t, chunk).value();
        std::memcpy(dst + first * logits.cols(), logits.data(), static_cast<std::size_t>(logits.size()) * sizeof(float));
        if (vp::interrupt_scope::requested()) throw vp::interrupted("predict: stopped as asked");
      }
      return 0;
    });
    return out;
  }
};

#ifdef VPDARTS_WITH_MPI
std::optional<vp::mpi::environment>& mpi_environment() {
  static std::optional<vp::mpi::environment> env;
  return env;
}
#endif

/// The processes the next search or retraining is shared over: with `use` (None: when this Python was
/// started by mpirun), every process of MPI_COMM_WORLD, MPI being started the first time; else this one.
/// Returns (rank, size).
py::tuple set_mpi(std::optional<bool> use) {
#ifdef VPDARTS_WITH_MPI
  const bool want = use.value_or(vp::mpi::launched());
  if (want && !mpi_environment()) {
    if (!vp::mpi::launched())
      throw vp::config_error("mpi=True: this Python was not started by an MPI launcher (mpirun -np N python3 script.py)");
    int argc = 0;
    char** argv = nullptr;
    mpi_environment().emplace(argc, argv);
    py::module_::import("atexit").attr("register")(py::cpp_function([] {
      vpdarts_cli::set_parallel(vp::data_parallel{}, 1);
      mpi_environment().reset();
    }));
  }
  if (want) vpdarts_cli::set_parallel(vp::mpi::world(), vp::mpi::local_size());
  else vpdarts_cli::set_parallel(vp::data_parallel{}, 1);
#else
  if (use.value_or(false))
    throw vp::config_error("mpi=True: this vpdarts module was built without MPI (cmake -DVPDARTS_MPI=ON, needs libopenmpi-dev)");
#endif
  return py::make_tuple(vpdarts_cli::parallel().rank(), vpdarts_cli::parallel().size());
}

}  // namespace

PYBIND11_MODULE(VPDARTS_PYTHON_MODULE_NAME, mod) {
  mod.doc() = "vpdarts' native part; use the vpdarts package (import vpdarts).";
  mod.attr("version") = vp::version_string;
#ifdef VPDARTS_WITH_MPI
  mod.attr("has_mpi") = true;
#else
  mod.attr("has_mpi") = false;
#endif

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const vpdarts_cli::usage_error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const vp::io_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const vp::interrupted& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    } catch (const vp::error& e) {  // shape, value, config and state errors: bad values
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<backbone>(mod, "Backbone", "A frozen ViT backbone (vpdarts.load_backbone).")
      .def_property_readonly("config", [](const backbone& b) { return config_dict(b.vit.config()); },
                             "the backbone's shape and variant, as a dict")
      .def_property_readonly("path", [](const backbone& b) { return b.path; }, "the file it was read from")
      .def("__repr__", [](const backbone& b) { return "<vpdarts.Backbone " + b.vit.config().describe() + " from " + b.path + ">"; });

  mod.def("load_backbone", [](const std::vector<std::string>& args) {
    vpdarts_cli::backbone_settings bs;
    vpdarts_cli::common_settings common;
    flags f("load_backbone", "");
    bs.add_to(f);
    f.add_switch("quiet", common.quiet, "");
    parse_args(f, "load_backbone", args);
    bs.validate("load_backbone");
    std::filesystem::path used;
    python_stop stop;
    vp::vit<float> v = stop.run([&] { return bs.load(common.quiet, &used); });
    return backbone{std::move(v), used.string()};
  });

  mod.def("load_data", [](const backbone& b, bool test, const std::vector<std::string>& args) {
    vpdarts_cli::data_settings data("5-9", 1000, 1000);
    flags f("load_data", "");
    data.add_to(f);
    parse_args(f, "load_data", args);
    data.validate("load_data", !test, test);
    data.validate_image("load_data", b.vit.config().image);
    vp::data::labelled_images<float> d;
    {
      py::gil_scoped_release nogil;
      d = data.load(b.vit.config(), test);
    }
    // the arrays view the dataset's own storage (no copy); search and retrain given them back use the
    // dataset itself (see owned_dataset)
    auto* owned = new vp::data::labelled_images<float>(std::move(d));
    py::capsule keep(owned, dataset_capsule, [](PyObject* c) {
      delete static_cast<vp::data::labelled_images<float>*>(PyCapsule_GetPointer(c, dataset_capsule));
    });
    const auto& x = owned->images;
    py::array_t<float> images({x.size(), x.channels, x.height, x.width}, x.pixels.data(), keep);
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(owned->labels.size()), owned->labels.data(), keep);
    const vp::data::normalization n = data.norm(b.vit.config());
    return py::make_tuple(images, labels, owned->class_names, py::make_tuple(n.mean, n.std));
  });

  mod.def("set_mpi", &set_mpi);
  mod.def("search", &search);
  mod.def("retrain", &retrain);

  py::class_<model>(mod, "Model", "A trained model (vpdarts.load_model).")
      .def_property_readonly("kind", [](const model& m) { return m.m.is_probe() ? "probe" : "prompted"; })
      .def_property_readonly("class_names", [](const model& m) { return m.m.class_names; })
      .def_property_readonly("normalization", [](const model& m) { return py::make_tuple(m.m.norm.mean, m.m.norm.std); })
      .def_property_readonly("config", [](const model& m) { return config_dict(m.m.config()); })
      .def_property_readonly("genotype", [](model& m) -> py::object {
        if (!m.m.prompted) return py::none();
        return to_python(m.m.prompted->derive().to_json());
      })
      .def_property_readonly("prompts", [](const model& m) -> py::object {
        if (!m.m.prompted) return py::none();
        return py::int_(m.m.prompted->options().prompts);
      })
      .def_property_readonly("trainable_params", [](model& m) { return m.m.trainable_params(); })
      .def("predict", &model::predict, py::arg("images"), py::arg("batch") = 64)
      .def("save", [](model& m, const std::filesystem::path& path) {
        if (m.m.prompted) vp::save_model(path, *m.m.prompted, m.m.class_names, m.m.norm);
        else vp::save_model(path, *m.m.probe, m.m.class_names, m.m.norm);
      }, py::arg("path"), "Writes the model file (atomically), as vpdarts retrain does.")
      .def("export_torch", [](model& m, const std::filesystem::path& dir) { vp::export_torch(m.m, dir); }, py::arg("folder"),
           "Writes the model as a PyTorch module: folder/vpdarts_model.py, config.json, model.safetensors; "
           "then sys.path.insert(0, folder); from vpdarts_model import load; load(folder).");

  mod.def("load_model", [](const std::filesystem::path& path) { return model{vp::load_model<float>(path)}; });
}
