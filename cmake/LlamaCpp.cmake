# Provides the imported target `llama` (with ggml) for the pinned llama.cpp v0.5.0.
#
# Where it comes from, in order:
#   1. LLMD_LLAMA_SOURCE=system: a system llama.cpp of exactly version 0.5.0 (find_package(llama)).
#   2. LLMD_LLAMA_SOURCE=auto (default): the system one if present, else the pinned build below.
#   3. LLMD_LLAMA_SOURCE=pinned: always the pinned build.
#
# The pinned build: scripts/fetch-llama.sh obtains the source (npm package node-llama-cpp@3.22.1,
# integrity-checked git bundle) into ${LLMD_CACHE_DIR}/llama.cpp/v0.5.0/src; this file configures,
# builds and installs static `llama` + `ggml` into a prefix named by a key of everything that changes
# the binaries (compiler, CUDA, native CPU). A finished prefix carries a stamp; a configure that finds
# the stamp does nothing, so a fresh clone or a new build directory links against the cached build in
# seconds. A file lock makes concurrent configures (e.g. the normal and the sanitizer build) safe.
#
# With LLMD_LLAMA_TOOLS=ON, llama.cpp's own llama-bench, llama-batched-bench, llama-server and
# llama-completion are built from the same source (a separate cached build) for bench/; their
# directory is in LLMD_LLAMA_TOOLS_DIR.

get_filename_component(_llmd_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)

set(LLMD_LLAMA_TAG "v0.5.0")
set(LLMD_LLAMA_VERSION "0.5.0")
set(LLMD_LLAMA_COMMIT "de3ff815ea7d559ee917f063901b8986f038abc6")

set(LLMD_LLAMA_SOURCE "auto" CACHE STRING "Where llama.cpp comes from: auto, pinned or system")
set_property(CACHE LLMD_LLAMA_SOURCE PROPERTY STRINGS auto pinned system)
option(LLMD_LLAMA_NATIVE "Build the pinned llama.cpp for this machine's CPU (-march=native)" ON)
option(LLMD_LLAMA_TOOLS "Also build llama.cpp's own tools (llama-bench, ...) for bench/" OFF)

if(DEFINED ENV{LLMD_CACHE_DIR})
  set(_llmd_cache_default "$ENV{LLMD_CACHE_DIR}")
elseif(DEFINED ENV{XDG_CACHE_HOME})
  set(_llmd_cache_default "$ENV{XDG_CACHE_HOME}/llmd")
else()
  set(_llmd_cache_default "$ENV{HOME}/.cache/llmd")
endif()
set(LLMD_CACHE_DIR "${_llmd_cache_default}" CACHE PATH "Cache for the pinned llama.cpp source and builds")

set(_llmd_llama_root "${LLMD_CACHE_DIR}/llama.cpp/${LLMD_LLAMA_TAG}")
set(LLMD_LLAMA_SOURCE_DIR "${_llmd_llama_root}/src")

# Runs a command at configure time; output goes to the terminal so that the long first build shows
# its progress. Fails the configure with the log's location on error.
function(_llmd_run what)
  message(STATUS "llama.cpp: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "llama.cpp: ${what} failed (exit ${rc})")
  endif()
endfunction()

function(_llmd_fetch_llama_source)
  _llmd_run("obtaining pinned source (${LLMD_LLAMA_TAG}, ${LLMD_LLAMA_COMMIT})"
    env "LLMD_CACHE_DIR=${LLMD_CACHE_DIR}"
    "${_llmd_root}/scripts/fetch-llama.sh" "${LLMD_LLAMA_SOURCE_DIR}")
endfunction()

# The cache key: everything that changes the produced binaries.
function(_llmd_llama_key out_var flavour)
  set(parts "${LLMD_LLAMA_COMMIT}" "${flavour}" "${CMAKE_C_COMPILER}" "${CMAKE_C_COMPILER_VERSION}"
            "${CMAKE_CXX_COMPILER}" "${CMAKE_CXX_COMPILER_VERSION}" "native=${LLMD_LLAMA_NATIVE}"
            "cuda=${LLMD_CUDA}" "cuda_arch=${CMAKE_CUDA_ARCHITECTURES}" "layout=2")
  string(SHA256 key "${parts}")
  string(SUBSTRING "${key}" 0 16 key)
  set(${out_var} "${key}" PARENT_SCOPE)
endfunction()

function(_llmd_llama_common_args out_var)
  set(args
    -G Ninja
    -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER}
    -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
    -DLLAMA_BUILD_IS_DEV=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_NUMBER=0
    -DLLAMA_BUILD_COMMIT=${LLMD_LLAMA_COMMIT}
    -DGGML_NATIVE=${LLMD_LLAMA_NATIVE}
    -DGGML_CUDA=${LLMD_CUDA})
  if(LLMD_CUDA AND CMAKE_CUDA_ARCHITECTURES)
    list(APPEND args "-DCMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES}")
  endif()
  set(${out_var} "${args}" PARENT_SCOPE)
endfunction()

function(_llmd_build_pinned_llama prefix_var)
  _llmd_llama_key(key "lib")
  set(build_dir "${_llmd_llama_root}/build-${key}")
  set(prefix "${_llmd_llama_root}/install-${key}")
  set(stamp "${prefix}/.llmd-complete")

  file(MAKE_DIRECTORY "${_llmd_llama_root}")
  file(LOCK "${_llmd_llama_root}/.lock" GUARD FUNCTION TIMEOUT 3600 RESULT_VARIABLE lock_rc)
  if(NOT lock_rc EQUAL 0)
    message(FATAL_ERROR "llama.cpp: could not lock ${_llmd_llama_root}/.lock: ${lock_rc}")
  endif()

  if(EXISTS "${stamp}")
    message(STATUS "llama.cpp: using cached build ${prefix}")
  else()
    _llmd_fetch_llama_source()
    _llmd_llama_common_args(common)
    file(REMOVE_RECURSE "${prefix}")
    cmake_host_system_information(RESULT ncpu QUERY NUMBER_OF_LOGICAL_CORES)
    _llmd_run("configuring (first build; cached afterwards under ${_llmd_llama_root})"
      ${CMAKE_COMMAND} -S "${LLMD_LLAMA_SOURCE_DIR}" -B "${build_dir}" ${common}
        -DBUILD_SHARED_LIBS=OFF
        -DCMAKE_POSITION_INDEPENDENT_CODE=ON
        -DLLAMA_BUILD_COMMON=OFF
        -DLLAMA_BUILD_TOOLS=OFF
        -DLLAMA_BUILD_SERVER=OFF
        "-DCMAKE_INSTALL_PREFIX=${prefix}")
    _llmd_run("building llama + ggml (${ncpu} jobs)"
      ${CMAKE_COMMAND} --build "${build_dir}" --parallel ${ncpu})
    _llmd_run("installing into ${prefix}"
      ${CMAKE_COMMAND} --install "${build_dir}")
    file(WRITE "${stamp}" "${LLMD_LLAMA_COMMIT}\n")
  endif()
  set(${prefix_var} "${prefix}" PARENT_SCOPE)
endfunction()

function(_llmd_build_llama_tools dir_var)
  _llmd_llama_key(key "tools")
  set(build_dir "${_llmd_llama_root}/tools-${key}")
  set(stamp "${build_dir}/.llmd-complete")
  set(tools llama-bench llama-batched-bench llama-server llama-completion)

  file(MAKE_DIRECTORY "${_llmd_llama_root}")
  file(LOCK "${_llmd_llama_root}/.lock" GUARD FUNCTION TIMEOUT 3600)
  if(EXISTS "${stamp}")
    message(STATUS "llama.cpp: using cached tools ${build_dir}/bin")
  else()
    _llmd_fetch_llama_source()
    _llmd_llama_common_args(common)
    cmake_host_system_information(RESULT ncpu QUERY NUMBER_OF_LOGICAL_CORES)
    _llmd_run("configuring llama.cpp tools for bench/"
      ${CMAKE_COMMAND} -S "${LLMD_LLAMA_SOURCE_DIR}" -B "${build_dir}" ${common}
        -DBUILD_SHARED_LIBS=OFF
        -DLLAMA_BUILD_COMMON=ON
        -DLLAMA_BUILD_TOOLS=ON
        -DLLAMA_BUILD_SERVER=ON)
    _llmd_run("building ${tools} (${ncpu} jobs)"
      ${CMAKE_COMMAND} --build "${build_dir}" --parallel ${ncpu} --target ${tools})
    file(WRITE "${stamp}" "${LLMD_LLAMA_COMMIT}\n")
  endif()
  set(${dir_var} "${build_dir}/bin" PARENT_SCOPE)
endfunction()

if(NOT LLMD_LLAMA_SOURCE MATCHES "^(auto|pinned|system)$")
  message(FATAL_ERROR "LLMD_LLAMA_SOURCE must be auto, pinned or system (got '${LLMD_LLAMA_SOURCE}')")
endif()

# find_package caches llama_DIR/ggml_DIR. A cached pointer into our own cache is not a system
# install, and may name another build key after an option changed: always resolve afresh.
foreach(_pkg llama ggml)
  string(FIND "${${_pkg}_DIR}" "${_llmd_llama_root}/" _pos)
  if(_pos EQUAL 0)
    unset(${_pkg}_DIR CACHE)
  endif()
endforeach()

set(LLMD_LLAMA_ORIGIN "")
if(LLMD_LLAMA_SOURCE STREQUAL "system")
  find_package(llama ${LLMD_LLAMA_VERSION} EXACT CONFIG REQUIRED)
  set(LLMD_LLAMA_ORIGIN "system (${llama_DIR})")
elseif(LLMD_LLAMA_SOURCE STREQUAL "auto")
  find_package(llama ${LLMD_LLAMA_VERSION} EXACT CONFIG QUIET)
  if(llama_FOUND)
    set(LLMD_LLAMA_ORIGIN "system (${llama_DIR})")
  else()
    unset(llama_DIR CACHE)
  endif()
endif()

if(NOT LLMD_LLAMA_ORIGIN)
  _llmd_build_pinned_llama(_llmd_llama_prefix)
  find_package(llama ${LLMD_LLAMA_VERSION} EXACT CONFIG REQUIRED
    PATHS "${_llmd_llama_prefix}" NO_DEFAULT_PATH)
  set(LLMD_LLAMA_ORIGIN "pinned ${LLMD_LLAMA_TAG} (${_llmd_llama_prefix})")
endif()
message(STATUS "llama.cpp: ${LLMD_LLAMA_ORIGIN}")

if(LLMD_LLAMA_TOOLS)
  _llmd_build_llama_tools(LLMD_LLAMA_TOOLS_DIR)
  message(STATUS "llama.cpp tools: ${LLMD_LLAMA_TOOLS_DIR}")
endif()

# The vocab-only GGUF files that ship with the llama.cpp source, used by llmd-mkmodel to give
# generated models a real tokenizer. Needs the source even when the library is a system one.
if(NOT EXISTS "${LLMD_LLAMA_SOURCE_DIR}/.llmd-pinned")
  _llmd_fetch_llama_source()
endif()
set(LLMD_LLAMA_VOCAB_DIR "${LLMD_LLAMA_SOURCE_DIR}/models")
