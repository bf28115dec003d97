-- The HTTP API's application data on MySQL/MariaDB, beside the history, so that every
-- API node of a cluster shares it: the tables of migrations/app-sqlite/, column for
-- column (times are Unix milliseconds in both). Small tables, not partitioned.
--
-- Identifiers compare byte for byte (ascii_bin), as they do in SQLite: "Welcome" and
-- "welcome" are two email types, "A1" and "a1" two idempotency keys.

-- Bearer keys. Only the SHA-256 of a key is stored; the key itself is shown once.
CREATE TABLE api_keys (
    id          VARCHAR(32)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name        TEXT         NOT NULL,
    tenant      VARCHAR(256) CHARACTER SET ascii COLLATE ascii_bin,
    -- The first characters of the key, to recognise it in lists.
    prefix      VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    hash        BINARY(32)   NOT NULL,
    created_at  BIGINT       NOT NULL,
    revoked_at  BIGINT,
    PRIMARY KEY (id),
    UNIQUE KEY api_keys_by_hash (hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One row per version of a template; the newest version is the one used by default.
CREATE TABLE templates (
    tenant      VARCHAR(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    email_type  VARCHAR(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version     BIGINT       NOT NULL,
    -- The template's parts (subject, text, html, from, locales) as JSON.
    definition  MEDIUMTEXT   NOT NULL,
    created_at  BIGINT       NOT NULL,
    PRIMARY KEY (tenant, email_type, version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The answer to a request with an Idempotency-Key, per API key; status 0 while the
-- first request is still being handled (the claim that makes a concurrent retry on
-- any node wait).
CREATE TABLE idempotency (
    key_id           VARCHAR(32)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    idempotency_key  VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_hash     BINARY(32)   NOT NULL,
    status           INT          NOT NULL,
    response         MEDIUMTEXT   NOT NULL,
    created_at       BIGINT       NOT NULL,
    PRIMARY KEY (key_id, idempotency_key),
    KEY idempotency_by_age (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- User preferences (name, language, timezone...) when no Redis is configured.
CREATE TABLE user_prefs (
    tenant      VARCHAR(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id     BIGINT       NOT NULL,
    -- A JSON object of string values.
    prefs       MEDIUMTEXT   NOT NULL,
    updated_at  BIGINT       NOT NULL,
    PRIMARY KEY (tenant, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Template changes Redis could not take when they were made (it was down): retried by
-- the API's upkeep until Redis has the new state.
CREATE TABLE template_announcements (
    tenant      VARCHAR(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    email_type  VARCHAR(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (tenant, email_type)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
