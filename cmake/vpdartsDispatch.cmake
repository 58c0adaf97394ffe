# vpdarts_add_dispatched_executable(<target> SOURCES <src>... [LINK <lib>...]
#                                   [OUTPUT_NAME <name>] [RUNTIME_OUTPUT_DIRECTORY <dir>])
#
# Builds <target> for the compiler's default architecture (portable x86-64) and,
# on x86-64 with GCC or Clang, a second executable <name>-x86-64-v3 compiled with
# -march=x86-64-v3 (AVX2 + FMA: Eigen's GEMM runs about twice as fast), written
# next to it. Building <target> builds both. The program's main() calls
# vpdarts::exec_best_variant(argv) (<vpdarts/dispatch.hpp>), which re-executes
# the faster sibling when the CPU supports it. The sibling's target name is
# stored in <target>_X86_64_V3 in the caller's scope (empty when not built).
# Set VPDARTS_DISPATCH to OFF to build only the portable program.
include_guard(GLOBAL)
include(CheckCXXCompilerFlag)
check_cxx_compiler_flag(-march=x86-64-v3 VPDARTS_HAVE_MARCH_X86_64_V3)
if(NOT DEFINED VPDARTS_DISPATCH)
  set(VPDARTS_DISPATCH ON CACHE BOOL "Also build x86-64-v3 (AVX2+FMA) variants of vpdarts programs, chosen at run time")
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
  if(NOT VPDARTS_DISPATCH OR NOT VPDARTS_HAVE_MARCH_X86_64_V3
     OR NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    return()
  endif()
  set(variant ${target}_x86_64_v3)
  add_executable(${variant} ${arg_SOURCES})
  target_link_libraries(${variant} PRIVATE ${arg_LINK})
  target_compile_options(${variant} PRIVATE -march=x86-64-v3)
  set_target_properties(${variant} PROPERTIES OUTPUT_NAME ${arg_OUTPUT_NAME}-x86-64-v3)
  if(arg_RUNTIME_OUTPUT_DIRECTORY)
    set_target_properties(${variant} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${arg_RUNTIME_OUTPUT_DIRECTORY})
  endif()
  add_dependencies(${target} ${variant})
  set(${target}_X86_64_V3 ${variant} PARENT_SCOPE)
endfunction()
