/*
 * ferry-guest: the workloads of Ferry's built-in guest, one static binary.
 *
 *   ferry-guest memory MIB_PER_S WORKING_SET_MIB
 *       rewrites MIB_PER_S of a WORKING_SET_MIB buffer each second with
 *       non-zero, changing data (a zero page or a repeated pattern would let
 *       QEMU's zero-page and XBZRLE shortcuts make a migration look cheap).
 *   ferry-guest tcp-server PORT
 *       streams "N\n" (N = 1, 2, 3, ...) to every client, 100 lines a second.
 *   ferry-guest tcp-client HOST PORT
 *       reads that stream, checks it arrives complete and in order, and
 *       reports once a second on the console:
 *       "ferry-tcp-client received=R last=L gaps=G reconnects=C connected=0|1"
 *   ferry-guest disk DEVICE PER_SECOND
 *       writes numbered 4 KiB records ("ferry-seq N") to blocks 1, 2, 3, ...
 *       of DEVICE, each synchronously (O_DIRECT|O_SYNC: acknowledged means on
 *       the virtual disk), continuing after the last record already there,
 *       and reports "ferry-disk acked=N" once a second. Each record carries
 *       the guest's wall-clock time its write began ("t=MS"): with the
 *       offset of the guest's clock from the host's (see `now`), a record's
 *       time compares with the host's.
 *   ferry-guest now
 *       prints "ferry-now MS", the guest's wall-clock time.
 *   ferry-guest power-button
 *       waits for the ACPI power button (QEMU's system_powerdown, seen
 *       through the button and evdev drivers as KEY_POWER), then prints
 *       "ferry-shutdown", flushes the disks and powers the machine off: a
 *       clean shutdown, as an operating system does it.
 *
 * Reports go to stdout, which init points at the serial console, where the
 * node agent reads them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/input.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int memory(long rate_mib, long set_mib) {
  size_t size = (size_t)set_mib << 20;
  uint64_t *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (buf == MAP_FAILED) { perror("ferry-guest memory: mmap"); return 1; }
  size_t words = size / 8, pos = 0;
  uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
  /* Work in 10 ms slices: write rate/100 bytes, then sleep out the slice. */
  size_t slice_words = ((size_t)rate_mib << 20) / 100 / 8;
  unsigned long long written = 0;
  double start = now_s(), next_report = start + 1;
  for (;;) {
    double t0 = now_s();
    for (size_t i = 0; i < slice_words; i++) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      buf[pos] = x | 1; /* never zero */
      if (++pos == words) pos = 0;
    }
    written += slice_words * 8;
    double spent = now_s() - t0;
    if (spent < 0.01) usleep((useconds_t)((0.01 - spent) * 1e6));
    double t = now_s();
    if (t >= next_report) {
      printf("ferry-memory written_mib=%llu rate_mib_s=%.1f\n", written >> 20, (written / 1048576.0) / (t - start));
      fflush(stdout);
      next_report += 1;
    }
  }
}

static void serve_client(int fd) {
  unsigned long long n = 0;
  char line[32];
  for (;;) {
    for (int i = 0; i < 10; i++) { /* 10 lines each 100 ms: 100 lines/s */
      int len = snprintf(line, sizeof line, "%llu\n", ++n);
      if (send(fd, line, len, MSG_NOSIGNAL) != len) _exit(0);
    }
    usleep(100000);
  }
}

static int tcp_server(int port) {
  signal(SIGCHLD, SIG_IGN);
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) { perror("ferry-guest tcp-server"); return 1; }
  printf("ferry-tcp-server listening port=%d\n", port);
  fflush(stdout);
  for (;;) {
    struct sockaddr_in peer; socklen_t pl = sizeof peer;
    int c = accept(s, (struct sockaddr *)&peer, &pl);
    if (c < 0) continue;
    printf("ferry-tcp-server client=%s\n", inet_ntoa(peer.sin_addr));
    fflush(stdout);
    if (fork() == 0) { close(s); serve_client(c); }
    close(c);
  }
}

