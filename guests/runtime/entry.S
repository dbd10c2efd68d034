/* PVH entry for xenkvm test guests: Xen starts us in 32-bit flat protected mode, paging off,
 * with ebx = GPA of struct hvm_start_info (xen/arch-x86/hvm/start_info.h). We go straight to
 * long mode on static identity-mapped page tables (32-bit paged modes are avoided: see
 * docs/design.md section 7), then call runtime_start(start_info). Also: the 64-bit entry for vCPUs
 * started by VCPUOP_initialise, exception and upcall stubs. */
#include <xen/elfnote.h>

#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define PTE_P 0x1
#define PTE_RW 0x2
#define PTE_PS 0x80
#define STACK_SIZE 16384
#define SEL_CODE64 0x08
#define SEL_DATA 0x10

/* ---- the Xen PVH entry note: 32-bit physical entry point ---- */
        .section .note.Xen, "a", @note
        .p2align 2
        .long 2f - 1f           /* namesz */
        .long 4f - 3f           /* descsz */
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
        movl %ebx, pvh_start_info_pa
        lgdt gdt_desc
        movl %cr4, %eax
        orl $CR4_PAE, %eax
        movl %eax, %cr4
        movl $pml4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl %cr0, %eax
        orl $(CR0_PG | CR0_PE), %eax
        movl %eax, %cr0
        ljmp $SEL_CODE64, $start64

        .code64
start64:
        movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %eax, %fs
        movl %eax, %gs
        leaq vcpu_stacks + STACK_SIZE(%rip), %rsp
        xorl %ebp, %ebp
        movl pvh_start_info_pa(%rip), %edi
        call runtime_start
1:      cli
        hlt
        jmp 1b

/* Secondary vCPUs: VCPUOP_initialise puts them here in long mode with cr3 = our page tables,
 * rsp = top of their stack, rdi = vCPU id. Load our GDT and reload every selector. */
        .globl ap_start64
ap_start64:
        lgdt gdt_desc(%rip)
        pushq $SEL_CODE64
        leaq 1f(%rip), %rax
        pushq %rax
        lretq
1:      movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %eax, %fs
        movl %eax, %gs
        xorl %ebp, %ebp
        call runtime_ap_start
2:      cli
        hlt
        jmp 2b

/* ---- exceptions: push a dummy error code where the CPU pushes none, then the vector ---- */
.macro EXC_STUB vec
exc_stub_\vec:
.if !((\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30))
        pushq $0
.endif
        pushq $\vec
        jmp exc_common
.endm
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        EXC_STUB \v
        .endr

exc_common:
        pushq %rax
        pushq %rbx
        pushq %rcx
        pushq %rdx
        pushq %rsi
        pushq %rdi
        pushq %rbp
        pushq %r8
        pushq %r9
        pushq %r10
        pushq %r11
        pushq %r12
        pushq %r13
        pushq %r14
        pushq %r15
        movq %rsp, %rdi
        call exception_handler  /* does not return */
1:      cli
        hlt
        jmp 1b

/* ---- upcalls: save the caller-saved registers, call evtchn_upcall(eoi) ---- */
.macro UPCALL_STUB name, eoi
        .globl \name
\name:
        pushq %rax
        pushq %rcx
        pushq %rdx
        pushq %rsi
        pushq %rdi
        pushq %r8
        pushq %r9
        pushq %r10
        pushq %r11
        movl $\eoi, %edi
        call evtchn_upcall
        popq %r11
        popq %r10
        popq %r9
        popq %r8
        popq %rdi
        popq %rsi
        popq %rdx
        popq %rcx
        popq %rax
        iretq
.endm
        UPCALL_STUB upcall_vector_entry, 1   /* per-vCPU vector: a LAPIC interrupt, EOI it */
        UPCALL_STUB callback_vector_entry, 0 /* global callback vector: never EOI'd */

        .globl spurious_entry
spurious_entry:
        iretq

        .section .rodata
        .p2align 3
        .globl exc_stubs
exc_stubs:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad exc_stub_\v
        .endr

        .data
        .p2align 4
gdt:
        .quad 0
        .quad 0x00af9a000000ffff        /* 0x08: 64-bit code, DPL0 */
        .quad 0x00cf92000000ffff        /* 0x10: flat data */
gdt_end:
        .p2align 4
        .word 0
        .globl gdt_desc
gdt_desc:
        .word gdt_end - gdt - 1
        .quad gdt

        .globl pvh_start_info_pa
        .p2align 2
pvh_start_info_pa:
        .long 0

/* ---- page tables: identity map 0..4 GiB with 2 MiB pages, plus the alias window ---- */
        .section .data.pagetables, "aw"
        .p2align 12
        .globl pml4
pml4:
        .quad pdpt + PTE_P + PTE_RW
        .quad alias_pdpt + PTE_P + PTE_RW      /* GVA 512 GiB: ALIAS_GVA */
        .fill 510, 8, 0
pdpt:
        .quad pd + PTE_P + PTE_RW
        .quad pd + 0x1000 + PTE_P + PTE_RW
        .quad pd + 0x2000 + PTE_P + PTE_RW
        .quad pd + 0x3000 + PTE_P + PTE_RW
        .fill 508, 8, 0
pd:
        .set addr, 0
        .rept 2048
        .quad addr + PTE_P + PTE_RW + PTE_PS
        .set addr, addr + 0x200000
        .endr
alias_pdpt:
        .quad alias_pd + PTE_P + PTE_RW
        .fill 511, 8, 0
alias_pd:
        .quad alias_pt + PTE_P + PTE_RW
        .fill 511, 8, 0
/* Two physical pages mapped in swapped order, then a hole: a struct that straddles the first
 * two virtual pages lands on non-contiguous physical pages; one straddling into the third
 * faults. */
alias_pt:
        .quad alias_page_b + PTE_P + PTE_RW
        .quad alias_page_a + PTE_P + PTE_RW
        .fill 510, 8, 0

        .section .bss.pages, "aw", @nobits
        .p2align 12
        .globl alias_page_a, alias_page_b
alias_page_a:
        .skip 4096
alias_page_b:
        .skip 4096

        .section .note.GNU-stack, "", @progbits
