# The dependencies of the vpdarts INTERFACE target, all from Debian's packages
# (scripts/install-deps.sh installs them). Shared by the build tree and by
# the installed vpdartsConfig.cmake.
include(GNUInstallDirs)
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(Boost 1.74 REQUIRED)
find_package(xtensor REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(PkgConfig REQUIRED)
pkg_check_modules(stb REQUIRED IMPORTED_TARGET GLOBAL stb)
find_package(ZLIB REQUIRED)
