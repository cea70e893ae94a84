"""The whole data model as typed SQLAlchemy 2.0 tables: relational rows, graph edges and vectors."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.mysql import DATETIME as MYSQL_DATETIME
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from medkb.kb.types import Day, Embedding

# Documents of this tenant are visible to every tenant (public guidelines, literature, ontologies).
PUBLIC_TENANT = "public"
DOC_TYPES = ("guideline", "literature", "record_note")
# The dimension the schema is created with when ``init`` is not told the model's (all-MiniLM-L6-v2,
# e5-small); ``init`` records the real one in kb_meta, which every write is checked against.
DEFAULT_EMBEDDING_DIM = 384

BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER


# MySQL's plain DATETIME drops microseconds: audit rows and versions written in one second would tie.
Timestamp = DateTime(timezone=False).with_variant(MYSQL_DATETIME(fsp=6), "mysql")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: Timestamp}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Meta(Base):
    """Knowledge-base wide facts: embedding model and dimension, the chunk generation counter."""

    __tablename__ = "kb_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class ChunkChange(Base):
    """The chunk change log: one row per chunk written or deleted, in the writer's transaction, so an
    index in any process catches up by reading the rows after the last ``seq`` it applied."""

    __tablename__ = "chunk_changes"
    __table_args__ = ({"sqlite_autoincrement": True},)
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    chunk_id: Mapped[int] = mapped_column(BigInteger)  # no foreign key: deleted chunks are logged too


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)


class Source(Base):
    """A named collection: one guideline series, one ontology release, one records export."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_sources_tenant_name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32), default="docs")  # docs | ontology | records
    release: Mapped[str | None] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    # Built for generating fake data (diseases-basic): never shown to a clinician as knowledge.
    fake_data: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(default=_now, onupdate=_now)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("source_id", "external_id", "version", name="uq_documents_ext_version"),
        Index("ix_documents_filter", "tenant_id", "doc_type", "superseded"),
        Index("ix_documents_hash", "tenant_id", "content_hash"),
        {"sqlite_autoincrement": True},  # never reuse an id a citation may still point to
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"))
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(Text, default="")
    doc_type: Mapped[str] = mapped_column(String(32), default="literature")
    language: Mapped[str] = mapped_column(String(8), default="en")
    version: Mapped[str] = mapped_column(String(64), default="1")
    effective_date: Mapped[dt.date | None] = mapped_column(Day)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    evidence_level: Mapped[str | None] = mapped_column(String(32))
    specialty: Mapped[str | None] = mapped_column(String(64))
    # Set only for record notes: the pseudonymous patient the note belongs to.
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("document_id", "ordinal", name="uq_chunks_doc_ordinal"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    section: Mapped[str | None] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    char_start: Mapped[int] = mapped_column(Integer, default=0)
    char_end: Mapped[int] = mapped_column(Integer, default=0)
    page: Mapped[int | None] = mapped_column(Integer)
    embedding: Mapped[Any] = mapped_column(Embedding(), nullable=True)


class Entity(Base):
    """A concept (disease, drug, symptom, phenotype, gene, …) shared by the sources that name it."""

    __tablename__ = "entities"
    __table_args__ = (Index("ix_entities_type_name", "type", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=PUBLIC_TENANT, index=True)
    type: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(512))
    codes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"ICD10CM": ["E11"], ...}
    synonyms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"en": [...], "zh": [...]}
    embedding: Mapped[Any] = mapped_column(Embedding(), nullable=True)


class EntityCode(Base):
    """One code of an entity: (system, code) is unique, which is how ontologies merge on codes."""

    __tablename__ = "entity_codes"
    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    code: Mapped[str] = mapped_column(String(128), primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)


class EntityName(Base):
    """The linker's dictionary: a folded surface form (name, synonym, abbreviation) → entity."""

    __tablename__ = "entity_names"
    __table_args__ = (Index("ix_entity_names_norm", "norm"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"), index=True)
    norm: Mapped[str] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(8), default="en")
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)


