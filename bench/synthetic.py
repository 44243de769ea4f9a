"""A synthetic corpus with one long-range dependency whose entropy rate is known exactly.

The text is a sequence of two-character units ``a b``. The first character ``a`` says what the
unit is; the second, ``b``, is one of ``letters`` letters (``a``, ``b``, ... ):

* each unit is a *key* with probability ``key_rate``, independently of everything else;
* a unit is an *echo* exactly when the unit ``distance / 2`` units earlier (``distance`` characters
  earlier) was a key; its letter is a copy of that key's letter;
* every other letter is drawn uniformly and independently.

``a`` is ``' '`` for a plain unit, ``'+'`` for a key, ``'='`` for an echo and ``'#'`` for a unit
that is both (its letter is then a copy, and is copied again ``distance`` characters later). With
the default distance of 20 characters, ``n`` and ``c`` are keys here, each echoed 20 characters on::

    +n a l p n+c j n d h=n+d m k+o=c

Write K_u for "unit u is a key" (iid Bernoulli(p)), E_u = K_{u-m} with m = distance / 2, and
h(p) = -p log2 p - (1 - p) log2 (1 - p), L = log2(letters). Per unit (two characters):

* ``a_u`` encodes (K_u, E_u). K_u is fresh: h(p) bits. E_u = K_{u-m} is fixed by the character
  ``a_{u-m}``, ``distance`` characters back; the characters in between (units u-m+1 .. u-1) hold
  only keys K_{u-m+1..u-1}, echoes of K_{u-2m+1..u-m-1} and letters, all independent of K_{u-m},
  so without that character E_u costs another h(p) bits.
* ``b_u``: when E_u is 0 it is fresh, L bits for any predictor. When E_u is 1 (visible in ``a_u``,
  one character back) it equals ``b_{u-m}``, ``distance`` characters back: 0 bits with it; without
  it, L bits, because ``b_{u-m}`` is a fresh letter or a copy of one further back by a multiple of
  ``distance`` (the only positions a copy ever reads), and none of those lies in the last
  ``distance - 1`` characters.

So, per character, for any predictor that sees the last ``distance`` characters or more
(``with``), and for any that sees between 1 and ``distance - 1`` of them (``without``)::

    H_with    = (h(p) + (1 - p) L) / 2
    H_without = (2 h(p) + L) / 2

The conditional entropy H(x_t | x_{t-1}, x_{t-d}) equals H_with for d = ``distance`` and H_without
for every d > 1 that is not a multiple of ``distance`` (the test suite checks this on a sample; at
multiples, chains of copies leave a little information). The gap, (h(p) + p L) / 2, is what
a model gains by remembering ``distance`` characters: the timing of each echo and its letter.

    python bench/synthetic.py [--chars 1000000] [--out synthetic.txt]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PLAIN, KEY, ECHO, BOTH = " ", "+", "=", "#"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Synthetic:
    """The corpus' parameters: the dependency's distance in characters, the key rate, the letters."""

    distance: int = 20
    key_rate: float = 0.05
    letters: int = 16

    def __post_init__(self) -> None:
        if self.distance < 4 or self.distance % 2:
            raise ValueError(f"distance must be an even number of at least 4, got {self.distance}")
        if not 0 < self.key_rate < 1:
            raise ValueError(f"key_rate must be in (0, 1), got {self.key_rate}")
        if not 2 <= self.letters <= len(LETTERS):
            raise ValueError(f"letters must be between 2 and {len(LETTERS)}, got {self.letters}")

    @property
    def lag(self) -> int:
        """The dependency's distance in units of two characters."""
        return self.distance // 2

    def entropy_rates(self) -> tuple[float, float]:
        """Exact bits per character (with, without) memory of ``distance`` characters (see above)."""
        p, bits_per_letter = self.key_rate, math.log2(self.letters)
        h = -p * math.log2(p) - (1 - p) * math.log2(1 - p)
        return (h + (1 - p) * bits_per_letter) / 2, (2 * h + bits_per_letter) / 2

    def generate(self, chars: int, seed: int = 0) -> str:
        """``chars`` characters (rounded up to whole units) of the stationary process."""
        rng = np.random.default_rng(seed)
        m = self.lag
        units = -(-chars // 2)
        rows = -(-(units + m) // m)  # m units of burn-in, so the text starts in the stationary state
        keys = rng.random((rows, m)) < self.key_rate
        letters = rng.integers(0, self.letters, size=(rows, m), dtype=np.int8)
        echoes = np.zeros_like(keys)
        echoes[1:] = keys[:-1]  # row r holds units r*m .. r*m+m-1: the unit m before is the row above
        for r in range(1, rows):
            letters[r] = np.where(echoes[r], letters[r - 1], letters[r])
        kinds = np.array([PLAIN, KEY, ECHO, BOTH])[keys.ravel() + 2 * echoes.ravel()][m : m + units]
        symbols = np.array(list(LETTERS[: self.letters]))[letters.ravel()][m : m + units]
        return "".join(np.stack([kinds, symbols], axis=1).ravel())[:chars]


def conditional_entropy(ids: np.ndarray, lags: tuple[int, ...]) -> float:
    """Plug-in estimate, in bits, of H(x_t | x_{t-l} for l in ``lags``) over a sample of ids."""
    span = max(lags)
    base = int(ids.max()) + 1
    context = np.zeros(len(ids) - span, dtype=np.int64)
    for lag in lags:
        context = context * base + ids[span - lag : len(ids) - lag]
    joint = context * base + ids[span:]
    n = len(joint)
    _, joint_counts = np.unique(joint, return_counts=True)
    _, context_counts = np.unique(context, return_counts=True)
    joint_entropy = -np.sum(joint_counts / n * np.log2(joint_counts / n))
    context_entropy = -np.sum(context_counts / n * np.log2(context_counts / n))
    return float(joint_entropy - context_entropy)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--distance", type=int, default=Synthetic.distance)
    parser.add_argument("--key-rate", type=float, default=Synthetic.key_rate)
    parser.add_argument("--letters", type=int, default=Synthetic.letters)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("synthetic.txt"))
    args = parser.parse_args()
    corpus = Synthetic(args.distance, args.key_rate, args.letters)
    args.out.write_text(corpus.generate(args.chars, args.seed), encoding="utf-8")
    with_memory, without = corpus.entropy_rates()
    print(
        f"wrote {args.out}: {args.chars:,} characters; entropy rate {with_memory:.4f} bits/char with memory "
        f"of {corpus.distance} characters, {without:.4f} without"
    )


if __name__ == "__main__":
    main()
