# Provides the imported targets `llama` (with ggml) and `llama_common` (llama.cpp's `common`
# library: Jinja chat templates, tool-call parsing, JSON Schema -> grammar) for the pinned llama.cpp
# v0.5.0. Only engine/ links `llama_common`, as only engine/ includes llama.h.
#
# Where it comes from, in order:
#   1. LLMD_LLAMA_SOURCE=system: a system llama.cpp of exactly version 0.5.0 (find_package(llama)).
#   2. LLMD_LLAMA_SOURCE=auto (default): the system one if present, else the pinned build below.
#   3. LLMD_LLAMA_SOURCE=pinned: always the pinned build.
#
# The pinned build: scripts/fetch-llama.sh obtains the source (npm package node-llama-cpp@3.22.1,
# integrity-checked git bundle) into ${LLMD_CACHE_DIR}/llama.cpp/v0.5.0/src; this file configures,
# builds and installs static `llama` + `ggml` into a prefix named by a key of everything that changes
# the binaries (compiler, CUDA, native CPU), and copies `common` (which llama.cpp does not install:
# its static libraries and headers) into the same prefix (lib/, include/llama-common/). A system
# llama.cpp has no `common`: it is then built from the pinned source into a cache of its own. A finished prefix carries a stamp; a configure that finds
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
# Without -march=native (packages: LLMD_LLAMA_NATIVE=OFF) the x86 instruction set is pinned here
# rather than left to ggml's defaults, which differ when SOURCE_DATE_EPOCH is set (as under
# dpkg-buildpackage): x86-64-v3 = AVX, AVX2, FMA, F16C, BMI2 (Haswell / Zen and later); x86-64 = SSE2
# only (any amd64 CPU, several times slower). ggml's runtime-dispatched CPU variants
# (GGML_CPU_ALL_VARIANTS) need dynamically loaded backends, which a static llama.cpp cannot have.
set(LLMD_LLAMA_CPU "x86-64-v3" CACHE STRING
    "x86 level of the pinned llama.cpp when LLMD_LLAMA_NATIVE=OFF: x86-64-v3 or x86-64")
set_property(CACHE LLMD_LLAMA_CPU PROPERTY STRINGS x86-64-v3 x86-64)
option(LLMD_LLAMA_TOOLS "Also build llama.cpp's own tools (llama-bench, ...) for bench/" OFF)

# The compilers llama.cpp is built with: llmd's own, except in a fuzz build tree (LLMD_FUZZ, clang),
# which links the same cached gcc build as the normal tree (the system's cc / c++) instead of
# building llama.cpp again with clang: static C/C++ libraries from gcc link into clang programs on
# Linux (same ABI, same libstdc++), and llama.cpp is not what is being fuzzed.
if(LLMD_FUZZ)
  find_program(_llmd_host_cc NAMES cc gcc)
  find_program(_llmd_host_cxx NAMES c++ g++)
  set(_llmd_llama_cc_default "${_llmd_host_cc}")
  set(_llmd_llama_cxx_default "${_llmd_host_cxx}")
else()
  set(_llmd_llama_cc_default "${CMAKE_C_COMPILER}")
  set(_llmd_llama_cxx_default "${CMAKE_CXX_COMPILER}")
endif()
set(LLMD_LLAMA_C_COMPILER "${_llmd_llama_cc_default}" CACHE FILEPATH "C compiler for the pinned llama.cpp")
set(LLMD_LLAMA_CXX_COMPILER "${_llmd_llama_cxx_default}" CACHE FILEPATH "C++ compiler for the pinned llama.cpp")

# A compiler's version as CMake reports it for the project's own compilers (part of the cache key).
function(_llmd_compiler_version out_var compiler project_compiler project_version)
  if(compiler STREQUAL project_compiler)
    set(${out_var} "${project_version}" PARENT_SCOPE)
    return()
  endif()
  execute_process(COMMAND "${compiler}" -dumpfullversion -dumpversion OUTPUT_VARIABLE v
                  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "llama.cpp: cannot ask ${compiler} for its version")
  endif()
  set(${out_var} "${v}" PARENT_SCOPE)
endfunction()
_llmd_compiler_version(_llmd_llama_cc_version "${LLMD_LLAMA_C_COMPILER}" "${CMAKE_C_COMPILER}"
                       "${CMAKE_C_COMPILER_VERSION}")
_llmd_compiler_version(_llmd_llama_cxx_version "${LLMD_LLAMA_CXX_COMPILER}" "${CMAKE_CXX_COMPILER}"
                       "${CMAKE_CXX_COMPILER_VERSION}")

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

