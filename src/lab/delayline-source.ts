/**
 * The C source of the lab's delay line (this kernel has no `sch_netem`, so latency is added in
 * userspace). Kept as a string so `tsc` ships it in `dist/`; {@link ensureDelayLine} compiles it
 * with gcc on first use.
 *
 * `delayline DELAY_US IF_A IF_B` joins two interfaces with AF_PACKET sockets and forwards every
 * frame that arrives on one out of the other DELAY_US microseconds later, both directions. It
 * uses `PACKET_VNET_HDR`, so checksum-offloaded and GSO frames (veths hand those over) keep
 * their offload metadata and the kernel finishes them on the way out, exactly as tap devices
 * do for virtual machines. `PACKET_IGNORE_OUTGOING` keeps it from reading its own sends. Each
 * direction is a FIFO (constant delay keeps order); a frame that would exceed the queue limit
 * is dropped, like a full router buffer. It prints `ready` once both sockets are bound and
 * exits on SIGTERM or when its parent dies.
 */
export const DELAYLINE_SOURCE = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define MAX_FRAME (65536 + sizeof(struct virtio_net_hdr) + 64)
#define QUEUE_BYTES_LIMIT (32 * 1024 * 1024)

struct frame { struct frame *next; uint64_t due_ns; size_t len; unsigned char data[]; };
struct queue { struct frame *head, *tail; size_t bytes; unsigned long dropped; };

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int open_if(const char *name) {
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd < 0) { perror("socket(AF_PACKET)"); exit(1); }
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) { perror("PACKET_VNET_HDR"); exit(1); }
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) { perror("PACKET_IGNORE_OUTGOING"); exit(1); }
  int buf = 8 * 1024 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
  unsigned int index = if_nametoindex(name);
  if (index == 0) { fprintf(stderr, "no interface %s\n", name); exit(1); }
  struct sockaddr_ll addr;
  memset(&addr, 0, sizeof addr);
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = (int)index;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); exit(1); }
  struct packet_mreq mreq;
  memset(&mreq, 0, sizeof mreq);
  mreq.mr_ifindex = (int)index;
  mreq.mr_type = PACKET_MR_PROMISC;
  setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, sizeof mreq);
  return fd;
}

/* Reads every frame waiting on fd into q, due delay_ns from now. */
static void drain(int fd, struct queue *q, uint64_t delay_ns, unsigned char *buf) {
  for (;;) {
    ssize_t n = recv(fd, buf, MAX_FRAME, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      perror("recv"); exit(1);
    }
    if (q->bytes + (size_t)n > QUEUE_BYTES_LIMIT) { q->dropped++; continue; }
    struct frame *f = malloc(sizeof *f + (size_t)n);
    if (f == NULL) { q->dropped++; continue; }
    f->next = NULL; f->due_ns = now_ns() + delay_ns; f->len = (size_t)n;
    memcpy(f->data, buf, (size_t)n);
    if (q->tail) q->tail->next = f; else q->head = f;
    q->tail = f; q->bytes += (size_t)n;
  }
}

/* Sends every due frame of q on fd. */
static void flush(int fd, struct queue *q, uint64_t now) {
  while (q->head && q->head->due_ns <= now) {
    struct frame *f = q->head;
    if (send(fd, f->data, f->len, 0) < 0 && errno == EAGAIN) return; /* try again at the next wakeup */
    q->head = f->next;
    if (!q->head) q->tail = NULL;
    q->bytes -= f->len;
    free(f);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: delayline DELAY_US IF_A IF_B\n"); return 2; }
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  uint64_t delay_ns = strtoull(argv[1], NULL, 10) * 1000ull;
  int fds[2] = { open_if(argv[2]), open_if(argv[3]) };
  struct queue queues[2]; /* queues[i]: frames read on fds[i], to be sent on fds[1 - i] */
  memset(queues, 0, sizeof queues);
  unsigned char *buf = malloc(MAX_FRAME);
  if (buf == NULL) return 1;
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    uint64_t now = now_ns();
    for (int i = 0; i < 2; i++) flush(fds[1 - i], &queues[i], now);
    struct timespec timeout, *tp = NULL;
    uint64_t next = UINT64_MAX;
    for (int i = 0; i < 2; i++) if (queues[i].head && queues[i].head->due_ns < next) next = queues[i].head->due_ns;
    if (next != UINT64_MAX) {
      uint64_t wait = next > now ? next - now : 0;
      timeout.tv_sec = (time_t)(wait / 1000000000ull);
      timeout.tv_nsec = (long)(wait % 1000000000ull);
      tp = &timeout;
    }
    struct pollfd pfds[2] = { { fds[0], POLLIN, 0 }, { fds[1], POLLIN, 0 } };
    int ready = ppoll(pfds, 2, tp, NULL);
    if (ready < 0) { if (errno == EINTR) continue; perror("ppoll"); return 1; }
    for (int i = 0; i < 2; i++) if (pfds[i].revents & POLLIN) drain(fds[i], &queues[i], delay_ns, buf);
  }
}
`;
