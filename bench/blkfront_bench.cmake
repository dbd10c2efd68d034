# The PV-disk round-trip benchmark guest (bench/blkfront_bench.c), built like guests/ (needs
# their runtime). Included by tests/kvm/CMakeLists.txt, whose kvm-labelled smoke test makes a
# disk image and runs it:
#   build/<preset>/cli/xenkvm run --disk IMAGE build/<preset>/tests/kvm/bench_blkfront.elf
if(TARGET guest_runtime AND NOT TARGET bench_blkfront)
  set(bench_guest_lds ${PROJECT_SOURCE_DIR}/guests/runtime/link.ld)
  add_executable(bench_blkfront ${CMAKE_CURRENT_LIST_DIR}/blkfront_bench.c)
  # Host-only directory options (sanitizers) must not reach a freestanding guest.
  set_target_properties(bench_blkfront PROPERTIES COMPILE_OPTIONS "" LINK_OPTIONS "")
  target_link_libraries(bench_blkfront PRIVATE guest_runtime)
  set_target_properties(bench_blkfront PROPERTIES SUFFIX .elf C_STANDARD 11 C_EXTENSIONS ON
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR} LINK_DEPENDS ${bench_guest_lds})
  target_link_options(bench_blkfront PRIVATE
    -nostdlib -static -no-pie -Wl,-T,${bench_guest_lds} -Wl,--build-id=none
    -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack)
endif()
