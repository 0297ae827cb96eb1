"""The toy world: does the exemplar steer the edit? Agreement of painted objects with exemplars.

    python bench/toy_world.py [--cases 96] [--steps 25] [--model PATH]

On held-out toy scenes, the first object's box (grown by 3 px) is masked and an exemplar of
another colour is given. An edit agrees in colour when the dominant palette hue of the object-
like pixels in the mask is the exemplar's, in shape when the blob of that hue matches the
exemplar's shape template best. Chance is 1/6 for both. Rows: the trained toy model (training
it first, and timing that, when it is not cached), the same with shuffled exemplars (each edit
gets another case's exemplar, scored against its own), and the untrained architecture.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from pbe_core.checkpoint import load_models
from pbe_core.evaluate import toy_world_agreement
from pbe_core.pipeline import PaintByExample
from pbe_core.train.toy import toy_cases
from pbe_core.train.toy_model import cache_path, toy_model, untrained_models

GUIDANCES = (1.0, 3.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=96)
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps per edit")
    parser.add_argument("--model", help="a toy-sized model to measure instead of the cached toy model")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f}, torch threads {torch.get_num_threads()}")
    if args.model:
        models, path = load_models(args.model), args.model
    else:
        cached = cache_path().is_file()
        started, cpu = time.perf_counter(), time.process_time()
        models, path = toy_model(report=print)
        if not cached:
            print(f"trained in {time.perf_counter() - started:.0f} s wall, {time.process_time() - cpu:.0f} s CPU "
                  f"(load average now {os.getloadavg()[0]:.1f})")
    print(f"model: {path}")
    cases = toy_cases(args.cases)
    rows = [
        ("trained", PaintByExample(models), False),
        ("trained, shuffled exemplars", PaintByExample(models), True),
        ("untrained", PaintByExample(untrained_models()), False),
    ]
    print(f"\n{args.cases} held-out cases, DDIM {args.steps} steps; chance = 0.17")
    print(f"{'model':<28} {'guidance':>8} {'colour':>7} {'shape':>7}")
    for name, pipe, shuffle in rows:
        for guidance in GUIDANCES:
            found = toy_world_agreement(pipe, cases, guidance, shuffle=shuffle, steps=args.steps)
            print(f"{name:<28} {guidance:>8.0f} {found['colour']:>7.2f} {found['shape']:>7.2f}")


if __name__ == "__main__":
    main()