static int tcp_client(const char *host, int port) {
  unsigned long long received = 0, last = 0, gaps = 0, reconnects = 0, connections = 0;
  int connected = 0;
  double next_report = now_s() + 1;
  for (;;) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, host, &a.sin_addr);
    struct timeval tv = { .tv_sec = 1 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
      if (connections++ > 0) reconnects++;
      connected = 1;
      printf("ferry-tcp-client connected host=%s port=%d\n", host, port);
      fflush(stdout);
      unsigned long long cur = 0, expect = 1;
      char buf[4096];
      for (;;) {
        ssize_t r = recv(s, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
        for (ssize_t i = 0; i < r; i++) {
          if (buf[i] == '\n') {
            if (cur != expect) { gaps++; printf("ferry-tcp-client gap expected=%llu got=%llu\n", expect, cur); }
            expect = cur + 1; last = cur; received++; cur = 0;
          } else cur = cur * 10 + (unsigned)(buf[i] - '0');
        }
        double t = now_s();
        if (t >= next_report) {
          printf("ferry-tcp-client received=%llu last=%llu gaps=%llu reconnects=%llu connected=1\n", received, last, gaps, reconnects);
          fflush(stdout);
          next_report = t + 1;
        }
      }
      connected = 0;
      printf("ferry-tcp-client disconnected\n");
    }
    close(s);
    double t = now_s();
    if (t >= next_report) {
      printf("ferry-tcp-client received=%llu last=%llu gaps=%llu reconnects=%llu connected=%d\n", received, last, gaps, reconnects, connected);
      next_report = t + 1;
    }
    fflush(stdout);
    sleep(1);
  }
  return 0;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int valid_record(const char *b, long n) {
  char want[32];
  int len = snprintf(want, sizeof want, "ferry-seq %ld\n", n);
  return memcmp(b, want, (size_t)len) == 0;
}

static int disk(const char *dev, long per_sec) {
  int fd = open(dev, O_RDWR | O_DIRECT | O_SYNC);
  if (fd < 0) {
    printf("ferry-error disk open %s: %s\n", dev, strerror(errno));
    return 1;
  }
  char *buf;
  if (posix_memalign((void **)&buf, 4096, 4096)) return 1;
  long n = 0;
  // Continue after the records already on the disk (a restored or migrated disk).
  while (pread(fd, buf, 4096, (off_t)(n + 1) * 4096) == 4096 && valid_record(buf, n + 1)) n++;
  printf("ferry-disk start=%ld\n", n);
  double next_report = now_s() + 1;
  long interval_us = per_sec > 0 ? 1000000 / per_sec : 100000;
  for (;;) {
    n++;
    memset(buf, 0, 4096);
    snprintf(buf, 4096, "ferry-seq %ld\nt=%lld\n", n, now_ms());
    if (pwrite(fd, buf, 4096, (off_t)n * 4096) != 4096) {
      printf("ferry-error disk write %ld: %s\n", n, strerror(errno));
      n--;
      sleep(1);
      continue;
    }
    double t = now_s();
    if (t >= next_report) {
      printf("ferry-disk acked=%ld\n", n);
      next_report = t + 1;
    }
    usleep(interval_us);
  }
}

/* The power button: every /dev/input/event* that reports KEY_POWER, watched until it is pressed. */
static int power_button(void) {
  struct pollfd fds[16];
  int n = 0;
  for (int tries = 0; n == 0 && tries < 100; tries++) {
    for (int i = 0; i < 16 && n < 16; i++) {
      char dev[32];
      snprintf(dev, sizeof dev, "/dev/input/event%d", i);
      int fd = open(dev, O_RDONLY | O_NONBLOCK);
      if (fd < 0) continue;
      unsigned long keys[KEY_MAX / (8 * sizeof(unsigned long)) + 1] = {0};
      if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof keys), keys) >= 0 && (keys[KEY_POWER / (8 * sizeof(unsigned long))] >> (KEY_POWER % (8 * sizeof(unsigned long)))) & 1) {
        fds[n].fd = fd;
        fds[n].events = POLLIN;
        n++;
      } else {
        close(fd);
      }
    }
    if (n == 0) usleep(100000);
  }
  if (n == 0) {
    printf("ferry-error no power button\n");
    return 1;
  }
  for (;;) {
    if (poll(fds, n, -1) < 0 && errno != EINTR) return 1;
    for (int i = 0; i < n; i++) {
      if (!(fds[i].revents & POLLIN)) continue;
      struct input_event ev;
      while (read(fds[i].fd, &ev, sizeof ev) == sizeof ev) {
        if (ev.type == EV_KEY && ev.code == KEY_POWER && ev.value == 1) {
          printf("\nferry-shutdown reason=power-button\n");
          fflush(stdout);
          sync();
          reboot(RB_POWER_OFF);
          return 1;
        }
      }
    }
  }
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 4 && !strcmp(argv[1], "memory")) return memory(atol(argv[2]), atol(argv[3]));
  if (argc == 3 && !strcmp(argv[1], "tcp-server")) return tcp_server(atoi(argv[2]));
  if (argc == 4 && !strcmp(argv[1], "tcp-client")) return tcp_client(argv[2], atoi(argv[3]));
  if (argc == 4 && !strcmp(argv[1], "disk")) return disk(argv[2], atol(argv[3]));
  if (argc == 2 && !strcmp(argv[1], "now")) return printf("ferry-now %lld\n", now_ms()) < 0;
  if (argc == 2 && !strcmp(argv[1], "power-button")) return power_button();
  fprintf(stderr, "usage: ferry-guest memory MIB_PER_S SET_MIB | tcp-server PORT | tcp-client HOST PORT\n");
  return 2;
}
