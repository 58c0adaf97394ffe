// Image decoding through the folder loader: the input is one image file of a two-class folder.
#include "fuzz_common.hpp"

int fuzz_image_folder(const std::uint8_t* data, std::size_t size) {
  namespace vp = vpdarts;
  vpdarts_fuzz::write_input("folder/a/input.png", data, size);
  static const bool other = [] {  // a valid second class
    const unsigned char px[12] = {0, 50, 100, 150, 200, 250, 10, 20, 30, 40, 50, 60};
    std::filesystem::create_directories(vpdarts_fuzz::scratch() / "folder/b");
    vp::report::canvas::write_png_bytes(vpdarts_fuzz::scratch() / "folder/b/ok.png", 2, 2, 3, px);
    return true;
  }();
  (void)other;
  for (bool skip : {false, true}) {
    try {
      vp::data::image_folder<float>(vpdarts_fuzz::scratch() / "folder", {.image = 8, .channels = 3, .skip_bad = skip});
    } catch (const vp::error&) {
    }
  }
  return 0;
}
