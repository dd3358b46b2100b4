"""One page of rows and the total that R2R's paginated responses carry (``total_entries``)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


async def fetch_page(
    conn: psycopg.AsyncConnection,
    *,
    columns: sql.Composable,
    from_: sql.Composable,
    where: sql.Composable,
    order_by: sql.Composable,
    params: dict[str, Any],
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """The page and the count of all matching rows, in one statement while the page is not empty.

    ``count(*) OVER ()`` rides along with the page; past the last page there is no row to carry
    it, so only then is the total counted separately.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT {columns}, count(*) OVER () AS total_entries FROM {from_} WHERE {where} "
                "ORDER BY {order_by} LIMIT %(page_limit)s OFFSET %(page_offset)s"
            ).format(columns=columns, from_=from_, where=where, order_by=order_by),
            {**params, "page_limit": limit, "page_offset": offset},
        )
        rows = await cur.fetchall()
        if rows:
            total = int(rows[0]["total_entries"])
        else:
            await cur.execute(
                sql.SQL("SELECT count(*) AS total_entries FROM {} WHERE {}").format(from_, where), params
            )
            total = int((await cur.fetchone() or {"total_entries": 0})["total_entries"])
    for r in rows:
        del r["total_entries"]
    return rows, total
