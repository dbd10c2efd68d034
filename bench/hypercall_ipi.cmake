# The hypercall / IPI benchmark guest (bench/hypercall_ipi_bench.c): a freestanding PVH guest
# built like guests/ (needs their runtime). Included once, by tests/kvm/CMakeLists.txt (its
# kvm-labelled smoke test runs it); the image lands in that directory's build folder:
#   build/<preset>/cli/xenkvm run --vcpus 2 build/<preset>/tests/kvm/bench_hypercall_ipi.elf
if(TARGET guest_runtime AND NOT TARGET bench_hypercall_ipi)
  set(bench_guest_lds ${PROJECT_SOURCE_DIR}/guests/runtime/link.ld)
  add_executable(bench_hypercall_ipi ${CMAKE_CURRENT_LIST_DIR}/hypercall_ipi_bench.c)
  # Host-only directory options (sanitizers) must not reach a freestanding guest.
  set_target_properties(bench_hypercall_ipi PROPERTIES COMPILE_OPTIONS "" LINK_OPTIONS "")
  target_link_libraries(bench_hypercall_ipi PRIVATE guest_runtime)
  set_target_properties(bench_hypercall_ipi PROPERTIES SUFFIX .elf C_STANDARD 11 C_EXTENSIONS ON
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR} LINK_DEPENDS ${bench_guest_lds})
  target_link_options(bench_hypercall_ipi PRIVATE
    -nostdlib -static -no-pie -Wl,-T,${bench_guest_lds} -Wl,--build-id=none
    -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack)
endif()
