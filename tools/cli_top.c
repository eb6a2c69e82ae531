/* visrec top: a live terminal view of both daemons from their metrics
 * endpoints (--metrics-listen): calls/s, errors/s, p99 and calls in
 * flight by method, featured's ingest queue and rates, rankd's training
 * and feed. Every interval it GETs /metrics of each daemon over a plain
 * socket (HTTP/1.0, a deadline per request, the response capped at
 * TOP_MAX_BYTES), reads the few families it shows, and draws the frame
 * from the difference to the previous scrape. q or Ctrl-C quits; the
 * terminal (its mode, the cursor, the main screen) is put back. --once
 * prints one frame (two scrapes an interval apart) to stdout and exits. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define TOP_MAX_BYTES (8u << 20) /* a scrape of ours is tens of KiB */
#define TOP_MAX_METHODS 48
#define TOP_MAX_BUCKETS 32
#define TOP_TIMEOUT_MS 2000

/* What one scrape of one daemon says. */
struct method {
	char name[96];
	double calls, errors, inflight;
	int nb;
	double le[TOP_MAX_BUCKETS], cum[TOP_MAX_BUCKETS];
};

struct scrape {
	int up;
	char why[128];
	double t;
	struct method m[TOP_MAX_METHODS];
	int nm;
	/* featured */
	double queued, queue_cap, decoded, embedded, refused, items_f;
	/* rankd */
	double training, epoch, epochs, loss, auc, triples_s, lag, connected, users, items, pairs;
	char model[64];
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- HTTP GET ------------------------------------------------------------- */

static int wait_fd(int fd, short events, double end)
{
	int ms = (int)((end - now_s()) * 1000);
	if (ms <= 0)
		return -1;
	struct pollfd p = { .fd = fd, .events = events };
	int n = poll(&p, 1, ms);
	return n == 1 ? 0 : -1;
}

/* GETs http://addr/metrics into *body (malloc'd, NUL-terminated); 0, or
 * -1 with the reason in why. */
static int http_get(const char *addr, char **body, char *why, size_t cap)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	size_t hl = colon ? (size_t)(colon - addr) : 0;
	if (!colon || hl == 0 || hl >= sizeof host) {
		snprintf(why, cap, "not HOST:PORT");
		return -1;
	}
	memcpy(host, addr, hl);
	host[hl] = 0;
	if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = 0;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	int e = getaddrinfo(host, colon + 1, &hints, &res);
	if (e) {
		snprintf(why, cap, "%s", gai_strerror(e));
		return -1;
	}
	double end = now_s() + TOP_TIMEOUT_MS / 1000.0;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	char *buf = NULL;
	size_t len = 0;
	int rc = -1;
	if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) && errno != EINPROGRESS)) {
		snprintf(why, cap, "%s", strerror(errno));
		goto leave;
	}
	int soerr = 0;
	socklen_t sl = sizeof soerr;
	if (wait_fd(fd, POLLOUT, end) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
		snprintf(why, cap, "%s", soerr ? strerror(soerr) : "connect timed out");
		goto leave;
	}
	char req[512];
	int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.0\r\nHost: %s\r\nAccept: text/plain\r\n\r\n", addr);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		snprintf(why, cap, "send: %s", strerror(errno));
		goto leave;
	}
	size_t bcap = 65536;
	if (!(buf = malloc(bcap))) {
		snprintf(why, cap, "out of memory");
		goto leave;
	}
	for (;;) {
		if (len + 1 == bcap) {
			if (bcap >= TOP_MAX_BYTES) {
				snprintf(why, cap, "response over %u bytes", TOP_MAX_BYTES);
				goto leave;
			}
			char *p = realloc(buf, bcap * 2);
			if (!p) {
				snprintf(why, cap, "out of memory");
				goto leave;
			}
			buf = p;
			bcap *= 2;
		}
		ssize_t r = recv(fd, buf + len, bcap - 1 - len, 0);
		if (r == 0)
			break;
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(fd, POLLIN, end)) {
				snprintf(why, cap, "timed out");
				goto leave;
			}
			continue;
		}
		if (r < 0) {
			snprintf(why, cap, "recv: %s", strerror(errno));
			goto leave;
		}
		len += (size_t)r;
	}
	buf[len] = 0;
	char *hdr_end = strstr(buf, "\r\n\r\n");
	if (strncmp(buf, "HTTP/1.", 7) || !hdr_end || strncmp(buf + 8, " 200", 4)) {
		snprintf(why, cap, "%.40s", hdr_end ? buf : "no HTTP response");
		char *nl = strpbrk(why, "\r\n");
		if (nl)
			*nl = 0;
		goto leave;
	}
	size_t off = (size_t)(hdr_end + 4 - buf);
	memmove(buf, buf + off, len - off + 1);
	*body = buf;
	buf = NULL;
	rc = 0;
