"""`python -m capjax.bench <benchmark> [options]`: throughput and compile-time benchmarks.

Each benchmark is a module of `capjax.bench` (named after the benchmark unless
`capjax.bench.MODULES` says otherwise) with a `run(argv: list[str]) -> None` that parses its
own options (`python -m capjax.bench <name> --help`).
"""

from __future__ import annotations

import sys

from capjax.bench import run_benchmark

BENCHMARKS = {
    "train": "training images/s and compile time of the classifier train step",
    "attacks": "images/s, compile time and loop overhead of each attack",
    "cafd": "CAFD train-step time, split into the CAFA attack and the two updates",
    "capgan": "CAP-GAN train-step time by part, and resize+conv against transposed conv",
    "compare": "capjax's PGD against torchattacks and foolbox on the same model",
    "feed": "input cost per training step: host-gathered batches against data kept on device",
    "kit": "every GPU figure in one command (--quick: the same steps at CPU-test sizes)",
    "autoattack_memory": "peak memory of one AutoAttack call on a max-pool CNN",
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        lines = [f"  {name:<18} {what}" for name, what in BENCHMARKS.items()]
        print("usage: python -m capjax.bench <benchmark> [options]\n\nbenchmarks:")
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"\nunknown benchmark {argv[0]!r}")
        return
    from capjax.cpu_devices import configure_cpu_devices

    configure_cpu_devices()  # before JAX starts: one CPU device per core (CAPJAX_CPU_DEVICES)
    run_benchmark(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
