/* report: the HTML report of a pipeline run (report.h); the data set
 * behind it is report_data.c's. The page is written straight to a FILE in
 * document order; every piece of text that comes from a file goes through
 * put_esc. It is one concept at about 1,100 lines: each section below
 * (the run's files, metrics, charts, users, the rest) writes its part of
 * the one page with the same escaping and style helpers, in the order the
 * page reads. */
#include "report.h"

#include "err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- reading the run ----------------------------------------------------- */

static const char *const model_keys[] = { "bpr", "vbpr", "dvbpr" };
static const char *const model_names[] = { "BPR", "VBPR", "DVBPR" };
static const char *const model_colors[] = { "#4e79a7", "#f28e2b", "#59a14f" };
static const char *const protocols[] = { "standard", "tutorial" };
#define NSUBSETS 4
static const char *const subsets[NSUBSETS] = { "all", "cold", "new", "warm" };
#define NMODELS 3

struct run {
	cJSON *train[NMODELS];
	cJSON *eval[NMODELS][2];
	cJSON *recs[NMODELS];  /* an array of per-user objects */
	cJSON *audience[NMODELS]; /* an array of per-item Audience answers, or NULL */
	cJSON *info;
	char *steps;           /* steps.tsv */
};

/* Reads a whole file. Returns its text (malloc'd) or NULL (errno set). */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0, got;
	do {
		if (cap - len < 65536) {
			cap = cap ? 2 * cap : 65536;
			char *b = realloc(buf, cap + 1);
			if (!b) {
				free(buf);
				fclose(f);
				errno = ENOMEM;
				return NULL;
			}
			buf = b;
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
	} while (got);
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		errno = EIO;
		return NULL;
	}
	buf[len] = 0;
	return buf;
}

/* Reads run_dir/name as JSON: NULL when absent; an error when unreadable. */
static int read_json(const char *run_dir, const char *name, cJSON **out, char *err, size_t errlen)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", run_dir, name);
	*out = NULL;
	char *text = slurp(path);
	if (!text) {
		if (errno == ENOENT)
			return 0;
		return rp__fail(err, errlen, -errno, "cannot read %s: %s", path, strerror(errno));
	}
	/* A command that failed before printing leaves an empty file. */
	const char *p = text;
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
		p++;
	int empty = !*p;
	if (!empty)
		*out = cJSON_Parse(text);
	free(text);
	if (!empty && !*out)
		return rp__fail(err, errlen, VR_EINVAL, "%s is not valid JSON", path);
	return 0;
}

static void run_free(struct run *r)
{
	for (int m = 0; m < NMODELS; m++) {
		cJSON_Delete(r->train[m]);
		cJSON_Delete(r->eval[m][0]);
		cJSON_Delete(r->eval[m][1]);
		cJSON_Delete(r->recs[m]);
		cJSON_Delete(r->audience[m]);
	}
	cJSON_Delete(r->info);
	free(r->steps);
}

/* The CLI saves one answer as an object and several as an array: makes
 * *x an array (NULL when it holds an error). */
static void as_array(cJSON **x)
{
	if (!*x || cJSON_IsArray(*x))
		return;
	cJSON *arr = cJSON_CreateArray();
	if (cJSON_GetObjectItem(*x, "error") || !arr) {
		cJSON_Delete(*x);
		cJSON_Delete(arr);
		*x = NULL;
	} else {
		cJSON_AddItemToArray(arr, *x);
		*x = arr;
	}
}

static int run_load(struct run *r, const char *dir, char *err, size_t errlen)
{
	char name[64];
	int rc = 0;
	for (int m = 0; m < NMODELS && !rc; m++) {
		snprintf(name, sizeof name, "train-%s.json", model_keys[m]);
		rc = read_json(dir, name, &r->train[m], err, errlen);
		for (int p = 0; p < 2 && !rc; p++) {
			snprintf(name, sizeof name, "eval-%s-%s.json", model_keys[m], protocols[p]);
			rc = read_json(dir, name, &r->eval[m][p], err, errlen);
			if (!rc && r->eval[m][p] && cJSON_GetObjectItem(r->eval[m][p], "error")) {
				cJSON_Delete(r->eval[m][p]);
				r->eval[m][p] = NULL;
			}
		}
		snprintf(name, sizeof name, "recs-%s.json", model_keys[m]);
		if (!rc && !(rc = read_json(dir, name, &r->recs[m], err, errlen)))
			as_array(&r->recs[m]);
		snprintf(name, sizeof name, "audience-%s.json", model_keys[m]);
		if (!rc && !(rc = read_json(dir, name, &r->audience[m], err, errlen)))
			as_array(&r->audience[m]);
	}
	if (!rc)
		rc = read_json(dir, "info.json", &r->info, err, errlen);
	if (!rc) {
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/steps.tsv", dir);
		r->steps = slurp(path);
	}
	return rc;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItem(o, key);
	return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str(const cJSON *o, const char *key)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, key));
	return s ? s : "";
}

/* ---- HTML ---------------------------------------------------------------- */

static void put_esc(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&#39;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* Writes a URL path, percent-encoding all but unreserved characters and
 * '/', then escaped for an attribute. */
static void put_url(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    strchr("-._~/", ch))
			fputc(ch, f);
		else
			fprintf(f, "%%%02X", ch);
	}
}

static void put_num(FILE *f, double v, int decimals)
{
	if (isnan(v))
		fputs("–", f);
	else
		fprintf(f, "%.*f", decimals, v);
}

