"""How many rows to select, and how a budget is shared between target clusters."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from coretune.errors import CoretuneError

_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")
_COUNT = re.compile(r"^\s*([0-9]+)\s*$")
ALL = "all"  # a sweep budget: every row of the target clusters


def resolve_budget(budget: str | int | float, pool_size: int) -> int:
    """Turn a budget into a row count.

    - ``"0.5%"``: a share of the WHOLE pool (as in the paper), rounded half up, at least 1;
    - ``120`` or ``"120"``: a row count;
    - a float in (0, 1]: a fraction of the whole pool, rounded half up, at least 1.

    The count must be between 1 and ``pool_size``; anything else is a `CoretuneError` with
    ``field="budget"``.
    """
    if pool_size < 1:
        raise CoretuneError("the pool is empty", field="budget")
    if isinstance(budget, bool):
        raise CoretuneError(f"budget must be a count or a percentage, not {budget!r}",
                            field="budget")
    if isinstance(budget, int):
        count = budget
    elif isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise CoretuneError(f"a fractional budget must be in (0, 1], got {budget!r}",
                                field="budget")
        count = _share(Decimal(repr(budget)), pool_size)
    elif isinstance(budget, str):
        if m := _COUNT.match(budget):
            count = int(m.group(1))
        elif m := _PERCENT.match(budget):
            try:
                percent = Decimal(m.group(1))
            except InvalidOperation as e:  # the regex should make this unreachable
                raise CoretuneError(f"bad budget {budget!r}", field="budget") from e
            if not 0 < percent <= 100:
                raise CoretuneError(f"budget percentage must be in (0, 100], got {budget!r}",
                                    field="budget")
            count = _share(percent / 100, pool_size)
        else:
            raise CoretuneError(f"bad budget {budget!r}: use a row count ('120') or a share "
                                "of the pool ('0.5%')", field="budget")
    else:
        raise CoretuneError(f"bad budget {budget!r}", field="budget")
    if count < 1:
        raise CoretuneError(f"budget must be at least 1 row, got {count}", field="budget")
    if count > pool_size:
        raise CoretuneError(f"budget {count} is larger than the pool ({pool_size} rows)",
                            field="budget")
    return count


def check_budget(budget: str) -> None:
    """A sweep budget's syntax, before any pool is read: 'all', a count or a percentage
    (ValueError naming the value, for config validation)."""
    if budget.strip() == ALL:
        return
    try:
        resolve_budget(budget, 1 << 62)  # only the syntax and the range can fail here
    except CoretuneError as e:
        raise ValueError(e.reason) from None


def _share(fraction: Decimal, pool_size: int) -> int:
    # Decimal keeps "0.5%" of 20000 exactly 100 (floats give 99.99999...).
    count = (fraction * pool_size).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return max(1, int(count))


def split_budget(total: int, sizes: dict[int, int]) -> dict[int, int]:
    """Share `total` rows between clusters in proportion to their sizes.

    Rule (largest remainder, exact integer arithmetic): cluster c with size s_c of N rows in
    all gets ``floor(total * s_c / N)``; the rows left over go one each to the clusters with
    the largest remainders ``(total * s_c) mod N``, ties to the smaller cluster id. The shares
    sum to exactly `total`. No cluster gets more than its size: a cluster gets a leftover row
    only if its remainder is non-zero, i.e. only if its exact quota ``total * s_c / N`` (at most
    s_c, because total <= N) was not already an integer, so floor + 1 <= s_c; nothing ever has
    to be redistributed. Empty clusters get 0. Keys of the result are those of `sizes`, in
    increasing cluster-id order.

    `total` larger than the sum of sizes, a negative total or a negative size is a
    `CoretuneError` (``field="budget"``).
    """
    if total < 0:
        raise CoretuneError(f"budget must not be negative, got {total}", field="budget")
    for cluster, size in sizes.items():
        if size < 0:
            raise CoretuneError(f"cluster {cluster} has a negative size {size}", field="budget")
    n = sum(sizes.values())
    if total > n:
        raise CoretuneError(f"budget {total} is larger than the target set ({n} rows)",
                            field="budget")
    ids = sorted(sizes)
    if n == 0:
        return {c: 0 for c in ids}
    shares = {c: total * sizes[c] // n for c in ids}
    left = total - sum(shares.values())
    by_remainder = sorted(ids, key=lambda c: (-(total * sizes[c] % n), c))
    for c in by_remainder[:left]:
        shares[c] += 1
    return shares
