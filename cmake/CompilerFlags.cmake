# Warnings and sanitizers for llmd's own targets (never for llama.cpp, which is built separately).
# Every llmd target calls llmd_target_defaults().

set(LLMD_WARNING_FLAGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Wunused -Woverloaded-virtual -Wimplicit-fallthrough -Wformat=2)
set(LLMD_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

function(llmd_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LLMD_WARNING_FLAGS}>)
  if(LLMD_SANITIZE)
    target_compile_options(${target} PRIVATE ${LLMD_SANITIZER_FLAGS})
    target_link_options(${target} PRIVATE ${LLMD_SANITIZER_FLAGS})
  endif()
endfunction()
