-- Delivery history on MySQL/MariaDB: the same tables and columns as
-- migrations/sqlite/ (see history/README.md for the mapping), with times as
-- DATETIME(3) in UTC and both tables partitioned by the month the message was sent.
--
-- Partitions: the tables start with one catch-all partition, `p_future`. Partition
-- maintenance (postroad-history, at `postroad migrate`, at start and hourly) splits
-- it into one partition per month, `pYYYYMM`, keeping `history.partitions_ahead`
-- future months ready, so no write ever needs a partition that is missing; p_future
-- stays as the (normally empty) last partition. Archival drops whole months.
--
-- MariaDB requires every unique key of a partitioned table to contain the
-- partitioning column; `sent_at` is derived from the message id (the time in its
-- UUIDv7), so it is the same for every event of a message and the keys below still
-- identify one recipient of one message, and one event.

-- One row per (message, recipient): its current status.
CREATE TABLE email_history (
    -- Insertion order; with sent_at the keyset of paginated queries.
    id             BIGINT       NOT NULL AUTO_INCREMENT,
    -- When the message was accepted (the time in its UUIDv7 id), UTC.
    sent_at        DATETIME(3)  NOT NULL,
    message_id     BINARY(16)   NOT NULL,
    recipient      VARCHAR(320) NOT NULL,
    -- queued, deferred, delivered, bounced, expired. It only moves forward:
    -- status_rank orders the statuses and a lower rank never replaces a higher one.
    status         VARCHAR(16)  NOT NULL,
    status_rank    TINYINT      NOT NULL,
    -- When the current status was reached, UTC.
    status_at      DATETIME(3)  NOT NULL,
    -- Delivery attempts so far.
    attempts       INT          NOT NULL,
    -- Envelope sender; '' for the null reverse-path.
    sender         VARCHAR(320) NOT NULL,
    -- The recipient's domain, lowercased.
    domain         VARCHAR(255) NOT NULL,
    -- The server and reply behind the current status, when there were any.
    remote_host    VARCHAR(512) NULL,
    reply_code     SMALLINT     NULL,
    reply_enhanced VARCHAR(16)  NULL,
    reply_text     TEXT         NULL,
    -- Message metadata (postroad_queue::Metadata).
    tenant         VARCHAR(255) NULL,
    campaign       VARCHAR(255) NULL,
    user_id        BIGINT       NULL,
    email_type     VARCHAR(255) NULL,
    variant        VARCHAR(255) NULL,
    priority       VARCHAR(8)   NULL,
    tags           TEXT         NULL,
    PRIMARY KEY (id, sent_at),
    UNIQUE KEY email_history_message (message_id, recipient, sent_at),
    KEY email_history_user (user_id, sent_at DESC),
    KEY email_history_status (status, sent_at),
    KEY email_history_email_type (email_type, sent_at),
    KEY email_history_recipient (recipient, sent_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
PARTITION BY RANGE (TO_DAYS(sent_at)) (
    PARTITION p_future VALUES LESS THAN MAXVALUE
);

-- The event log: one row per postroad_queue::DeliveryEvent, the timeline of each
-- recipient. The message's sender, domain and metadata are in email_history.
CREATE TABLE email_events (
    -- UUIDv7 of the event: a replayed event is recognised and ignored.
    event_id       BINARY(16)   NOT NULL,
    sent_at        DATETIME(3)  NOT NULL,
    message_id     BINARY(16)   NOT NULL,
    recipient      VARCHAR(320) NOT NULL,
    -- When the event happened, UTC.
    created_at     DATETIME(3)  NOT NULL,
    kind           VARCHAR(16)  NOT NULL,
    attempt        INT          NOT NULL,
    remote_host    VARCHAR(512) NULL,
    reply_code     SMALLINT     NULL,
    reply_enhanced VARCHAR(16)  NULL,
    reply_text     TEXT         NULL,
    PRIMARY KEY (event_id, sent_at),
    KEY email_events_message (message_id, sent_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
PARTITION BY RANGE (TO_DAYS(sent_at)) (
    PARTITION p_future VALUES LESS THAN MAXVALUE
);
