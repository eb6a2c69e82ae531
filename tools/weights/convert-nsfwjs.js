#!/usr/bin/env node
// convert-nsfwjs.js OUT.safetensors: writes the MobileNetV2 bundled in npm's
// nsfwjs as a visrec weights file for the "mobilenet_v2" architecture
// (gpu/arch.c), which nn_net_load and featured's --weights read.
//
// Names: Keras layer names with PyTorch suffixes. Conv2D and
// DepthwiseConv2D "X/kernel" or "X/depthwise_kernel" -> "X.weight";
// BatchNormalization "X/gamma", "beta", "moving_mean", "moving_variance" ->
// "X.weight", "X.bias", "X.running_mean", "X.running_var"; Dense
// "X/kernel", "X/bias" -> "X.weight", "X.bias".
// Layouts: Keras is channels-last, visrec NCHW with PyTorch's weight
// layouts, so conv kernels [kh][kw][c][k] become [k][c][kh][kw], depthwise
// [kh][kw][c][1] become [c][1][kh][kw], dense [in][out] become [out][in].
// Metadata: the visrec-nn keys (arch, num_outputs, input_size, and the
// input normalisation: nsfwjs feeds RGB / 255, so mean 0 and std 1) plus
// where the weights came from.
'use strict';

const path = require('path');
const { PACKAGE, load, dequantise, checkTopology, writeSafetensors } = require('./nsfwjs');

const BN_SUFFIX = { gamma: 'weight', beta: 'bias', moving_mean: 'running_mean',
	moving_variance: 'running_var' };

// [d0][d1][d2][d3] -> [d3][d2][d0][d1]: Keras conv kernel to PyTorch's.
function convKernel(t) {
	const [kh, kw, c, k] = t.shape;
	const v = new Float32Array(t.values.length);
	for (let i = 0; i < kh; i++)
		for (let j = 0; j < kw; j++)
			for (let ci = 0; ci < c; ci++)
				for (let ko = 0; ko < k; ko++)
					v[((ko * c + ci) * kh + i) * kw + j] = t.values[((i * kw + j) * c + ci) * k + ko];
	return { shape: [k, c, kh, kw], values: v };
}

// Depthwise [kh][kw][c][1] -> [c][1][kh][kw].
function depthwiseKernel(t) {
	const [kh, kw, c, m] = t.shape;
	if (m !== 1)
		throw new Error(`depthwise multiplier ${m}, expected 1`);
	const v = new Float32Array(t.values.length);
	for (let i = 0; i < kh; i++)
		for (let j = 0; j < kw; j++)
			for (let ci = 0; ci < c; ci++)
				v[(ci * kh + i) * kw + j] = t.values[(i * kw + j) * c + ci];
	return { shape: [c, 1, kh, kw], values: v };
}

function denseKernel(t) {
	const [n, m] = t.shape;
	const v = new Float32Array(t.values.length);
	for (let i = 0; i < n; i++)
		for (let o = 0; o < m; o++)
			v[o * n + i] = t.values[i * m + o];
	return { shape: [m, n], values: v };
}

function convert(tensors) {
	const out = [];
	for (const t of tensors) {
		const slash = t.name.lastIndexOf('/');
		const layer = t.name.slice(0, slash), kind = t.name.slice(slash + 1);
		let name, moved;
		if (kind === 'depthwise_kernel') {
			name = `${layer}.weight`;
			moved = depthwiseKernel(t);
		} else if (kind === 'kernel' && t.shape.length === 4) {
			name = `${layer}.weight`;
			moved = convKernel(t);
		} else if (kind === 'kernel' && t.shape.length === 2) {
			name = `${layer}.weight`;
			moved = denseKernel(t);
		} else if (kind === 'bias') {
			name = `${layer}.bias`;
			moved = t;
		} else if (BN_SUFFIX[kind]) {
			name = `${layer}.${BN_SUFFIX[kind]}`;
			moved = t;
		} else {
			throw new Error(`${t.name}: unknown weight kind "${kind}"`);
		}
		out.push({ name, shape: moved.shape, values: moved.values });
	}
	out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
	return out;
}

function main() {
	if (process.argv.length !== 3) {
		process.stderr.write('usage: convert-nsfwjs.js OUT.safetensors\n');
		process.exit(2);
	}
	const file = path.resolve(process.argv[2]);
	const { topology, specs, data } = load();
	const { numOutputs } = checkTopology(topology);
	const tensors = convert(dequantise(specs, data));
	const params = tensors.reduce((a, t) => a + t.values.length, 0);
	writeSafetensors(file, tensors, {
		format: 'visrec-nn',
		arch: 'mobilenet_v2',
		num_outputs: String(numOutputs),
		input_size: '224',
		mean: '0,0,0',
		std: '1,1,1',
		source: `npm ${PACKAGE} dist/models/mobilenet_v2 (MIT): Keras MobileNetV2 1.0/224, ` +
			'uint8-quantised; Conv1 to block_10 are the ImageNet weights, block_11 on and the ' +
			'dense head were retrained for 5 NSFW classes',
		keras_version: String(topology.keras_version),
	});
	process.stdout.write(`${file}: ${tensors.length} tensors, ${params} parameters\n`);
}

main();
