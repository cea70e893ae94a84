"""The knowledge base's own facts (kb_meta): the generation counter that drives every cache, the embedding model and dimension."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from sqlalchemy import Integer, String, cast, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medkb.errors import Conflict
from medkb.kb import models as m
from medkb.kb.dberrors import retrying

GENERATION_KEY = "chunk_generation"
# The generation is the sum of a few counter rows: concurrent writers bump different rows, so they do
# not queue on one row lock until each other's commit; the sum still moves with every committed write.
GENERATION_KEYS = (GENERATION_KEY, *(f"{GENERATION_KEY}.{i}" for i in range(1, 8)))
EMBED_MODEL_KEY = "embedding_model"
EMBED_DIM_KEY = "embedding_dim"
KB_ID_KEY = "kb_id"  # a random id per knowledge base: files derived from it (the ANN index) name it


def _first_writer_wins(run: Callable[[], None]) -> None:
    """Run a create-if-absent of kb_meta rows; when another process created them between our read and our
    insert (two ingests into a new knowledge base at once), its rows stand and the re-run finds them."""
    try:
        retrying(run)
    except IntegrityError:
        retrying(run)


class MetaMixin:
    """kb_meta for KnowledgeStore, which supplies ``session()`` and ``write_lanes``."""


    def get_meta(self, key: str, s: Session | None = None) -> str | None:
        if s is None:
            with self.session() as s2:
                return self.get_meta(key, s2)
        row = s.get(m.Meta, key)
        return row.value if row else None

    def _set_meta(self, s: Session, key: str, value: str) -> None:
        row = s.get(m.Meta, key)
        if row is None:
            s.add(m.Meta(key=key, value=value))
        else:
            row.value = value

    _pinned_generation: int | None = None

    def generation(self) -> int:
        """Bumped in the same transaction as every chunk write, so caches see other processes' writes.

        A serving process pins it (``pin_generation``): its caches then move when its background
        follower has prepared the next state, not on the first query after each write."""
        pinned = self._pinned_generation
        return pinned if pinned is not None else self.read_generation()

    def pin_generation(self, generation: int | None) -> None:
        self._pinned_generation = generation

    def read_generation(self) -> int:
        """The generation as the database has it now (never the pinned one)."""
        with self.session() as s:
            total = s.scalar(select(func.sum(cast(m.Meta.value, Integer))).where(m.Meta.key.in_(GENERATION_KEYS)))
        return int(total or 0)

    def _bump_generation(self, s: Session) -> None:
        """+1 in SQL, under the row lock of the same transaction: two writers never both write N+1."""
        key = GENERATION_KEYS[0 if self.write_lanes == 1 else random.randrange(len(GENERATION_KEYS))]
        bumped = s.execute(
            update(m.Meta)
            .where(m.Meta.key == key)
            .values(value=cast(cast(m.Meta.value, Integer) + 1, String))
            .execution_options(synchronize_session=False)
        ).rowcount
        if not bumped:
            s.add(m.Meta(key=key, value="1"))
            s.flush()

    def kb_id(self) -> str:
        """This knowledge base's random id, made on first use (not a chunk write: the generation stays)."""
        cur = self.get_meta(KB_ID_KEY)
        if cur is not None:
            return cur

        def run() -> None:
            with self.session() as s:
                if self.get_meta(KB_ID_KEY, s) is None:  # insert only: an id once made is never replaced
                    s.add(m.Meta(key=KB_ID_KEY, value=uuid.uuid4().hex))

        _first_writer_wins(run)
        return str(self.get_meta(KB_ID_KEY))

    def record_dimension(self, dim: int) -> None:
        """Fix the knowledge base's embedding dimension at ``init``; another one later is a Conflict."""
        def run() -> None:
            with self.session() as s:
                cur = self.get_meta(EMBED_DIM_KEY, s)
                if cur is not None and int(cur) != dim:
                    raise Conflict(f"this knowledge base holds embeddings of dimension {cur}, not {dim}; "
                                   "use a new database for a model of another dimension")
                if cur is None:
                    self._set_meta(s, EMBED_DIM_KEY, str(dim))
                have = set(s.scalars(select(m.Meta.key).where(m.Meta.key.in_(GENERATION_KEYS))))
                s.add_all(m.Meta(key=k, value="0") for k in GENERATION_KEYS if k not in have)

        _first_writer_wins(run)

    def embedding_info(self) -> tuple[str | None, int | None]:
        with self.session() as s:
            model, dim = self.get_meta(EMBED_MODEL_KEY, s), self.get_meta(EMBED_DIM_KEY, s)
        return model, int(dim) if dim else None

    def set_embedding_model(self, model: str, dim: int) -> None:
        """Record the knowledge base's embedding model; refuse a second, different one."""
        def run() -> None:
            with self.session() as s:
                cur_model, cur_dim = self.get_meta(EMBED_MODEL_KEY, s), self.get_meta(EMBED_DIM_KEY, s)
                if cur_dim is not None and (int(cur_dim) != dim or cur_model not in (None, model)):
                    raise Conflict(
                        f"this knowledge base holds {cur_model} embeddings of dimension {cur_dim}; "
                        f"refusing {model} (dimension {dim}). Use a new database for another model."
                    )
                self._set_meta(s, EMBED_MODEL_KEY, model)
                self._set_meta(s, EMBED_DIM_KEY, str(dim))

        _first_writer_wins(run)  # two first ingests at once both insert the model row; the re-run checks theirs
