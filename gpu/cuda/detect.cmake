# Finds the CUDA toolkit and cuDNN, for the top-level build and for a build
# of gpu/ on its own. Sets
# VISREC_HAVE_CUDA; honours -DVISREC_CUDA=OFF, -DCMAKE_CUDA_COMPILER, and
# -DCUDNN_INCLUDE_DIR / -DCUDNN_LIBRARY for a cuDNN outside the toolkit
# (e.g. the nvidia-cudnn pip package beside PyTorch).
option(VISREC_CUDA "Build the CUDA backend when a toolkit is found" ON)
set(VISREC_HAVE_CUDA OFF)
if(VISREC_CUDA)
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90-real 90-virtual)  # H100/H200 SASS + PTX
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV CUDNN_INCLUDE_DIR)
    find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} ENV CUDNN_LIBRARY_DIR)
    if(CUDAToolkit_FOUND AND CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY)
      set(VISREC_HAVE_CUDA ON)
      message(STATUS "gpu: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
        "cuDNN ${CUDNN_LIBRARY}, arch ${CMAKE_CUDA_ARCHITECTURES})")
    else()
      message(STATUS "gpu: CUDA compiler found but cuDNN missing: CUDA backend skipped")
    endif()
  else()
    message(STATUS "gpu: no CUDA toolkit found: CPU backend only")
  endif()
endif()
