// Interop test: an independent gRPC implementation (@grpc/grpc-js, pure
// JavaScript, no code shared with gRPC core) talks to the real featured and
// rankd daemons, started here on loopback with fresh data directories.
//
//   node interop.js --featured PATH --rankd PATH --proto DIR
'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

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

function unary(client, method, req) {
	return new Promise((resolve, reject) => {
		const deadline = new Date(Date.now() + 5000);
		client[method](req, { deadline }, (err, res) => (err ? reject(err) : resolve(res)));
	});
}

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
		const fd = await startDaemon(arg('featured'), ['--listen', '127.0.0.1:0', '--data', path.join(tmp, 'featured')]);
		daemons.push(fd);
		const rk = await startDaemon(arg('rankd'), ['--listen', '127.0.0.1:0', '--data', path.join(tmp, 'rankd'), '--featured', fd.addr]);
		daemons.push(rk);

		for (const [name, d] of [['featured', fd], ['rankd', rk]]) {
			const health = new pkg.grpc.health.v1.Health(d.addr, creds);
			await check(name + ' Health/Check is SERVING', async () => {
				const res = await unary(health, 'Check', { service: '' });
				assert.equal(res.status, 'SERVING');
			});
			await check(name + ' unknown health service is NOT_FOUND', async () => {
				await assert.rejects(unary(health, 'Check', { service: 'no.such.Service' }),
					(e) => e.code === grpc.status.NOT_FOUND);
			});
			health.close();
		}
		const fcl = new pkg.visrec.v1.Featured(fd.addr, creds);
		await check('featured Info', async () => {
			const info = await unary(fcl, 'Info', {});
			assert.match(info.server_version, /\d+\.\d+/);
			assert.ok(['cpu', 'cuda'].includes(info.backend), 'backend ' + info.backend);
		});
		fcl.close();
		const rcl = new pkg.visrec.v1.Rank(rk.addr, creds);
		await check('rankd Info', async () => {
			const info = await unary(rcl, 'Info', {});
			assert.match(info.server_version, /\d+\.\d+/);
			assert.equal(info.featured, fd.addr);
		});
		await check('rankd rejects k <= 0 with INVALID_ARGUMENT', async () => {
			await assert.rejects(unary(rcl, 'Recommend', { user_id: 'u1', k: 0 }),
				(e) => e.code === grpc.status.INVALID_ARGUMENT && e.details.length > 0);
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
