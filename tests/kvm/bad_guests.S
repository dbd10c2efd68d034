/* Two tiny PVH guests for the CLI's failure paths, selected by BAD_GUEST at build time:
 * 1 = spins forever (the --timeout watchdog must end it), 2 = triple fault (empty IDT + int3),
 * 3 = raw vmcall (hangs the vCPU on PVM; only the watchdog's _exit gets out). */
#include <xen/elfnote.h>

        .section .note.Xen, "a", @note
        .p2align 2
        .long 4, 4, XEN_ELFNOTE_PHYS32_ENTRY
        .asciz "Xen"
        .long start32

        .text
        .code32
        .globl start32
start32:
        movl $1, %eax
        outl %eax, $0xe4          /* stage 1: we ran */
#if BAD_GUEST == 1
1:      jmp 1b
#elif BAD_GUEST == 2
        lidt idt_empty
        int3
1:      jmp 1b
idt_empty:
        .word 0
        .long 0
#else
        vmcall
1:      jmp 1b
#endif
