"""Whether the network is being traced for export, so that eager-only fast paths step aside.

Some fast paths read the input's height and width as Python numbers (the ASPP's tap pruning) or
the tensors' memory (torch's in-place donation). An exporter traces the network once and replays
the trace at other sizes, so those paths must not run while it traces: ``exporting()`` marks an
export made by ``keras_fada.export``, and ``tracing()`` also catches torch's own tracers
(``torch.jit.trace``, ``torch.export``, dynamo) when a user exports the model directly.

Example:
>>> with exporting():
...     assert tracing()
"""

import contextlib
import sys
import threading

_state = threading.local()


@contextlib.contextmanager
def exporting():
    """Within the block, every network call takes its general, size-agnostic path."""
    previous = getattr(_state, "exporting", False)
    _state.exporting = True
    try:
        yield
    finally:
        _state.exporting = previous


def tracing():
    """``True`` inside ``exporting()`` or while a torch tracer or compiler runs."""
    if getattr(_state, "exporting", False):
        return True
    torch = sys.modules.get("torch")  # never imports torch itself
    if torch is None:
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and (compiler.is_compiling() or getattr(compiler, "is_exporting", bool)()):
        return True
    return False


def static_size(*dims):
    """``True`` when every dim is a plain Python int and nothing traces the network (a symbolic
    JAX dimension, a torch ``SymInt`` or ``None`` is not static)."""
    return all(type(d) is int for d in dims) and not tracing()
