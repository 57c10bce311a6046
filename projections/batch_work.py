"""A read model's unit of work for one batch: read rows once, change them in memory, write
them back with a few bulk statements.

A handler that selects and updates row by row makes several round trips per event; over a
batch of hundreds of events that is most of a rebuild's time. A read model that sets
`batched = True` gets a `BatchWork` instead of the connection:

* `prepare(work, events)` runs first with every event of the batch the read model handles,
  and declares the rows they need: `prefetch(table, keys)` (by primary key),
  `prefetch_where(table, column, values)` (every row whose column has one of the values)
  and `prefetch_max(table, column, group_column, values)` (the highest number per group,
  for numbering entries). Each is one SELECT per table per batch.
* handlers then read with `get` / `find` / `next_number` and write with `insert` / `upsert`
  / `delete` / `append`, all in memory. A row nobody prefetched is still read correctly,
  with a SELECT of its own (slower, never wrong).
* the runner calls `flush()` in the batch's transaction, before it commits: deletes as one
  executemany per table, then changed rows as one `INSERT … ON CONFLICT (primary key) DO
  UPDATE` executemany per table, then appended rows as one executemany INSERT per table.
  The positions move in the same transaction, so a crash anywhere, flush included, leaves
  neither rows nor positions of the batch, and the batch is redone exactly once.

The read model sees its own writes at once (`get` after `upsert` returns the new row), so
handlers keep their event-by-event logic; other read models see them only after the flush,
which is fine because no read model reads another's tables while it is being applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

Key = tuple[Any, ...]
Row = dict[str, Any]

# Values per IN list: well under SQLite's limit on bound parameters.
CHUNK = 500

_PRIMARY_KEYS: dict[Table, tuple[str, ...]] = {}


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


class BatchWork:
    """The rows one read model reads and writes while it applies one batch."""

    def __init__(self, conn: Connection, tables: Sequence[Table]) -> None:
        self.conn = conn
        self.tables = tuple(tables)
        # Rows known in this batch, by primary key: a dict, or None for "known absent".
        self._rows: dict[str, dict[Key, Row | None]] = {}
        # Keys whose row must be written (upserted, or deleted when the row is None).
        self._dirty: dict[str, set[Key]] = {}
        # (table, column) -> value -> keys of every row with that value (complete sets).
        self._index: dict[tuple[str, str], dict[Any, set[Key]]] = {}
        # (table, column, group column) -> group -> highest number so far.
        self._highest: dict[tuple[str, str, str], dict[Any, int]] = {}
        self._appended: dict[str, list[Row]] = {}
        self._by_name = {table.name: table for table in tables}
        self.statements = 0  # executed by this unit of work (prefetches and flush)

    # -- keys -------------------------------------------------------------------------------

    @staticmethod
    def key_of(table: Table, row: Row) -> Key:
        names = _PRIMARY_KEYS.get(table)
        if names is None:
            names = _PRIMARY_KEYS[table] = tuple(c.name for c in table.primary_key.columns)
        if len(names) == 1:
            return (row[names[0]],)
        return tuple(row[name] for name in names)

    @staticmethod
    def _key(key: Any) -> Key:
        return key if isinstance(key, tuple) else (key,)

    def _execute(self, statement: Any, parameters: Any = None) -> Any:
        self.statements += 1
        if parameters is None:
            return self.conn.execute(statement)
        return self.conn.execute(statement, parameters)

    # -- prefetching ------------------------------------------------------------------------

    def prefetch(self, table: Table, keys: Iterable[Any]) -> None:
        """Read the rows with these primary keys (a value, or a tuple for a composite key)
        in one SELECT; keys without a row are remembered as absent."""
        known = self._rows.setdefault(table.name, {})
        wanted = list(dict.fromkeys(k for k in map(self._key, keys) if k not in known))
        if not wanted:
            return
        columns = list(table.primary_key.columns)
        for chunk in _chunks(wanted):
            if len(columns) == 1:
                condition = columns[0].in_([k[0] for k in chunk])
            else:
                condition = tuple_(*columns).in_(list(chunk))
            for row in self._execute(select(table).where(condition)).mappings():
                self._remember(table, dict(row))
        for key in wanted:
            known.setdefault(key, None)

    def prefetch_where(self, table: Table, column: str, values: Iterable[Any]) -> None:
        """Read every row whose `column` has one of `values` in one SELECT, so that `find`
        answers for these values from memory (rows written in this batch included)."""
        index = self._index.setdefault((table.name, column), {})
        wanted = list(dict.fromkeys(v for v in values if v not in index))
        if not wanted:
            return
        for chunk in _chunks(wanted):
            rows = self._execute(select(table).where(table.c[column].in_(list(chunk))))
            for row in rows.mappings():
                self._remember(table, dict(row))
        known = self._rows.setdefault(table.name, {})
        for value in wanted:
            index[value] = set()
        # The index is built from memory, where rows this batch wrote take precedence.
        for key, row in known.items():
            if row is not None and row[column] in index and row[column] in wanted:
                index[row[column]].add(key)

    def prefetch_max(
        self, table: Table, column: str, group_column: str, values: Iterable[Any]
    ) -> None:
        """The highest `column` per `group_column` value, in one grouped SELECT, so that
        `next_number` numbers new rows without reading."""
        highest = self._highest.setdefault((table.name, column, group_column), {})
        wanted = list(dict.fromkeys(v for v in values if v not in highest))
        if not wanted:
            return
        group = table.c[group_column]
        for chunk in _chunks(wanted):
            rows = self._execute(
                select(group, func.max(table.c[column]))
                .where(group.in_(list(chunk)))
                .group_by(group)
            ).all()
            for value, top in rows:
                highest[value] = int(top or 0)
        for value in wanted:
            highest.setdefault(value, 0)

    def _remember(self, table: Table, row: Row) -> None:
        """A row read from the database, unless this batch already knows better."""
        known = self._rows.setdefault(table.name, {})
        key = self.key_of(table, row)
        if key not in known:
            known[key] = row

    # -- reading ----------------------------------------------------------------------------

    def get(self, table: Table, key: Any) -> Row | None:
        """The row with this primary key as this batch left it (a copy), or None."""
        key = self._key(key)
        known = self._rows.setdefault(table.name, {})
        if key not in known and not self._covered(table, key):
            self.prefetch(table, [key])
        row = known.get(key)
        return dict(row) if row is not None else None

    def _covered(self, table: Table, key: Key) -> bool:
        """Whether a `prefetch_where` on a key column read every row this key could name,
        so a key still unknown has no row (a new lot of a member whose lots were read)."""
        for position, column in enumerate(table.primary_key.columns):
            index = self._index.get((table.name, column.name))
            if index is not None and key[position] in index:
                return True
        return False

    def find(self, table: Table, column: str, value: Any) -> list[Row]:
        """Every row whose `column` equals `value`, as this batch left them (copies)."""
        index = self._index.get((table.name, column))
        if index is None or value not in index:
            self.prefetch_where(table, column, [value])
            index = self._index[(table.name, column)]
        known = self._rows[table.name]
        keys = index[value]
        if len(keys) > 1:  # a stable order, whatever order the rows were read in
            keys = sorted(keys, key=repr)
        return [dict(row) for key in keys if (row := known[key]) is not None]

    def count(self, table: Table, column: str, value: Any) -> int:
        """How many rows have `column` equal to `value` (see `find`)."""
        index = self._index.get((table.name, column))
        if index is None or value not in index:
            self.prefetch_where(table, column, [value])
            index = self._index[(table.name, column)]
        return len(index[value])

    def next_number(self, table: Table, column: str, group_column: str, value: Any) -> int:
        """One more than the highest `column` of the group (rows appended here included)."""
        highest = self._highest.get((table.name, column, group_column))
        if highest is None or value not in highest:
            self.prefetch_max(table, column, group_column, [value])
            highest = self._highest[(table.name, column, group_column)]
        highest[value] += 1
        return highest[value]

    # -- writing ----------------------------------------------------------------------------

    def upsert(self, table: Table, row: Row) -> None:
        """Write the whole row (every column it has) by its primary key."""
        key = self.key_of(table, row)
        known = self._rows.setdefault(table.name, {})
        self._by_name.setdefault(table.name, table)
        before = known.get(key)
        known[key] = dict(row)
        self._dirty.setdefault(table.name, set()).add(key)
        self._reindex(table, key, before, row)

    def insert(self, table: Table, row: Row) -> None:
        """A new row: refused, as the database would, if one with its key exists."""
        key = self.key_of(table, row)
        if self.get(table, key) is not None:
            raise ValueError(f"{table.name}: a row with key {key!r} exists already")
        # A column an INSERT leaves out is NULL unless it has a default: say so, so that
        # every row of the table has the same shape and goes in one executemany.
        missing = {column.name: None for column in table.columns
                   if column.name not in row and column.default is None
                   and column.server_default is None}
        self.upsert(table, {**row, **missing})

    def update(self, table: Table, key: Any, **values: Any) -> Row | None:
        """Change some columns of an existing row; a missing row is left missing (as an
        UPDATE matching nothing). Returns the new row."""
        row = self.get(table, key)
        if row is None:
            return None
        row.update(values)
        self.upsert(table, row)
        return row

    def delete(self, table: Table, key: Any) -> None:
        key = self._key(key)
        known = self._rows.setdefault(table.name, {})
        self._by_name.setdefault(table.name, table)
        before = known.get(key)
        known[key] = None
        self._dirty.setdefault(table.name, set()).add(key)
        self._reindex(table, key, before, None)

    def append(self, table: Table, row: Row) -> None:
        """An insert-only row this read model never reads back in the batch (a ledger
        entry): written with one executemany INSERT per table."""
        self._by_name.setdefault(table.name, table)
        self._appended.setdefault(table.name, []).append(dict(row))

    def _reindex(self, table: Table, key: Key, before: Row | None, after: Row | None) -> None:
        if not self._index:
            return
        for (name, column), index in self._index.items():
            if name != table.name:
                continue
            if before is not None and before[column] in index:
                index[before[column]].discard(key)
            if after is not None and after[column] in index:
                index[after[column]].add(key)

    # -- flushing ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything this batch changed: deletes, upserts, then appended rows."""
        # The read model's tables in its order, then any other table it wrote to.
        order = list(self.tables) + [
            table for table in self._by_name.values() if table not in self.tables
        ]
        for table in reversed(order):
            gone = [key for key in self._dirty.get(table.name, ())
                    if self._rows[table.name][key] is None]
            if gone:
                self._delete_many(table, gone)
        for table in order:
            rows = [self._rows[table.name][key] for key in self._dirty.get(table.name, ())]
            present = [row for row in rows if row is not None]
            if present:
                self._upsert_many(table, present)
        for table in order:
            appended = self._appended.get(table.name)
            if appended:
                self._insert_many(table, appended)
        self._dirty.clear()
        self._appended.clear()

    def _delete_many(self, table: Table, keys: list[Key]) -> None:
        columns = list(table.primary_key.columns)
        statement = delete(table).where(
            and_(*(column == bindparam(f"key_{column.name}") for column in columns))
        )
        self._execute(statement, [
            {f"key_{column.name}": value for column, value in zip(columns, key, strict=True)}
            for key in sorted(keys, key=repr)
        ])

    def _upsert_many(self, table: Table, rows: list[Row]) -> None:
        # executemany needs the same columns in every row: one statement per shape.
        shapes: dict[tuple[str, ...], list[Row]] = {}
        for row in rows:
            shapes.setdefault(tuple(sorted(row)), []).append(row)
        primary = {column.name for column in table.primary_key.columns}
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        for columns, group in shapes.items():
            statement = dialect.insert(table)
            updated = {name: statement.excluded[name] for name in columns if name not in primary}
            statement = (
                statement.on_conflict_do_update(
                    index_elements=sorted(primary), set_=updated
                )
                if updated
                else statement.on_conflict_do_nothing(index_elements=sorted(primary))
            )
            group.sort(key=lambda row: repr(self.key_of(table, row)))
            self._execute(statement, group)

    def _insert_many(self, table: Table, rows: list[Row]) -> None:
        shapes: dict[tuple[str, ...], list[Row]] = {}
        for row in rows:
            shapes.setdefault(tuple(sorted(row)), []).append(row)
        for group in shapes.values():
            self._execute(insert(table), group)
