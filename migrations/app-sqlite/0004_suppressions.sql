-- The suppression list: per tenant ('' for none), lowercased addresses mail must not
-- go to, with why, where from, since when and until when (NULL: never). Removals
-- leave the row marked removed, so that every process reading the changes since its
-- last look (by updated_at) drops the address too.
CREATE TABLE suppressions (
    tenant     TEXT    NOT NULL,
    address    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    updated_at INTEGER NOT NULL,
    removed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, address)
);
CREATE INDEX suppressions_updated ON suppressions (updated_at);
