// The IDX reader, plain or gzip: the input is the images file; a labels file of the right count is made for it.
#include "fuzz_common.hpp"

int fuzz_idx(const std::uint8_t* data, std::size_t size) {
  namespace vp = vpdarts;
  const auto images = vpdarts_fuzz::write_input("idx/images", data, size);
  try {
    const auto a = vp::data::read_idx(images);
    const std::int64_t n = a.dims.empty() ? 0 : a.dims[0];
    if (n < 0 || n > 100000) return 0;
    std::vector<std::uint8_t> labels{0, 0, 8, 1, static_cast<std::uint8_t>(n >> 24), static_cast<std::uint8_t>(n >> 16),
                                     static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)};
    for (std::int64_t i = 0; i < n; ++i) labels.push_back(static_cast<std::uint8_t>(i % 3));
    const auto lpath = vpdarts_fuzz::write_input("idx/labels", labels.data(), labels.size());
    vp::data::load_idx<float>(images, lpath, {.classes = {0, 1}, .image = 8, .channels = 1});
  } catch (const vp::error&) {
  }
  return 0;
}
