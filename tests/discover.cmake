# Run by vr_add_test_binary (tests/CMakeLists.txt) after a test binary is
# built: asks it for its tests (BIN --list) and writes their names to OUT,
# one per line, for tests/register.cmake.
cmake_minimum_required(VERSION 3.25)
execute_process(COMMAND ${BIN} --list RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${BIN} --list failed (${rc}): ${err}")
endif()
string(REGEX REPLACE "\n$" "" out "${out}")
string(REPLACE "\n" ";" names "${out}")
if(NOT names)
  message(FATAL_ERROR "${BIN} --list names no test")
endif()
foreach(name IN LISTS names)
  if(NOT name MATCHES "^[A-Za-z0-9_]+$")
    message(FATAL_ERROR "${BIN} --list printed \"${name}\", which is no test name")
  endif()
endforeach()
file(WRITE ${OUT} "${out}\n")
