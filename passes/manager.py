"""Run passes in order; when one fails, say which one and which passes already ran."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext
from passes.errors import PassError


class PassFailure(RuntimeError):
    """A pass crashed (a bug, not bad input); the message names the pass and the passes already run."""


def run_passes(passes: Sequence[Pass], graph: gs.Graph, ctx: PassContext,
               progress: Callable[[str], None] | None = None) -> gs.Graph:
    done: list[str] = []
    for p in passes:
        if progress:
            progress(p.name)
        start = time.perf_counter()
        try:
            result = p.run(graph, ctx)
        except PassError as exc:
            raise PassError(f"pass {p.name} failed (after {_listing(done)}): {exc}") from None
        except Exception as exc:
            raise PassFailure(f"pass {p.name} crashed (after {_listing(done)}): "
                              f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, gs.Graph):
            raise PassFailure(f"pass {p.name} returned {type(result).__name__}, expected a graph")
        graph = result
        ctx.notes.append(f"{p.name}: {time.perf_counter() - start:.2f} s")
        done.append(p.name)
    return graph


def _listing(done: list[str]) -> str:
    return ", ".join(done) if done else "no other pass"
