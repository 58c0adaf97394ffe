#pragma once
/// @file version.hpp
/// The version of vpdarts. These are the only macros vpdarts defines.

/// Major version: changes break the API.
#define VPDARTS_VERSION_MAJOR 0
/// Minor version: new features.
#define VPDARTS_VERSION_MINOR 1
/// Patch version: fixes.
#define VPDARTS_VERSION_PATCH 0

namespace vpdarts {
/// The library version as "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
}  // namespace vpdarts
