#!/usr/bin/env node
// reference.js OUT.safetensors: the independent check of our MobileNetV2.
// Runs nsfwjs's model in TensorFlow.js (its pure-JavaScript CPU backend,
// Keras's own layer semantics, from the package's files as they are: the
// quantised weights dequantised by TensorFlow.js itself) on a few fixed
// images, and writes the images and what the net computes from them:
//   x         [N][3][224][224]  the input, NCHW, RGB / 255 (what our net takes)
//   block_10  [N][96]           global average of block_10_project_BN (the ImageNet part)
//   avgpool   [N][1280]         global average of out_relu
//   dense_2   [N][128]          the head's last hidden layer (after its ReLU)
//   probs     [N][5]            the model's output (softmax)
// tests/weights/ loads the converted weights into our "mobilenet_v2" and
// compares. The images are drawn from a seeded generator and quantised to
// k / 255, as decoded 8-bit pixels are: smooth gradients, stripes, shapes
// and noise, so every layer sees varied input.
'use strict';

const path = require('path');
const tf = require('@tensorflow/tfjs');
const { PACKAGE, load, writeSafetensors } = require('./nsfwjs');

const S = 224;
const N = 4;

// mulberry32: a small seeded generator, the same numbers everywhere.
function rng(seed) {
	let a = seed >>> 0;
	return () => {
		a = (a + 0x6d2b79f5) >>> 0;
		let t = a;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}

// Image i as NHWC floats in [0, 1], each a multiple of 1 / 255.
function image(i) {
	const r = rng(1000 + i);
	const px = new Float32Array(S * S * 3);
	const fx = 1 + 6 * r(), fy = 1 + 6 * r(), phase = 6.28 * r();
	const cx = S * (0.3 + 0.4 * r()), cy = S * (0.3 + 0.4 * r()), rad = S * (0.15 + 0.2 * r());
	const tint = [r(), r(), r()];
	for (let y = 0; y < S; y++)
		for (let x = 0; x < S; x++)
			for (let c = 0; c < 3; c++) {
				let v;
				if (i === 0)       // a colour gradient
					v = (x / S) * (c === 0 ? 1 : 0.5) + (y / S) * (c === 2 ? 1 : 0.3);
				else if (i === 1)  // stripes
					v = 0.5 + 0.5 * Math.sin(fx * x / 12 + fy * y / 17 + phase + c);
				else if (i === 2)  // a tinted disc on a textured background
					v = (x - cx) ** 2 + (y - cy) ** 2 < rad * rad ? tint[c] :
						0.3 + 0.2 * Math.sin(x / 3) * Math.cos(y / 5);
				else               // noise
					v = r();
				v = Math.min(1, Math.max(0, v));
				px[(y * S + x) * 3 + c] = Math.round(v * 255) / 255;
			}
	return px;
}

function nchw(nhwc, n, h, w, c) {
	const out = new Float32Array(nhwc.length);
	for (let i = 0; i < n; i++)
		for (let y = 0; y < h; y++)
			for (let x = 0; x < w; x++)
				for (let ch = 0; ch < c; ch++)
					out[((i * c + ch) * h + y) * w + x] = nhwc[((i * h + y) * w + x) * c + ch];
	return out;
}

async function main() {
	if (process.argv.length !== 3) {
		process.stderr.write('usage: reference.js OUT.safetensors\n');
		process.exit(2);
	}
	const file = path.resolve(process.argv[2]);
	// PROD silences TensorFlow.js's advice to install its native backend
	// (it changes no arithmetic: only debug checks and warnings).
	tf.env().set('PROD', true);
	await tf.setBackend('cpu');
	const { topology, specs, data } = load();
	const weightData = data.buffer.slice(data.byteOffset, data.byteOffset + data.length);
	const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: topology,
		weightSpecs: specs, weightData }));
	const outputs = ['block_10_project_BN', 'out_relu', 'dense_2', 'dense_3'];
	const probe = tf.model({ inputs: model.inputs,
		outputs: outputs.map((n) => model.getLayer(n).output) });

	const pixels = new Float32Array(N * S * S * 3);
	for (let i = 0; i < N; i++)
		pixels.set(image(i), i * S * S * 3);
	const x = tf.tensor4d(pixels, [N, S, S, 3]);
	const [b10, top, d2, probs] = probe.predict(x);
	const gap = (t) => tf.mean(t, [1, 2]);
	const tensors = [
		{ name: 'x', shape: [N, 3, S, S], values: nchw(pixels, N, S, S, 3) },
		{ name: 'block_10', shape: [N, 96], values: await gap(b10).data() },
		{ name: 'avgpool', shape: [N, 1280], values: await gap(top).data() },
		{ name: 'dense_2', shape: [N, 128], values: await d2.data() },
		{ name: 'probs', shape: [N, probs.shape[1]], values: await probs.data() },
	];
	writeSafetensors(file, tensors, {
		source: `TensorFlow.js ${tf.version.tfjs} (cpu backend) on npm ${PACKAGE} mobilenet_v2`,
		images: String(N),
	});
	process.stdout.write(`${file}: ${N} images, outputs ${outputs.join(', ')}\n`);
}

main().catch((e) => {
	process.stderr.write(`reference.js: ${e.stack || e}\n`);
	process.exit(1);
});
