// Interop test: an independent gRPC implementation (@grpc/grpc-js, pure
// JavaScript, no code shared with gRPC core) drives every RPC of the real
// featured and rankd daemons, started here on loopback with fresh data
// directories, on a small data set from the generator (real JPEGs and
// interactions), and checks the answers: values, counts, orders, status
// codes and messages, the streaming RPCs and the error paths included.
//
//   node interop.js --featured PATH --rankd PATH --datagen PATH --proto DIR
'use strict';
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const S = grpc.status;

function arg(name) {
	const i = process.argv.indexOf('--' + name);
	if (i < 0 || i + 1 >= process.argv.length) throw new Error('missing --' + name);
	return process.argv[i + 1];
}

// Starts a daemon and resolves with its bound address, read from the one
// line "<name> listening on HOST:PORT" it prints when serving.
function startDaemon(bin, args) {
	return new Promise((resolve, reject) => {
		const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
		let out = '';
		const timer = setTimeout(() => reject(new Error(bin + ' did not report its address in 20 s')), 20000);
		child.stdout.on('data', (d) => {
			out += d;
			const m = /listening on (\S+)/.exec(out);
			if (m) { clearTimeout(timer); resolve({ child, addr: m[1] }); }
		});
		child.on('exit', (code) => { clearTimeout(timer); reject(new Error(bin + ' exited early with ' + code)); });
	});
}

function stopDaemon(d) {
	return new Promise((resolve) => {
		d.child.removeAllListeners('exit');
		const timer = setTimeout(() => { d.child.kill('SIGKILL'); resolve(-1); }, 5000);
		d.child.on('exit', (code) => { clearTimeout(timer); resolve(code); });
		d.child.kill('SIGTERM');
	});
}

const deadline = (s) => ({ deadline: new Date(Date.now() + s * 1000) });

function unary(client, method, req, seconds = 10) {
	return new Promise((resolve, reject) => {
		client[method](req, deadline(seconds), (err, res) => (err ? reject(err) : resolve(res)));
	});
}

// A client stream: writes every request, half-closes, resolves with the reply.
function clientStream(client, method, reqs, seconds = 60) {
	return new Promise((resolve, reject) => {
		const call = client[method](deadline(seconds), (err, res) => (err ? reject(err) : resolve(res)));
		for (const r of reqs) call.write(r);
		call.end();
	});
}

// A server stream read to its end: resolves with every message.
function serverStream(client, method, req, seconds = 60) {
	return new Promise((resolve, reject) => {
		const got = [];
		const call = client[method](req, deadline(seconds));
		call.on('data', (m) => got.push(m));
		call.on('error', reject);
		call.on('end', () => resolve(got));
	});
}

// A bidi stream driven one exchange at a time: send(req) resolves with
// the next reply; end() half-closes and resolves with the final status.
function bidi(client, method, seconds = 120) {
	const call = client[method](deadline(seconds));
	const replies = [], waiting = [];
	let failure = null, ended = false;
	const status = new Promise((resolve) => call.on('status', resolve));
	call.on('data', (m) => (waiting.length ? waiting.shift().resolve(m) : replies.push(m)));
	call.on('error', (e) => { failure = e; while (waiting.length) waiting.shift().reject(e); });
	call.on('end', () => { ended = true; while (waiting.length) waiting.shift().reject(new Error('stream ended')); });
	const next = () => new Promise((resolve, reject) => {
		if (replies.length) return resolve(replies.shift());
		if (failure) return reject(failure);
		if (ended) return reject(new Error('stream ended'));
		waiting.push({ resolve, reject });
	});
	return {
		send: (req) => { call.write(req); return next(); },
		error: () => new Promise((resolve) => { if (failure) resolve(failure); else call.on('error', resolve); }),
		end: () => { call.end(); return status; },
	};
}

// Asserts that p fails with status code and a message containing each of want.
async function rejects(p, code, ...want) {
	let err = null;
	try { await p; } catch (e) { err = e; }
	assert.ok(err, `expected ${grpcName(code)}, the call succeeded`);
	assert.equal(err.code, code, `expected ${grpcName(code)}, got ${grpcName(err.code)}: ${err.details}`);
	for (const w of want) assert.ok(err.details.includes(w), `"${err.details}" does not contain "${w}"`);
	return err;
}

