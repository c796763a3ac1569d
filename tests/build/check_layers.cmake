# ctest (build.include_layers): every folder includes only its own headers and those of the layers
# below it, so the includes show the architecture (ARCHITECTURE.md, "Layers"):
#
#   common → engine → {kvstore, scheduler} → core → ipc → daemon        client-lib apart
#
# A file in one layer may include a header of a lower layer, never of its own rank's sibling or of
# a higher one (no upward include, hence no cycle). llama.cpp's headers (llama.h, ggml*.h, gguf.h,
# and its common library's: chat.h, common.h, sampling.h, log.h, json-schema*.h, peg-parser.h)
# are included only in engine/ and in tools/model_gen/ (which writes GGUF files). client-lib/
# includes only itself and its public headers: it is built for other programs and knows nothing
# of the daemon. tools/ may use any library layer below the daemon; tests/, bench/ and fuzz/ may
# include anything.
#   cmake -DROOT=path/to/source -P check_layers.cmake
cmake_minimum_required(VERSION 3.25)
if(NOT ROOT)
  message(FATAL_ERROR "usage: cmake -DROOT=<source dir> -P check_layers.cmake")
endif()

# rank of each layer; a file may include a folder of strictly lower rank, or its own folder.
set(rank_common 0)
set(rank_engine 1)
set(rank_kvstore 2)
set(rank_scheduler 2)
set(rank_core 3)
set(rank_ipc 4)
set(rank_daemon 5)
set(layers common engine kvstore scheduler core ipc daemon)
set(project_folders ${layers} client-lib tools tests bench fuzz)

set(violations "")
set(checked 0)

function(check_file file layer)
  file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
  file(RELATIVE_PATH rel "${ROOT}" "${file}")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*[<\"]([^>\"]*)[>\"].*$" "\\1" inc "${line}")
    set(bad "")
    if(inc MATCHES "^(llama|ggml|gguf)[a-z0-9_-]*\\.h$" OR
       inc MATCHES "^(chat|common|sampling|log|json-schema-to-grammar|json-schema|peg-parser)\\.h$")
      if(NOT layer STREQUAL "engine" AND NOT rel MATCHES "^tools/model_gen/")
        set(bad "llama.cpp's ${inc} outside engine/")
      endif()
    elseif(line MATCHES "\"" AND inc MATCHES "^([a-z_-]+)/" AND CMAKE_MATCH_1 IN_LIST project_folders)
      set(target "${CMAKE_MATCH_1}")
      if(layer STREQUAL "client-lib")
        if(NOT target STREQUAL "client-lib")
          set(bad "client-lib includes ${target}/")
        endif()
      elseif(layer STREQUAL "tools")
        if(target STREQUAL "daemon" OR target STREQUAL "ipc" OR target STREQUAL "core"
           OR target STREQUAL "tests" OR target STREQUAL "bench" OR target STREQUAL "fuzz")
          set(bad "tools/ includes ${target}/")
        endif()
      elseif(DEFINED rank_${target} AND NOT target STREQUAL layer)
        if(NOT rank_${target} LESS rank_${layer})
          set(bad "${layer} (rank ${rank_${layer}}) includes ${target} (rank ${rank_${target}})")
        endif()
      elseif(NOT DEFINED rank_${target})  # tools/, client-lib/, tests/, bench/, fuzz/
        set(bad "${layer} includes ${target}/")
      endif()
    endif()
    if(bad)
      set(violations "${violations}\n  ${rel}: #include ${inc} (${bad})")
    endif()
  endforeach()
  set(violations "${violations}" PARENT_SCOPE)
endfunction()

foreach(layer IN LISTS layers ITEMS client-lib tools)
  file(GLOB_RECURSE files "${ROOT}/${layer}/*.h" "${ROOT}/${layer}/*.hpp" "${ROOT}/${layer}/*.cpp" "${ROOT}/${layer}/*.c")
  foreach(f IN LISTS files)
    check_file("${f}" "${layer}")
    math(EXPR checked "${checked} + 1")
  endforeach()
endforeach()

if(NOT DEFINED MIN_FILES)
  set(MIN_FILES 100)
endif()
if(checked LESS MIN_FILES)
  message(FATAL_ERROR "only ${checked} files found under ${ROOT}: wrong ROOT?")
endif()
if(violations)
  message(FATAL_ERROR "includes that break the layering (ARCHITECTURE.md, \"Layers\"):${violations}")
endif()
message(STATUS "${checked} files: every include stays within its layer or goes below it")
