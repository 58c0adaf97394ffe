#pragma once
/// @file vpdarts.hpp
/// The umbrella header: `#include <vpdarts/vpdarts.hpp>` brings all of vpdarts.

#include "version.hpp"
#include "error.hpp"
#include "fwd.hpp"
#include "autodiff.hpp"
#include "nn/init.hpp"
#include "nn/layers.hpp"
#include "data/image_batch.hpp"
#include "data/synthetic.hpp"
#include "vit/config.hpp"
#include "vit/vit.hpp"
#include "io/atomic_file.hpp"
#include "io/safetensors.hpp"
#include "io/checkpoint.hpp"
#include "fusion/traits.hpp"
#include "fusion/builtin.hpp"
#include "fusion/op_list.hpp"
#include "search/genotype.hpp"
#include "search/prompted_vit.hpp"
#include "optim/adam.hpp"
#include "train/classifier.hpp"