leave:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	free(buf);
	return rc;
}

/* ---- reading the text ------------------------------------------------------ */

/* The value of label key in the label text lab ("a=\"x\",b=\"y\"") into
 * out; "" when absent. Escapes are kept as they are (names of ours
 * have none). */
static void label(const char *lab, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	out[0] = 0;
	for (const char *p = lab; p && *p;) {
		const char *q = strchr(p, '"');
		if (!q)
			return;
		const char *v = q + 1, *e = v;
		while (*e && *e != '"')
			e += *e == '\\' && e[1] ? 2 : 1;
		if ((size_t)(q - p) == kl + 1 && !strncmp(p, key, kl) && p[kl] == '=') {
			snprintf(out, cap, "%.*s", (int)(e - v), v);
			return;
		}
		p = *e ? e + 1 : e;
		if (*p == ',')
			p++;
	}
}

static struct method *method_of(struct scrape *s, const char *name)
{
	for (int i = 0; i < s->nm; i++)
		if (!strcmp(s->m[i].name, name))
			return &s->m[i];
	if (s->nm == TOP_MAX_METHODS || !strcmp(name, "unknown") || !strncmp(name, "grpc.health", 11))
		return NULL;
	struct method *m = &s->m[s->nm++];
	memset(m, 0, sizeof *m);
	snprintf(m->name, sizeof m->name, "%s", name);
	return m;
}

static void read_text(struct scrape *s, char *text)
{
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		if (line[0] == '#')
			continue;
		char *sp = strrchr(line, ' ');
		if (!sp)
			continue;
		*sp = 0;
		double v = strtod(sp + 1, NULL);
		char *lab = strchr(line, '{'), meth[96], buf[64];
		if (lab) {
			*lab++ = 0;
			char *close = strrchr(lab, '}');
			if (close)
				*close = 0;
		}
		const char *name = line;
		label(lab, "method", meth, sizeof meth);
		struct method *m = meth[0] ? method_of(s, meth) : NULL;
		if (!strcmp(name, "visrec_rpc_requests_total") && m) {
			label(lab, "code", buf, sizeof buf);
			m->calls += v;
			if (strcmp(buf, "OK"))
				m->errors += v;
		} else if (!strcmp(name, "visrec_rpc_in_flight") && m) {
			m->inflight = v;
		} else if (!strcmp(name, "visrec_rpc_duration_seconds_bucket") && m &&
			   m->nb < TOP_MAX_BUCKETS) {
			label(lab, "le", buf, sizeof buf);
			m->le[m->nb] = !strcmp(buf, "+Inf") ? INFINITY : strtod(buf, NULL);
			m->cum[m->nb++] = v;
		} else if (!strcmp(name, "visrec_featured_queue_images")) {
			s->queued = v;
		} else if (!strcmp(name, "visrec_featured_queue_capacity_images")) {
			s->queue_cap = v;
		} else if (!strcmp(name, "visrec_featured_images_decoded_total")) {
			s->decoded = v;
		} else if (!strcmp(name, "visrec_featured_images_embedded_total")) {
			s->embedded = v;
		} else if (!strcmp(name, "visrec_featured_images_refused_total")) {
			s->refused += v;
		} else if (!strcmp(name, "visrec_featured_items")) {
			s->items_f = v;
		} else if (!strcmp(name, "visrec_rankd_training")) {
			s->training = v;
		} else if (!strcmp(name, "visrec_rankd_train_epoch")) {
			s->epoch = v;
		} else if (!strcmp(name, "visrec_rankd_train_epochs")) {
			s->epochs = v;
		} else if (!strcmp(name, "visrec_rankd_train_loss")) {
			s->loss = v;
		} else if (!strcmp(name, "visrec_rankd_train_validation_auc")) {
			s->auc = v;
		} else if (!strcmp(name, "visrec_rankd_train_triples_per_second")) {
			s->triples_s = v;
		} else if (!strcmp(name, "visrec_rankd_follower_lag_changes")) {
			s->lag += v;
		} else if (!strcmp(name, "visrec_rankd_follower_connected")) {
			s->connected += v;
		} else if (!strcmp(name, "visrec_rankd_users")) {
			s->users = v;
		} else if (!strcmp(name, "visrec_rankd_items")) {
			s->items = v;
		} else if (!strcmp(name, "visrec_rankd_interactions")) {
			s->pairs = v;
		} else if (!strcmp(name, "visrec_rankd_model_info") && v == 1) {
			char kind[24], version[24];
			label(lab, "kind", kind, sizeof kind);
			label(lab, "version", version, sizeof version);
			snprintf(s->model, sizeof s->model, "%s v%s", kind, version);
		}
	}
}

