"""The value every core function starts from: one stream of timestamped readings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def frozen_array(values: ArrayLike) -> FloatArray:
    """A read-only float64 copy, so a frozen dataclass cannot be changed through its arrays
    and the caller's own buffer is never touched."""
    out = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    out.setflags(write=False)
    return out


def freeze(owned: FloatArray) -> FloatArray:
    """``owned`` itself made read-only: for a float64 array the caller has just computed
    and nothing else refers to, where ``frozen_array``'s copy would only cost time and
    memory."""
    owned.setflags(write=False)
    return owned


@dataclass(frozen=True, slots=True, eq=False)
class Series:
    """Readings of one sensor, in any order, possibly with repeats.

    ``values`` holds NaN where the device said ``null``: keeping those rows (rather than
    dropping them upstream) lets coverage tell an outage the device admitted from one it
    did not. Equality is identity (``eq=False``) because element-wise array comparison has
    no single truth value.
    """

    ts: FloatArray
    """Unix epoch seconds."""
    values: FloatArray

    def __post_init__(self) -> None:
        ts = frozen_array(self.ts)
        values = frozen_array(self.values)
        if ts.shape != values.shape:
            raise ValueError(f"ts has {ts.size} elements but values has {values.size}")
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "values", values)

    @classmethod
    def of(cls, ts: ArrayLike, values: ArrayLike) -> Series:
        """From anything array-like (lists, other float dtypes); the fields are float64."""
        return cls(frozen_array(ts), frozen_array(values))

    def __len__(self) -> int:
        return int(self.ts.size)

    def shifted(self, seconds: float) -> Series:
        """The same readings with every timestamp moved by ``seconds`` (a clock correction)."""
        return Series(self.ts + seconds, self.values)
