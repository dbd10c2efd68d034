/* bad_args: bad hypercall arguments answered with Xen's error codes (-EINVAL, -EEXIST,
 * -ENOENT, -ESRCH, -ENOSYS, -EFAULT), and guest pointers translated through the guest's page tables
 * page by page: a struct that straddles two virtual pages backed by non-adjacent physical
 * pages works, one that runs into an unmapped page gets -EFAULT. */
#include "guest.h"

GUEST_NAME("bad_args");

extern uint8_t alias_page_a[4096], alias_page_b[4096];

static long evtchn_op_at(int cmd, uint64_t gva) {
  return HC(__HYPERVISOR_event_channel_op, cmd, gva, 0);
}

void guest_main(void) {
  stage(10);
  evtchn_setup_vector();

  /* Bad ports. */
  EXPECT_RC(evtchn_send(GUEST_NR_PORTS), -XEN_EINVAL);
  EXPECT_RC(evtchn_send(5000), -XEN_EINVAL);
  EXPECT_RC(evtchn_send(0), -XEN_EINVAL); /* port 0 is reserved */
  evtchn_status_t st;
  EXPECT_RC(evtchn_status(GUEST_NR_PORTS, &st), -XEN_EINVAL);
  EXPECT_RC(evtchn_unmask(GUEST_NR_PORTS), -XEN_EINVAL);
  EXPECT_RC(evtchn_bind_vcpu(GUEST_NR_PORTS, 0), -XEN_EINVAL);
  EXPECT_RC(evtchn_close(GUEST_NR_PORTS), -XEN_EINVAL);

  /* Close of a free port. */
  stage(11);
  evtchn_port_t p;
  EXPECT_RC(evtchn_alloc_unbound(DOMID_SELF, &p), 0);
  EXPECT_RC(evtchn_close(p), 0);
  EXPECT_RC(evtchn_close(p), -XEN_EINVAL);
  EXPECT_RC(evtchn_close(0), -XEN_EINVAL);
  EXPECT_RC(evtchn_close(p + 10), -XEN_EINVAL);
  EXPECT_RC(evtchn_send(p), -XEN_EINVAL);

  /* VIRQs. */
  stage(12);
  evtchn_port_t t, t2;
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, 0, &t), 0);
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, 0, &t2), -XEN_EEXIST);
  EXPECT_RC(evtchn_send(t), -XEN_EINVAL);                         /* cannot send on a VIRQ port */
  EXPECT_RC(evtchn_bind_virq(VIRQ_CONSOLE, 1, &t2), -XEN_EINVAL); /* global VIRQ, vCPU != 0 */
  EXPECT_RC(evtchn_bind_virq(NR_VIRQS, 0, &t2), -XEN_EINVAL);
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, 99, &t2), -XEN_ENOENT);

  /* vCPU numbers. */
  stage(13);
  EXPECT_RC(evtchn_bind_ipi(99, &p), -XEN_ENOENT);
  EXPECT_RC(upcall_vector_set(0, 0x0f), -XEN_EINVAL);
  EXPECT_RC(upcall_vector_set(99, UPCALL_VECTOR), -XEN_ENOENT);

  /* Interdomain binding rules. */
  EXPECT_RC(evtchn_bind_interdomain(DOMID_SELF, 3000, &p), -XEN_EINVAL); /* not allocated */
  evtchn_port_t for_dom0;
  EXPECT_RC(evtchn_alloc_unbound(0, &for_dom0), 0);
  /* Offered to domain 0, so we may not take it ourselves. */
  EXPECT_RC(evtchn_bind_interdomain(DOMID_SELF, for_dom0, &p), -XEN_EINVAL);
  EXPECT_RC(evtchn_bind_interdomain(0, 999, &p), -XEN_EINVAL); /* no such backend port */
  EXPECT_RC(evtchn_bind_interdomain(5, 1, &p), -XEN_ESRCH);    /* no such domain */
  evtchn_alloc_unbound_t foreign = {.dom = 5, .remote_dom = DOMID_SELF};
  EXPECT_RC(HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &foreign), -XEN_ESRCH);

  /* Unknown hypercalls and sub-ops. */
  stage(14);
  EXPECT_RC(HC(__HYPERVISOR_tmem_op, 0, 0, 0), -XEN_ENOSYS);
  EXPECT_RC(HC(100, 0, 0, 0), -XEN_ENOSYS);
  EXPECT_RC(HYPERVISOR_event_channel_op(99, &st), -XEN_ENOSYS);
  EXPECT_RC(HYPERVISOR_sched_op(99, NULL), -XEN_ENOSYS);
  EXPECT_RC(HYPERVISOR_hvm_op(999, &st), -XEN_ENOSYS);

  /* Bad guest pointers. */
  stage(15);
  EXPECT_RC(evtchn_op_at(EVTCHNOP_alloc_unbound, UNMAPPED_GVA), -XEN_EFAULT);
  EXPECT_RC(evtchn_op_at(EVTCHNOP_send, UNMAPPED_GVA), -XEN_EFAULT);
  EXPECT_RC(HC(__HYPERVISOR_console_io, CONSOLEIO_write, 8, UNMAPPED_GVA), -XEN_EFAULT);
  EXPECT_RC(HC(__HYPERVISOR_sched_op, SCHEDOP_shutdown, UNMAPPED_GVA, 0), -XEN_EFAULT);
  EXPECT_RC(HC(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, UNMAPPED_GVA, 0), -XEN_EFAULT);
  EXPECT_RC(HC(__HYPERVISOR_hvm_op, HVMOP_set_param, UNMAPPED_GVA, 0), -XEN_EFAULT);
  /* Mapped by our page tables (identity, below 4 GiB) but past the end of guest RAM. */
  const uint64_t beyond_ram = 0xf0000000;
  const struct hvm_memmap_table_entry* mm =
      (const struct hvm_memmap_table_entry*)(uintptr_t)start_info->memmap_paddr;
  bool is_ram = false;
  for (uint32_t i = 0; i < start_info->memmap_entries; i++)
    is_ram |= mm[i].type == XEN_HVM_MEMMAP_TYPE_RAM && mm[i].addr <= beyond_ram &&
              mm[i].addr + mm[i].size > beyond_ram;
  if (!is_ram) {
    EXPECT_RC(evtchn_op_at(EVTCHNOP_alloc_unbound, beyond_ram), -XEN_EFAULT);
    EXPECT_RC(HC(__HYPERVISOR_console_io, CONSOLEIO_write, 8, beyond_ram), -XEN_EFAULT);
  } else {
    printk("bad_args: %lx is RAM here, skipping the beyond-RAM pointer checks\n", beyond_ram);
  }
  sched_poll_t poll = {.nr_ports = 1, .timeout = 1};
  set_xen_guest_handle(poll.ports, (evtchn_port_t*)UNMAPPED_GVA);
  EXPECT_RC(HYPERVISOR_sched_op(SCHEDOP_poll, &poll), -XEN_EFAULT);

  /* A struct straddling two virtual pages that map to swapped physical pages. */
  stage(16);
  evtchn_port_t before;
  EXPECT_RC(evtchn_alloc_unbound(DOMID_SELF, &before), 0);
  const uint64_t straddle = ALIAS_GVA + 4096 - 6;
  evtchn_alloc_unbound_t* op = (evtchn_alloc_unbound_t*)straddle;
  op->dom = DOMID_SELF;
  op->remote_dom = DOMID_SELF;
  op->port = 0xdeadbeef;
  CHECK(alias_page_b[4090] == (uint8_t)DOMID_SELF, "alias window is not mapped as expected");
  EXPECT_RC(evtchn_op_at(EVTCHNOP_alloc_unbound, straddle), 0);
  CHECK(op->port == before + 1, "straddling alloc_unbound wrote port %x, expected %u", op->port,
        before + 1);
  /* The port's low half lives at the end of page b, its high half at the start of page a. */
  uint32_t port_phys = (uint32_t)alias_page_b[4094] | (uint32_t)alias_page_b[4095] << 8 |
                       (uint32_t)alias_page_a[0] << 16 | (uint32_t)alias_page_a[1] << 24;
  CHECK(port_phys == before + 1, "port written to the wrong physical pages (%x)", port_phys);
  EXPECT_RC(HC(__HYPERVISOR_console_io, CONSOLEIO_write, 0, ALIAS_GVA + 4096 - 3), 0);
  memcpy((void*)(ALIAS_GVA + 4096 - 9), "straddle\n", 9);
  EXPECT_RC(HC(__HYPERVISOR_console_io, CONSOLEIO_write, 9, ALIAS_GVA + 4096 - 9), 0);

  /* A struct that runs from a mapped page into an unmapped one. */
  const uint64_t into_hole = ALIAS_GVA + 2 * 4096 - 6;
  EXPECT_RC(evtchn_op_at(EVTCHNOP_alloc_unbound, into_hole), -XEN_EFAULT);
  EXPECT_RC(evtchn_alloc_unbound(DOMID_SELF, &p), 0);
  CHECK(p == before + 2, "a faulting alloc_unbound still took a port (next is %u)", p);
  CHECK(stray_events == 0, "%u stray events", stray_events);
}
