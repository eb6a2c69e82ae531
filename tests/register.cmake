# Included by ctest (TEST_INCLUDE_FILES) for each binary of
# vr_add_test_binary: registers one test per name in VR_NAMES, the list
# tests/discover.cmake wrote after the last build, with the properties the
# CMakeLists gave (VR_PREFIX, VR_LABELS, VR_TIMEOUT, VR_ENVIRONMENT,
# VR_TIMEOUTS).
if(NOT EXISTS "${VR_NAMES}")
  add_test("${VR_PREFIX}.NOT_BUILT" "${VR_BIN}" --list-not-built)
  return()
endif()
file(STRINGS "${VR_NAMES}" _vr_names)
foreach(_vr_name IN LISTS _vr_names)
  set(_vr_timeout ${VR_TIMEOUT})
  list(FIND VR_TIMEOUTS "${_vr_name}" _vr_at)
  if(_vr_at GREATER_EQUAL 0)
    math(EXPR _vr_at "${_vr_at} + 1")
    list(GET VR_TIMEOUTS ${_vr_at} _vr_timeout)
  endif()
  add_test("${VR_PREFIX}.${_vr_name}" "${VR_BIN}" "${_vr_name}")
  set_tests_properties("${VR_PREFIX}.${_vr_name}" PROPERTIES SKIP_RETURN_CODE 77
    TIMEOUT ${_vr_timeout} LABELS "${VR_LABELS}")
  if(VR_ENVIRONMENT)
    set_tests_properties("${VR_PREFIX}.${_vr_name}" PROPERTIES ENVIRONMENT "${VR_ENVIRONMENT}")
  endif()
endforeach()
# A name in TIMEOUTS that is no test is a mistake in a CMakeLists: a test
# that fails says so.
list(LENGTH VR_TIMEOUTS _vr_n)
foreach(_vr_i RANGE 0 ${_vr_n} 2)
  if(_vr_i LESS _vr_n)
    list(GET VR_TIMEOUTS ${_vr_i} _vr_name)
    list(FIND _vr_names "${_vr_name}" _vr_at)
    if(_vr_at LESS 0)
      add_test("${VR_PREFIX}.${_vr_name}" "${VR_BIN}" "${_vr_name}")
    endif()
  endif()
endforeach()
