#!/usr/bin/python3
"""ResNet-50 and MobileNetV2 against PyTorch, through weights files.

For each case PyTorch builds the net with random weights and random batch
norm statistics (so every fold of scale, shift, mean and variance counts),
writes them as a visrec weights file by their PyTorch names
(tools/weights/torchvision_to_safetensors.py's writer: for ResNet-50
torchvision's own resnet50 and its state_dict, as a user converting ImageNet
weights would), and weights_dump loads that file by name into our net, runs
a forward and a backward on seeded inputs, and saves the net again. Checks:
- the output, a feature layer, the input gradient and every parameter
  gradient agree with PyTorch in float64 within TOL of each tensor's
  largest magnitude (our float32 over 50+ layers);
- the re-saved file loads into the PyTorch model strictly (every name and
  shape; only num_batches_tracked, unused in inference, is absent) with
  bit-identical tensors: the round trip back to torchvision's names.
MobileNetV2 is written here in torch.nn with Keras's layer names and
TensorFlow's "same" padding computed from each input's size (F.pad), at
an even input size (asymmetric padding: our pad layer) and an odd one
(symmetric: the convolution's own).

Usage: torch_parity.py PATH_TO_weights_dump. Exits 77 (skip) without
PyTorch or torchvision."""
import importlib.util
import math
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch import nn
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

TOL = 1e-4
HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "tv2st", os.path.join(HERE, "..", "..", "tools", "weights", "torchvision_to_safetensors.py"))
tv2st = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tv2st)


def read_safetensors(path):
    """A file's tensors as torch tensors (the reader is tv2st's)."""
    tensors, _ = tv2st.read_safetensors(path)
    return {n: torch.from_numpy(a) for n, a in tensors.items()}


def randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=gen)
            m.bias.data = 0.2 * torch.randn(c, generator=gen)
            m.running_mean.data = 0.2 * torch.randn(c, generator=gen)
            m.running_var.data = 0.5 + torch.rand(c, generator=gen)


class KerasMobileNetV2(nn.Module):
    """Keras MobileNetV2 1.0 with the nsfwjs head, Keras layer names."""
    BLOCKS = [(1, 1, 16), (6, 2, 24), (6, 1, 24), (6, 2, 32), (6, 1, 32), (6, 1, 32),
              (6, 2, 64), (6, 1, 64), (6, 1, 64), (6, 1, 64), (6, 1, 96), (6, 1, 96),
              (6, 1, 96), (6, 2, 160), (6, 1, 160), (6, 1, 160), (6, 1, 320)]

    def __init__(self, k):
        super().__init__()
        self.plan = []          # (conv, bn, relu6?, stride, kernel) and ("add"/"mark", ...)
        self.unit("Conv1", "bn_Conv1", 3, 32, 3, 2, False, True)
        c = 32
        for b, (t, s, f) in enumerate(self.BLOCKS):
            p = f"block_{b}_" if b else "expanded_conv_"
            self.plan.append(("begin",))
            if b:
                self.unit(p + "expand", p + "expand_BN", c, c * t, 1, 1, False, True)
            self.unit(p + "depthwise", p + "depthwise_BN", c * t, c * t, 3, s, True, True)
            self.unit(p + "project", p + "project_BN", c * t, f, 1, 1, False, False)
            self.plan.append(("end", c == f and s == 1, b))
            c = f
        self.unit("Conv_1", "Conv_1_bn", c, 1280, 1, 1, False, True)
        self.dense_1 = nn.Linear(1280, 256)
        self.dense_2 = nn.Linear(256, 128)
        self.dense_3 = nn.Linear(128, k)

    def unit(self, conv, bn, cin, cout, kernel, stride, depthwise, relu6):
        setattr(self, conv, nn.Conv2d(cin, cout, kernel, stride, 0, bias=False,
                                      groups=cin if depthwise else 1))
        setattr(self, bn, nn.BatchNorm2d(cout, eps=1e-3))
        self.plan.append((conv, bn, relu6, stride, kernel))

    @staticmethod
    def same(x, kernel, stride):
        pads = []
        for size in (x.shape[3], x.shape[2]):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def run(self, x):
        taps = {}
        for step in self.plan:
            if step[0] == "begin":
                block_in = x
            elif step[0] == "end":
                if step[1]:
                    x = x + block_in
                taps[f"block_{step[2]}"] = x.mean((2, 3))
            else:
                conv, bn, relu6, stride, kernel = step
                x = getattr(self, bn)(getattr(self, conv)(self.same(x, kernel, stride)))
                if relu6:
                    x = F.relu6(x)
        taps["avgpool"] = x.mean((2, 3))
        x = F.relu(self.dense_2(F.relu(self.dense_1(taps["avgpool"]))))
        return self.dense_3(x), taps


