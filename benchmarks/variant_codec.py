"""Godot Variant codec speed (issue 12 §1): encode + decode of a typical game
message and of a ~1 KB snapshot, side by side with json (C-accelerated),
pickle and msgpack (if installed) on the equivalent data, measured in the
same run. Prints microseconds per operation and the ratio against json
(goal: within 2x of json). About 15-25 s.

    PYTHONPATH=$PWD/src python -m benchmarks.variant_codec [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from dtlspeer.variant import Vector2, bytes_to_var, var_to_bytes

try:  # optional row
    import msgpack  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the machine
    msgpack = None


def game_message() -> tuple[dict[str, Any], dict[str, Any]]:
    """A typical per-tick message: ints, floats, a Vector2, a bool, a short String.
    Returns (Variant form, JSON form): the JSON form has the Vector2 as a list."""
    variant = {
        "id": 1234,
        "seq": 987654,
        "x": 12.5,
        "y": -3.25,
        "vel": Vector2(0.5, -1.0),
        "hp": 87.3,
        "alive": True,
        "name": "player_17",
    }
    plain = dict(variant, vel=[0.5, -1.0])
    return variant, plain


def snapshot() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A world snapshot: an Array of 20 small dicts (about 1 KB as JSON)."""
    variant = [
        {"id": i, "pos": Vector2(i * 1.5, -i * 0.25), "rot": i * 0.1, "hp": 100 - i}
        for i in range(20)
    ]
    plain = [dict(d, pos=list(d["pos"])) for d in variant]
    return variant, plain


def codecs() -> dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], bool]]:
    """name -> (encode, decode, takes the Variant form)."""
    table: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], bool]] = {
        "json": (lambda v: json.dumps(v).encode(), json.loads, False),
        "variant (dtlspeer)": (var_to_bytes, bytes_to_var, True),
        "pickle": (pickle.dumps, pickle.loads, False),
    }
    if msgpack is not None:
        table["msgpack"] = (msgpack.packb, msgpack.unpackb, False)
    return table


def per_op_us(fn: Callable[[], Any], number: int) -> float:
    """Best of 3 repeats of ``number`` calls, in microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    args = parser.parse_args(argv)
    for title, (variant, plain) in (("game message", game_message()), ("snapshot", snapshot())):
        table = codecs()
        sizes = {name: len(enc(variant if v else plain)) for name, (enc, _, v) in table.items()}
        print(f"\n== {title} (variant {sizes['variant (dtlspeer)']} B, json {sizes['json']} B)")
        calls = {}
        for name, (enc, dec, wants_variant) in table.items():
            value = variant if wants_variant else plain
            blob = enc(value)
            assert dec(blob) == value, name  # correctness first
            calls[name] = (lambda e=enc, v=value: e(v), lambda d=dec, b=blob: d(b))
        number = max(1, int(20_000 / max(1, sizes["json"] // 100)))
        # Rounds interleave every codec, so load on the machine hits all of
        # them alike; each ratio is the median of per-round ratios vs json.
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in table}
        for _ in range(args.rounds):
            for name, (enc_call, dec_call) in calls.items():
                results[name].append((per_op_us(enc_call, number), per_op_us(dec_call, number)))
        print(
            f"{'codec':<20} {'size':>6} {'encode us':>10} {'decode us':>10} {'enc+dec us':>11}"
            f" {'ratio vs json':>14}"
        )
        base = [e + d for e, d in results["json"]]
        for name, runs in results.items():
            enc_us = statistics.median(e for e, _ in runs)
            dec_us = statistics.median(d for _, d in runs)
            ratio = statistics.median((e + d) / b for (e, d), b in zip(runs, base))
            print(
                f"{name:<20} {sizes[name]:>6} {enc_us:>10.2f} {dec_us:>10.2f}"
                f" {enc_us + dec_us:>11.2f} {ratio:>13.2f}x"
            )


if __name__ == "__main__":
    main()
