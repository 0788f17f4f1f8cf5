/* a6load: a gateway-shaped load on an ext-plugin runner's unix socket, for bench/floor.py.
 *
 * As APISIX does: one PrepareConf on a connection of its own, its conf_token read from the
 * answer; then CONNECTIONS connections kept open, each with one HTTPReqCall in flight, for
 * SECONDS.  The frames are pre-encoded files (bench/floor.py writes them with a6fast's gateway
 * encoder); the conf_token is written into the call frame at byte TOKEN_OFFSET.  An answer is
 * looked at up to its type byte.  It answers no ExtraInfo question: load plugins that ask with
 * `a6fast bench`.
 *
 *   a6load [-c CPU] SOCKET PREPARE_FRAME CALL_FRAME TOKEN_OFFSET CONNECTIONS SECONDS
 *
 * Prints one line of NAME=VALUE: calls, seconds, calls_per_s, p50_us, p99_us, max_us and
 * non_call_answers (answers that were not HTTPReqCall answers: Err frames and the like).
 * Exit status 0; 1 if any answer was not an HTTPReqCall answer; 2 for bad arguments or files;
 * 3 if the runner could not be reached, refused the PrepareConf, closed a connection or left
 * every call unanswered for STALL_SECONDS.  -c CPU pins the process to that CPU.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE 65536
#define MAX_EVENTS 256
#define STALL_SECONDS 10

struct blob {
    unsigned char *data;
    size_t size;
};

struct conn {
    int fd;
    int in_flight;            /* a call sent and not answered yet */
    uint64_t sent_at;         /* ns */
    size_t out_done;          /* bytes of the call frame written so far */
    unsigned char header[4];  /* an answer header split across reads */
    size_t header_len;
    int in_payload;
    int frame_type;
    size_t to_skip;
};

static struct blob call;
static unsigned char scratch[READ_SIZE];
static uint64_t *latencies;
static size_t n_latencies, cap_latencies;
static size_t non_call_answers;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void fail(const char *message) {
    fprintf(stderr, "a6load: %s\n", message);
    exit(3);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static struct blob read_file(const char *path) {
    struct blob b = {0};
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    if (fseek(f, 0, SEEK_END) != 0) die(path);
    long size = ftell(f);
    if (size < 4) {
        fprintf(stderr, "%s: not a frame (%ld bytes)\n", path, size);
        exit(2);
    }
    rewind(f);
    b.size = (size_t)size;
    b.data = malloc(b.size);
    if (!b.data || fread(b.data, 1, b.size, f) != b.size) die(path);
    fclose(f);
    return b;
}

static void pin(const char *cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(cpu), &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
}

static int dial(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) fail("socket path too long");
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror(path);
        exit(3);
    }
    return fd;
}

static void read_exactly(int fd, unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) fail("no answer to the PrepareConf (closed or timed out)");
        p += r;
        n -= (size_t)r;
    }
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* conf_token of a PrepareConf.Resp payload: field 0 (uint32) of the root table, 0 if absent.
 * Every offset is checked against the payload before it is followed. */
static int token_of(const unsigned char *p, size_t n, uint32_t *token) {
    if (n < 4) return 0;
    uint32_t table = le32(p);
    if ((uint64_t)table + 4 > n) return 0;
    int64_t vtable = (int64_t)table - (int32_t)le32(p + table);
    if (vtable < 0 || (uint64_t)vtable + 4 > n) return 0;
    uint32_t vtable_size = (uint32_t)p[vtable] | (uint32_t)p[vtable + 1] << 8;
    if (vtable_size < 4 || (uint64_t)vtable + vtable_size > n) return 0;
    uint32_t field = 0;
    if (vtable_size >= 6) field = (uint32_t)p[vtable + 4] | (uint32_t)p[vtable + 5] << 8;
    if (field == 0) {
        *token = 0;
        return 1;
    }
    if ((uint64_t)table + field + 4 > n) return 0;
    *token = le32(p + table + field);
    return 1;
}

