"""Peak tensor memory of a block of torch code on the CPU, for checking the memory planner's formulas.

torch has no allocator statistics for the CPU, so this counts what the allocator would have to hold:
every storage an op creates is added when it appears and taken off when its last tensor dies (a
finalizer on the storage object, which torch keeps alive exactly as long as the storage). The
result is the peak of live tensor bytes, with no allocator rounding, caching or fragmentation:
the quantity the planner's structural formulas describe before their GPU calibration factor.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakMemory(TorchDispatchMode):
    """Track live and peak bytes of the storages created inside the `with` block.

    Storages that existed before (weights, inputs) are not counted; views and in-place results
    share their input's storage, so they add nothing. `peak` is the high-water mark
    above what was live when the block started (0).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._live: dict[int, int] = {}

    def __enter__(self) -> PeakMemory:
        super().__enter__()
        return self

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        # An output on one of the op's input storages (a view, an in-place result, a weight's transpose) is not new.
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if _real(t)}
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if _real(t) and id(t.untyped_storage()) not in inputs:
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        self._live[key] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._live.pop(key, 0)


def _real(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type != "meta"
