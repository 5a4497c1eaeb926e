/* dump_floor: the kernel floor for a full NETLINK_SOCK_DIAG TCP dump.
 *
 * One netlink socket, opened once. Each iteration dumps every TCP socket of the
 * network namespace exactly as web10g's read_all() asks for them: both families in one
 * walk of the kernel's tables (-f 0, the default: TCPDIAG_GETSOCK with struct
 * inet_diag_req, family AF_UNSPEC), or one SOCK_DIAG_BY_FAMILY dump per family with
 * inet_diag_req_v2 (-f 46, as ss asks; -f 4 or -f 6 for one), NLM_F_REQUEST|NLM_F_DUMP,
 * the given idiag_ext and idiag_states. Every datagram is read
 * into one 64 KiB buffer until NLMSG_DONE; the records are counted (so the count can be
 * checked against web10g's) and otherwise discarded. No decoding: this is what the
 * kernel plus recv() cost, the least any client can pay.
 *
 * Output: one JSON object on stdout, e.g.
 *   {"ext":2,"states":4095,"families":"4,6","bufsize":65536,"iterations":20,
 *    "records":20004,"bytes":8161632,"datagrams":254,"median_ns":15234567,
 *    "min_ns":...,"times_ns":[...],"cpu_median_ns":...,"cpu_ns":[...]}
 * times are wall-clock (CLOCK_MONOTONIC); cpu times are this thread's user+system time
 * (CLOCK_THREAD_CPUTIME_ID), which other load on the machine disturbs less.
 * records/bytes/datagrams are those of the last iteration.
 *
 * Interactive mode (-i), for benchmarks that interleave this floor with other readers
 * call by call: the program keeps its socket and reads commands from stdin, one per
 * line, "EXT ITERATIONS [STATES]" (e.g. "0xff 1", "0x0a 1 0xb36"), runs that many timed
 * dumps (no warm-up; STATES, when given, replaces -s's mask for that command) and
 * answers each command with one JSON line of the same shape; it exits at end of input.
 *
 * Build: cc -O2 -o dump_floor dump_floor.c
 * Usage: dump_floor [-n iterations] [-w warmup] [-e ext] [-s states] [-f 0|4|6|46]
 *                   [-b bufsize] [-i]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct dump_stats {
    uint64_t records;
    uint64_t bytes;
    uint64_t datagrams;
};

static void die(const char *what);
static int cmp_i64(const void *a, const void *b);

static int64_t clock_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t median_of(const int64_t *xs, long n, int64_t *min_out)
{
    int64_t *s = malloc((size_t)n * sizeof(*s));
    if (!s)
        die("malloc");
    memcpy(s, xs, (size_t)n * sizeof(*s));
    qsort(s, (size_t)n, sizeof(*s), cmp_i64);
    int64_t m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    if (min_out)
        *min_out = s[0];
    free(s);
    return m;
}

static void print_list(const char *name, const int64_t *xs, long n)
{
    printf(",\"%s\":[", name);
    for (long i = 0; i < n; i++)
        printf("%s%lld", i ? "," : "", (long long)xs[i]);
    printf("]");
}

static void die(const char *what)
{
    fprintf(stderr, "dump_floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* One dump of one family (0: both, in one walk); returns 0 or exits on error. */
static void dump_family(int fd, uint8_t family, uint8_t ext, uint32_t states, uint32_t seq,
                        char *buf, size_t buflen, struct dump_stats *st)
{
    /* the header and the body of either request, one buffer */
    union {
        struct { struct nlmsghdr nlh; struct inet_diag_req_v2 req; } v2;
        struct { struct nlmsghdr nlh; struct inet_diag_req req; } v1;
    } msg;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    const size_t outlen = family ? sizeof(msg.v2) : sizeof(msg.v1);
    const void *out = &msg;

    memset(&msg, 0, sizeof(msg));
    msg.v2.nlh.nlmsg_len = (uint32_t)outlen;
    msg.v2.nlh.nlmsg_type = family ? SOCK_DIAG_BY_FAMILY : TCPDIAG_GETSOCK;
    msg.v2.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.v2.nlh.nlmsg_seq = seq;
    if (family) {
        msg.v2.req.sdiag_family = family;
        msg.v2.req.sdiag_protocol = IPPROTO_TCP;
        msg.v2.req.idiag_ext = ext;
        msg.v2.req.idiag_states = states;
    } else {
        msg.v1.req.idiag_ext = ext;          /* idiag_family 0: both, in one walk */
        msg.v1.req.idiag_states = states;
    }

    if (sendto(fd, out, outlen, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        die("sendto");

    for (;;) {
        struct iovec iov = {.iov_base = buf, .iov_len = buflen};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n = recvmsg(fd, &mh, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("recvmsg");
        }
        if (mh.msg_flags & MSG_TRUNC) {
            fprintf(stderr, "dump_floor: datagram truncated (buffer %zu bytes too small)\n",
                    buflen);
            exit(1);
        }
        st->datagrams++;
        st->bytes += (uint64_t)n;
        size_t left = (size_t)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left);
             h = NLMSG_NEXT(h, left)) {
            if (h->nlmsg_seq != seq)
                continue;
            if (h->nlmsg_type == NLMSG_DONE) {
                int err = 0;
                if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int)))
                    memcpy(&err, NLMSG_DATA(h), sizeof(err));
                if (err < 0) {
                    errno = -err;
                    die("dump ended with an error");
                }
                return;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr e;
                memcpy(&e, NLMSG_DATA(h), sizeof(e));
                errno = -e.error;
                die("NLMSG_ERROR");
            }
            if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY || h->nlmsg_type == TCPDIAG_GETSOCK)
                st->records++;
        }
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct floor {
    int fd;
    uint8_t fams[2];
    int nfam;
    uint32_t states;
    uint32_t seq;
    char *buf;
    size_t bufsize;
};

