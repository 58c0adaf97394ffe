#pragma once
/// @file vpdarts.hpp
/// The umbrella header: `#include <vpdarts/vpdarts.hpp>` brings all of vpdarts.

#include "version.hpp"
#include "error.hpp"
#include "fwd.hpp"
#include "autodiff.hpp"
