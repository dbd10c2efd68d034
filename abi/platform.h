/* The xenkvm platform contract between the VMM and guests: how hypercalls trap without kernel
 * Xen support, and where guests report test stages. Plain C so freestanding guests can use it. */
#ifndef XENKVM_ABI_PLATFORM_H
#define XENKVM_ABI_PLATFORM_H

/* CPUID leaves 0x40000000.. carry "XenVMMXenVMM"; leaf +2 names the hypercall-page MSR. */
#define XENKVM_CPUID_BASE 0x40000000u
#define XENKVM_HYPERCALL_PAGE_MSR 0x40000000u

/* The hypercall trap is `out %eax,$XENKVM_HYPERCALL_PORT` (2 bytes: e7 e0; an immediate port
 * leaves edx, argument 3, untouched). Hypercall page stubs are that trap then `ret`, padded to
 * 32 bytes: the VMM takes the number from the stub's slot, not from eax. An inline trap (no
 * page) carries the number in eax. */
#define XENKVM_HYPERCALL_PORT 0xe0u
#define XENKVM_HYPERCALL_TRAP_LENGTH 2u
#define XENKVM_HYPERCALL_STUB_SIZE 32u

/* 32-bit OUT: a guest's progress marker (stage number); the VMM logs it and reports the last
 * one seen when a guest hangs or crashes. */
#define XENKVM_STAGE_PORT 0xe4u

/* 8-bit OUT: the Bochs/QEMU debug console; bytes go to the VMM's stdout like console_io. */
#define XENKVM_DEBUGCON_PORT 0xe9u

/* ACPI's hardware-reduced power control (ACPI 6.x 4.8.3.7 and 5.2.9): the FADT names these
 * 8-bit ports as SLEEP_CONTROL_REG / SLEEP_STATUS_REG and RESET_REG, and the DSDT's \_S5 gives
 * SLP_TYP 5. Writing SLP_EN | SLP_TYP 5 << 2 powers the guest off (as SCHEDOP_shutdown
 * poweroff); writing the reset value reboots it (as SCHEDOP_shutdown reboot). Linux uses them
 * when no Xen-specific path is taken (`poweroff -f`, ACPI reboot). Reads give 0. */
#define XENKVM_ACPI_SLEEP_PORT 0xe5u
#define XENKVM_ACPI_RESET_PORT 0xe6u
#define XENKVM_ACPI_SLP_TYP_S5 5u
#define XENKVM_ACPI_SLP_EN 0x20u
#define XENKVM_ACPI_RESET_VALUE 0x01u

/* The VMM's echo service: EVTCHNOP_bind_interdomain(remote_dom = 0, remote_port =
 * XENKVM_ECHO_ENDPOINT) connects; each send on the local port is answered by raising it. */
#define XENKVM_ECHO_ENDPOINT 1u

/* `xenkvm run --test-device`: an MSI-capable test device, one MMIO page (reserved in the memory
 * map) of 64-bit little-endian registers. The guest programs an MSI address/data pair; vector 0
 * is Xen's PIRQ form (PIRQ in address bits 19:12 and 63:40), delivered as an event through
 * eventfd -> route -> PIRQ -> port; any other vector is an ordinary MSI through a KVM irqfd.
 * FIRE n: the host thread signals n interrupts back to back; FIRE_PACED n: one at a time, each
 * after the guest's ACK, timing signal -> ACK (printed by the VMM at exit). SEQ counts signals
 * so far: a handler that reads SEQ == n after its last event has lost none. */
#define XENKVM_TEST_DEVICE_GPA 0xfe800000ull
#define XENKVM_TEST_DEVICE_MSI_ADDR 0x00u    /* rw: MSI address */
#define XENKVM_TEST_DEVICE_MSI_DATA 0x08u    /* rw: MSI data (bits 7:0 = vector) */
#define XENKVM_TEST_DEVICE_FIRE 0x10u        /* w: signal n interrupts */
#define XENKVM_TEST_DEVICE_FIRE_PACED 0x18u  /* w: signal n interrupts, each after an ACK */
#define XENKVM_TEST_DEVICE_ACK 0x20u         /* w: the guest handled one (paced mode) */
#define XENKVM_TEST_DEVICE_SEQ 0x28u         /* r: interrupts signalled so far */
#define XENKVM_TEST_DEVICE_CLEAR_TIMES 0x30u /* w: forget the paced timings so far */
#define XENKVM_TEST_DEVICE_MAX_FIRE 1000000u /* a larger n is cut to this */

#endif
