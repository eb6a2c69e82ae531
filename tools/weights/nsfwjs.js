// What convert-nsfwjs.js and reference.js share: the MobileNetV2 that npm's
// nsfwjs bundles (dist/models/mobilenet_v2: the Keras topology and weights
// manifest in model.min.js, the uint8-quantised weights as base64 in
// group1-shard1of1.min.js), its dequantisation, a check that the topology
// is the layout gpu/arch.c builds as "mobilenet_v2", and a small
// safetensors writer.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

const PACKAGE = 'nsfwjs@4.4.0';

function modelDir() {
	// The package exports no package.json; its CommonJS entry is
	// dist/cjs/index.js, the model two levels up from it.
	return path.join(path.dirname(require.resolve('nsfwjs')), '..', 'models', 'mobilenet_v2');
}

// { topology, specs (the manifest's weight entries, in data order), data
// (a Buffer of the concatenated quantised tensors) }.
function load() {
	const dir = modelDir();
	const model = require(path.join(dir, 'model.min.js'));
	const shard = require(path.join(dir, 'group1-shard1of1.min.js'));
	const manifest = model.weightsManifest;
	if (!model.modelTopology || !Array.isArray(manifest) || manifest.length !== 1 ||
	    typeof shard !== 'string')
		throw new Error(`${dir}: not the layout of ${PACKAGE} (one manifest group, one shard)`);
	return { topology: model.modelTopology, specs: manifest[0].weights,
		data: Buffer.from(shard, 'base64') };
}

// Every tensor as { name, shape, values: Float32Array }, dequantised as
// TensorFlow.js does it (value = q * scale + min, rounded once to float32).
function dequantise(specs, data) {
	const out = [];
	let at = 0;
	for (const s of specs) {
		const numel = s.shape.reduce((a, b) => a * b, 1);
		const q = s.quantization;
		if (s.dtype !== 'float32' || !q || q.dtype !== 'uint8')
			throw new Error(`${s.name}: expected uint8-quantised float32, got ${s.dtype}/${q && q.dtype}`);
		if (at + numel > data.length)
			throw new Error(`${s.name}: the shard ends at ${data.length} bytes, before ${at + numel}`);
		const values = new Float32Array(numel);
		for (let i = 0; i < numel; i++)
			values[i] = data[at + i] * q.scale + q.min;
		out.push({ name: s.name, shape: s.shape, values });
		at += numel;
	}
	if (at !== data.length)
		throw new Error(`the shard holds ${data.length} bytes, the manifest ${at}`);
	return out;
}

// Throws unless the topology is Keras MobileNetV2 1.0 at 224 as our arch
// builds it: batch-norm epsilon 1e-3, ReLU capped at 6, "same" padding or
// ZeroPadding2D ((0, 1), (0, 1)) before each stride-2 3x3, the expected
// channel counts, and the nsfwjs head 1280 -> 256 -> 128 -> K.
function checkTopology(topology) {
	const layers = topology.model_config.config.layers;
	const byName = new Map(layers.map((l) => [l.config.name, l]));
	const fail = (msg) => { throw new Error(`topology: ${msg}`); };
	const input = layers[0].config.batch_input_shape;
	if (JSON.stringify(input) !== JSON.stringify([null, 224, 224, 3]))
		fail(`input ${JSON.stringify(input)}, expected [null, 224, 224, 3]`);
	for (const l of layers) {
		const c = l.config;
		if (l.class_name === 'BatchNormalization' && (c.epsilon !== 0.001 || c.axis !== -1 ||
		    !c.scale || !c.center))
			fail(`${c.name}: epsilon ${c.epsilon} axis ${c.axis}; expected 0.001 on channels`);
		if (l.class_name === 'ReLU' && (c.max_value !== 6 || (c.negative_slope || 0) !== 0 ||
		    (c.threshold || 0) !== 0))
			fail(`${c.name}: not ReLU6`);
		if (l.class_name === 'ZeroPadding2D' &&
		    JSON.stringify(c.padding) !== JSON.stringify([[0, 1], [0, 1]]))
			fail(`${c.name}: padding ${JSON.stringify(c.padding)}`);
		if ((l.class_name === 'Conv2D' || l.class_name === 'DepthwiseConv2D') && c.use_bias)
			fail(`${c.name}: has a bias`);
	}
	// Channels per block (expansion 6 except the first block).
	const project = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320];
	const conv = (name, filters) => {
		const l = byName.get(name);
		if (!l || l.config.filters !== filters)
			fail(`${name}: expected ${filters} filters, found ${l ? l.config.filters : 'no layer'}`);
	};
	conv('Conv1', 32);
	conv('expanded_conv_project', 16);
	for (let b = 1; b <= 16; b++) {
		conv(`block_${b}_expand`, project[b - 1] * 6);
		conv(`block_${b}_project`, project[b]);
	}
	conv('Conv_1', 1280);
	const units = ['dense_1', 'dense_2', 'dense_3'].map((n) => byName.get(n) &&
		byName.get(n).config.units);
	if (units[0] !== 256 || units[1] !== 128 || !(units[2] > 0))
		fail(`head ${JSON.stringify(units)}, expected [256, 128, K]`);
	return { numOutputs: units[2] };
}

// Writes F32 tensors ({ name, shape, values }) and string metadata as a
// safetensors file (8-byte length, JSON header padded to 8 bytes, data),
// to a temporary name renamed over path.
function writeSafetensors(file, tensors, metadata) {
	if (os.endianness() !== 'LE')
		throw new Error('safetensors data is little-endian; this machine is not');
	const header = { __metadata__: metadata };
	let offset = 0;
	for (const t of tensors) {
		const bytes = t.values.length * 4;
		header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
		offset += bytes;
	}
	let json = JSON.stringify(header);
	json += ' '.repeat((8 - (json.length % 8)) % 8);
	const head = Buffer.alloc(8);
	head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
	const tmp = `${file}.tmp${process.pid}`;
	const fd = fs.openSync(tmp, 'w');
	try {
		fs.writeSync(fd, head);
		fs.writeSync(fd, json);
		for (const t of tensors) {
			const le = Buffer.from(t.values.buffer, t.values.byteOffset, t.values.length * 4);
			fs.writeSync(fd, le);
		}
		fs.fsyncSync(fd);
	} finally {
		fs.closeSync(fd);
	}
	fs.renameSync(tmp, file);
}

module.exports = { PACKAGE, load, dequantise, checkTopology, writeSafetensors };
