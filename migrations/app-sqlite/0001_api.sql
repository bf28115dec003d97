-- Application data of the HTTP API: API keys, templates, idempotency records.

-- Bearer keys. Only the SHA-256 of a key is stored; the key itself is shown once.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    tenant TEXT,
    -- The first characters of the key, to recognise it in lists.
    prefix TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- One row per version of a template; the newest version is the one used by default.
CREATE TABLE templates (
    tenant TEXT NOT NULL,
    email_type TEXT NOT NULL,
    version INTEGER NOT NULL,
    -- The template's parts (subject, text, html, from, locales) as JSON.
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, email_type, version)
);

-- The first answer to a request with an Idempotency-Key, per API key.
CREATE TABLE idempotency (
    key_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, idempotency_key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