static const char css[] =
	"body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;"
	"background:#f6f7f9;margin:0}"
	"main{max-width:1280px;margin:0 auto;padding:20px 28px 40px}"
	"h1{font-size:26px;margin:8px 0 2px}h2{font-size:20px;margin:34px 0 10px;"
	"border-bottom:2px solid #dde1e7;padding-bottom:4px}h3{font-size:15px;margin:0 0 8px}"
	".sub{color:#5b6475;margin:0 0 12px}"
	".cols{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}"
	"table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);"
	"font-variant-numeric:tabular-nums}"
	"caption{text-align:left;font-weight:600;padding:0 0 6px}"
	"th,td{padding:4px 10px;border-bottom:1px solid #e6e9ee;text-align:right}"
	"th{background:#eef1f5;font-weight:600}td.l,th.l{text-align:left}"
	"td.best{font-weight:700;color:#0b5d1e}tr.grp td{border-top:2px solid #c9ced8}"
	".published caption{color:#7a4b00}.published{border:1px dashed #d3a54a}"
	".note{background:#fff8e6;border-left:4px solid #e0a526;padding:6px 10px;margin:8px 0}"
	".err{background:#fdecec;border-left:4px solid #d64545}"
	"figure.chart{margin:0;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:8px}"
	"figure.chart figcaption{font-weight:600;margin:0 0 4px}"
	".user{background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:12px 14px;margin:0 0 18px}"
	".strip{margin:8px 0 10px}"
	".strip .lab{font-weight:600;font-size:13px;margin:0 0 3px}"
	".strip .lab small{font-weight:400;color:#5b6475;margin-left:8px}"
	".tiles{display:flex;flex-wrap:wrap;gap:3px}"
	".tile{margin:0;width:56px;text-align:center;font-size:10px;line-height:1.2;color:#5b6475;"
	"position:relative}"
	".tile img{width:52px;height:52px;object-fit:contain;background:#eceef2;border:2px solid "
	"transparent;border-radius:3px;display:block;margin:0 auto}"
	".tile.truth img{border-color:#2b8a3e}.tile.hit img{border-color:#2b8a3e;"
	"box-shadow:0 0 0 2px #9ee0ae}"
	".tile .badge{position:absolute;top:1px;left:3px;background:#2b8a3e;color:#fff;"
	"font-size:9px;padding:0 3px;border-radius:2px}"
	".tile .cold{position:absolute;top:1px;right:3px;background:#3b5bdb;color:#fff;"
	"font-size:9px;padding:0 3px;border-radius:2px}"
	"#img-check.ok{color:#2b8a3e}#img-check.bad{color:#d64545;font-weight:700}"
	"footer{margin-top:30px;color:#5b6475;font-size:12px}";

static const char check_script[] =
	"window.addEventListener('load',function(){"
	"var im=document.images,bad=[];"
	"for(var i=0;i<im.length;i++)if(!im[i].complete||im[i].naturalWidth===0)"
	"bad.push(im[i].getAttribute('src'));"
	"var e=document.getElementById('img-check');"
	"e.setAttribute('data-total',im.length);e.setAttribute('data-broken',bad.length);"
	"e.className=bad.length?'bad':'ok';"
	"e.textContent=bad.length?bad.length+' of '+im.length+' images did not load (first: '+bad[0]"
	"+'): the page expects the data set where it was when the report was written.'"
	":'All '+im.length+' images loaded.';});";

/* The published tutorial table (DESIGN.md section 8). */
static void put_published(FILE *f)
{
	static const struct { const char *model; double v[6]; } rows[] = {
		{ "VBPR (ResNet50 features)", { .77846, .02169, .05565, .02684, .13821, .04105 } },
		{ "DVBPR (AlexNet, K=100)", { .83168, .04507, .12152, .05814, .25695, .08245 } },
	};
	fputs("<table id=\"published-table\" class=\"published\"><caption>Published, Wikimedia "
	      "data — other data, not comparable one-to-one<br><small>IUI 2021 VisRec tutorial, "
	      "tutorial protocol, all users</small></caption>\n<tr><th class=\"l\">Model</th>"
	      "<th>AUC</th><th>RR</th><th>R@20</th><th>nDCG@20</th><th>R@100</th><th>nDCG@100</th>"
	      "</tr>\n", f);
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		fprintf(f, "<tr><td class=\"l\">%s</td>", rows[i].model);
		for (int j = 0; j < 6; j++) {
			fputs("<td>", f);
			put_num(f, rows[i].v[j], 5);
			fputs("</td>", f);
		}
		fputs("</tr>\n", f);
	}
	fputs("</table>\n", f);
}

/* The metrics of one eval result: AUC, RR, R@20, nDCG@20, R@100, nDCG@100. */
static void metrics_of(const cJSON *res, double v[6])
{
	v[0] = num(res, "auc");
	v[1] = num(res, "rr");
	v[2] = v[3] = v[4] = v[5] = NAN;
	const cJSON *k;
	cJSON_ArrayForEach(k, cJSON_GetObjectItem(res, "at_k")) {
		double kk = num(k, "k");
		int at = kk == 20 ? 2 : kk == 100 ? 4 : -1;
		if (at >= 0) {
			v[at] = num(k, "recall");
			v[at + 1] = num(k, "ndcg");
		}
	}
}

/* The result for subset in an Evaluate answer's list ("results", or
 * "popularity": the baseline rankd evaluates beside the model). */
static const cJSON *eval_list_subset(const cJSON *eval, const char *list, const char *subset)
{
	const cJSON *r;
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(eval, list))
		if (!strcmp(str(r, "subset"), subset))
			return r;
	return NULL;
}

static const cJSON *eval_subset(const cJSON *eval, const char *subset)
{
	return eval_list_subset(eval, "results", subset);
}

/* The popularity baseline of protocol p and a subset: the same for every
 * model's evaluation (training counts, same users), so the first found. */