/* Run warmup + iterations full samples with ext; print one JSON line. */
static void run_batch(struct floor *fl, long ext, long iterations, long warmup)
{
    int64_t *times = calloc((size_t)iterations, sizeof(*times));
    int64_t *cpu = calloc((size_t)iterations, sizeof(*cpu));
    struct dump_stats st = {0};
    if (!times || !cpu)
        die("malloc");

    for (long i = -warmup; i < iterations; i++) {
        memset(&st, 0, sizeof(st));
        int64_t c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
        int64_t t0 = clock_ns(CLOCK_MONOTONIC);
        for (int f = 0; f < fl->nfam; f++)
            dump_family(fl->fd, fl->fams[f], (uint8_t)ext, fl->states, fl->seq++, fl->buf,
                        fl->bufsize, &st);
        int64_t t1 = clock_ns(CLOCK_MONOTONIC);
        int64_t c1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
        if (i >= 0) {
            times[i] = t1 - t0;
            cpu[i] = c1 - c0;
        }
    }

    int64_t min_wall, min_cpu;
    int64_t median = median_of(times, iterations, &min_wall);
    int64_t cpu_median = median_of(cpu, iterations, &min_cpu);
    printf("{\"ext\":%ld,\"states\":%lu,\"families\":\"%s\",\"bufsize\":%zu,"
           "\"iterations\":%ld,\"records\":%llu,\"bytes\":%llu,\"datagrams\":%llu,"
           "\"median_ns\":%lld,\"min_ns\":%lld,\"cpu_median_ns\":%lld",
           ext, (unsigned long)fl->states,
           fl->nfam == 2 ? "4,6" : (fl->fams[0] == AF_INET ? "4" : fl->fams[0] ? "6" : "0"),
           fl->bufsize,
           iterations, (unsigned long long)st.records, (unsigned long long)st.bytes,
           (unsigned long long)st.datagrams, (long long)median, (long long)min_wall,
           (long long)cpu_median);
    print_list("times_ns", times, iterations);
    print_list("cpu_ns", cpu, iterations);
    printf("}\n");
    fflush(stdout);
    free(cpu);
    free(times);
}

int main(int argc, char **argv)
{
    long iterations = 20, warmup = 2, ext = 0x02, bufsize = 65536;
    unsigned long states = 0xFFF;
    const char *families = "0";
    int interactive = 0;
    int opt;

    while ((opt = getopt(argc, argv, "n:w:e:s:f:b:ih")) != -1) {
        switch (opt) {
        case 'n': iterations = strtol(optarg, NULL, 0); break;
        case 'w': warmup = strtol(optarg, NULL, 0); break;
        case 'e': ext = strtol(optarg, NULL, 0); break;
        case 's': states = strtoul(optarg, NULL, 0); break;
        case 'f': families = optarg; break;
        case 'b': bufsize = strtol(optarg, NULL, 0); break;
        case 'i': interactive = 1; break;
        default:
            fprintf(stderr, "usage: %s [-n iterations] [-w warmup] [-e ext] [-s states] "
                            "[-f 0|4|6|46] [-b bufsize] [-i]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (iterations < 1 || warmup < 0 || ext < 0 || ext > 0xFF || bufsize < 4096) {
        fprintf(stderr, "dump_floor: bad arguments\n");
        return 2;
    }
    struct floor fl = {.states = (uint32_t)states, .seq = 1, .bufsize = (size_t)bufsize};
    for (const char *c = families; *c && fl.nfam < 2; c++) {
        if (*c == '4') fl.fams[fl.nfam++] = AF_INET;
        else if (*c == '6') fl.fams[fl.nfam++] = AF_INET6;
        else if (*c == '0' && !c[1] && !fl.nfam) fl.fams[fl.nfam++] = 0;
    }
    if (!fl.nfam) {
        fprintf(stderr, "dump_floor: -f takes 0 (both families, one walk), 4, 6 or 46\n");
        return 2;
    }

    fl.fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fl.fd < 0)
        die("socket(AF_NETLINK, NETLINK_SOCK_DIAG)");
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(fl.fd, (struct sockaddr *)&local, sizeof(local)) < 0)
        die("bind");
    fl.buf = malloc(fl.bufsize);
    if (!fl.buf)
        die("malloc");

    if (!interactive) {
        run_batch(&fl, ext, iterations, warmup);
    } else {
        char line[128];
        while (fgets(line, sizeof(line), stdin)) {
            char *end, *end2;
            long e = strtol(line, &end, 0);
            long n = strtol(end, &end2, 0);
            /* an optional third number: the state mask for this command only */
            char *end3;
            unsigned long st = strtoul(end2, &end3, 0);
            if (e < 0 || e > 0xFF || n < 1) {
                fprintf(stderr, "dump_floor: bad command \"%s\"\n", line);
                return 2;
            }
            uint32_t saved = fl.states;
            if (end3 != end2)
                fl.states = (uint32_t)st;
            run_batch(&fl, e, n, 0);
            fl.states = saved;
        }
    }
    free(fl.buf);
    close(fl.fd);
    return 0;
}
