# ctest: libllmclient's soname is libllmclient.so.1 (the ABI version, LLMC_ABI_VERSION).
#   cmake -DLIB=path/to/libllmclient.so -P check_soname.cmake
execute_process(COMMAND readelf -d "${LIB}" OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT out MATCHES "\\(SONAME\\) *Library soname: \\[libllmclient\\.so\\.1\\]")
  message(FATAL_ERROR "libllmclient's soname is not libllmclient.so.1:\n${out}")
endif()