class Edge(Base):
    """A typed relation between entities, with provenance: an ontology release or a chunk."""

    __tablename__ = "edges"
    __table_args__ = (
        Index("ix_edges_src", "source_entity_id", "relation"),
        Index("ix_edges_dst", "target_entity_id", "relation"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=PUBLIC_TENANT, index=True)
    source_entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    target_entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    relation: Mapped[str] = mapped_column(String(64))
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    curated: Mapped[bool] = mapped_column(Boolean, default=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    provenance: Mapped[str | None] = mapped_column(String(255))
    # Curated facts' own attributes: severity (English scale) with the source's wording and language,
    # mechanism, and the origin, release and licence of the statement (one KB source may merge several).
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Mention(Base):
    """A chunk names an entity."""

    __tablename__ = "mentions"
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    entity_id: Mapped[int] = mapped_column(
        ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    count: Mapped[int] = mapped_column(Integer, default=1)


# ---- de-identified patient records -------------------------------------------------------------


class Patient(Base):
    """A pseudonymous patient: keyed-hash id, birth year and sex only — no direct identifiers."""

    __tablename__ = "patients"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), index=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    birth_year: Mapped[int | None] = mapped_column(Integer)
    sex: Mapped[str | None] = mapped_column(String(16))
    deceased: Mapped[bool] = mapped_column(Boolean, default=False)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    death_date: Mapped[dt.date | None] = mapped_column(Day)  # shifted like every other date
    # the deceased of a tenant (a cohort's death criterion) without reading every patient
    __table_args__ = (Index("ix_patients_death", "tenant_id", "death_date", "id"),)


class _RecordMixin:
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    code_system: Mapped[str | None] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    # The OMOP standard concept of the row where the export carried one (OMOP CDM input); cohort
    # definitions match on it, else on (code_system, code).
    concept_id: Mapped[int | None] = mapped_column(BigInteger)


class Encounter(_RecordMixin, Base):
    __tablename__ = "encounters"
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    encounter_class: Mapped[str | None] = mapped_column(String(64))
    start: Mapped[dt.date | None] = mapped_column(Day)
    stop: Mapped[dt.date | None] = mapped_column(Day)


class Condition(_RecordMixin, Base):
    __tablename__ = "conditions"
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    entity_id: Mapped[int | None] = mapped_column(ForeignKey("entities.id", ondelete="SET NULL"))
    start: Mapped[dt.date | None] = mapped_column(Day)
    stop: Mapped[dt.date | None] = mapped_column(Day)


class Medication(_RecordMixin, Base):
    __tablename__ = "medications"
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    entity_id: Mapped[int | None] = mapped_column(ForeignKey("entities.id", ondelete="SET NULL"))
    start: Mapped[dt.date | None] = mapped_column(Day)
    stop: Mapped[dt.date | None] = mapped_column(Day)
    reason_code: Mapped[str | None] = mapped_column(String(64))


class Observation(_RecordMixin, Base):
    __tablename__ = "observations"
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    value: Mapped[str | None] = mapped_column(String(255))
    units: Mapped[str | None] = mapped_column(String(64))
    effective: Mapped[dt.date | None] = mapped_column(Day)
    domain: Mapped[str | None] = mapped_column(String(16))  # OMOP domain: measurement | observation


class Allergy(_RecordMixin, Base):
    __tablename__ = "allergies"
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    entity_id: Mapped[int | None] = mapped_column(BigId)  # no FK (added in place by 0005); cleared on entity delete
    start: Mapped[dt.date | None] = mapped_column(Day)
    stop: Mapped[dt.date | None] = mapped_column(Day)


class Procedure(_RecordMixin, Base):
    __tablename__ = "procedures"
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    entity_id: Mapped[int | None] = mapped_column(BigId)  # no FK (added in place by 0005); cleared on entity delete
    performed: Mapped[dt.date | None] = mapped_column(Day)


# Cohort queries look events up by concept or code within a tenant and read only (person, dates[, domain]): both
# indexes carry those columns (and the row id, implicitly), so a concept set's events never touch the table. The
# code index has concept_id after the code: "by code, only rows without a concept id" is an index range too.
# Kept in step with migration 0006_issue20 (COHORT_INDEXES there).
COHORT_INDEX_COLUMNS = {
    "encounters": (["concept_id"], ["patient_id", "start", "stop"]),
    "conditions": (["concept_id"], ["patient_id", "start", "stop"]),
    "medications": (["concept_id"], ["patient_id", "start", "stop"]),
    "observations": (["concept_id", "domain"], ["patient_id", "effective"]),
    "procedures": (["concept_id"], ["patient_id", "performed"]),
}
for _cls in (Encounter, Condition, Medication, Observation, Procedure):
    _t = _cls.__table__
    _lookup, _carried = COHORT_INDEX_COLUMNS[_t.name]
    Index(f"ix_{_t.name}_concept", *(_t.c[c] for c in ["tenant_id", *_lookup, *_carried]))
    Index(f"ix_{_t.name}_code", *(_t.c[c] for c in ["tenant_id", "code_system", "code", *_lookup, *_carried]))


class ObservationPeriod(Base):
    """A span in which the patient's events are recorded: from OMOP as given, derived for other exports."""

    __tablename__ = "observation_periods"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    start: Mapped[dt.date] = mapped_column(Day)
    stop: Mapped[dt.date] = mapped_column(Day)
    derived: Mapped[bool] = mapped_column(Boolean, default=False)


Index("ix_observation_periods_person", ObservationPeriod.__table__.c.tenant_id, ObservationPeriod.__table__.c.patient_id,
      ObservationPeriod.__table__.c.start, ObservationPeriod.__table__.c.stop)


# ---- research cohorts ----------------------------------------------------------------------------


class CohortRun(Base):
    """One generation of a cohort definition in one tenant; its entries keep each qualified event's rule mask."""

    __tablename__ = "cohort_runs"
    __table_args__ = (Index("ix_cohort_runs_lookup", "tenant_id", "definition_hash"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    definition_hash: Mapped[str] = mapped_column(String(64))
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"names": [...]}
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)


class CohortEntry(Base):
    """Qualified events of a run: bit i of ``mask`` is set when they satisfy inclusion rule i. One row per event, or
    (``medkb.cohorts.engine.compacts``) per person, observation period and mask: ``events`` of them, the first
    starting at ``start_date`` (``event_id`` the smallest of them; ``end_date`` then unused)."""

    __tablename__ = "cohort_entries"
    # Clustered on the order counts read a run in (WITHOUT ROWID on SQLite; InnoDB clusters on the primary key):
    # one b-tree per entry written, no row-id lookup per entry read. event_id is unique within a person.
    __table_args__ = {"sqlite_with_rowid": False}
    run_id: Mapped[int] = mapped_column(ForeignKey("cohort_runs.id", ondelete="CASCADE"), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    start_date: Mapped[dt.date] = mapped_column(Day, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    end_date: Mapped[dt.date | None] = mapped_column(Day)
    op_start: Mapped[dt.date] = mapped_column(Day)
    op_end: Mapped[dt.date] = mapped_column(Day)
    mask: Mapped[int] = mapped_column(BigInteger, default=0)
    events: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")


# ---- access -------------------------------------------------------------------------------------


class ApiKey(Base):
    """An API key, stored as a salted hash; bound to one tenant and one role."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public prefix of the key
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # clinician | curator | admin
    key_hash: Mapped[str] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)
    revoked_at: Mapped[dt.datetime | None] = mapped_column()


class AuditLog(Base):
    """Append-only: who touched which patient's data, when, through which endpoint."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=_now)
    actor: Mapped[str] = mapped_column(String(64))  # api key id or "cli"
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str | None] = mapped_column(String(255))
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


TABLES = [t.name for t in Base.metadata.sorted_tables]