# Runs a command at configure time. With LOG, its output goes to that file and only build progress
# is shown (scripts/run-logged.sh); the end of the log is printed if it fails.
function(_llmd_run what)
  cmake_parse_arguments(A "" "LOG" "" ${ARGN})
  message(STATUS "llama.cpp: ${what}")
  if(A_LOG)
    execute_process(COMMAND "${_llmd_root}/scripts/run-logged.sh" "${A_LOG}" ${A_UNPARSED_ARGUMENTS}
                    RESULT_VARIABLE rc)
  else()
    execute_process(COMMAND ${A_UNPARSED_ARGUMENTS} RESULT_VARIABLE rc)
  endif()
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
  set(parts "${LLMD_LLAMA_COMMIT}" "${flavour}" "${LLMD_LLAMA_C_COMPILER}" "${_llmd_llama_cc_version}"
            "${LLMD_LLAMA_CXX_COMPILER}" "${_llmd_llama_cxx_version}" "native=${LLMD_LLAMA_NATIVE}"
            "cuda=${LLMD_CUDA}" "cuda_arch=${CMAKE_CUDA_ARCHITECTURES}" "openmp=off" "layout=3")
  if(NOT LLMD_LLAMA_NATIVE)
    list(APPEND parts "cpu=${LLMD_LLAMA_CPU}")
  endif()
  string(SHA256 key "${parts}")
  string(SUBSTRING "${key}" 0 16 key)
  set(${out_var} "${key}" PARENT_SCOPE)
endfunction()

