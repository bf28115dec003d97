-- Recipient lists and campaigns (the HTTP API's /v1/lists and /v1/campaigns), as in
-- the embedded store (migrations/app-sqlite/0006_campaigns.sql). Identifiers and
-- address keys compare byte for byte.
CREATE TABLE recipient_lists (
    id         VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    tenant     VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name       VARCHAR(255) NOT NULL,
    state      VARCHAR(16)  NOT NULL,
    rows_read  BIGINT       NOT NULL DEFAULT 0,
    rejected   BIGINT       NOT NULL DEFAULT 0,
    duplicates BIGINT       NOT NULL DEFAULT 0,
    recipients BIGINT       NOT NULL DEFAULT 0,
    errors     MEDIUMTEXT   NOT NULL,
    created_at BIGINT       NOT NULL,
    updated_at BIGINT       NOT NULL,
    KEY recipient_lists_tenant (tenant, created_at)
) ENGINE=InnoDB;

CREATE TABLE list_recipients (
    list_id     VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    seq         BIGINT       NOT NULL,
    address_key VARCHAR(320) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    address     VARCHAR(320) NOT NULL,
    user_id     BIGINT       NULL,
    data        MEDIUMTEXT   NULL,
    PRIMARY KEY (list_id, seq),
    UNIQUE KEY list_recipients_address (list_id, address_key)
) ENGINE=InnoDB;

CREATE TABLE campaigns (
    id          VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    tenant      VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name        VARCHAR(255) NOT NULL,
    list_id     VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    spec        MEDIUMTEXT   NOT NULL,
    state       VARCHAR(16)  NOT NULL,
    send_at     BIGINT       NOT NULL,
    done_seq    BIGINT       NOT NULL DEFAULT 0,
    expanded    BIGINT       NOT NULL DEFAULT 0,
    queued      BIGINT       NOT NULL DEFAULT 0,
    suppressed  BIGINT       NOT NULL DEFAULT 0,
    failed      BIGINT       NOT NULL DEFAULT 0,
    last_error  TEXT         NULL,
    phase        TINYINT      NOT NULL DEFAULT 0,
    test_ends_at BIGINT       NULL,
    winner       VARCHAR(255) NULL,
    owner       VARCHAR(255) NULL,
    lease_until BIGINT       NULL,
    created_at  BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL,
    finished_at BIGINT       NULL,
    KEY campaigns_tenant (tenant, created_at),
    KEY campaigns_state (state, send_at)
) ENGINE=InnoDB;

-- A campaign's results are counted from the history by campaign.
CREATE INDEX email_history_campaign ON email_history (campaign, variant, status);
