"""Paging for the console's lists (users, groups, audit events): which slice a page shows,
the links to its neighbours, and a page number past the end falling back to the last page."""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Pager:
    """Which slice of a list a page shows, and the links to its neighbours."""

    page: int
    per_page: int
    total: int
    base_url: str
    query: tuple[tuple[str, str], ...] = ()

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def last_page(self) -> int:
        return max((self.total + self.per_page - 1) // self.per_page, 1)

    @property
    def first_item(self) -> int:
        return min(self.offset + 1, self.total)

    def last_item(self, shown: int) -> int:
        return self.offset + shown

    def url(self, page: int) -> str:
        params = [(name, value) for name, value in self.query if value]
        return f"{self.base_url}?{urllib.parse.urlencode([*params, ('page', str(page))])}"

    @property
    def previous_url(self) -> str | None:
        return self.url(self.page - 1) if self.page > 1 else None

    @property
    def next_url(self) -> str | None:
        return self.url(self.page + 1) if self.page < self.last_page else None


def page_number(text: str | None) -> int:
    """A page number from the query string; anything odd means the first page."""
    return int(text) if text and text.isdigit() and 0 < int(text) < 1_000_000 else 1


async def fetch_page(
    fetch: Callable[[int, int], Awaitable[tuple[Sequence[T], int]]], page: int, per_page: int
) -> tuple[Sequence[T], int, int]:
    """The rows of a page, the total and the page shown: past the end, the last page."""
    rows, total = await fetch((page - 1) * per_page, per_page)
    last_page = max((total + per_page - 1) // per_page, 1)
    if not rows and page > last_page:
        page = last_page
        rows, total = await fetch((page - 1) * per_page, per_page)
    return rows, total, page
