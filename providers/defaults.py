"""The routes Pulse ships with: the seed's routing rules and priced exact routes for known models.

They live in providers/prices.toml, one reviewed data file with the date and source of every
price (see its head for the format); providers/price_table.py reads and checks it. Pattern
routes catch every other name of a family and carry no price, so they refuse requests (403
model_not_priced) until an admin prices them: nothing is billed at a guess.
"""

from __future__ import annotations

from pathlib import Path

from providers.price_table import PRICE_TABLE, TableRoute, load_price_table


def default_routes(path: Path = PRICE_TABLE) -> list[TableRoute]:
    """The shipped routes, read afresh (sync_providers runs rarely; a stale copy would hide an edit)."""
    return load_price_table(path)
