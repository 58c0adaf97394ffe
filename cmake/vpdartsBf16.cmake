# vpdarts_define_bf16_target(): the INTERFACE target vpdarts::bf16 (precision::bf16,
# <vpdarts/precision.hpp>) when oneDNN is found (Debian: libdnnl-dev). Linking it
# defines VPDARTS_WITH_DNNL=1 for the whole program (every translation unit must
# agree) and links libdnnl. Sets VPDARTS_BF16_FOUND. Used by the build tree and
# by the installed vpdartsConfig.cmake. Looks the library up directly: Debian's
# dnnl-config.cmake asks for OpenCL, which the CPU path does not need.
include_guard(GLOBAL)
function(vpdarts_define_bf16_target)
  set(VPDARTS_BF16_FOUND OFF PARENT_SCOPE)
  if(TARGET vpdarts::bf16)
    set(VPDARTS_BF16_FOUND ON PARENT_SCOPE)
    return()
  endif()
  find_path(VPDARTS_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
  find_library(VPDARTS_DNNL_LIBRARY NAMES dnnl)
  if(NOT VPDARTS_DNNL_INCLUDE_DIR OR NOT VPDARTS_DNNL_LIBRARY)
    return()
  endif()
  add_library(vpdarts_bf16 INTERFACE IMPORTED GLOBAL)
  set_target_properties(vpdarts_bf16 PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${VPDARTS_DNNL_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "vpdarts::vpdarts;${VPDARTS_DNNL_LIBRARY}"
    INTERFACE_COMPILE_DEFINITIONS "VPDARTS_WITH_DNNL=1")
  add_library(vpdarts::bf16 ALIAS vpdarts_bf16)
  set(VPDARTS_BF16_FOUND ON PARENT_SCOPE)
endfunction()
