"""The real job's children: ``python -m benchlib.cards ROLE [options]``.

* ``local``: renders ``ecard`` requests in this process, in a loop, the way a web application
  would without DIPS (``renderers.get("ecard").render(request)`` after ``renderers.warm_up()``).
* ``client``: pipelines the same requests through DIPS with
  ``MDPClient(brokers).send_many("ecard", batch, window=64)``.

Both speak the line protocol of :mod:`benchlib.roles` (``READY``, then ``GO START STOP`` ->
``RESULT {json}``, until input ends). The requests are realistic and varied: every one has
its own serial and its own 80 numbers, half of them as the original system's comma-separated
string (with its line wraps) and half as a list.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from typing import Any

from benchlib.roles import run_batches, serve_runs, warm_up

SERVICE = "ecard"
PNG = b"\x89PNG\r\n\x1a\n"
Request = dict[str, Any]


def card_requests(count: int, seed: int) -> list[Request]:
    """``count`` distinct ecard requests, reproducible from ``seed``."""
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        numbers = [rng.randrange(100) for _ in range(80)]
        data: str | list[int]
        if i % 2:
            data = numbers
        else:  # the original's form: "61, 61, 58, ..." with a hard wrap every 21 numbers
            text = ", ".join(f"{n:02d}" for n in numbers)
            data = "\n".join(text[k:k + 80] for k in range(0, len(text), 80))
        requests.append({"pSN": "".join(rng.choice("0123456789") for _ in range(10)),
                         "pData": data})
    return requests


def _check(image: Any) -> None:
    if not isinstance(image, bytes) or not image.startswith(PNG):
        raise ValueError(f"the reply is not a PNG image: {type(image).__name__} {image!r:.40}")


def local(args: argparse.Namespace) -> int:
    """Render in-process, one card after another."""
    import renderers

    renderers.warm_up()
    render = renderers.get(SERVICE).render
    requests = card_requests(args.distinct, args.seed)
    position = 0

    def batch() -> int:
        nonlocal position
        for _ in range(args.batch):
            position = (position + 1) % len(requests)
            _check(render(requests[position]))
        return args.batch

    warm_up(batch, args.warmup)
    return serve_runs(lambda start, stop: run_batches(batch, start, stop))


def client(args: argparse.Namespace) -> int:
    """Pipeline cards through DIPS: ``send_many`` over every broker given."""
    from mdp.client import MDPClient

    mdp = MDPClient(args.broker, timeout=60.0)  # as deployed: all brokers, default shuffle
    requests = card_requests(args.distinct, args.seed)
    position = 0

    def batch() -> int:
        nonlocal position
        chunk = [requests[(position + k) % len(requests)] for k in range(args.batch)]
        position = (position + args.batch) % len(requests)
        images = mdp.send_many(SERVICE, chunk, window=args.window)
        _check(images[0])
        _check(images[-1])
        return len(images)

    warm_up(batch, args.warmup)
    return serve_runs(lambda start, stop: run_batches(batch, start, stop))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchlib.cards")
    roles = parser.add_subparsers(dest="role", required=True)
    for name in ("local", "client"):
        sub = roles.add_parser(name)
        sub.add_argument("--seed", type=int, default=1)
        sub.add_argument("--distinct", type=int, default=1024,
                         help="distinct requests, used in turn")
        sub.add_argument("--batch", type=int, default=256,
                         help="cards per send_many call (per check of the clock)")
        sub.add_argument("--warmup", type=float, default=0.3)
        if name == "client":
            sub.add_argument("--broker", action="append", required=True)
            sub.add_argument("--window", type=int, default=64)
    return parser.parse_args(argv)


ROLES: dict[str, Callable[[argparse.Namespace], int]] = {"local": local, "client": client}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return ROLES[args.role](args)


if __name__ == "__main__":
    raise SystemExit(main())
