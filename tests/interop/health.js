// Prints the health and Info of running daemons through @grpc/grpc-js:
//   node health.js FEATURED_ADDR RANKD_ADDR
'use strict';
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const protoDir = path.join(__dirname, '..', '..', 'proto');
const pkg = grpc.loadPackageDefinition(loader.loadSync(
	['visrec/v1/featured.proto', 'visrec/v1/rankd.proto', 'grpc/health/v1/health.proto'],
	{ keepCase: true, longs: Number, enums: String, defaults: true, includeDirs: [protoDir] }));
const creds = grpc.credentials.createInsecure();
const call = (client, m) => new Promise((res, rej) =>
	client[m](m === 'Check' ? { service: '' } : {}, { deadline: new Date(Date.now() + 5000) },
		(e, r) => (e ? rej(e) : res(r))));

(async () => {
	const [fd, rk] = process.argv.slice(2);
	for (const [name, addr, Svc] of [['featured', fd, pkg.visrec.v1.Featured], ['rankd', rk, pkg.visrec.v1.Rank]]) {
		const h = await call(new pkg.grpc.health.v1.Health(addr, creds), 'Check');
		const info = await call(new Svc(addr, creds), 'Info');
		console.log(`${name} at ${addr}: ${h.status}, version ${info.server_version}` +
			(info.backend ? `, backend ${info.backend}` : '') + (info.featured ? `, featured ${info.featured}` : ''));
		if (h.status !== 'SERVING') process.exit(1);
	}
	process.exit(0);
})().catch((e) => { console.error('health check failed: ' + e.message); process.exit(1); });
