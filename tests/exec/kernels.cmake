# The execution service's built-in kernels, CPU and Vulkan (lavapipe where
# there is no GPU), in one process. Included from tests/exec/CMakeLists.txt.
lf_add_test(test_exec_kernels SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_kernels.cpp LIBS lf_exec_kernels
            LABELS "exec;unit" TIMEOUT 120)