static const cJSON *popularity_subset(const struct run *r, int p, const char *subset)
{
	for (int m = 0; m < NMODELS; m++)
		if (r->eval[m][p]) {
			const cJSON *x = eval_list_subset(r->eval[m][p], "popularity", subset);
			if (x)
				return x;
		}
	return NULL;
}

/* One line: whether AUC follows DVBPR > VBPR > BPR > popularity (the
 * order the models' design expects), standard protocol, each subset. Among
 * new items BPR and popularity know nothing (every cold item ties: 0.5),
 * so there the order asked is DVBPR > VBPR > BPR = popularity. */
static void put_order(FILE *f, const struct run *r)
{
	static const char *const names[4] = { "DVBPR", "VBPR", "BPR", "popularity" };
	fputs("<p id=\"order\" class=\"note\">Expected order DVBPR &gt; VBPR &gt; BPR &gt; popularity "
	      "(AUC, standard protocol): ", f);
	for (int s = 0; s < NSUBSETS; s++) {
		double auc[4];
		int have = 1, holds = 1;
		for (int x = 0; x < 4; x++) {
			const cJSON *res = x < 3 ? (r->eval[2 - x][0] ? eval_subset(r->eval[2 - x][0], subsets[s]) : NULL)
					       : popularity_subset(r, 0, subsets[s]);
			auc[x] = res && num(res, "users") > 0 ? num(res, "auc") : NAN;
			have &= !isnan(auc[x]);
			if (x == 3 && s == 2)
				holds &= have && fabs(auc[2] - auc[3]) < 1e-9;
			else if (x && have)
				holds &= auc[x - 1] > auc[x];
		}
		static const char *const what[NSUBSETS] = { " users", " users", " items (BPR = popularity)",
							   " users among warm items" };
		fprintf(f, "%s<b>%s%s: %s</b> (", s ? "; " : "", subsets[s], what[s],
			!have ? "cannot tell, a model is missing" : holds ? "holds" : "does not hold");
		for (int x = 0; x < 4; x++) {
			fprintf(f, "%s%s ", x ? ", " : "", names[x]);
			put_num(f, auc[x], 4);
		}
		fputs(")", f);
	}
	fputs(".</p>\n", f);
}

/* Why a model has no results: its train file's error, or "not run". */
static void put_model_note(FILE *f, const struct run *r, int m)
{
	const cJSON *t = r->train[m];
	const cJSON *e = t ? cJSON_GetObjectItem(t, "error") : NULL;
	if (e) {
		const char *status = str(e, "status");
		int unimpl = !strcmp(status, "UNIMPLEMENTED");
		fprintf(f, "<p class=\"note%s\"><b>%s</b>: %s (", unimpl ? "" : " err", model_names[m],
			unimpl ? "not available in this build" : "training failed");
		put_esc(f, status);
		fputs(": ", f);
		put_esc(f, str(e, "message"));
		fputs(")</p>\n", f);
	} else if (!t) {
		fprintf(f, "<p class=\"note\"><b>%s</b>: not run.</p>\n", model_names[m]);
	}
}

static void put_metrics(FILE *f, const struct run *r)
{
	static const char *const heads[6] = { "AUC", "RR", "R@20", "nDCG@20", "R@100", "nDCG@100" };
	fputs("<section id=\"metrics\"><h2>Evaluation</h2>\n<p class=\"sub\">Each user's latest "
	      "interaction is held out. <b>standard</b>: all of the user's training items are "
	      "excluded from the ranking. <b>tutorial</b>: only the last 10 are excluded and AUC = "
	      "(N−1−rank)/(N−1) over all N items, as in the tutorial's code. <b>cold</b>: users "
	      "whose test item has no training interaction (only its image is known). "
	      "<b>new</b>: the same users, their item ranked among the cold items only: "
	      "whether a model tells which new item suits whom rather than where it puts new "
	      "items as a group (BPR and popularity tie them all: AUC 0.5). "
	      "<b>warm</b>: the other users, their item ranked among the warm items only: how well "
	      "a model knows them, whatever level it gives new items (on the whole catalogue each "
	      "cold item also competes with a warm user's test item). "
	      "<b>popularity</b>: items ranked by training interactions, the baseline every model "
	      "must beat. Best value per group in bold.</p>\n<div class=\"cols\">\n<table id=\"metrics-table\"><caption>"
	      "This run</caption>\n<tr><th class=\"l\">Protocol</th><th class=\"l\">Subset</th>"
	      "<th class=\"l\">Model</th><th>Users</th>", f);
	for (int j = 0; j < 6; j++)
		fprintf(f, "<th>%s</th>", heads[j]);
	fputs("</tr>\n", f);
	int rows = 0;
	for (int p = 0; p < 2; p++) {
		for (int s = 0; s < NSUBSETS; s++) {
			/* The models, then the popularity baseline (row NMODELS). */
			double v[NMODELS + 1][6], best[6];
			const cJSON *res[NMODELS + 1];
			int n = 0;
			for (int m = 0; m <= NMODELS; m++) {
				res[m] = m == NMODELS ? popularity_subset(r, p, subsets[s]) :
					 r->eval[m][p] ? eval_subset(r->eval[m][p], subsets[s]) : NULL;
				if (res[m]) {
					metrics_of(res[m], v[m]);
					n++;
				}
			}
			if (!n)
				continue;
			/* The best of a column, when it stands out (ties of all: none). */
			for (int j = 0; j < 6; j++) {
				double lo = NAN;
				best[j] = NAN;
				for (int m = 0; m <= NMODELS; m++) {
					if (!res[m] || isnan(v[m][j]))
						continue;
					if (isnan(best[j]) || v[m][j] > best[j])
						best[j] = v[m][j];
					if (isnan(lo) || v[m][j] < lo)
						lo = v[m][j];
				}
				if (!(best[j] > lo))
					best[j] = NAN;
			}
			int first = 1;
			for (int m = 0; m <= NMODELS; m++) {
				if (!res[m])
					continue;
				fprintf(f, "<tr%s>", first ? " class=\"grp\"" : "");
				if (first)
					fprintf(f, "<td class=\"l\" rowspan=\"%d\">%s</td><td class=\"l\" "
						"rowspan=\"%d\">%s</td>", n, protocols[p], n, subsets[s]);
				first = 0;
				fprintf(f, "<td class=\"l\">%s</td><td>%.0f</td>",
					m == NMODELS ? "popularity" : model_names[m], num(res[m], "users"));
				if (!(num(res[m], "users") > 0)) {
					/* Not a row of zeros that would read as AUC 0. */
					fputs("<td colspan=\"6\">no users</td></tr>\n", f);
					rows++;
					continue;
				}
				for (int j = 0; j < 6; j++) {
					fprintf(f, "<td%s>", v[m][j] == best[j] ? " class=\"best\"" : "");
					put_num(f, v[m][j], 5);
					fputs("</td>", f);
				}
				fputs("</tr>\n", f);
				rows++;
			}
		}
	}
	if (!rows)
		fputs("<tr><td class=\"l\" colspan=\"10\">No evaluation results in this run.</td></tr>\n",
		      f);
	fputs("</table>\n", f);
	put_published(f);
	fputs("</div>\n", f);
	put_order(f, r);
	for (int m = 0; m < NMODELS; m++)
		put_model_note(f, r, m);
	fputs("</section>\n", f);
}

/* ---- SVG charts ---------------------------------------------------------- */

static double nice_step(double range)
{
	double raw = range / 5, mag = pow(10, floor(log10(raw))), x = raw / mag;
	return (x < 1.5 ? 1 : x < 3 ? 2 : x < 7 ? 5 : 10) * mag;
}

/* A line chart of key per epoch for every model with a curve. */
static void put_chart(FILE *f, const struct run *r, const char *key, const char *title,
		      const char *id)
{
	const double W = 560, H = 300, L = 64, R = 16, T = 26, B = 44;
	double xmax = 1, ymin = INFINITY, ymax = -INFINITY;
	int any = 0;
	for (int m = 0; m < NMODELS; m++) {
		const cJSON *pt, *pts = cJSON_GetObjectItem(r->train[m], "epochs");
		cJSON_ArrayForEach(pt, pts) {
			double x = num(pt, "epoch"), y = num(pt, key);
			if (isnan(x) || isnan(y))
				continue;
			any = 1;
			xmax = x > xmax ? x : xmax;
			ymin = y < ymin ? y : ymin;
			ymax = y > ymax ? y : ymax;
		}
	}
	fprintf(f, "<figure class=\"chart\"><figcaption>%s</figcaption>\n", title);
	fprintf(f, "<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		"viewBox=\"0 0 %.0f %.0f\" font-family=\"system-ui,sans-serif\" font-size=\"11\">\n",
		id, W, H, W, H);
	if (!any) {
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#5b6475\">no "
			"training curve in this run</text></svg></figure>\n", W / 2, H / 2);
		return;
	}
	if (ymax - ymin < 1e-9) {
		ymin -= 0.5;
		ymax += 0.5;
	}
	double pad = (ymax - ymin) * 0.06;
	ymin -= pad;
	ymax += pad;
	double step = nice_step(ymax - ymin);
	int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
	double x0 = 1, x1 = xmax > 1 ? xmax : 2;
#define PX(x) (L + ((x) - x0) / (x1 - x0) * (W - L - R))
#define PY(y) (T + (ymax - (y)) / (ymax - ymin) * (H - T - B))
	fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\" "
		"stroke=\"#c9ced8\"/>\n", L, T, W - L - R, H - T - B);
	for (double y = ceil(ymin / step) * step; y <= ymax + 1e-12; y += step) {
		fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eceef2\"/>"
			"<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#5b6475\">%.*f</text>\n",
			L, W - R, PY(y), PY(y), L - 6, PY(y) + 4, dec, fabs(y) < step / 1e6 ? 0.0 : y);
	}
	double xstep = x1 - x0 <= 10 ? 1 : ceil(nice_step(x1 - x0));
	for (double x = x0; x <= x1 + 1e-9; x += xstep)
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#5b6475\">%.0f"
			"</text>\n", PX(x), H - B + 16, x);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#1d2330\">epoch</text>\n",
		L + (W - L - R) / 2, H - 8);
	int legend = 0;
	for (int m = 0; m < NMODELS; m++) {
		const cJSON *pts = cJSON_GetObjectItem(r->train[m], "epochs"), *pt;
		if (!cJSON_GetArraySize(pts))
			continue;
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
			model_colors[m]);
		cJSON_ArrayForEach(pt, pts)
			if (!isnan(num(pt, key)))
				fprintf(f, "%.1f,%.1f ", PX(num(pt, "epoch")), PY(num(pt, key)));
		fputs("\"/>\n", f);
		cJSON_ArrayForEach(pt, pts)
			if (!isnan(num(pt, key)))
				fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s "
					"epoch %.0f: %.5f</title></circle>\n", PX(num(pt, "epoch")),
					PY(num(pt, key)), model_colors[m], model_names[m], num(pt, "epoch"),
					num(pt, key));
		/* The legend runs along the top, above the plot. */
		fprintf(f, "<rect x=\"%.0f\" y=\"8\" width=\"14\" height=\"3\" fill=\"%s\"/>"
			"<text x=\"%.0f\" y=\"14\" fill=\"#1d2330\">%s</text>\n", L + 70.0 * legend,
			model_colors[m], L + 70.0 * legend + 18, model_names[m]);
		legend++;
	}
#undef PX
#undef PY
	fputs("</svg></figure>\n", f);
}

static void put_training(FILE *f, const struct run *r)
{
	fputs("<section id=\"training\"><h2>Training</h2>\n<p class=\"sub\">BPR loss "
	      "(−ln σ(x<sub>uij</sub>), mean per triple) and AUC on held-out validation items, per "
	      "epoch, from rankd's Train progress stream.</p>\n<div class=\"cols\">\n", f);
	put_chart(f, r, "loss", "Training loss", "chart-loss");
	put_chart(f, r, "val_auc", "Validation AUC", "chart-auc");
	fputs("</div>\n<table id=\"training-table\" style=\"margin-top:14px\"><tr><th class=\"l\">"
	      "Model</th><th class=\"l\">State</th><th>Epochs</th><th>Best val AUC</th>"
	      "<th>Final loss</th><th>Triples/s</th><th>Seconds</th><th class=\"l\">Settings</th>"
	      "</tr>\n", f);
	for (int m = 0; m < NMODELS; m++) {
		const cJSON *t = r->train[m];
		if (!t || cJSON_GetObjectItem(t, "error"))
			continue;
		const cJSON *pts = cJSON_GetObjectItem(t, "epochs"), *pt, *fin;
		double best = NAN, loss = NAN, tps = 0;
		int n = 0;
		cJSON_ArrayForEach(pt, pts) {
			double a = num(pt, "val_auc");
			if (!isnan(a) && (isnan(best) || a > best))
				best = a;
			loss = num(pt, "loss");
			tps += isnan(num(pt, "triples_per_second")) ? 0 : num(pt, "triples_per_second");
			n++;
		}
		fin = cJSON_GetObjectItem(t, "final");
		fprintf(f, "<tr><td class=\"l\">%s</td><td class=\"l\">", model_names[m]);
		put_esc(f, fin ? str(fin, "state") : "?");
		fprintf(f, "</td><td>%d</td><td>", n);
		put_num(f, best, 5);
		fputs("</td><td>", f);
		put_num(f, loss, 5);
		fputs("</td><td>", f);
		put_num(f, n ? tps / n : NAN, 0);
		fputs("</td><td>", f);
		put_num(f, num(t, "seconds"), 1);
		fputs("</td><td class=\"l\">", f);
		const cJSON *req = cJSON_GetObjectItem(t, "request"), *kv;
		int first = 1;
		cJSON_ArrayForEach(kv, req) {
			/* Only what was set: zero and empty mean "the default". */
			if ((cJSON_IsNumber(kv) && kv->valuedouble == 0) || cJSON_IsFalse(kv) ||
			    (cJSON_IsString(kv) && !kv->valuestring[0]) || !strcmp(kv->string, "model"))
				continue;
			fputs(first ? "" : ", ", f);
			put_esc(f, kv->string);
			fputc('=', f);
			if (cJSON_IsString(kv))
				put_esc(f, kv->valuestring);
			else if (cJSON_IsBool(kv))
				fputs("true", f);
			else
				fprintf(f, "%g", kv->valuedouble);
			first = 0;
		}
		fputs("</td></tr>\n", f);
	}
	fputs("</table>\n", f);
	for (int m = 0; m < NMODELS; m++)
		put_model_note(f, r, m);
	fputs("</section>\n", f);
}

/* ---- users --------------------------------------------------------------- */

/* Splits an absolute path into its components, in place. Returns the count. */
static int components(char *path, char **parts, int max)
{
	int n = 0;
	for (char *save = NULL, *c = strtok_r(path, "/", &save); c && n < max;
	     c = strtok_r(NULL, "/", &save))
		parts[n++] = c;
	return n;
}

/* Builds "<rel>/images/" into buf: the data set's images as seen from the
 * folder of the report. Returns 0, -errno, or VR_ETOOBIG. */
static int images_href(const char *out_file, const char *data_dir, char *buf, size_t len)
{
	char from[PATH_MAX], to[PATH_MAX], dir[PATH_MAX];
	char *fp[256], *tp[256];
	snprintf(dir, sizeof dir, "%s", out_file);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = 0;
	else if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof dir, ".");
	if (!realpath(dir, from) || !realpath(data_dir, to))
		return -errno;
	int nf = components(from, fp, 256), nt = components(to, tp, 256), common = 0;
	while (common < nf && common < nt && !strcmp(fp[common], tp[common]))
		common++;
	size_t n = 0;
	buf[0] = 0;
	for (int i = common; i < nf; i++)
		n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "../");
	for (int i = common; i < nt; i++)
		n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s/", tp[i]);
	n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "images/");
	return n < len ? 0 : VR_ETOOBIG;
}

struct page {
	FILE *f;
	const char *href; /* images folder, relative */
	const rp_dataset *ds;
	const struct run *r;
	int k, recent;
};

static void put_tile(const struct page *pg, const char *item, const char *badge, int rank,
		     const char *cls, int cold, double score)
{
	FILE *f = pg->f;
	fprintf(f, "<figure class=\"tile%s%s\">", cls ? " " : "", cls ? cls : "");
	if (badge)
		fprintf(f, "<span class=\"badge\">%s</span>", badge);
	if (cold)
		fputs("<span class=\"cold\">cold</span>", f);
	fputs("<img src=\"", f);
	put_url(f, pg->href);
	put_url(f, item);
	fputs(".jpg\" alt=\"", f);
	put_esc(f, item);
	fputs("\" title=\"", f);
	put_esc(f, item);
	if (!isnan(score))
		fprintf(f, " · score %.4f", score);
	fputs("\" width=\"52\" height=\"52\">", f);
	/* Ids are in the tooltip; under a tile, only what a reader compares. */
	if (rank) {
		fprintf(f, "<figcaption>%d</figcaption>", rank);
	} else if (cls) {
		fputs("<figcaption>", f);
		put_esc(f, item);
		fputs("</figcaption>", f);
	}
	fputs("</figure>", f);
}

/* The recommendations of model m for user, or NULL. */
static const cJSON *recs_for(const struct run *r, int m, const char *user)
{
	const cJSON *o;
	cJSON_ArrayForEach(o, r->recs[m])
		if (!strcmp(str(o, "user_id"), user))
			return o;
	return NULL;
}

/* The 1-based rank of item in recs (within k), or 0. */
static int hit_rank(const cJSON *recs, const char *item, int k)
{
	const cJSON *it;
	int rank = 0;
	cJSON_ArrayForEach(it, cJSON_GetObjectItem(recs, "items")) {
		if (++rank > k)
			break;
		if (!strcmp(str(it, "item_id"), item))
			return rank;
	}
	return 0;
}

static int any_hit(const struct run *r, const rp_user *u, int k)
{
	for (int m = 0; m < NMODELS; m++) {
		const cJSON *rec = recs_for(r, m, u->id);
		if (rec && hit_rank(rec, u->test_item, k))
			return 1;
	}
	return 0;
}

static void put_user(const struct page *pg, const rp_user *u)
{
	FILE *f = pg->f;
	const char *recent[64];
	size_t nr = rp_dataset_recent(pg->ds, u->id, recent, (size_t)pg->recent);
	fputs("<div class=\"user\"><h3>User ", f);
	put_esc(f, u->id);
	fprintf(f, " — test item %s, %zu training interactions</h3>\n",
		u->test_cold ? "<b>cold</b> (no training interactions: only its image is known)"
			     : "warm (seen in training)", u->n_train);
	fprintf(f, "<div class=\"strip\"><div class=\"lab\">Consumed<small>the %zu most recent, "
		"newest first</small></div><div class=\"tiles\">", nr);
	for (size_t i = 0; i < nr; i++)
		put_tile(pg, recent[i], NULL, 0, NULL, 0, NAN);
	fputs("</div></div>\n<div class=\"strip\"><div class=\"lab\">Ground truth<small>the held-out "
	      "test item</small></div><div class=\"tiles\">", f);
	put_tile(pg, u->test_item, "test", 0, "truth", u->test_cold, NAN);
	fputs("</div></div>\n", f);
	for (int m = 0; m < NMODELS; m++) {
		const cJSON *rec = recs_for(pg->r, m, u->id), *it;
		if (!rec)
			continue;
		int hr = hit_rank(rec, u->test_item, pg->k), rank = 0;
		fprintf(f, "<div class=\"strip\"><div class=\"lab\">%s top %d<small>%s", model_names[m],
			pg->k, hr ? "" : "ground truth not in the list");
		if (hr)
			fprintf(f, "ground truth at rank %d", hr);
		const char *fb = str(rec, "fallback");
		if (fb[0]) {
			fputs("; fallback: ", f);
			put_esc(f, fb);
		}
		fputs("</small></div><div class=\"tiles\">", f);
		cJSON_ArrayForEach(it, cJSON_GetObjectItem(rec, "items")) {
			if (++rank > pg->k)
				break;
			const char *item = str(it, "item_id");
			int hit = !strcmp(item, u->test_item);
			put_tile(pg, item, hit ? "hit" : NULL, rank, hit ? "hit" : NULL,
				 cJSON_IsTrue(cJSON_GetObjectItem(it, "cold")), num(it, "score"));
		}
		fputs("</div></div>\n", f);
	}
	fputs("</div>\n", f);
}

/* Audience of new items: for a few cold items, the users each model
 * would show it to (Audience, reverse top-k), what the first of them
 * consumed, and whether the user who did take the item is among them. */
static void put_audience(const struct page *pg)
{
	FILE *f = pg->f;
	const struct run *r = pg->r;
	const cJSON *first = NULL, *o;
	for (int m = NMODELS - 1; m >= 0 && !first; m--)
		first = r->audience[m];
	if (!first)
		return;
	fputs("<section id=\"audience\"><h2>Audience of new items</h2>\n<p class=\"sub\">Items with "
	      "no training interaction (their image is all the model knows) and the users each model "
	      "ranks highest for them (Audience: reverse top-k over users; run.sh asks with "
	      "include_seen, so the user who took the item in the held-out test can show: "
	      "<b>hit</b>).</p>\n", f);
	cJSON_ArrayForEach(o, first) {
		const char *item = str(o, "item_id");
		fputs("<div class=\"user\"><h3>Item ", f);
		put_esc(f, item);
		fputs("</h3>\n<div class=\"strip\"><div class=\"lab\">New item</div><div class=\"tiles\">", f);
		put_tile(pg, item, "new", 0, "truth", 1, NAN);
		fputs("</div></div>\n", f);
		for (int m = 0; m < NMODELS; m++) {
			const cJSON *a = NULL, *x, *u;
			cJSON_ArrayForEach(x, r->audience[m])
				if (!strcmp(str(x, "item_id"), item))
					a = x;
			if (!a)
				continue;
			fprintf(f, "<div class=\"strip\"><div class=\"lab\">%s audience</div><div>",
				model_names[m]);
			int rank = 0, shown = 0;
			cJSON_ArrayForEach(u, cJSON_GetObjectItem(a, "users")) {
				rp_user ru;
				const char *id = str(u, "user_id");
				int hit = !rp_dataset_user(pg->ds, id, &ru) && !strcmp(ru.test_item, item);
				fprintf(f, "%s%d. %s", rank ? ", " : "", rank + 1, hit ? "<b>hit " : "");
				put_esc(f, id);
				fputs(hit ? "</b>" : "", f);
				rank++;
			}
			fputs(rank ? "" : "no users", f);
			fputs("</div></div>\n", f);
			/* What the two best-ranked users consumed. */
			cJSON_ArrayForEach(u, cJSON_GetObjectItem(a, "users")) {
				if (shown++ == 2)
					break;
				const char *recent[64];
				size_t nr = rp_dataset_recent(pg->ds, str(u, "user_id"), recent,
							      (size_t)(pg->recent < 8 ? pg->recent : 8));
				fputs("<div class=\"strip\"><div class=\"lab\">", f);
				put_esc(f, str(u, "user_id"));
				fputs("<small>consumed, newest first</small></div><div class=\"tiles\">", f);
				for (size_t i = 0; i < nr; i++)
					put_tile(pg, recent[i], NULL, 0, NULL, 0, NAN);
				fputs("</div></div>\n", f);
			}
		}
		fputs("</div>\n", f);
	}
	fputs("</section>\n", f);
}

static void put_users(const struct page *pg, int want)
{
	FILE *f = pg->f;
	const struct run *r = pg->r;
	rp_user *cand = calloc(4096, sizeof *cand), shown[64];
	size_t ncand = 0, nshown = 0;
	int from_recs = 0;
	want = want > 64 ? 64 : want;
	/* Candidates: the users whose recommendations were collected. */
	for (int m = 0; m < NMODELS && cand && !ncand; m++) {
		const cJSON *o;
		cJSON_ArrayForEach(o, r->recs[m])
			if (ncand < 4096 && !rp_dataset_user(pg->ds, str(o, "user_id"), &cand[ncand]))
				ncand++;
		from_recs = ncand > 0;
	}
	if (cand && !ncand)
		ncand = rp_pick_users(pg->ds, (size_t)want, cand);
	/* Half cold, half warm; within each, users with a hit first. */
	int want_cold = (want + 1) / 2;
	for (int pass = 0; pass < 4 && cand; pass++) {
		int cold = pass < 2, hits = !(pass & 1);
		for (size_t i = 0; i < ncand && (int)nshown < (cold ? want_cold : want); i++) {
			if (cand[i].test_cold != cold || any_hit(r, &cand[i], pg->k) != hits)
				continue;
			shown[nshown++] = cand[i];
		}
	}
	/* Too few of one kind: fill with the other. */
	for (size_t i = 0; i < ncand && (int)nshown < want; i++) {
		int dup = 0;
		for (size_t j = 0; j < nshown; j++)
			dup |= !strcmp(shown[j].id, cand[i].id);
		if (!dup)
			shown[nshown++] = cand[i];
	}
	fputs("<section id=\"users\"><h2>Recommendations for a few users</h2>\n<p class=\"sub\">", f);
	if (from_recs)
		fprintf(f, "Of %zu users picked evenly from the data set (about half with a cold test "
			"item), %zu are shown: cold test item first, and within each kind those for whom "
			"some model's top %d holds the test item. A green frame marks the ground truth; "
			"<span style=\"color:#3b5bdb\">cold</span> marks items without training "
			"interactions.", ncand, nshown, pg->k);
	else
		fputs("No recommendations were collected in this run: only what the users consumed "
		      "and their test items are shown.", f);
	fputs("</p>\n", f);
	for (size_t i = 0; i < nshown; i++)
		put_user(pg, &shown[i]);
	fputs("</section>\n", f);
	free(cand);
}

/* ---- the rest of the page ------------------------------------------------ */

/* n with thousands separators ("96,991") in buf (32 bytes). */
static const char *grouped(size_t n, char *buf)
{
	char digits[24];
	int len = snprintf(digits, sizeof digits, "%zu", n), k = 0;
	for (int i = 0; i < len; i++) {
		if (i && (len - i) % 3 == 0)
			buf[k++] = ',';
		buf[k++] = digits[i];
	}
	buf[k] = 0;
	return buf;
}

static void put_dataset(FILE *f, const rp_dataset *ds, const char *data_dir)
{
	rp_stats s;
	rp_dataset_stats(ds, &s);
	fputs("<section id=\"data\"><h2>Data</h2>\n<div class=\"cols\"><table id=\"data-table\">"
	      "<caption>Data set</caption><tr><th class=\"l\"></th><th>This run</th>"
	      "<th>Wikimedia (tutorial)</th></tr>\n", f);
	char n[7][32];
	fprintf(f, "<tr><td class=\"l\">users</td><td>%s</td><td>1,078</td></tr>\n"
		   "<tr><td class=\"l\">items</td><td>%s</td><td>9,633</td></tr>\n"
		   "<tr><td class=\"l\">interactions</td><td>%s</td><td>96,991</td></tr>\n"
		   "<tr><td class=\"l\">per user: min / median / mean / max</td><td>%s / %s / %.1f / "
		   "%s</td><td>4 / 16 / 90 / 3,544</td></tr>\n"
		   "<tr><td class=\"l\">users whose test item is cold</td><td>%s</td><td>–</td></tr>\n"
		   "</table>\n", grouped(s.users, n[0]), grouped(s.items, n[1]),
		grouped(s.interactions, n[2]), grouped(s.activity_min, n[3]),
		grouped(s.activity_median, n[4]), s.activity_mean, grouped(s.activity_max, n[5]),
		grouped(s.cold_test_users, n[6]));
	/* Which images datagen drew (its meta.json): the report of a run on
	 * real photos must say so, not pass for the procedural data. */
	cJSON *meta = NULL;
	char why[256];
	const char *kind = "";
	if (!read_json(data_dir, "meta.json", &meta, why, sizeof why) && meta)
		kind = str(cJSON_GetObjectItem(meta, "images"), "kind");
	fputs("<p class=\"sub\" style=\"max-width:520px\">From <code>", f);
	put_esc(f, data_dir);
	fputs("/interactions.csv</code>: a generated data set shaped like the tutorial's Wikimedia "
	      "data, where users prefer what the images show and also follow hidden collaborative "
	      "structure. ", f);
	if (!strcmp(kind, "fashion-mnist"))
		fputs("Images: real garment photographs (Fashion-MNIST) of each item's class, "
		      "tinted by its hidden colour attribute.", f);
	else if (!strcmp(kind, "procedural"))
		fputs("Images: drawn from each item's hidden attributes (category, hue, texture).", f);
	else if (*kind) {
		fputs("Images: ", f);
		put_esc(f, kind);
		fputs(".", f);
	}
	fputs("</p></div></section>\n", f);
	cJSON_Delete(meta);
}