function(_llmd_llama_common_args out_var)
  set(args
    -G Ninja
    -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_C_COMPILER=${LLMD_LLAMA_C_COMPILER}
    -DCMAKE_CXX_COMPILER=${LLMD_LLAMA_CXX_COMPILER}
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
    # ggml's own thread pool instead of OpenMP. With OpenMP every thread that calls llama_decode
    # gets its own worker team, and a team left behind by another thread (the daemon creates the
    # context on its main thread, decodes on the engine thread) competes for the cores: decode
    # ran at 102 instead of 185 tok/s on 2 cores. Without it: no such penalty, decode ~4% faster,
    # prefill the same (smollm2-135m q8_0, 2 threads; ARCHITECTURE.md, "Decisions").
    -DGGML_OPENMP=OFF
    -DGGML_CUDA=${LLMD_CUDA})
  if(NOT LLMD_LLAMA_NATIVE)
    if(LLMD_LLAMA_CPU STREQUAL "x86-64-v3")
      set(v3 ON)
    else()
      set(v3 OFF)
    endif()
    list(APPEND args -DGGML_SSE42=${v3} -DGGML_AVX=${v3} -DGGML_AVX2=${v3} -DGGML_FMA=${v3}
                     -DGGML_F16C=${v3} -DGGML_BMI2=${v3} -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF
                     -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
                     -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
  endif()
  if(LLMD_CUDA AND CMAKE_CUDA_ARCHITECTURES)
    list(APPEND args "-DCMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES}")
  endif()
  set(${out_var} "${args}" PARENT_SCOPE)
endfunction()

# Configures and builds llama.cpp in build_dir once, under a file lock; a later call finds the
# stamp and does nothing. With PREFIX the result is installed there (and the stamp goes there).
function(_llmd_cached_llama_build what build_dir)
  cmake_parse_arguments(A "" "PREFIX;COMMON_INTO" "CONFIGURE;TARGETS" ${ARGN})
  set(stamp "${build_dir}/.llmd-complete")
  if(A_PREFIX)
    set(stamp "${A_PREFIX}/.llmd-complete")
  elseif(A_COMMON_INTO)
    set(stamp "${A_COMMON_INTO}/.llmd-complete")
  endif()

  # The stamp is written last, after a whole build: seen without the lock, it is final (a configure
  # then never waits behind another one that builds something else).
  if(EXISTS "${stamp}")
    get_filename_component(where "${stamp}" DIRECTORY)
    message(STATUS "llama.cpp: using cached build ${where}")
    return()
  endif()
  file(MAKE_DIRECTORY "${_llmd_llama_root}")
  file(LOCK "${_llmd_llama_root}/.lock" GUARD FUNCTION TIMEOUT 3600 RESULT_VARIABLE lock_rc)
  if(NOT lock_rc EQUAL 0)
    message(FATAL_ERROR "llama.cpp: could not lock ${_llmd_llama_root}/.lock: ${lock_rc}")
  endif()
  if(EXISTS "${stamp}")
    get_filename_component(where "${stamp}" DIRECTORY)
    message(STATUS "llama.cpp: using cached build ${where}")
    return()
  endif()

  _llmd_fetch_llama_source()
  _llmd_llama_common_args(common)
  cmake_host_system_information(RESULT ncpu QUERY NUMBER_OF_LOGICAL_CORES)
  set(configure ${A_CONFIGURE})
  if(A_PREFIX)
    file(REMOVE_RECURSE "${A_PREFIX}")
    list(APPEND configure "-DCMAKE_INSTALL_PREFIX=${A_PREFIX}")
  endif()
  set(targets)
  if(A_TARGETS)
    set(targets --target ${A_TARGETS})
  endif()
  set(log "${build_dir}.log")
  file(REMOVE "${log}")
  _llmd_run("configuring ${what} (first build; cached afterwards under ${_llmd_llama_root}; log: ${log})"
    LOG "${log}" ${CMAKE_COMMAND} -S "${LLMD_LLAMA_SOURCE_DIR}" -B "${build_dir}" ${common} ${configure})
  _llmd_run("building ${what} (${ncpu} jobs)"
    LOG "${log}.build" ${CMAKE_COMMAND} --build "${build_dir}" --parallel ${ncpu} ${targets})
  if(A_PREFIX)
    _llmd_run("installing into ${A_PREFIX}" LOG "${log}.install" ${CMAKE_COMMAND} --install "${build_dir}")
  endif()
  if(A_COMMON_INTO)
    # llama.cpp installs no `common`: its libraries and headers are copied (headers keep their
    # folders: common/jinja/string.h must not shadow <string.h>, so only the top is on the path).
    message(STATUS "llama.cpp: copying common into ${A_COMMON_INTO}")
    file(MAKE_DIRECTORY "${A_COMMON_INTO}/lib" "${A_COMMON_INTO}/include/llama-common")
    file(COPY "${build_dir}/common/libllama-common.a" "${build_dir}/common/libllama-common-base.a"
              "${build_dir}/vendor/cpp-httplib/libcpp-httplib.a" DESTINATION "${A_COMMON_INTO}/lib")
    file(COPY "${LLMD_LLAMA_SOURCE_DIR}/common/" DESTINATION "${A_COMMON_INTO}/include/llama-common"
         FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
  endif()
  file(WRITE "${stamp}" "${LLMD_LLAMA_COMMIT}\n")
endfunction()

function(_llmd_build_pinned_llama prefix_var)
  _llmd_llama_key(key "lib+common")
  set(prefix "${_llmd_llama_root}/install-${key}")
  _llmd_cached_llama_build("llama + ggml + common" "${_llmd_llama_root}/build-${key}" PREFIX "${prefix}"
    COMMON_INTO "${prefix}"
    CONFIGURE -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON
              -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF)
  set(${prefix_var} "${prefix}" PARENT_SCOPE)
endfunction()

# `common` alone from the pinned source, for a system llama.cpp (which has none).
function(_llmd_build_llama_common dir_var)
  _llmd_llama_key(key "common")
  set(dir "${_llmd_llama_root}/common-${key}")
  _llmd_cached_llama_build("llama.cpp common" "${_llmd_llama_root}/build-common-${key}" COMMON_INTO "${dir}"
    CONFIGURE -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON
              -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
    TARGETS llama-common)
  set(${dir_var} "${dir}" PARENT_SCOPE)
endfunction()

# The imported target `llama_common` from a directory holding lib/ and include/llama-common/.
function(_llmd_llama_common_target dir)
  find_package(Threads REQUIRED)
  add_library(llama_common STATIC IMPORTED GLOBAL)
  set_target_properties(llama_common PROPERTIES
    IMPORTED_LOCATION "${dir}/lib/libllama-common.a"
    INTERFACE_INCLUDE_DIRECTORIES "${dir}/include/llama-common"
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${dir}/include/llama-common"
    INTERFACE_LINK_LIBRARIES "${dir}/lib/libllama-common-base.a;${dir}/lib/libcpp-httplib.a;llama;Threads::Threads")
endfunction()

function(_llmd_build_llama_tools dir_var)
  _llmd_llama_key(key "tools")
  set(build_dir "${_llmd_llama_root}/tools-${key}")
  _llmd_cached_llama_build("llama.cpp tools for bench/" "${build_dir}"
    CONFIGURE -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
    TARGETS llama-bench llama-batched-bench llama-server llama-completion)
  set(${dir_var} "${build_dir}/bin" PARENT_SCOPE)
endfunction()

if(NOT LLMD_LLAMA_CPU MATCHES "^(x86-64-v3|x86-64)$")
  message(FATAL_ERROR "LLMD_LLAMA_CPU must be x86-64-v3 or x86-64 (got '${LLMD_LLAMA_CPU}')")
endif()
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
  _llmd_llama_common_target("${_llmd_llama_prefix}")
else()
  _llmd_build_llama_common(_llmd_common_dir)
  _llmd_llama_common_target("${_llmd_common_dir}")
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
