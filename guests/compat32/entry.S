/* PVH entry of the 32-bit compat guest: Xen starts us in 32-bit flat protected mode, paging
 * off, ebx = GPA of hvm_start_info. We stay there (32-bit paging triple-faults under PVM) and
 * call compat32_main(start_info) with interrupts off for good. */
#include <xen/elfnote.h>

        .section .note.Xen, "a", @note
        .p2align 2
        .long 2f - 1f
        .long 4f - 3f
        .long XEN_ELFNOTE_PHYS32_ENTRY
1:      .asciz "Xen"
2:      .p2align 2
3:      .long pvh_start32
4:      .p2align 2

        .section .text.entry, "ax"
        .code32
        .globl pvh_start32
pvh_start32:
        cli
        cld
        movl $stack_top, %esp
        pushl %ebx
        call compat32_main
1:      hlt
        jmp 1b

        .bss
        .p2align 4
        .skip 16384
stack_top:
