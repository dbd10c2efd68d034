/* xenkvm guest runtime: the FIFO event channel ABI (xen/include/public/event_channel.h) seen
 * from the guest. Per-vCPU control blocks (EVTCHNOP_init_control), event array pages added one
 * at a time (EVTCHNOP_expand_array), and the consumer: take the READY bits, always serve the
 * highest-priority ready queue, one event at a time, following LINK and clearing LINKED. */
#include "guest.h"

#define WORD_BIT(b) (1u << (b))

uint8_t fifo_control_pages[GUEST_MAX_VCPUS][4096]
    __attribute__((aligned(4096), section(".bss.pages")));
uint8_t fifo_array_pages[FIFO_GUEST_ARRAY_PAGES][4096]
    __attribute__((aligned(4096), section(".bss.pages")));
volatile uint32_t fifo_active;
volatile uint32_t fifo_array_nr;
volatile uint32_t fifo_hits[FIFO_GUEST_PORTS];
volatile uint8_t fifo_last_vcpu[FIFO_GUEST_PORTS];
volatile uint32_t fifo_bad_events; /* events on ports past our array or with no word */
volatile uint32_t fifo_log[FIFO_LOG_SIZE];
volatile uint32_t fifo_log_len;
/* The head each vCPU is working through per queue: Xen writes the control block's head only
 * when a queue was empty, so a consumer keeps its own copy while it walks a list. */
static uint32_t local_head[GUEST_MAX_VCPUS][EVTCHN_FIFO_MAX_QUEUES];

static evtchn_fifo_control_block_t* control_of(unsigned vcpu) {
  return (evtchn_fifo_control_block_t*)fifo_control_pages[vcpu];
}

volatile event_word_t* fifo_word(evtchn_port_t port) {
  if (port >= fifo_array_nr * FIFO_WORDS_PER_PAGE) return NULL;
  return (volatile event_word_t*)fifo_array_pages[port / FIFO_WORDS_PER_PAGE] +
         port % FIFO_WORDS_PER_PAGE;
}

long fifo_init_control(unsigned vcpu) {
  memset(fifo_control_pages[vcpu], 0, 4096);
  memset(local_head[vcpu], 0, sizeof(local_head[vcpu]));
  evtchn_init_control_t op = {
      .control_gfn = (uintptr_t)fifo_control_pages[vcpu] >> 12, .offset = 0, .vcpu = vcpu};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &op);
  if (rc == 0) {
    if (op.link_bits != EVTCHN_FIFO_LINK_BITS) return -XEN_EINVAL;
    __atomic_store_n(&fifo_active, 1, __ATOMIC_SEQ_CST);
  }
  return rc;
}

long fifo_expand_array(void) {
  uint32_t n = fifo_array_nr;
  if (n >= FIFO_GUEST_ARRAY_PAGES) return -XEN_ENOSPC;
  memset(fifo_array_pages[n], 0, 4096); /* every word: not pending, unmasked, unlinked */
  evtchn_expand_array_t op = {.array_gfn = (uintptr_t)fifo_array_pages[n] >> 12};
  /* Events parked for this page are linked during the hypercall: the consumer must know the
   * page before the upcall they raise is taken, which is right after the hypercall returns. */
  uint64_t flags = irq_save();
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &op);
  if (rc == 0) __atomic_store_n(&fifo_array_nr, n + 1, __ATOMIC_SEQ_CST);
  irq_restore(flags);
  return rc;
}

long fifo_set_priority(evtchn_port_t port, uint32_t priority) {
  evtchn_set_priority_t op = {.port = port, .priority = priority};
  return HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &op);
}

void fifo_mask(evtchn_port_t port) {
  volatile event_word_t* w = fifo_word(port);
  if (w) __atomic_fetch_or(w, WORD_BIT(EVTCHN_FIFO_MASKED), __ATOMIC_SEQ_CST);
}

bool fifo_is_pending(evtchn_port_t port) {
  volatile event_word_t* w = fifo_word(port);
  return w && (__atomic_load_n(w, __ATOMIC_SEQ_CST) & WORD_BIT(EVTCHN_FIFO_PENDING));
}

bool fifo_is_linked(evtchn_port_t port) {
  volatile event_word_t* w = fifo_word(port);
  return w && (__atomic_load_n(w, __ATOMIC_SEQ_CST) & WORD_BIT(EVTCHN_FIFO_LINKED));
}

void fifo_reset_state(void) {
  __atomic_store_n(&fifo_active, 0, __ATOMIC_SEQ_CST);
  fifo_array_nr = 0;
  memset(local_head, 0, sizeof(local_head));
}

/* Clears LINKED and the LINK field in one step, returning the link it had. The engine may be
 * setting LINK (with BUSY) at the same time, hence the compare-and-exchange. */
static uint32_t take_link(volatile event_word_t* w) {
  event_word_t old = __atomic_load_n(w, __ATOMIC_SEQ_CST);
  for (;;) {
    event_word_t next = old & ~(WORD_BIT(EVTCHN_FIFO_LINKED) | EVTCHN_FIFO_LINK_MASK);
    if (__atomic_compare_exchange_n(w, &old, next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return old & EVTCHN_FIFO_LINK_MASK;
  }
}

/* Takes one event off queue q; clears q from *ready when that was its last. */
static void consume_one(unsigned cpu, unsigned q, uint32_t* ready) {
  evtchn_fifo_control_block_t* cb = control_of(cpu);
  uint32_t port = local_head[cpu][q];
  if (port == 0) port = __atomic_load_n(&cb->head[q], __ATOMIC_ACQUIRE);
  volatile event_word_t* w = fifo_word(port);
  if (port == 0 || !w) {
    fifo_bad_events++;
    local_head[cpu][q] = 0;
    *ready &= ~(1u << q);
    return;
  }
  uint32_t next = take_link(w);
  if (next == 0) *ready &= ~(1u << q);
  local_head[cpu][q] = next;
  event_word_t word = __atomic_load_n(w, __ATOMIC_SEQ_CST);
  if ((word & WORD_BIT(EVTCHN_FIFO_PENDING)) && !(word & WORD_BIT(EVTCHN_FIFO_MASKED))) {
    __atomic_fetch_and(w, ~WORD_BIT(EVTCHN_FIFO_PENDING), __ATOMIC_SEQ_CST);
    if (port < FIFO_GUEST_PORTS) {
      fifo_last_vcpu[port] = (uint8_t)cpu;
      __atomic_fetch_add(&fifo_hits[port], 1, __ATOMIC_SEQ_CST);
      uint32_t at = __atomic_fetch_add(&fifo_log_len, 1, __ATOMIC_SEQ_CST);
      if (at < FIFO_LOG_SIZE) fifo_log[at] = port;
    }
  }
}

void fifo_upcall(unsigned cpu) {
  evtchn_fifo_control_block_t* cb = control_of(cpu);
  uint32_t ready = __atomic_exchange_n(&cb->ready, 0, __ATOMIC_SEQ_CST);
  while (ready) {
    consume_one(cpu, (unsigned)__builtin_ctz(ready), &ready);
    ready |= __atomic_exchange_n(&cb->ready, 0, __ATOMIC_SEQ_CST);
  }
}
