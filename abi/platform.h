/* The xenkvm platform contract between the VMM and guests: how hypercalls trap without kernel
 * Xen support, and where guests report test stages. Plain C so freestanding guests can use it. */
#ifndef XENKVM_ABI_PLATFORM_H
#define XENKVM_ABI_PLATFORM_H

/* CPUID leaves 0x40000000.. carry "XenVMMXenVMM"; leaf +2 names the hypercall-page MSR. */
#define XENKVM_CPUID_BASE 0x40000000u
#define XENKVM_HYPERCALL_PAGE_MSR 0x40000000u

/* Hypercall page stubs are `mov $nr,%eax; out %eax,$XENKVM_HYPERCALL_PORT; ret` padded to 32
 * bytes. `out` with an immediate port takes 8 bits and leaves edx (argument 3) untouched. */
#define XENKVM_HYPERCALL_PORT 0xe0u
#define XENKVM_HYPERCALL_STUB_SIZE 32u

/* 32-bit OUT: a guest's progress marker (stage number); the VMM logs it and reports the last
 * one seen when a guest hangs or crashes. */
#define XENKVM_STAGE_PORT 0xe4u

/* 8-bit OUT: the Bochs/QEMU debug console; bytes go to the VMM's stdout like console_io. */
#define XENKVM_DEBUGCON_PORT 0xe9u

/* The VMM's echo service: EVTCHNOP_bind_interdomain(remote_dom = 0, remote_port =
 * XENKVM_ECHO_ENDPOINT) connects; each send on the local port is answered by raising it. */
#define XENKVM_ECHO_ENDPOINT 1u

#endif
