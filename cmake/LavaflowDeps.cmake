# Optional dependencies: LAVAFLOW_WITH_<NAME> = AUTO | ON | OFF.
# AUTO uses the package when it is installed, ON makes a missing package a
# configure error, OFF never looks for it. Every result lands in the summary.

set(LAVAFLOW_FEATURES "")

# Dependencies that are probed but that no code uses yet: they are reported
# as "not built" (and LAVAFLOW_HAVE_<NAME> stays OFF), so that neither the
# summary nor lf-info claims a capability lavaflow does not have. The code
# that starts using one removes it from this list.
set(LAVAFLOW_NOT_WIRED "")

# lf_optional(NAME FOUND_VAR REASON)
#   Call after the probe for NAME ran; FOUND_VAR says whether it was found.
#   Sets LAVAFLOW_HAVE_<NAME> to ON or OFF.
macro(lf_optional name found reason)
  if(LAVAFLOW_WITH_${name} STREQUAL "OFF")
    set(LAVAFLOW_HAVE_${name} OFF)
    list(APPEND LAVAFLOW_FEATURES "${name}: off (LAVAFLOW_WITH_${name}=OFF)")
  elseif(${found} AND "${name}" IN_LIST LAVAFLOW_NOT_WIRED)
    set(LAVAFLOW_HAVE_${name} OFF)
    list(APPEND LAVAFLOW_FEATURES "${name}: not built (installed, but no lavaflow code uses it yet)")
  elseif(${found})
    set(LAVAFLOW_HAVE_${name} ON)
    list(APPEND LAVAFLOW_FEATURES "${name}: yes")
  elseif(LAVAFLOW_WITH_${name} STREQUAL "ON")
    message(FATAL_ERROR "LAVAFLOW_WITH_${name}=ON but ${reason}. "
                        "Install it (scripts/setup-debian.sh) or set LAVAFLOW_WITH_${name}=AUTO.")
  else()
    set(LAVAFLOW_HAVE_${name} OFF)
    list(APPEND LAVAFLOW_FEATURES "${name}: no (${reason})")
  endif()
endmacro()

foreach(dep MPI CUDA VULKAN UCX DPDK NUMA HWLOC URING)
  set(LAVAFLOW_WITH_${dep} AUTO CACHE STRING "Build with ${dep}: AUTO, ON or OFF")
  set_property(CACHE LAVAFLOW_WITH_${dep} PROPERTY STRINGS AUTO ON OFF)
endforeach()

find_package(PkgConfig QUIET)

# MPI
if(NOT LAVAFLOW_WITH_MPI STREQUAL "OFF")
  find_package(MPI QUIET COMPONENTS C)
endif()
lf_optional(MPI MPI_C_FOUND "no MPI C library found (Debian: libopenmpi-dev)")

# CUDA: headers only. The runtime is loaded with dlopen at run time so that one
# binary starts on machines without a driver (see adr/0002).
if(NOT LAVAFLOW_WITH_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
endif()
lf_optional(CUDA CUDAToolkit_FOUND "no CUDA toolkit headers found (set CUDAToolkit_ROOT)")

# Vulkan
if(NOT LAVAFLOW_WITH_VULKAN STREQUAL "OFF")
  find_package(Vulkan QUIET COMPONENTS glslangValidator)
endif()
set(_lf_vk_ok FALSE)
if(Vulkan_FOUND AND Vulkan_GLSLANG_VALIDATOR_EXECUTABLE)
  set(_lf_vk_ok TRUE)
endif()
lf_optional(VULKAN _lf_vk_ok "no Vulkan loader + glslangValidator (Debian: libvulkan-dev glslang-tools)")

# Packages found through pkg-config.
macro(lf_pkg name module reason)
  set(_lf_found FALSE)
  if(PkgConfig_FOUND AND NOT LAVAFLOW_WITH_${name} STREQUAL "OFF")
    pkg_check_modules(LF_${name} QUIET IMPORTED_TARGET ${module})
    if(LF_${name}_FOUND)
      set(_lf_found TRUE)
    endif()
  endif()
  lf_optional(${name} _lf_found "${reason}")
endmacro()

lf_pkg(UCX ucx "pkg-config ucx not found (Debian: libucx-dev)")
lf_pkg(DPDK libdpdk "pkg-config libdpdk not found (Debian: libdpdk-dev)")
lf_pkg(NUMA numa "pkg-config numa not found (Debian: libnuma-dev)")
lf_pkg(HWLOC hwloc "pkg-config hwloc not found (Debian: libhwloc-dev)")
lf_pkg(URING liburing "pkg-config liburing not found (Debian: liburing-dev)")

# The summary as one C string for lavaflow_features.h (lf-info prints it).
function(lf_feature_summary_string out)
  set(s "")
  foreach(line ${LAVAFLOW_FEATURES})
    string(REPLACE "\"" "'" line "${line}")
    string(APPEND s "  ${line}\\n")
  endforeach()
  set(${out} "${s}" PARENT_SCOPE)
endfunction()

function(lf_print_summary)
  message(STATUS "")
  message(STATUS "lavaflow ${PROJECT_VERSION} feature summary")
  foreach(line ${LAVAFLOW_FEATURES})
    message(STATUS "  ${line}")
  endforeach()
  message(STATUS "")
endfunction()
