-- Customer webhooks: the tenants' endpoints, an outbox of events per endpoint in the
-- order they were queued, and the dead letters of batches given up on. Times are Unix
-- milliseconds. An endpoint is delivered by one process at a time: the one holding its
-- lease (lease_owner until lease_until).
CREATE TABLE webhook_endpoints (
    id          TEXT    NOT NULL PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    -- Event kinds separated by commas; empty: all.
    events      TEXT    NOT NULL,
    description TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    lease_owner TEXT    NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant);

CREATE TABLE webhook_outbox (
    seq         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    queued_at   INTEGER NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_outbox_endpoint ON webhook_outbox (endpoint_id, seq);

CREATE TABLE webhook_dead (
    seq         INTEGER NOT NULL PRIMARY KEY,
    endpoint_id TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    queued_at   INTEGER NOT NULL,
    failed_at   INTEGER NOT NULL,
    error       TEXT    NOT NULL
);
CREATE INDEX webhook_dead_endpoint ON webhook_dead (endpoint_id, seq);
