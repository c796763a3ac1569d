# Warnings and sanitizers for llmd's own targets (never for llama.cpp, which is built separately).
# Every llmd target calls llmd_target_defaults().
#
# LLMD_FUZZ (clang only): llmd's own code gets libFuzzer's coverage instrumentation
# (-fsanitize=fuzzer-no-link) with ASan + UBSan; the fuzz targets in fuzz/ link libFuzzer itself.
# Whatever the build type, -O1 and line tables only (what libFuzzer suggests; half the compile time
# of -O2 -g in CI); scripts/fuzz.sh configures Debug, so assertions stay on.

set(LLMD_WARNING_FLAGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Wunused -Woverloaded-virtual -Wimplicit-fallthrough -Wformat=2)
# clang proves the locking annotated with common/mutex.h (LLMD_GUARDED_BY, LLMD_REQUIRES): a
# violation is a compile error. The fuzz tree (clang) builds every llmd library, so CI checks it.
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  list(APPEND LLMD_WARNING_FLAGS -Wthread-safety -Werror=thread-safety)
  # Proof that the analysis is effective with these flags: a known violation must not compile.
  try_compile(_llmd_violation_compiles "${CMAKE_BINARY_DIR}/thread-safety-check"
    SOURCES "${CMAKE_CURRENT_LIST_DIR}/checks/thread_safety_violation.cpp"
    COMPILE_DEFINITIONS ${LLMD_WARNING_FLAGS} "-I${PROJECT_SOURCE_DIR}"
    CXX_STANDARD 20
    OUTPUT_VARIABLE _llmd_violation_output)
  if(_llmd_violation_compiles)
    message(FATAL_ERROR "clang's thread-safety analysis is not effective: "
                        "cmake/checks/thread_safety_violation.cpp compiled")
  endif()
  if(NOT _llmd_violation_output MATCHES "requires holding mutex")
    message(FATAL_ERROR "cmake/checks/thread_safety_violation.cpp failed to compile for another reason "
                        "than the locking violation:\n${_llmd_violation_output}")
  endif()
  message(STATUS "clang thread-safety analysis: on (a locking violation is a compile error)")
endif()
set(LLMD_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
set(LLMD_FUZZ_FLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
    -O1 -gline-tables-only)

if(LLMD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "LLMD_FUZZ=ON needs clang (libFuzzer): configure with -DCMAKE_C_COMPILER=clang-14 "
                        "-DCMAKE_CXX_COMPILER=clang++-14 (scripts/fuzz.sh does)")
  endif()
  if(LLMD_SANITIZE)
    message(FATAL_ERROR "LLMD_FUZZ=ON already builds with ASan + UBSan: leave LLMD_SANITIZE off")
  endif()
endif()

function(llmd_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LLMD_WARNING_FLAGS}>)
  if(LLMD_SANITIZE)
    target_compile_options(${target} PRIVATE ${LLMD_SANITIZER_FLAGS})
    target_link_options(${target} PRIVATE ${LLMD_SANITIZER_FLAGS})
  elseif(LLMD_FUZZ)
    target_compile_options(${target} PRIVATE ${LLMD_FUZZ_FLAGS})
    target_link_options(${target} PRIVATE ${LLMD_FUZZ_FLAGS})
  endif()
endfunction()
