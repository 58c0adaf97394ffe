// List files (`path label` lines): the input is the list; it may name the one valid image beside it.
#include "fuzz_common.hpp"

int fuzz_list(const std::uint8_t* data, std::size_t size) {
  namespace vp = vpdarts;
  static const bool image = [] {
    const unsigned char px[4] = {0, 80, 160, 240};
    std::filesystem::create_directories(vpdarts_fuzz::scratch() / "list");
    vp::report::canvas::write_png_bytes(vpdarts_fuzz::scratch() / "list/a.png", 2, 2, 1, px);
    return true;
  }();
  (void)image;
  const auto list = vpdarts_fuzz::write_input("list/list.txt", data, size);
  try {
    vp::data::image_list<float>(list, {.image = 8, .channels = 1});
  } catch (const vp::error&) {
  }
  return 0;
}
