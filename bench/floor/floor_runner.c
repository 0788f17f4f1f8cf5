/* floor_runner: the fastest answers any ext-plugin runner could give on this machine.
 *
 * It serves a unix socket as a runner does but decides nothing: each PrepareConf frame (type 1)
 * is answered with one pre-encoded frame and each HTTPReqCall frame (type 2) with another;
 * payloads are skipped unread and other frames are dropped.  One thread, level-triggered epoll,
 * one read per wake-up.  bench/floor.py writes the two answers with a6fast's codec and measures
 * `a6fast serve` against this program under bench/floor/a6load.c.
 *
 *   floor_runner [-c CPU] SOCKET PREPARE_ANSWER CALL_ANSWER
 *
 * -c CPU pins the process to that CPU.  SIGTERM or SIGINT removes the socket and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_SIZE 65536
#define MAX_EVENTS 128

struct blob {
    unsigned char *data;
    size_t size;
};

struct conn {
    int fd;
    unsigned char header[4];  /* a frame header split across reads */
    size_t header_len;
    int in_payload;           /* header read, payload bytes still to skip */
    int frame_type;
    size_t to_skip;
    unsigned char *out;       /* answers the socket did not take yet */
    size_t out_len, out_cap;
    int watching_out;         /* EPOLLOUT asked for while out_len > 0 */
};

static volatile sig_atomic_t stopping;
static struct blob prepare_answer, call_answer;
static unsigned char scratch[READ_SIZE];

static void on_signal(int signum) { (void)signum; stopping = 1; }

static void die(const char *what) {
    perror(what);
    exit(2);
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

static void queue(struct conn *c, const struct blob *answer) {
    if (c->out_len + answer->size > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + answer->size) cap *= 2;
        unsigned char *grown = realloc(c->out, cap);
        if (!grown) die("realloc");
        c->out = grown;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, answer->data, answer->size);
    c->out_len += answer->size;
}

static void frame_done(struct conn *c) {
    if (c->frame_type == 1)
        queue(c, &prepare_answer);
    else if (c->frame_type == 2)
        queue(c, &call_answer);
}

/* Walks the bytes just read: headers are taken apart, payloads skipped. */
static void consume(struct conn *c, const unsigned char *p, size_t n) {
    while (n > 0 || (c->in_payload && c->to_skip == 0)) {
        if (c->in_payload) {
            size_t take = c->to_skip < n ? c->to_skip : n;
            c->to_skip -= take;
            p += take;
            n -= take;
            if (c->to_skip > 0) return;
            c->in_payload = 0;
            frame_done(c);
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
}

static void drop(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    free(c);
}

/* Writes what is queued; 0 when the connection broke. */
static int flush(int ep, struct conn *c) {
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t w = write(c->fd, c->out + done, c->out_len - done);
        if (w > 0) {
            done += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            break;
        } else {
            return 0;
        }
    }
    memmove(c->out, c->out + done, c->out_len - done);
    c->out_len -= done;
    int want_out = c->out_len > 0;
    if (want_out != c->watching_out) {  /* no epoll_ctl on the usual, fully written answer */
        struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->watching_out = want_out;
    }
    return 1;
}

static int listen_on(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "%s: socket path too long\n", path);
        exit(2);
    }
    strcpy(addr.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            fprintf(stderr, "%s exists and is not a socket\n", path);
            exit(2);
        }
        unlink(path);  /* left by an earlier run */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die(path);
    if (listen(fd, 1024) != 0) die("listen");
    return fd;
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
    if (argc - optind != 3) goto usage;
    const char *path = argv[optind];
    prepare_answer = read_file(argv[optind + 1]);
    call_answer = read_file(argv[optind + 2]);

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int listener = listen_on(path);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev) != 0) die("epoll_ctl");

    struct epoll_event events[MAX_EVENTS];
    while (!stopping) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) continue;  /* gone already, or out of descriptors: next wake-up */
                c = calloc(1, sizeof *c);
                if (!c) die("calloc");
                c->fd = fd;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
                continue;
            }
            if (events[i].events & EPOLLOUT && !flush(ep, c)) {
                drop(ep, c);
                continue;
            }
            if (!(events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            ssize_t r = read(c->fd, scratch, sizeof scratch);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                drop(ep, c);
                continue;
            }
            consume(c, scratch, (size_t)r);
            if (c->out_len && !flush(ep, c)) drop(ep, c);
        }
    }
    unlink(path);
    return 0;

usage:
    fprintf(stderr, "usage: floor_runner [-c CPU] SOCKET PREPARE_ANSWER CALL_ANSWER\n");
    return 2;
}
