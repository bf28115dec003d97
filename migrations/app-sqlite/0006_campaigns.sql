-- Recipient lists and campaigns (the HTTP API's /v1/lists and /v1/campaigns).
--
-- A list is read once, as a stream, into list_recipients: one row per distinct address
-- (address_key, the address lowercased, is unique per list), numbered in the order of
-- the upload (seq; a duplicate leaves a gap). Counts and the first bad rows (JSON,
-- [{"line": N, "error": "..."}]) stay on the list.
CREATE TABLE recipient_lists (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    rows_read  INTEGER NOT NULL DEFAULT 0,
    rejected   INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    recipients INTEGER NOT NULL DEFAULT 0,
    errors     TEXT    NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX recipient_lists_tenant ON recipient_lists (tenant, created_at);

CREATE TABLE list_recipients (
    list_id     TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    address_key TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    user_id     INTEGER,
    data        TEXT,
    PRIMARY KEY (list_id, seq),
    UNIQUE (list_id, address_key)
);

-- A campaign expands a list into queued messages in order of seq; done_seq is the last
-- seq whose message is durable in the queue (the queue's own checkpoint may be ahead
-- after a crash: the larger wins). owner/lease_until: the process expanding it now.
CREATE TABLE campaigns (
    id          TEXT    NOT NULL PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    list_id     TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    send_at     INTEGER NOT NULL,
    done_seq    INTEGER NOT NULL DEFAULT 0,
    expanded    INTEGER NOT NULL DEFAULT 0,
    queued      INTEGER NOT NULL DEFAULT 0,
    suppressed  INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    -- An A/B test phase: 0 while the sample is expanded (or the whole list without
    -- one), 1 for the rest after the test; its end, and the variant that won.
    phase        INTEGER NOT NULL DEFAULT 0,
    test_ends_at INTEGER,
    winner       TEXT,
    owner       TEXT,
    lease_until INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX campaigns_tenant ON campaigns (tenant, created_at);
CREATE INDEX campaigns_state ON campaigns (state, send_at);
