"""The router inside a PyTorch model: nn.Linear layers inject energy, the router moves it.

Task. Three Gaussian blobs in the plane (300 points, seeded), one class each; the first 240
points train, the last 60 are held out.

Model. ``encoder`` (``nn.Linear(2, 32) -> tanh -> nn.Linear(32, 8) -> softmax``) turns a point
into one unit of energy spread over the 8 *input* nodes of a small graph; the
:class:`~energetic_wgpu.torch.EnergeticRouter` moves it two steps: input nodes -> 8 hidden
nodes (every pair linked) -> 3 *class* nodes (every pair linked). With ``alpha = 1`` the energy
is conserved, so the class nodes' energies are a probability distribution over classes; the
loss is their negative log-likelihood. The graph is given as a PyTorch Geometric style
``edge_index`` whose columns are shuffled (the module works in its own CSR order and
``edge_pi()`` answers in the caller's order). One ``torch.optim.AdamW`` trains the encoder and
the router's ``q``, ``k`` and ``bias`` together.

The script asserts that held-out accuracy is at least ``--floor`` (0.9) and that the learned
routing probabilities, in the caller's edge order, sum to one over each node's edges.

Run::

    python examples/torch_module.py                    # backend: auto
    python examples/torch_module.py --backend wgpu
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
import torch
from torch import nn

from energetic_wgpu.torch import EnergeticRouter

N_IN, N_HID, N_CLS = 8, 8, 3
N = N_IN + N_HID + N_CLS


def make_edge_index(seed: int) -> torch.Tensor:
    """int64 [2, E]: every input node -> every hidden node -> every class node, shuffled."""
    inp = torch.arange(N_IN)
    hid = torch.arange(N_IN, N_IN + N_HID)
    cls = torch.arange(N_IN + N_HID, N)
    first = torch.cartesian_prod(inp, hid)
    second = torch.cartesian_prod(hid, cls)
    edges = torch.cat([first, second]).T
    return edges[:, torch.randperm(edges.shape[1], generator=torch.Generator().manual_seed(seed))]


def make_blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(points float32 [n, 2], labels int64 [n]): three well-separated Gaussian blobs."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
    labels = torch.randint(0, 3, (n,), generator=g)
    points = centers[labels] + 0.5 * torch.randn(n, 2, generator=g)
    return points, labels


class BlobClassifier(nn.Module):
    """nn.Linear encoder -> energies on the input nodes -> EnergeticRouter -> class energies."""

    def __init__(self, edge_index: torch.Tensor, backend: str) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, N_IN))
        self.router = EnergeticRouter(edge_index, num_nodes=N, dim=4, steps=2, backend=backend, seed=0)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points float32 [B, 2] -> class probabilities float32 [B, 3] (the class nodes' energies)."""
        inject = torch.softmax(self.encoder(points), dim=1)  # [B, 8], one unit of energy per point
        energies = nn.functional.pad(inject, (0, N - N_IN))  # [B, N]: energy on the input nodes only
        return self.router(energies)[:, N_IN + N_HID :]


def main(argv: Sequence[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto", help="numpy, wgpu or auto (default)")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    ap.add_argument("--floor", type=float, default=0.9, help="minimum held-out accuracy (default 0.9)")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    points, labels = make_blobs(300, seed=1)
    train_x, train_y, test_x, test_y = points[:240], labels[:240], points[240:], labels[240:]
    edge_index = make_edge_index(seed=2)
    model = BlobClassifier(edge_index, args.backend)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    for step in range(args.steps):
        opt.zero_grad()
        probs = model(train_x)
        loss = nn.functional.nll_loss(torch.log(probs + 1e-9), train_y)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")

    with torch.no_grad():
        probs = model(test_x)
    accuracy = float((probs.argmax(dim=1) == test_y).float().mean())
    mass = float(probs.sum(dim=1).mean())
    print(f"backend {model.router.backend.describe()}  held-out accuracy {accuracy:.3f}  class-node energy {mass:.4f}")
    assert accuracy >= args.floor, f"held-out accuracy {accuracy:.3f} < floor {args.floor}"
    assert abs(mass - 1.0) < 1e-4, f"energy is conserved (alpha = 1), got {mass}"

    pi = model.router.edge_pi().numpy()  # in the order of edge_index's columns
    src = edge_index[0].numpy()
    sums = np.bincount(src, weights=pi, minlength=N)[: N_IN + N_HID]
    assert np.allclose(sums, 1.0, atol=1e-5), sums
    print("torch_module: OK")
    return accuracy


if __name__ == "__main__":
    main(sys.argv[1:])
