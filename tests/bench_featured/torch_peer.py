#!/usr/bin/python3
"""PyTorch peer of bench_featured: torchvision's AlexNet over the same JPEGs.

    torch_peer.py DIR [--layer fc7|output] [--batch 16] [--workers 1] [--warmup 32]
                      [--precision fp32|bf16]

The usual torchvision pipeline: a Dataset that opens each JPEG with PIL,
Resize(256), CenterCrop(224), ToTensor, Normalize(ImageNet), a DataLoader
(--workers processes decode while the main process runs the net), and
torchvision.models.alexnet(num_classes=100) in eval mode under
inference_mode, taking fc7 (classifier up to its second ReLU, 4096-d, as
featured's --feature-layer fc7) or the 100-d output. Random weights (the
speed does not depend on them). The first --warmup images are not timed.
Also times the network alone on one resident batch, and reports the CPU
seconds per image of the timed run (user + system, the DataLoader's worker
included: steadier than wall time on shared cores). --precision bf16 runs
the net under torch.autocast("cpu", torch.bfloat16), as featured
--precision bf16 runs ours: BF16 convolutions and linear layers; the
features are read back as FP32. Prints a summary and
one JSON line. Run it as measuring.md says: torch.set_num_threads(2)
(here), jemalloc preloaded (run.sh).
"""
import json
import os
import resource
import sys
import time

import torch
import torchvision
from PIL import Image
from torchvision import transforms


class Folder(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths
        self.t = transforms.Compose([
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            return self.t(im.convert("RGB"))



def jemalloc_loaded():
    """Whether jemalloc is mapped into this process: LD_PRELOAD naming it
    is not enough (ld.so ignores a file that is not there, with a warning
    only), and a figure labelled jemalloc must have run with it."""
    with open("/proc/self/maps") as f:
        return any("libjemalloc" in line for line in f)

def main():
    args = sys.argv[1:]
    opts = {"--layer": "fc7", "--batch": "16", "--workers": "1", "--warmup": "32",
            "--precision": "fp32"}
    d = None
    i = 0
    while i < len(args):
        if args[i] in opts:
            opts[args[i]] = args[i + 1]
            i += 2
        else:
            d = args[i]
            i += 1
    layer, batch = opts["--layer"], int(opts["--batch"])
    workers, warmup = int(opts["--workers"]), int(opts["--warmup"])
    precision = opts["--precision"]
    if precision not in ("fp32", "bf16"):
        sys.exit(f"--precision {precision}: fp32 or bf16")
    torch.set_num_threads(2)
    torch.manual_seed(1)
    paths = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jpg"))
    model = torchvision.models.alexnet(num_classes=100).eval()
    head = model.classifier[:6] if layer == "fc7" else model.classifier

    def forward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return head(torch.flatten(model.avgpool(model.features(x)), 1)).float()

    def run(subset):
        loader = torch.utils.data.DataLoader(Folder(subset), batch_size=batch,
                                             num_workers=workers)
        n = 0
        with torch.inference_mode():
            for x in loader:
                y = forward(x)
                n += y.shape[0]
        return n

    run(paths[:warmup])
    c0, t0 = os.times(), time.perf_counter()
    n = run(paths[warmup:])
    elapsed = time.perf_counter() - t0
    c1 = os.times()  # the loader's worker has been joined: counted as a child
    cpu = sum(c1[i] - c0[i] for i in range(4))

    x = torch.stack([Folder(paths).__getitem__(i) for i in range(batch)])
    with torch.inference_mode():
        forward(x)
        reps, t1 = 5, time.perf_counter()
        for _ in range(reps):
            forward(x)
        net_rate = reps * batch / (time.perf_counter() - t1)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss +
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    jemalloc = jemalloc_loaded()
    print(f"pytorch {torch.__version__} torchvision {torchvision.__version__} alexnet {layer}, "
          f"{precision}, batch {batch}, {workers} loader workers, {'jemalloc' if jemalloc else 'stock malloc'}, "
          f"{n} images (+{warmup} warm-up) of {d}")
    print(f"  end to end: {n / elapsed:.1f} images/s ({elapsed:.2f} s), CPU {1e3 * cpu / n:.1f} "
          f"ms/image (user + system, with the loader's worker); network alone "
          f"{net_rate:.1f} images/s; peak RSS (main + largest worker) {peak:.0f} MiB")
    print(json.dumps({"impl": "pytorch", "arch": "alexnet", "layer": layer, "precision": precision,
                      "images": n,
                      "images_per_s": round(n / elapsed, 2),
                      "cpu_ms_per_image": round(1e3 * cpu / n, 2),
                      "network_images_per_s": round(net_rate, 2), "jemalloc": jemalloc,
                      "workers": workers, "hwm_mib": round(peak)}))


if __name__ == "__main__":
    main()