const grpcName = (code) => Object.keys(S).find((k) => S[k] === code) || String(code);
const close = (a, b, tol = 1e-5) => Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));
const isProb = (x) => Number.isFinite(x) && x >= 0 && x <= 1;

async function main() {
	const protoDir = arg('proto');
	const opts = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir] };
	const pkg = grpc.loadPackageDefinition(loader.loadSync(
		['visrec/v1/featured.proto', 'visrec/v1/rankd.proto', 'grpc/health/v1/health.proto'], opts));
	const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'visrec-interop-'));
	const creds = grpc.credentials.createInsecure();
	const daemons = [];
	let failed = 0, passed = 0;
	const check = async (name, fn) => {
		try { await fn(); passed++; console.log('ok   ' + name); } catch (e) { failed++; console.log('FAIL ' + name + ': ' + e.message); }
	};
	try {
		// A small data set: real JPEGs and interactions shaped like the tutorial's.
		const data = path.join(tmp, 'data');
		execFileSync(arg('datagen'), ['--out', data, '--users', '40', '--items', '30', '--interactions', '400',
			'--image-min', '48', '--image-max', '64', '--seed', '5'], { stdio: 'ignore' });
		const imageDir = path.join(data, 'images');
		const ids = fs.readdirSync(imageDir).filter((f) => f.endsWith('.jpg')).sort().map((f) => f.slice(0, -4));
		const jpeg = (id) => fs.readFileSync(path.join(imageDir, id + '.jpg'));
		const rows = fs.readFileSync(path.join(data, 'interactions.csv'), 'utf8').trim().split('\n').slice(1)
			.map((l) => { const [user_id, item_id, ts] = l.split(','); return { user_id, item_id, timestamp: Number(ts) }; });

		const fd = await startDaemon(arg('featured'), ['--listen', '127.0.0.1:0', '--data', path.join(tmp, 'featured'),
			'--arch', 'small', '--input-size', '32']);
		daemons.push(fd);
		const rk = await startDaemon(arg('rankd'), ['--listen', '127.0.0.1:0', '--data', path.join(tmp, 'rankd'),
			'--featured', fd.addr]);
		daemons.push(rk);

		for (const [name, d] of [['featured', fd], ['rankd', rk]]) {
			const health = new pkg.grpc.health.v1.Health(d.addr, creds);
			await check(name + ' Health/Check is SERVING', async () => {
				const res = await unary(health, 'Check', { service: '' });
				assert.equal(res.status, 'SERVING');
			});
			await check(name + ' unknown health service is NOT_FOUND', async () => {
				await rejects(unary(health, 'Check', { service: 'no.such.Service' }), S.NOT_FOUND);
			});
			health.close();
		}

		// ---- featured ----
		const fcl = new pkg.visrec.v1.Featured(fd.addr, creds);
		let dims = 0, version = 0;
		await check('featured Info on a fresh store', async () => {
			const info = await unary(fcl, 'Info', {});
			assert.match(info.server_version, /\d+\.\d+/);
			assert.ok(['cpu', 'onednn', 'cuda'].includes(info.backend), 'backend ' + info.backend);
			assert.equal(info.items, 0);
			assert.equal(info.last_seq, 0);
			assert.ok(info.max_image_bytes > 0 && info.max_image_pixels > 0);
			assert.equal(info.active_model.arch, 'small');
			assert.equal(info.active_model.input_size, 32);
			assert.ok(info.active_model.dims > 0);
			dims = info.active_model.dims;
			version = info.active_model.version;
			assert.ok(version >= 1);
		});

		await check('featured PutItems stores every image, refuses bad ids per item', async () => {
			const bad = [
				{ item_id: 'i5\u0000evil', why: 'item_id contains a NUL byte at offset 2' },
				{ item_id: '', why: 'item_id is empty' },
				{ item_id: 'x'.repeat(257), why: 'is longer than 256 bytes (257)' },
				{ item_id: 'tab\tid', why: 'contains a control character (U+0009) at byte 3' },
			];
			const reqs = ids.map((id) => ({ item_id: id, image: jpeg(id) }));
			reqs.splice(3, 0, ...bad.map((b) => ({ item_id: b.item_id, image: jpeg(ids[0]) })));
			const res = await clientStream(fcl, 'PutItems', reqs);
			assert.equal(res.accepted, ids.length);
			assert.equal(res.rejected, bad.length);
			assert.equal(res.items.length, reqs.length);
			let seq = 0;
			res.items.forEach((s, i) => {
				const b = bad.find((x) => x.item_id === reqs[i].item_id);
				if (b) {
					assert.equal(s.code, S.INVALID_ARGUMENT);
					assert.equal(s.item_id, '', 'a refused id is not echoed');
					assert.ok(s.message.startsWith(`message ${i + 1} of the stream: `) && s.message.includes(b.why), s.message);
					return;
				}
				assert.equal(s.code, S.OK, s.message);
				assert.equal(s.item_id, reqs[i].item_id);
				assert.ok(s.seq > seq, 'sequence numbers rise in stream order');
				seq = s.seq;
			});
			assert.equal(seq, ids.length);
		});

		await check('featured Info counts the items', async () => {
			const info = await unary(fcl, 'Info', {});
			assert.equal(info.items, ids.length);
			assert.equal(info.last_seq, ids.length);
		});

		const vectors = new Map();
		await check('featured GetVectors by ids, with a missing one', async () => {
			const got = await serverStream(fcl, 'GetVectors', { item_ids: [ids[2], 'nope', ids[0]] });
			const vs = got.flatMap((m) => m.vectors);
			assert.deepEqual(vs.map((v) => v.item_id), [ids[2], ids[0]]);
			assert.deepEqual(got.flatMap((m) => m.missing), ['nope']);
			for (const m of got) { assert.equal(m.dims, dims); assert.equal(m.model_version, version); }
			for (const v of vs) {
				assert.equal(v.values.length, dims);
				assert.ok(v.values.every(Number.isFinite));
				assert.equal(v.model_version, version);
			}
		});

		await check('featured GetVectors all, chunked', async () => {
			const got = await serverStream(fcl, 'GetVectors', { all: true, max_per_message: 7 });
			assert.equal(got.length, Math.ceil(ids.length / 7));
			assert.ok(got.every((m) => m.vectors.length <= 7));
			const vs = got.flatMap((m) => m.vectors);
			assert.deepEqual(vs.map((v) => v.item_id).sort(), ids);
			for (const v of vs) vectors.set(v.item_id, v.values);
			// Different images, different vectors.
			assert.notDeepEqual(vectors.get(ids[0]), vectors.get(ids[1]));
		});

		await check('featured GetVectors errors', async () => {
			await rejects(serverStream(fcl, 'GetVectors', { all: true, model_version: 99 }), S.NOT_FOUND,
				'model version 99 does not exist');
			await rejects(serverStream(fcl, 'GetVectors', { item_ids: [ids[0], 'a\u0000b'] }), S.INVALID_ARGUMENT,
				'item_ids[1] contains a NUL byte at offset 1');
		});

		await check('featured Embed persists a vector equal to the stored one for the same image', async () => {
			const res = await unary(fcl, 'Embed', { item_id: 'embedded', image: jpeg(ids[0]) });
			assert.equal(res.vector.item_id, 'embedded');
			assert.equal(res.vector.model_version, version);
			assert.equal(res.seq, ids.length + 1);
			const want = vectors.get(ids[0]);
			assert.equal(res.vector.values.length, want.length);
			res.vector.values.forEach((x, k) => assert.ok(close(x, want[k]), `value ${k}: ${x} vs ${want[k]}`));
			const got = await serverStream(fcl, 'GetVectors', { item_ids: ['embedded'] });
			assert.deepEqual(got[0].vectors[0].values, res.vector.values);
		});

		await check('featured Embed errors', async () => {
			await rejects(unary(fcl, 'Embed', { item_id: 'png', image: Buffer.from('\x89PNG\r\n\x1a\n0000', 'latin1') }),
				S.INVALID_ARGUMENT, 'item png: not a JPEG');
			await rejects(unary(fcl, 'Embed', { item_id: '', image: jpeg(ids[0]) }), S.INVALID_ARGUMENT, 'item_id is empty');
			await rejects(unary(fcl, 'Embed', { item_id: 'noimage' }), S.INVALID_ARGUMENT, 'no image bytes');
		});

		await check('featured Watch: live changes with vectors, and a replay from the start', async () => {
			const before = await unary(fcl, 'Info', {});
			const call = fcl.Watch({ after_seq: before.last_seq, include_vectors: true }, deadline(60));
			const changes = [];
			const two = new Promise((resolve, reject) => {
				call.on('data', (c) => { changes.push(c); if (changes.length === 2) resolve(); });
				call.on('error', (e) => (e.code === S.CANCELLED ? null : reject(e)));
			});
			// Changes after after_seq come from the store: no race with the puts.
			const r1 = await clientStream(fcl, 'PutItems', [{ item_id: 'w1', image: jpeg(ids[3]) }]);
			const r2 = await clientStream(fcl, 'PutItems', [{ item_id: 'w1', image: jpeg(ids[4]) }]);
			await two;
			call.cancel();
			assert.deepEqual(changes.map((c) => [c.seq, c.kind, c.item_id, c.model_version]),
				[[r1.items[0].seq, 'ADDED', 'w1', version], [r2.items[0].seq, 'REPLACED', 'w1', version]]);
			assert.equal(r1.items[0].seq, before.last_seq + 1);
			for (const c of changes) assert.equal(c.vector.values.length, dims);
			assert.notDeepEqual(changes[0].vector.values, changes[1].vector.values);

			const replay = fcl.Watch({ after_seq: 0 }, deadline(60));
			const first = await new Promise((resolve, reject) => {
				const got = [];
				replay.on('data', (c) => { got.push(c); if (got.length === 3) resolve(got); });
				replay.on('error', (e) => (e.code === S.CANCELLED ? null : reject(e)));
			});
			replay.cancel();
			assert.deepEqual(first.map((c) => [c.seq, c.kind, c.item_id]),
				[[1, 'ADDED', ids[0]], [2, 'ADDED', ids[1]], [3, 'ADDED', ids[2]]]);
			assert.equal(first[0].vector, null, 'no vectors unless asked');
		});

		await check('featured TrainVisual: start, embed, two steps, finish re-embeds', async () => {
			const items = (await unary(fcl, 'Info', {})).items;
			const tv = bidi(fcl, 'TrainVisual');
			const K = 4, n = 3;
			const started = await tv.send({ start: { arch: 'small', dims: K, input_size: 16, learning_rate: 0.01, seed: 3, session_id: 'interop' } });
			assert.equal(started.msg, 'started');
			assert.deepEqual([started.started.session_id, started.started.step, started.started.dims, started.started.base_model_version],
				['interop', 0, K, version]);
			const emb = await tv.send({ embed: { session_id: 'interop', items: [ids[0], ids[1]] } });
			assert.equal(emb.msg, 'embedded');
			assert.equal(emb.embedded.dims, K);
			assert.equal(emb.embedded.values.length, 2 * K);
			assert.ok(emb.embedded.values.every(Number.isFinite));
			const theta = Array.from({ length: n * K }, (_, k) => Math.sin(k + 1));
			for (const step of [1, 2]) {
				const res = await tv.send({ step: { session_id: 'interop', step, pos_items: ids.slice(0, n),
					neg_items: ids.slice(n, 2 * n), theta, margin: [0, 0.5, -0.5] } });
				assert.equal(res.msg, 'step');
				const r = res.step;
				assert.equal(r.step, step);
				assert.equal(r.loss.length, n);
				assert.equal(r.g.length, n);
				assert.equal(r.dtheta.length, n * K);
				assert.ok(r.network_seconds >= 0);
				// BPR: loss = -ln σ(x) and g = σ(-x), so loss = -ln(1 - g).
				r.g.forEach((g, t) => {
					assert.ok(g > 0 && g < 1, 'g ' + g);
					assert.ok(close(r.loss[t], -Math.log(1 - g), 1e-4), `loss ${r.loss[t]} vs g ${g}`);
				});
				assert.ok(r.dtheta.every(Number.isFinite));
			}
			const fin = await tv.send({ finish: { session_id: 'interop', reembed: true } });
			assert.equal(fin.msg, 'finished');
			assert.ok(fin.finished.model_version > version);
			assert.equal(fin.finished.items_embedded, items);
			const st = await tv.end();
			assert.equal(st.code, S.OK);
			// The new version is live beside the active one, which stays.
			const info = await unary(fcl, 'Info', {});
			assert.equal(info.active_model.version, version);
			const v = info.models.find((m) => m.version === fin.finished.model_version);
			assert.ok(v && v.live && v.dims === K && v.purpose === 'embedding', JSON.stringify(v));
			assert.ok(!info.models.find((m) => m.version === version).live);
			let got = await serverStream(fcl, 'GetVectors', { item_ids: [ids[0]] });
			assert.equal(got[0].model_version, version);
			got = await serverStream(fcl, 'GetVectors', { item_ids: [ids[0]],
				model_version: fin.finished.model_version });
			assert.equal(got[0].model_version, fin.finished.model_version);
			assert.equal(got[0].vectors[0].values.length, K);
		});

		await check('featured TrainVisual errors', async () => {
			let tv = bidi(fcl, 'TrainVisual');
			tv.send({ step: { session_id: 'x', step: 1 } }).catch(() => {});
			let e = await tv.error();
			assert.equal(e.code, S.FAILED_PRECONDITION);
			assert.ok(e.details.includes('send TrainVisualStart before steps'), e.details);
			const start = { start: { arch: 'small', dims: 4, input_size: 16, learning_rate: 0.01, session_id: 'errs' } };
			for (const [pos, code, want] of [
				['nope', S.NOT_FOUND, 'step.pos_items[0]: item "nope" has no image'],
				['a\u0000b', S.INVALID_ARGUMENT, 'step.pos_items[0] contains a NUL byte at offset 1'],
			]) {
				tv = bidi(fcl, 'TrainVisual');
				assert.equal((await tv.send(start)).msg, 'started');
				tv.send({ step: { session_id: 'errs', step: 1, pos_items: [pos], neg_items: [ids[0]],
					theta: [1, 1, 1, 1], margin: [0] } }).catch(() => {});
				e = await tv.error();
				assert.equal(e.code, code, e.details);
				assert.ok(e.details.includes(want), e.details);
			}
			tv = bidi(fcl, 'TrainVisual');
			tv.send({ start: { arch: 'nonet', session_id: 'y', learning_rate: 0.01 } }).catch(() => {});
			e = await tv.error();
			assert.equal(e.code, S.INVALID_ARGUMENT);
			assert.ok(e.details.includes('arch "nonet" is not known'), e.details);
		});
		// BPR ranks featured's whole catalogue as well as the items of
		// interactions (issue 15.5).
		let featuredIds = [];
		await check('featured GetVectors all names the catalogue rankd will rank', async () => {
			const got = await serverStream(fcl, 'GetVectors', { all: true });
			featuredIds = got.flatMap((m) => m.vectors).map((v) => v.item_id);
			assert.ok(featuredIds.length >= ids.length);
		});
		fcl.close();

		// ---- rankd ----
		const rcl = new pkg.visrec.v1.Rank(rk.addr, creds);
		await check('rankd Info on a fresh store', async () => {
			const info = await unary(rcl, 'Info', {});
			assert.match(info.server_version, /\d+\.\d+/);
			assert.equal(info.featured, fd.addr);
			assert.equal(info.users, 0);
			assert.equal(info.interactions, 0);
			assert.equal(info.model, 'MODEL_KIND_UNSPECIFIED');
			assert.equal(info.training, false);
			assert.ok(info.max_k >= 100);
		});

		await check('rankd refuses to rank before Train', async () => {
			await rejects(unary(rcl, 'Recommend', { user_id: 'u00000', k: 5 }), S.FAILED_PRECONDITION, 'call Train');
			await rejects(serverStream(rcl, 'Train', { model: 'BPR' }), S.FAILED_PRECONDITION, 'AddInteractions');
		});

		const users = [...new Set(rows.map((r) => r.user_id))];
		const items = [...new Set(rows.map((r) => r.item_id))];
		const catalogue = new Set([...items, ...featuredIds]);
		const seen = new Map(users.map((u) => [u, new Set()]));
		for (const r of rows) seen.get(r.user_id).add(r.item_id);
		await check('rankd AddInteractions in two batches', async () => {
			const half = Math.floor(rows.length / 2);
			const a = await unary(rcl, 'AddInteractions', { interactions: rows.slice(0, half) });
			assert.equal(a.added + a.updated, half);
			const b = await unary(rcl, 'AddInteractions', { interactions: rows.slice(half) });
			assert.equal(a.added + b.added, rows.length, 'the generator writes each pair once');
			assert.equal(b.users, users.length);
			assert.equal(b.items, items.length);
			assert.equal(b.interactions, rows.length);
			const again = await unary(rcl, 'AddInteractions', { interactions: rows.slice(0, 3) });
			assert.deepEqual([again.added, again.updated, again.interactions], [0, 3, rows.length]);
		});

		await check('rankd AddInteractions errors store nothing', async () => {
			await rejects(unary(rcl, 'AddInteractions', { interactions: [rows[0], { user_id: '', item_id: 'i1' }] }),
				S.INVALID_ARGUMENT, 'interactions[1].user_id is empty');
			await rejects(unary(rcl, 'AddInteractions', { interactions: [{ user_id: 'NEWUSER\u0000tail', item_id: 'i1' }] }),
				S.INVALID_ARGUMENT, 'interactions[0].user_id contains a NUL byte at offset 7');
			await rejects(unary(rcl, 'AddInteractions', { interactions: [{ user_id: 'u\u0085', item_id: 'i1' }] }),
				S.INVALID_ARGUMENT, 'interactions[0].user_id "u\\xc2\\x85" contains a control character (U+0085)');
			const info = await unary(rcl, 'Info', {});
			assert.deepEqual([info.users, info.interactions], [users.length, rows.length]);
		});

		let modelVersion = 0;
		await check('rankd Train BPR streams its epochs to "finished"', async () => {
			const got = await serverStream(rcl, 'Train', { model: 'BPR', epochs: 3, dims: 8, seed: 1, threads: 1, patience: 3 }, 120);
			const epochs = got.filter((p) => !p.done && p.epoch > 0);
			assert.deepEqual(epochs.map((p) => p.epoch), [1, 2, 3]);
			for (const p of epochs) {
				assert.equal(p.epochs, 3);
				assert.ok(Number.isFinite(p.loss) && p.loss > 0, 'loss ' + p.loss);
				assert.ok(isProb(p.val_auc), 'val_auc ' + p.val_auc);
				assert.ok(p.triples_per_second > 0);
			}
			const last = got[got.length - 1];
			assert.equal(last.done, true);
			assert.equal(last.state, 'finished');
			assert.ok(last.model_version >= 1);
			modelVersion = last.model_version;
			const info = await unary(rcl, 'Info', {});
			assert.equal(info.model, 'BPR');
			assert.equal(info.model_version, modelVersion);
			assert.equal(info.training, false);
		});

		await check('rankd Train errors', async () => {
			await rejects(serverStream(rcl, 'Train', {}), S.INVALID_ARGUMENT, 'model is required');
			await rejects(serverStream(rcl, 'Train', { model: 'DVBPR', trunk_layer: 'block_10', head_width: 8, head_norm: 'cosine' }),
				S.INVALID_ARGUMENT, 'head_norm "cosine"', '"l2" or "none"');
			await rejects(serverStream(rcl, 'Train', { model: 'DVBPR', head_norm: 'l2' }), S.INVALID_ARGUMENT, 'needs head_width');
		});

		const u0 = users[0];
		let top = null;
		await check('rankd Recommend: top k by score, seen items excluded', async () => {
			const res = await unary(rcl, 'Recommend', { user_id: u0, k: 5 });
			assert.equal(res.model, 'BPR');
			assert.equal(res.model_version, modelVersion);
			assert.equal(res.fallback, '');
			assert.equal(res.items.length, 5);
			for (let i = 1; i < res.items.length; i++) assert.ok(res.items[i - 1].score >= res.items[i].score);
			for (const it of res.items) {
				assert.ok(items.includes(it.item_id), it.item_id);
				assert.ok(!seen.get(u0).has(it.item_id), `${it.item_id} was seen by ${u0}`);
			}
			top = res.items;
			const all = await unary(rcl, 'Recommend', { user_id: u0, k: 1000, include_seen: true });
			assert.equal(all.items.length, catalogue.size);
			assert.ok([...seen.get(u0)].every((i) => all.items.some((x) => x.item_id === i)));
			const cand = [items[0], items[1], items[2]];
			const c = await unary(rcl, 'Recommend', { user_id: u0, k: 10, include_seen: true, candidates: cand });
			assert.deepEqual(c.items.map((x) => x.item_id).sort(), [...cand].sort());
		});

		await check('rankd Recommend for an unknown user: popularity, context excluded', async () => {
			const res = await unary(rcl, 'Recommend', { user_id: 'nobody', k: 4, context_items: [items[0]] });
			assert.equal(res.items.length, 4);
			assert.ok(res.fallback.startsWith('popularity'), res.fallback);
			assert.ok(!res.items.some((x) => x.item_id === items[0]));
		});

		await check('rankd Recommend errors', async () => {
			await rejects(unary(rcl, 'Recommend', { user_id: u0, k: 0 }), S.INVALID_ARGUMENT, 'k must be between 1 and');
			await rejects(unary(rcl, 'Recommend', { user_id: 'a\u0000b', k: 3 }), S.INVALID_ARGUMENT,
				'user_id contains a NUL byte at offset 1');
			await rejects(unary(rcl, 'Recommend', { user_id: u0, k: 3, candidates: ['nope'] }), S.INVALID_ARGUMENT,
				'candidates[0]: unknown item "nope"');
		});

		await check('rankd RecommendBatch answers as Recommend does', async () => {
			const u1 = users[1];
			const res = await unary(rcl, 'RecommendBatch', { requests: [{ user_id: u0, k: 5 }, { user_id: u1, k: 3 }] });
			assert.equal(res.responses.length, 2);
			assert.deepEqual(res.responses[0].items.map((x) => x.item_id), top.map((x) => x.item_id));
			res.responses[0].items.forEach((x, i) => assert.ok(close(x.score, top[i].score)));
			const one = await unary(rcl, 'Recommend', { user_id: u1, k: 3 });
			assert.deepEqual(res.responses[1].items.map((x) => x.item_id), one.items.map((x) => x.item_id));
			await rejects(unary(rcl, 'RecommendBatch', { requests: [{ user_id: u0, k: 5 }, { user_id: u1, k: 5, candidates: ['a\tb'] }] }),
				S.INVALID_ARGUMENT, 'requests[1].candidates[0] "a\\x09b" contains a control character (U+0009)');
		});

		await check('rankd Score agrees with Recommend', async () => {
			const res = await unary(rcl, 'Score', { user_id: u0, item_ids: top.map((x) => x.item_id).reverse() });
			assert.equal(res.model, 'BPR');
			assert.equal(res.model_version, modelVersion);
			assert.deepEqual(res.items.map((x) => x.item_id), top.map((x) => x.item_id).reverse());
			res.items.forEach((x) => assert.ok(close(x.score, top.find((t) => t.item_id === x.item_id).score)));
			await rejects(unary(rcl, 'Score', { user_id: u0, item_ids: ['nope', top[0].item_id] }), S.NOT_FOUND,
				'1 unknown item: "nope"');
			await rejects(unary(rcl, 'Score', { user_id: 'nobody', item_ids: [top[0].item_id] }), S.NOT_FOUND,
				'unknown user "nobody"');
			await rejects(unary(rcl, 'Score', { user_id: u0, item_ids: [] }), S.INVALID_ARGUMENT, 'item_ids is empty');
		});

		await check('rankd Evaluate: every subset at the asked ks', async () => {
			const res = await unary(rcl, 'Evaluate', { protocol: 'standard', ks: [5, 10] }, 60);
			assert.equal(res.model, 'BPR');
			assert.equal(res.model_version, modelVersion);
			assert.equal(res.protocol, 'standard');
			assert.deepEqual(res.results.map((r) => r.subset), ['all', 'cold', 'new', 'warm']);
			const all = res.results[0];
			assert.ok(all.users > 0 && all.users <= users.length, 'users ' + all.users);
			assert.ok(isProb(all.auc) && isProb(all.rr));
			assert.deepEqual(all.at_k.map((m) => m.k), [5, 10]);
			for (const m of all.at_k) assert.ok(isProb(m.recall) && isProb(m.precision) && isProb(m.ndcg));
			assert.ok(all.at_k[1].recall >= all.at_k[0].recall, 'recall grows with k');
			const tut = await unary(rcl, 'Evaluate', { protocol: 'tutorial' }, 60);
			assert.deepEqual(tut.results[0].at_k.map((m) => m.k), [20, 100]);
			await rejects(unary(rcl, 'Evaluate', { protocol: 'nope' }), S.INVALID_ARGUMENT, 'protocol "nope" is not known');
		});

		await check('rankd Recommend with cold_slots keeps places for cold items', async () => {
			const full = await unary(rcl, 'Recommend', { user_id: u0, k: 1000 });
			const coldAvail = full.items.filter((x) => x.cold).length;
			const res = await unary(rcl, 'Recommend', { user_id: u0, k: 5, cold_slots: 2 });
			assert.equal(res.items.length, Math.min(5, full.items.length));
			assert.ok(res.items.filter((x) => x.cold).length >= Math.min(2, coldAvail));
			for (let i = 1; i < res.items.length; i++) assert.ok(res.items[i - 1].score >= res.items[i].score);
			const b = await unary(rcl, 'RecommendBatch', { requests: [{ user_id: u0, k: 5, cold_slots: 2 }] });
			assert.deepEqual(b.responses[0].items.map((x) => x.item_id), res.items.map((x) => x.item_id));
			await rejects(unary(rcl, 'Recommend', { user_id: u0, k: 5, cold_slots: 6 }), S.INVALID_ARGUMENT,
				'cold_slots must be between 0 and k (5); got 6');
		});

		await check('rankd Audience: the users who score an item highest', async () => {
			const item = top[0].item_id;
			const res = await unary(rcl, 'Audience', { item_id: item, k: 3 });
			assert.equal(res.model, 'BPR');
			assert.ok(res.users.length > 0 && res.users.length <= 3);
			for (let i = 1; i < res.users.length; i++) assert.ok(res.users[i - 1].score >= res.users[i].score);
			for (const a of res.users) {
				const sc = await unary(rcl, 'Score', { user_id: a.user_id, item_ids: [item] });
				assert.ok(close(sc.items[0].score, a.score), `${a.user_id}: ${sc.items[0].score} vs ${a.score}`);
			}
			await rejects(unary(rcl, 'Audience', { item_id: item, k: 0 }), S.INVALID_ARGUMENT, 'k must be between 1 and');
			await rejects(unary(rcl, 'Audience', { item_id: 'nope', k: 3 }), S.NOT_FOUND, 'unknown item "nope"');
		});

		await check('rankd Evaluate on a given split, beside popularity', async () => {
			const test = [{ user_id: u0, item_id: top[0].item_id }];
			const res = await unary(rcl, 'Evaluate', { test }, 60);
			assert.equal(res.split, 'given');
			assert.equal(res.results[0].users, 1);
			assert.deepEqual(res.popularity.map((r) => r.subset), ['all', 'cold', 'new', 'warm']);
			assert.equal(res.popularity[0].users, 1);
			const ll = await unary(rcl, 'Evaluate', {}, 60);
			assert.equal(ll.split, 'leave_last_out');
			await rejects(unary(rcl, 'Evaluate', { test: [{ user_id: 'nobody', item_id: top[0].item_id }] }),
				S.INVALID_ARGUMENT, 'test[0]: unknown user "nobody"');
			await rejects(unary(rcl, 'Evaluate', { test, cold_test: [{ user_id: u0, item_id: 'nope' }] }),
				S.INVALID_ARGUMENT, 'cold_test[0]: unknown item "nope"');
		});

		await check('rankd Info after training', async () => {
			const info = await unary(rcl, 'Info', {});
			assert.deepEqual([info.users, info.items, info.interactions], [users.length, catalogue.size, rows.length]);
			assert.equal(info.model, 'BPR');
		});
		rcl.close();
	} finally {
		for (const d of daemons.reverse()) {
			const code = await stopDaemon(d);
			if (code !== 0) { failed++; console.log('FAIL daemon exit code after SIGTERM: ' + code); }
		}
		fs.rmSync(tmp, { recursive: true, force: true });
	}
	console.log(`${passed} passed, ${failed} failed`);
	process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
