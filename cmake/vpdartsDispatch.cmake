# vpdarts_add_dispatched_executable(<target> SOURCES <src>... [LINK <lib>...]
#                                   [OUTPUT_NAME <name>] [RUNTIME_OUTPUT_DIRECTORY <dir>])
#
# Builds <target> for the compiler's default architecture (portable x86-64) and,
# on x86-64 with GCC or Clang, two more executables written next to it:
# <name>-x86-64-v3 compiled with -march=x86-64-v3 (AVX2 + FMA: Eigen's GEMM runs
# about twice as fast) and <name>-x86-64-v4 with -march=x86-64-v4 (AVX-512: the
# element-wise passes, LayerNorm, softmax, GELU and the bf16 rounding in 16-float
# vectors; 7-12 % off a search step on an AVX-512 Xeon, docs/performance.md).
# Building <target> builds them all. The program's main() calls
# vpdarts::exec_best_variant(argv) (<vpdarts/dispatch.hpp>), which re-executes
# the fastest sibling the CPU supports. The siblings' target names are stored in
# <target>_X86_64_V3 and <target>_X86_64_V4, and both in <target>_VARIANTS, in the
# caller's scope (empty when not built).
# Set VPDARTS_DISPATCH to OFF to build only the portable program.
include_guard(GLOBAL)
include(CheckCXXCompilerFlag)
check_cxx_compiler_flag(-march=x86-64-v3 VPDARTS_HAVE_MARCH_X86_64_V3)
check_cxx_compiler_flag(-march=x86-64-v4 VPDARTS_HAVE_MARCH_X86_64_V4)
if(NOT DEFINED VPDARTS_DISPATCH)
  set(VPDARTS_DISPATCH ON CACHE BOOL "Also build x86-64-v3 (AVX2+FMA) and x86-64-v4 (AVX-512) variants of vpdarts programs, chosen at run time")
endif()

function(vpdarts_add_dispatched_executable target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "OUTPUT_NAME;RUNTIME_OUTPUT_DIRECTORY" "SOURCES;LINK")
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "vpdarts_add_dispatched_executable(${target}): no SOURCES given")
  endif()
  if(NOT arg_OUTPUT_NAME)
    set(arg_OUTPUT_NAME ${target})
  endif()
  add_executable(${target} ${arg_SOURCES})
  target_link_libraries(${target} PRIVATE ${arg_LINK})
  set_target_properties(${target} PROPERTIES OUTPUT_NAME ${arg_OUTPUT_NAME})
  if(arg_RUNTIME_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${arg_RUNTIME_OUTPUT_DIRECTORY})
  endif()
  set(${target}_X86_64_V3 "" PARENT_SCOPE)
  set(${target}_X86_64_V4 "" PARENT_SCOPE)
  set(${target}_VARIANTS "" PARENT_SCOPE)
  if(NOT VPDARTS_DISPATCH OR NOT VPDARTS_HAVE_MARCH_X86_64_V3
     OR NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    return()
  endif()
  set(levels v3)
  if(VPDARTS_HAVE_MARCH_X86_64_V4)
    list(APPEND levels v4)
  endif()
  set(variants)
  foreach(level ${levels})
    string(TOUPPER ${level} LEVEL)
    set(variant ${target}_x86_64_${level})
    add_executable(${variant} ${arg_SOURCES})
    target_link_libraries(${variant} PRIVATE ${arg_LINK})
    target_compile_options(${variant} PRIVATE -march=x86-64-${level})
    if(level STREQUAL "v4" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # GCC 12 reads the placeholder operand of its own AVX-512 intrinsics (_mm512_undefined_*) as
      # uninitialised inside Eigen's packet math: a false warning that -Werror would turn into an error
      target_compile_options(${variant} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
    endif()
    set_target_properties(${variant} PROPERTIES OUTPUT_NAME ${arg_OUTPUT_NAME}-x86-64-${level})
    if(arg_RUNTIME_OUTPUT_DIRECTORY)
      set_target_properties(${variant} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${arg_RUNTIME_OUTPUT_DIRECTORY})
    endif()
    add_dependencies(${target} ${variant})
    set(${target}_X86_64_${LEVEL} ${variant} PARENT_SCOPE)
    list(APPEND variants ${variant})
  endforeach()
  set(${target}_VARIANTS ${variants} PARENT_SCOPE)
endfunction()
