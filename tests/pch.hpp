#pragma once
// The precompiled header shared by every test translation unit.
#include <catch2/catch.hpp>
#include <vpdarts/vpdarts.hpp>

#include "support.hpp"