static void take(struct scrape *s, const char *addr)
{
	char *text = NULL;
	memset(s, 0, sizeof *s);
	s->t = now_s();
	if (!addr)
		return;
	if (http_get(addr, &text, s->why, sizeof s->why))
		return;
	s->up = 1;
	read_text(s, text);
	free(text);
}

/* ---- the frame ------------------------------------------------------------- */

/* The q-quantile of the calls between prev and cur (Prometheus's
 * histogram_quantile: linear within the bucket); NAN without calls. */
static double quantile(const struct method *cur, const struct method *prev, double q)
{
	double d[TOP_MAX_BUCKETS] = { 0 };
	int nb = cur->nb;
	for (int i = 0; i < nb; i++)
		d[i] = cur->cum[i] - (prev && prev->nb == nb ? prev->cum[i] : 0);
	if (nb == 0 || d[nb - 1] <= 0)
		return NAN;
	double rank = q * d[nb - 1];
	int i = 0;
	while (i < nb - 1 && d[i] < rank)
		i++;
	if (isinf(cur->le[i]))
		return i ? cur->le[i - 1] : NAN; /* past the last bound: say the bound */
	double lo = i ? cur->le[i - 1] : 0, below = i ? d[i - 1] : 0, in = d[i] - below;
	return in > 0 ? lo + (cur->le[i] - lo) * (rank - below) / in : cur->le[i];
}

static void fmt_seconds(char *out, size_t cap, double s)
{
	if (isnan(s))
		snprintf(out, cap, "-");
	else if (s < 1e-3)
		snprintf(out, cap, "%.0f us", s * 1e6);
	else if (s < 1)
		snprintf(out, cap, "%.1f ms", s * 1e3);
	else
		snprintf(out, cap, "%.2f s", s);
}

static const struct method *find(const struct scrape *s, const char *name)
{
	for (int i = 0; i < s->nm; i++)
		if (!strcmp(s->m[i].name, name))
			return &s->m[i];
	return NULL;
}

static void methods_table(FILE *f, const struct scrape *cur, const struct scrape *prev, double dt)
{
	fprintf(f, "  %-34s %9s %9s %10s %9s %10s\n", "METHOD", "CALLS/S", "ERRORS/S", "P99", "IN FLIGHT",
		"CALLS");
	for (int i = 0; i < cur->nm; i++) {
		const struct method *m = &cur->m[i], *p = prev->up ? find(prev, m->name) : NULL;
		if (m->calls == 0 && m->inflight == 0)
			continue;
		double rate = p ? (m->calls - p->calls) / dt : 0, err = p ? (m->errors - p->errors) / dt : 0;
		char p99[24];
		fmt_seconds(p99, sizeof p99, p ? quantile(m, p, 0.99) : NAN);
		const char *name = strncmp(m->name, "visrec.v1.", 10) ? m->name : m->name + 10;
		fprintf(f, "  %-34s %9.1f %9.1f %10s %9.0f %10.0f\n", name, rate, err, p99, m->inflight,
			m->calls);
	}
}

static void frame(FILE *f, const char *const addr[2], const struct scrape cur[2],
		  const struct scrape prev[2], int once)
{
	const char *cl = once ? "\n" : "\x1b[K\n"; /* clear the rest of each line */
	fprintf(f, "visrec top: every %s%s", once ? "frame is one interval" : "second; q quits", cl);
	for (int d = 0; d < 2; d++) {
		const struct scrape *s = &cur[d], *p = &prev[d];
		double dt = s->t - p->t > 0 ? s->t - p->t : 1;
		fprintf(f, "%s", cl);
		if (!addr[d])
			continue;
		if (!s->up) {
			fprintf(f, "%s %s: DOWN (%s)%s", d ? "rankd" : "featured", addr[d], s->why, cl);
			continue;
		}
		if (d == 0) {
			fprintf(f, "featured %s  queue %.0f/%.0f  decoded %.1f/s  embedded %.1f/s  refused %.0f  "
				"items %.0f%s", addr[d], s->queued, s->queue_cap,
				p->up ? (s->decoded - p->decoded) / dt : 0,
				p->up ? (s->embedded - p->embedded) / dt : 0, s->refused, s->items_f, cl);
		} else {
			fprintf(f, "rankd %s  model %s  users %.0f  items %.0f  interactions %.0f  feed lag %.0f%s%s",
				addr[d], s->model[0] ? s->model : "none", s->users, s->items, s->pairs, s->lag,
				s->connected ? "" : " (feed closed)", cl);
			if (s->epoch > 0 || s->training)
				fprintf(f, "  training %s  epoch %.0f/%.0f  loss %.5f  val AUC %.4f  %.0f triples/s%s",
					s->training ? "RUNNING" : "done", s->epoch, s->epochs, s->loss, s->auc,
					s->triples_s, cl);
		}
		methods_table(f, s, p, dt);
	}
	if (!once)
		fprintf(f, "\x1b[J"); /* clear below the frame */
	fflush(f);
}

