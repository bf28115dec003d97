-- The suppression list: per tenant ('' for none), lowercased addresses mail must not
-- go to, with why, where from, since when and until when (NULL: never; Unix ms).
-- Removals leave the row marked removed, so that every process reading the changes
-- since its last look (by updated_at) drops the address too. Tenants and addresses
-- compare byte for byte, as in SQLite.
CREATE TABLE suppressions (
    tenant     VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    address    VARCHAR(320) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    reason     VARCHAR(32)  NOT NULL,
    source     VARCHAR(64)  NOT NULL,
    detail     VARCHAR(2000) NOT NULL,
    created_at BIGINT       NOT NULL,
    expires_at BIGINT       NULL,
    updated_at BIGINT       NOT NULL,
    removed    TINYINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, address),
    KEY suppressions_updated (updated_at)
) ENGINE=InnoDB;