static uint32_t prepare(const char *path, const struct blob *frame) {
    int fd = dial(path);
    struct timeval timeout = {.tv_sec = STALL_SECONDS};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    size_t done = 0;
    while (done < frame->size) {
        ssize_t w = write(fd, frame->data + done, frame->size - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fail("the PrepareConf could not be sent");
        done += (size_t)w;
    }
    unsigned char header[4];
    read_exactly(fd, header, 4);
    size_t size = (size_t)header[1] << 16 | (size_t)header[2] << 8 | header[3];
    unsigned char *payload = malloc(size ? size : 1);
    if (!payload) die("malloc");
    read_exactly(fd, payload, size);
    close(fd);
    if (header[0] != 1) {
        fprintf(stderr, "a6load: the PrepareConf was answered with a type %d frame "
                        "(is the plugin loaded in the runner?)\n", header[0]);
        exit(3);
    }
    uint32_t token;
    if (!token_of(payload, size, &token)) fail("the PrepareConf answer is malformed");
    free(payload);
    return token;
}

static void record(uint64_t ns) {
    if (n_latencies == cap_latencies) {
        cap_latencies = cap_latencies ? cap_latencies * 2 : 1 << 16;
        latencies = realloc(latencies, cap_latencies * sizeof *latencies);
        if (!latencies) die("realloc");
    }
    latencies[n_latencies++] = ns;
}

/* Sends (the rest of) the call frame; EPOLLOUT is asked for only while a frame is cut short. */
static void send_call(int ep, struct conn *c) {
    int was_short = c->out_done > 0;
    while (c->out_done < call.size) {
        ssize_t w = write(c->fd, call.data + c->out_done, call.size - c->out_done);
        if (w > 0) {
            c->out_done += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            if (!was_short) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
            return;
        } else {
            fail("the runner closed a connection");
        }
    }
    c->out_done = 0;
    if (was_short) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

/* Walks the bytes read from the runner; returns the answers completed. */
static size_t consume(struct conn *c, const unsigned char *p, size_t n) {
    size_t answers = 0;
    while (n > 0 || (c->in_payload && c->to_skip == 0)) {
        if (c->in_payload) {
            size_t take = c->to_skip < n ? c->to_skip : n;
            c->to_skip -= take;
            p += take;
            n -= take;
            if (c->to_skip > 0) break;
            c->in_payload = 0;
            if (c->frame_type != 2) non_call_answers++;
            answers++;
            continue;
        }
        c->header[c->header_len++] = *p++;
        n--;
        if (c->header_len < 4) continue;
        c->header_len = 0;
        c->frame_type = c->header[0];
        c->to_skip = (size_t)c->header[1] << 16 | (size_t)c->header[2] << 8 | c->header[3];
        c->in_payload = 1;
    }
    return answers;
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double percentile_us(double fraction) {
    if (n_latencies == 0) return 0.0;
    size_t i = (size_t)(n_latencies * fraction);
    if (i >= n_latencies) i = n_latencies - 1;
    return latencies[i] / 1000.0;
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "c:")) != -1) {
        if (opt == 'c') {
            pin(optarg);
        } else {
            goto usage;
        }
    }
    if (argc - optind != 6) goto usage;
    const char *path = argv[optind];
    struct blob prepare_frame = read_file(argv[optind + 1]);
    call = read_file(argv[optind + 2]);
    char *end;
    unsigned long token_offset = strtoul(argv[optind + 3], &end, 10);
    long connections = strtol(argv[optind + 4], NULL, 10);
    double seconds = strtod(argv[optind + 5], NULL);
    if (*end || token_offset < 4 || token_offset + 4 > call.size || connections < 1
        || connections > 100000 || !(seconds > 0)) goto usage;
    signal(SIGPIPE, SIG_IGN);

    uint32_t token = prepare(path, &prepare_frame);
    free(prepare_frame.data);
    for (int i = 0; i < 4; i++) call.data[token_offset + i] = (unsigned char)(token >> (8 * i));

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct conn *conns = calloc((size_t)connections, sizeof *conns);
    if (!conns) die("calloc");
    for (long i = 0; i < connections; i++) {
        conns[i].fd = dial(path);
        if (fcntl(conns[i].fd, F_SETFL, O_NONBLOCK) != 0) die("fcntl");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0) die("epoll_ctl");
    }

    uint64_t start = now_ns();
    uint64_t stop_at = start + (uint64_t)(seconds * 1e9);
    uint64_t last_answer = start, progress = start;
    for (long i = 0; i < connections; i++) {
        conns[i].in_flight = 1;
        conns[i].sent_at = now_ns();
        send_call(ep, &conns[i]);
    }
    long running = connections;
    struct epoll_event events[MAX_EVENTS];
    while (running > 0) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 200);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        if (n == 0 && now_ns() - progress > (uint64_t)STALL_SECONDS * 1000000000u) {
            fprintf(stderr, "a6load: no call answered for %d s\n", STALL_SECONDS);
            return 3;
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            if (c->fd < 0) continue;
            if (events[k].events & EPOLLOUT && c->out_done) send_call(ep, c);
            if (!(events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            ssize_t r = read(c->fd, scratch, sizeof scratch);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) fail("the runner closed a connection");
            size_t answers = consume(c, scratch, (size_t)r);
            if (answers == 0) continue;
            uint64_t t = now_ns();
            progress = t;
            if (!c->in_flight || answers > 1) fail("the runner answered a call twice");
            record(t - c->sent_at);
            last_answer = t;
            c->in_flight = 0;
            if (t >= stop_at) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                running--;
                continue;
            }
            c->in_flight = 1;
            c->sent_at = t;
            send_call(ep, c);
        }
    }

    double elapsed = (last_answer - start) / 1e9;
    qsort(latencies, n_latencies, sizeof *latencies, by_value);
    printf("calls=%zu seconds=%.3f calls_per_s=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f "
           "non_call_answers=%zu\n",
           n_latencies, elapsed, elapsed > 0 ? n_latencies / elapsed : 0.0, percentile_us(0.5),
           percentile_us(0.99), n_latencies ? latencies[n_latencies - 1] / 1000.0 : 0.0,
           non_call_answers);
    free(conns);
    free(latencies);
    free(call.data);
    return non_call_answers ? 1 : 0;

usage:
    fprintf(stderr, "usage: a6load [-c CPU] SOCKET PREPARE_FRAME CALL_FRAME TOKEN_OFFSET "
                    "CONNECTIONS SECONDS\n");
    return 2;
}
