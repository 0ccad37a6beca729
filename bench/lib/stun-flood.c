/*
 * stun-flood: a native-speed STUN load generator for the Binding benchmark (bench/stun.ts).
 * Compiled with gcc at bench time (bench/lib/native.ts). Loopback only: it refuses any other
 * destination.
 *
 *   stun-flood PORT SOCKETS WINDOW WARMUP_S SECONDS REQUEST_HEX
 *
 * Opens SOCKETS UDP sockets on 127.0.0.1, each connected to 127.0.0.1:PORT, and keeps WINDOW
 * requests in flight on each: a new request leaves as soon as an answer arrives; a socket
 * that heard nothing for LOSS_MS forgets what it had in flight (lost datagrams) and refills.
 * Counts only during SECONDS after WARMUP_S, and prints one JSON line:
 *   {"sent":N,"answered":N,"succeeded":N,"seconds":S}
 * "succeeded" counts STUN success responses (class bits 0b10).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKETS 256
#define MAX_REQUEST 1024
/* An answer on loopback takes microseconds; 20 ms of silence means the datagrams were dropped. */
#define LOSS_S 0.020

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: stun-flood PORT SOCKETS WINDOW WARMUP_S SECONDS REQUEST_HEX\n");
    return 2;
  }
  int port = atoi(argv[1]), n = atoi(argv[2]), window = atoi(argv[3]);
  double warmup = atof(argv[4]), seconds = atof(argv[5]);
  const char *hex = argv[6];
  size_t hexlen = strlen(hex);
  if (port <= 0 || port > 65535 || n <= 0 || n > MAX_SOCKETS || window <= 0 || seconds <= 0 || warmup < 0 ||
      hexlen % 2 != 0 || hexlen / 2 > MAX_REQUEST || hexlen < 40) {
    fprintf(stderr, "stun-flood: bad arguments (port 1..65535, 1..%d sockets, window >= 1, seconds > 0, a request of 20..%d bytes in hex)\n", MAX_SOCKETS, MAX_REQUEST);
    return 2;
  }
  unsigned char request[MAX_REQUEST];
  size_t len = hexlen / 2;
  for (size_t i = 0; i < len; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) { fprintf(stderr, "stun-flood: REQUEST_HEX is not hex\n"); return 2; }
    request[i] = (unsigned char)(hi * 16 + lo);
  }
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct sockaddr_in from = { .sin_family = AF_INET, .sin_port = 0 };
  from.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct pollfd pfds[MAX_SOCKETS];
  int inflight[MAX_SOCKETS];
  double last[MAX_SOCKETS];
  double start = now_s();
  for (int i = 0; i < n; i++) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&from, sizeof from) != 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
      perror("stun-flood: socket");
      return 1;
    }
    pfds[i].fd = fd;
    pfds[i].events = POLLIN;
    inflight[i] = 0;
    last[i] = start;
  }
  double measure_from = start + warmup, end = measure_from + seconds;
  long long sent = 0, answered = 0, succeeded = 0;
  unsigned char buf[2048];
  for (double t = now_s(); t < end; t = now_s()) {
    int counting = t >= measure_from;
    for (int i = 0; i < n; i++) {
      if (inflight[i] > 0 && t - last[i] > LOSS_S) { inflight[i] = 0; last[i] = t; }
      while (inflight[i] < window) {
        if (send(pfds[i].fd, request, len, 0) < 0) break; /* EAGAIN, or ECONNREFUSED before the server is up */
        inflight[i]++;
        if (counting) sent++;
      }
    }
    if (poll(pfds, (nfds_t)n, 1) <= 0) continue;
    t = now_s();
    counting = t >= measure_from && t < end;
    for (int i = 0; i < n; i++) {
      if (!(pfds[i].revents & POLLIN)) continue;
      for (;;) {
        ssize_t got = recv(pfds[i].fd, buf, sizeof buf, 0);
        if (got < 0) break;
        if (inflight[i] > 0) inflight[i]--;
        last[i] = t;
        if (!counting || got < 20) continue;
        answered++;
        if ((buf[0] & 0x01) == 0x01 && (buf[1] & 0x10) == 0x00) succeeded++;
      }
    }
  }
  printf("{\"sent\":%lld,\"answered\":%lld,\"succeeded\":%lld,\"seconds\":%.3f}\n", sent, answered, succeeded, seconds);
  return 0;
}
