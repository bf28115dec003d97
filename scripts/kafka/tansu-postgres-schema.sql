-- PostgreSQL schema for tansu 0.6.0's `postgres://` storage engine, written for Postroad.
--
-- tansu 0.6.0 does NOT create its tables on PostgreSQL (only its SQLite/Turso engines
-- run DDL), and the crate ships no PostgreSQL DDL. This file was reconstructed from what
-- the 0.6.0 engine uses: the table and column names of its SQLite DDL
-- (tansu-storage-0.6.0/src/ddl/*.sql), the `on conflict` targets of its queries
-- (src/sql/*.sql, src/pg/record_fetch.sql) and the Rust types it binds and reads
-- (src/pg.rs: i16 = smallint, i32 = int, i64 = bigint, SystemTime = timestamptz,
-- Uuid = uuid, serde_json::Value = json, binary COPY into record/header).
-- Pinned to tansu 0.6.0: re-check it when scripts/kafka/install moves to a new version.
--
-- Idempotent (`if not exists`); scripts/kafka/broker applies it before every start in
-- postgres mode. To wipe a broker's data: drop and recreate its database.

begin;

create table if not exists cluster (
    id int generated always as identity primary key,
    name text not null unique,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null
);

create table if not exists topic (
    id int generated always as identity primary key,
    cluster int references cluster (id) on delete cascade not null,
    name text not null,
    uuid uuid not null,
    partitions int not null,
    replication_factor int not null,
    is_internal bool default false not null,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (cluster, name)
);

create table if not exists topition (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    partition int,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (topic, partition)
);

create table if not exists topic_configuration (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    name text not null,
    value text,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (topic, name)
);

create table if not exists watermark (
    id int generated always as identity primary key,
    topition int references topition (id) on delete cascade unique,
    low bigint,
    high bigint,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null
);

-- transaction_id: the writing PostgreSQL transaction; the fetch query compares it with
-- pg_snapshot_xmin(pg_current_snapshot()) to tell committed rows (PostgreSQL 13+).
create table if not exists record (
    topition int references topition (id) on delete cascade,
    offset_id bigint not null,
    attributes smallint,
    producer_id bigint,
    producer_epoch smallint,
    timestamp timestamptz,
    k bytea,
    v bytea,
    transaction_id xid8 default pg_current_xact_id() not null,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    primary key (topition, offset_id)
);

create table if not exists header (
    topition int,
    offset_id bigint,
    k bytea,
    v bytea,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    foreign key (topition, offset_id) references record (topition, offset_id) on delete cascade
);

create index if not exists header_record on header (topition, offset_id);

create table if not exists consumer_group (
    id int generated always as identity primary key,
    cluster int references cluster (id) on delete cascade not null,
    name text not null,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (cluster, name)
);

create table if not exists consumer_group_detail (
    id int generated always as identity primary key,
    consumer_group int references consumer_group (id) on delete cascade unique,
    e_tag uuid not null,
    detail json not null,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null
);

create table if not exists consumer_offset (
    id int generated always as identity primary key,
    consumer_group int references consumer_group (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    timestamp timestamptz,
    metadata text,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (consumer_group, topition)
);

create table if not exists scram_credential (
    id int generated always as identity primary key,
    cluster int references cluster (id) on delete cascade not null,
    username text not null,
    mechanism int not null,
    salt bytea not null,
    iterations int not null,
    stored_key bytea not null,
    server_key bytea not null,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (cluster, username, mechanism)
);

-- idempotent producers (and transactional ones)
create table if not exists producer (
    id bigint generated by default as identity primary key,
    cluster int references cluster (id) on delete cascade not null,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null
);

create table if not exists producer_epoch (
    id int generated by default as identity primary key,
    producer bigint references producer (id) on delete cascade,
    epoch smallint default 0 not null,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (producer, epoch)
);

create table if not exists producer_detail (
    id bigint generated by default as identity primary key,
    producer_epoch int references producer_epoch (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    sequence int default 0 not null,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (producer_epoch, topition)
);

-- transactions (Postroad does not use them; the engine's queries still reference them)
create table if not exists txn (
    id bigint generated always as identity primary key,
    cluster int references cluster (id) on delete cascade,
    name text,
    producer bigint references producer (id) on delete cascade,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (cluster, name)
);

create table if not exists txn_detail (
    id bigint generated always as identity primary key,
    "transaction" bigint references txn (id),
    producer_epoch int references producer_epoch (id),
    transaction_timeout_ms int not null,
    started_at timestamptz,
    status text,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique ("transaction", producer_epoch)
);

create table if not exists txn_topition (
    id bigint generated always as identity primary key,
    txn_detail bigint references txn_detail (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (txn_detail, topition)
);

create table if not exists txn_produce_offset (
    id bigint generated always as identity primary key,
    txn_topition bigint references txn_topition (id) on delete cascade unique,
    offset_start bigint,
    offset_end bigint,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null
);

create table if not exists txn_offset_commit (
    id bigint generated always as identity primary key,
    txn_detail bigint references txn_detail (id) on delete cascade,
    consumer_group int references consumer_group (id) on delete cascade,
    generation_id int,
    member_id text,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (txn_detail, consumer_group)
);

create table if not exists txn_offset_commit_tp (
    id bigint generated always as identity primary key,
    offset_commit bigint references txn_offset_commit (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    metadata text,
    last_updated timestamptz default current_timestamp not null,
    created_at timestamptz default current_timestamp not null,
    unique (offset_commit, topition)
);

commit;
