-- Customer webhooks (the tables of migrations/app-sqlite/0005_webhooks.sql): the
-- tenants' endpoints, an outbox of events per endpoint in the order they were queued,
-- and the dead letters of batches given up on. Times are Unix milliseconds. An
-- endpoint is delivered by one process of the cluster at a time: the one holding its
-- lease (lease_owner until lease_until).
CREATE TABLE webhook_endpoints (
    id          VARCHAR(32)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    tenant      VARCHAR(256)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    url         VARCHAR(2048) NOT NULL,
    secret      VARCHAR(128)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- Event kinds separated by commas; empty: all.
    events      VARCHAR(512)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    description VARCHAR(800)  NOT NULL,
    created_at  BIGINT        NOT NULL,
    lease_owner VARCHAR(128)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
    lease_until BIGINT        NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    KEY webhook_endpoints_tenant (tenant)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE webhook_outbox (
    seq         BIGINT        NOT NULL AUTO_INCREMENT,
    endpoint_id VARCHAR(32)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_id    VARCHAR(32)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    payload     MEDIUMTEXT    NOT NULL,
    queued_at   BIGINT        NOT NULL,
    PRIMARY KEY (seq),
    UNIQUE KEY webhook_outbox_event (endpoint_id, event_id),
    KEY webhook_outbox_endpoint (endpoint_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE webhook_dead (
    seq         BIGINT        NOT NULL,
    endpoint_id VARCHAR(32)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_id    VARCHAR(32)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    payload     MEDIUMTEXT    NOT NULL,
    queued_at   BIGINT        NOT NULL,
    failed_at   BIGINT        NOT NULL,
    error       VARCHAR(1000) NOT NULL,
    PRIMARY KEY (seq),
    KEY webhook_dead_endpoint (endpoint_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
