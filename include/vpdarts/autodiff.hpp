#pragma once
/// @file autodiff.hpp
/// The reverse-mode tape and all its ops.

#include "detail/arena.hpp"
#include "autodiff/gradcheck.hpp"
#include "autodiff/ops_attention.hpp"
#include "autodiff/ops_elementwise.hpp"
#include "autodiff/ops_fused.hpp"
#include "autodiff/ops_fused_attention.hpp"
#include "autodiff/ops_fused_mlp.hpp"
#include "autodiff/ops_linalg.hpp"
#include "autodiff/ops_nn.hpp"
#include "autodiff/ops_prompt.hpp"
#include "autodiff/ops_reduce.hpp"
#include "autodiff/ops_sequence.hpp"
#include "autodiff/ops_shape.hpp"
#include "autodiff/parameter.hpp"
#include "autodiff/tape.hpp"
