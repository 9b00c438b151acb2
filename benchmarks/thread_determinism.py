"""Does a CPU training run's outcome depend on the torch thread count or the CPU kernels it picks?

    python benchmarks/thread_determinism.py --threads 1,2 --capabilities native,default

Trains the study's classifier (cnn4 at width 32, 6 classes, SGD with momentum) for a few steps on a
seeded random batch, once per (thread count, ATen CPU capability) setting, each in a fresh process,
and prints the kernels each run used, its weights' hash, and their largest difference from the first run's.
Name a setting twice (`--threads 1,2,1`) to see a setting agree with itself to the bit. If two settings
differ, a trial's numbers depend on where and how it ran, and the two ends of a ladder step must share
the host's kernels and the thread count to be a pair.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import torch
from tabulate import tabulate


def train(steps: int) -> torch.Tensor:
    """The classifier's flat weights after `steps` SGD steps on a seeded batch of random images."""
    from bench.nets.backbones import Classifier, build_backbone

    torch.manual_seed(0)
    network = Classifier(build_backbone("cnn4", 1, 28, width=32), num_classes=6)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    images, labels = torch.randn(512, 1, 28, 28), torch.randint(0, 6, (512,))
    for step in range(steps):
        batch = slice(step % 4 * 128, step % 4 * 128 + 128)
        loss = torch.nn.functional.cross_entropy(network(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.cat([parameter.detach().flatten() for parameter in network.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    parser.add_argument("--capabilities", default="native",
                        help="comma list of ATEN_CPU_CAPABILITY values (native: leave it unset; default, avx2, avx512)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--weights", help=argparse.SUPPRESS)  # a child run: where to save its weights
    args = parser.parse_args()
    if args.weights:
        torch.save({"weights": train(args.steps), "used": torch.backends.cpu.get_cpu_capability()}, args.weights)
        return

    rows, first = [], None
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "weights.pt")
        for capability in args.capabilities.split(","):
            for threads in args.threads.split(","):
                environment = os.environ | {"OMP_NUM_THREADS": threads}
                environment.pop("ATEN_CPU_CAPABILITY", None)  # native: what the machine picks, whatever the shell set
                if capability != "native":
                    environment["ATEN_CPU_CAPABILITY"] = capability
                subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--weights", path],
                               env=environment, check=True)
                run = torch.load(path)
                weights = run["weights"]
                first = weights if first is None else first
                rows.append([threads, capability, run["used"],
                             hashlib.sha1(weights.numpy().tobytes()).hexdigest()[:12],
                             f"{(weights - first).abs().max().item():.2e}"])
    print(tabulate(rows, headers=["threads", "capability", "kernels used", "weights", "largest difference from the first"],
                   tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main()