static void put_services(FILE *f, const struct run *r)
{
	const cJSON *fd = cJSON_GetObjectItem(r->info, "featured");
	const cJSON *rk = cJSON_GetObjectItem(r->info, "rankd");
	if (!fd && !rk)
		return;
	fputs("<p class=\"sub\">", f);
	if (fd && !cJSON_GetObjectItem(fd, "status")) {
		const cJSON *am = cJSON_GetObjectItem(fd, "active_model");
		fputs("featured: backend ", f);
		put_esc(f, str(fd, "backend"));
		fputs(" (", f);
		put_esc(f, str(fd, "device"));
		fputs("), VBPR's visual features from CNN ", f);
		put_esc(f, str(am, "arch"));
		fprintf(f, " (%.0f dims, %.0f px input, layer ", num(am, "dims"), num(am, "input_size"));
		put_esc(f, str(am, "output_layer"));
		fprintf(f, "), %.0f items. ", num(fd, "items"));
	}
	if (rk && !cJSON_GetObjectItem(rk, "status"))
		fprintf(f, "rankd: %.0f users, %.0f items, %.0f interactions.", num(rk, "users"),
			num(rk, "items"), num(rk, "interactions"));
	fputs("</p>\n", f);
}

static void put_steps(FILE *f, char *steps)
{
	if (!steps || !steps[0])
		return;
	fputs("<section id=\"pipeline\"><h2>Pipeline</h2>\n<table id=\"steps-table\"><tr>"
	      "<th class=\"l\">Step</th><th>Seconds</th><th class=\"l\">Note</th></tr>\n", f);
	for (char *save = NULL, *line = strtok_r(steps, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *sec = strchr(line, '\t'), *note = NULL;
		if (sec) {
			*sec++ = 0;
			if ((note = strchr(sec, '\t')))
				*note++ = 0;
		}
		fputs("<tr><td class=\"l\">", f);
		put_esc(f, line);
		fputs("</td><td>", f);
		put_esc(f, sec ? sec : "");
		fputs("</td><td class=\"l\">", f);
		put_esc(f, note ? note : "");
		fputs("</td></tr>\n", f);
	}
	fputs("</table></section>\n", f);
}

int rp_write(const rp_opts *o, char *err, size_t errlen)
{
	struct run run = { 0 };
	rp_dataset *ds = NULL;
	FILE *f = NULL;
	char tmp[PATH_MAX], href[PATH_MAX], when[64];
	int rc = rp_dataset_load(&ds, o->data_dir, err, errlen);
	if (rc)
		goto leave;
	if ((rc = run_load(&run, o->run_dir, err, errlen)))
		goto leave;
	if ((rc = images_href(o->out_file, o->data_dir, href, sizeof href))) {
		rc = rp__fail(err, errlen, rc, "cannot relate %s to %s: %s", o->out_file, o->data_dir,
			  vr_strerror(rc));
		goto leave;
	}
	snprintf(tmp, sizeof tmp, "%s.tmp", o->out_file);
	if (!(f = fopen(tmp, "w"))) {
		rc = rp__fail(err, errlen, -errno, "cannot write %s: %s", tmp, strerror(errno));
		goto leave;
	}
	time_t now = time(NULL);
	strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now));
	fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
		"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
		"<title>visrec report</title>\n<style>%s</style></head>\n<body><main>\n", css);
	fprintf(f, "<h1>visrec — pipeline report</h1>\n<p class=\"sub\">BPR, VBPR and DVBPR trained "
		"and evaluated by featured and rankd on this machine, %s. Run folder <code>", when);
	put_esc(f, o->run_dir);
	fputs("</code>.</p>\n", f);
	put_services(f, &run);
	put_dataset(f, ds, o->data_dir);
	put_metrics(f, &run);
	put_training(f, &run);
	struct page pg = { .f = f, .href = href, .ds = ds, .r = &run,
			   .k = o->k > 0 ? o->k : 20, .recent = o->recent > 0 ? o->recent : 10 };
	pg.recent = pg.recent > 64 ? 64 : pg.recent;
	put_users(&pg, o->users > 0 ? o->users : 4);
	put_audience(&pg);
	put_steps(f, run.steps);
	fputs("<footer><p>Image check: <span id=\"img-check\" data-broken=\"unknown\">not run "
	      "(needs JavaScript)</span></p><p>Written by <code>visrec report</code>; no external "
	      "resources.</p></footer>\n</main>\n<script>", f);
	fputs(check_script, f);
	fputs("</script>\n</body></html>\n", f);
	if (ferror(f) | fclose(f)) {
		f = NULL;
		rc = rp__fail(err, errlen, VR_EIO, "writing %s failed", tmp);
		goto leave;
	}
	f = NULL;
	if (rename(tmp, o->out_file)) {
		rc = rp__fail(err, errlen, -errno, "cannot rename %s to %s: %s", tmp, o->out_file,
			  strerror(errno));
		goto leave;
	}
leave:
	if (f) {
		fclose(f);
		unlink(tmp);
	}
	run_free(&run);
	rp_dataset_free(ds);
	return rc;
}