/* ---- the terminal ------------------------------------------------------- */

static struct termios saved_tty;
static int tty_saved;

static void tty_restore(void)
{
	if (tty_saved)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
	tty_saved = 0;
	printf("\x1b[?25h\x1b[?1049l");
	fflush(stdout);
}

static void tty_setup(void)
{
	if (isatty(STDIN_FILENO) && !tcgetattr(STDIN_FILENO, &saved_tty)) {
		struct termios t = saved_tty;
		t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		t.c_cc[VMIN] = 0;
		t.c_cc[VTIME] = 0;
		if (!tcsetattr(STDIN_FILENO, TCSAFLUSH, &t))
			tty_saved = 1;
	}
	printf("\x1b[?1049h\x1b[?25l"); /* the alternate screen, no cursor */
	fflush(stdout);
}

int cli_cmd_top(cli *c, int argc, char **argv)
{
	const char *addr[2] = { NULL, NULL };
	double interval = 1;
	int once = 0, npos = 0;
	const vr_flag table[] = {
		{ "featured-metrics", "VISREC_FEATURED_METRICS", VR_FLAG_STRING, &addr[0], NULL,
		  "HOST:PORT of featured's --metrics-listen", 0 },
		{ "rankd-metrics", "VISREC_RANKD_METRICS", VR_FLAG_STRING, &addr[1], NULL,
		  "HOST:PORT of rankd's --metrics-listen", 0 },
		{ "interval", NULL, VR_FLAG_DOUBLE, &interval, "1", "seconds between frames", 0 },
		{ "once", NULL, VR_FLAG_BOOL, &once, "false",
		  "print one frame (two scrapes an interval apart) and exit", 0 },
		{ 0 },
	};
	int code = cli_parse(c, table, argc, argv, "visrec top --featured-metrics H:P --rankd-metrics H:P",
			     "A live view of featured and rankd from their metrics endpoints (the daemons'\n"
			     "--metrics-listen): calls/s, errors/s, p99 and calls in flight by method, the\n"
			     "ingest queue, training progress and the change feed's lag. q or Ctrl-C quits.",
			     NULL, &npos);
	if (code || npos < 0)
		return code;
	for (int d = 0; d < 2; d++)
		if (addr[d] && !addr[d][0])
			addr[d] = NULL;
	if (!addr[0] && !addr[1])
		return cli_usage_error("top", "give --featured-metrics, --rankd-metrics or both");
	if (!(interval >= 0.1 && interval <= 3600))
		return cli_usage_error("top", "--interval must be between 0.1 and 3600 seconds");

	static struct scrape cur[2], prev[2];
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	for (int d = 0; d < 2; d++)
		take(&cur[d], addr[d]);
	if (once) {
		usleep((useconds_t)(interval * 1e6));
		memcpy(prev, cur, sizeof cur);
		for (int d = 0; d < 2; d++)
			take(&cur[d], addr[d]);
		frame(stdout, addr, cur, prev, 1);
		return cur[0].up || cur[1].up ? CLI_EXIT_OK : CLI_EXIT_FAIL;
	}
	tty_setup();
	printf("\x1b[H");
	frame(stdout, addr, cur, prev, 0); /* no rates yet: they need two scrapes */
	double next = now_s() + interval;
	int stdin_open = 1;
	while (!stop_flag) {
		int ms = (int)((next - now_s()) * 1000);
		struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
		/* A signal interrupts the wait (no SA_RESTART). */
		int n = poll(&p, stdin_open ? 1 : 0, ms > 0 ? ms : 0);
		if (n > 0) {
			char ch[16];
			ssize_t r = read(STDIN_FILENO, ch, sizeof ch);
			if (r <= 0 && !(r < 0 && (errno == EINTR || errno == EAGAIN)))
				stdin_open = 0; /* closed: go on until a signal */
			for (ssize_t i = 0; i < r; i++)
				if (ch[i] == 'q' || ch[i] == 'Q' || ch[i] == 3)
					stop_flag = 1;
			continue;
		}
		if (now_s() < next)
			continue;
		memcpy(prev, cur, sizeof cur);
		for (int d = 0; d < 2; d++)
			take(&cur[d], addr[d]);
		printf("\x1b[H");
		frame(stdout, addr, cur, prev, 0);
		next += interval;
		if (next < now_s())
			next = now_s() + interval;
	}
	tty_restore();
	return CLI_EXIT_OK;
}
