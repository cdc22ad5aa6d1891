"""How fast does a network start learning? Running train accuracy over the first steps, per initialisation.

    python experiments/init_probe.py                     # B0 at 32 px, three initialisations, + a plain CNN
    python experiments/init_probe.py --steps 600 --lr 2e-3

Trains each variant for `--steps` steps of batch 64 on the offline Fashion-MNIST training
stream (effscale.data, the default run's preprocessing) with plain Adam, and prints the mean
train accuracy of every 50 steps. The variants: EfficientNet-B0 at 32 px with the official
initialisation, with a zero classifier (model.head_init='zeros'), with that and zero-gamma
residual BatchNorms (model.residual_bn_init='zeros'), and a plain 3-layer CNN as the yardstick
of how fast these batches can be learnt at all. The README ("The default training run") gives
what it measured.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import compound_phi2
from effscale import data, host, model, spec

INITS = {
    "official": {"head_init": "uniform", "residual_bn_init": "ones"},
    "zero head": {"head_init": "zeros", "residual_bn_init": "ones"},
    "zero head + residual": {"head_init": "zeros", "residual_bn_init": "zeros"},
}


class PlainCNN(nn.Module):
    """Three conv-BN-ReLU-maxpool stages and a linear classifier: the yardstick."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for features in (32, 64, 128):
            x = nn.Conv(features, (3, 3))(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def probe(module: nn.Module, resolution: int, steps: int, lr: float, every: int = 50) -> list[float]:
    """Mean train accuracy of each `every` steps of Adam(`lr`) on the default run's training batches."""
    cfg = compound_phi2.get_config().data
    batches = data.train_batches(cfg, resolution, 64, seed=0)
    first = next(batches)
    variables = jax.jit(lambda k, x: module.init(k, x, train=False))(jax.random.key(0), first["image"])
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(lr)
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, image, label, key):
        def loss_fn(p):
            logits, new = module.apply(
                {"params": p, "batch_stats": stats}, image, train=True, mutable=["batch_stats"], rngs={"dropout": key}
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, label).mean(), (logits, new["batch_stats"])

        (_, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt, jnp.mean(jnp.argmax(logits, -1) == label)

    window, means = [], []
    for i in range(steps):
        batch = next(batches)
        params, stats, opt, acc = step(params, stats, opt, batch["image"], batch["label"], jax.random.key(i))
        window.append(acc)  # a device scalar: read once per window, not once per step
        if (i + 1) % every == 0:
            means.append(float(np.mean(jax.device_get(window))))
            window = []
    return means


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    m = compound_phi2.get_config().model
    m.phi, m.num_classes = None, 10
    net = spec.build(m)
    variants = {name: model.create(net, {**m.to_dict(), **init}) for name, init in INITS.items()}
    variants["plain CNN"] = PlainCNN()
    print(f"running train accuracy per 50 steps (batch 64, Adam {args.lr:g}, {net.resolution} px)")
    for name, module in variants.items():
        start = time.perf_counter()
        means = probe(module, net.resolution, args.steps, args.lr)
        print(f"{name:<22} " + " ".join(f"{a:.3f}" for a in means) + f"   ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    host.configure_process()  # as launch.py runs the trainer
    main()
