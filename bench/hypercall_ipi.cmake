# The hypercall / IPI benchmark guest (bench/hypercall_ipi_bench.c): a freestanding PVH guest
# built like guests/ (needs their runtime). Include from bench/CMakeLists.txt:
#   include(${CMAKE_CURRENT_SOURCE_DIR}/hypercall_ipi.cmake)
# Run: build/<preset>/cli/xenkvm run --vcpus 2 build/<preset>/bench/bench_hypercall_ipi.elf
if(TARGET guest_runtime)
  add_executable(bench_hypercall_ipi ${CMAKE_CURRENT_LIST_DIR}/hypercall_ipi_bench.c)
  target_link_libraries(bench_hypercall_ipi PRIVATE guest_runtime)
  set_target_properties(bench_hypercall_ipi PROPERTIES SUFFIX .elf C_STANDARD 11 C_EXTENSIONS ON
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR} LINK_DEPENDS ${GUEST_LINKER_SCRIPT})
  target_link_options(bench_hypercall_ipi PRIVATE
    -nostdlib -static -no-pie -Wl,-T,${GUEST_LINKER_SCRIPT} -Wl,--build-id=none
    -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack)
endif()