def resnet50(k):
    m = torchvision.models.resnet50(num_classes=k)
    taps = {}
    m.avgpool.register_forward_hook(lambda mod, i, o: taps.__setitem__("avgpool",
                                                                       torch.flatten(o, 1)))
    m.run = lambda x: (m(x), taps)
    return m


def check(dump, arch, size, k, layer, make, meta):
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(5)
    m = make(k)
    randomise_bn(m, gen)
    m.eval()
    sd = {n: t for n, t in m.state_dict().items() if t.is_floating_point()}
    with tempfile.TemporaryDirectory() as d:
        w = os.path.join(d, "w.safetensors")
        if arch == "resnet50":
            tv2st.convert(m.state_dict(), arch, w)   # the user's path
        else:
            tv2st.write_safetensors(w, {n: t.numpy() for n, t in sd.items()},
                                    dict(meta, arch=arch, num_outputs=str(k)))
        subprocess.run([dump, arch, w, str(size), "2", "7", layer, d], check=True)
        io = read_safetensors(os.path.join(d, "io.safetensors"))
        resaved = read_safetensors(os.path.join(d, "resaved.safetensors"))
    missing = set(m.state_dict()) - set(resaved)
    extra = set(resaved) - set(m.state_dict())
    bad = [n for n in missing if not n.endswith("num_batches_tracked")]
    if bad or extra:
        print(f"FAIL {arch}: round trip: missing {sorted(bad)[:5]}, unknown {sorted(extra)[:5]}")
        return False
    changed = [n for n in sd if not torch.equal(sd[n], resaved[n])]
    if changed:
        print(f"FAIL {arch}: round trip changed {changed[:5]}")
        return False
    make(k).load_state_dict(resaved, strict=False)   # raises on any shape that differs
    m = m.double()
    x = io["x"].double().requires_grad_()
    y, taps = m.run(x)
    (y * io["r"].double()).sum().backward()
    pairs = [("y", y.detach(), io["y"]), (layer, taps[layer].detach(), io["feat"]),
             ("dx", x.grad, io["dx"])]
    pairs += [(n, p.grad, io["grad." + n]) for n, p in m.named_parameters()]
    worst, worst_name = 0.0, ""
    for name, ref, ours in pairs:
        err = (ours.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
        if err > worst:
            worst, worst_name = err, name
        if not err <= TOL:
            print(f"FAIL {arch} at {size}: {name} relative error {err:.3g} (tolerance {TOL})")
            return False
    print(f"ok   {arch} at {size}: {len(pairs)} tensors, worst relative error {worst:.2e} "
          f"({worst_name}); round trip of {len(sd)} tensors exact")
    return True


def main():
    dump = sys.argv[1]
    torch.set_num_threads(2)
    keras = {"format": "visrec-nn", "input_size": "224", "mean": "0,0,0", "std": "1,1,1"}
    ok = check(dump, "resnet50", 64, 10, "avgpool", resnet50, {})
    ok &= check(dump, "mobilenet_v2", 64, 5, "block_10", KerasMobileNetV2, keras)
    ok &= check(dump, "mobilenet_v2", 33, 7, "avgpool", KerasMobileNetV2, keras)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
