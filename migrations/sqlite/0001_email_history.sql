-- Delivery history: one row per postroad_queue::DeliveryEvent.
--
-- Written by postroad-history's batched writer with multi-row
-- `INSERT ... ON CONFLICT(event_id) DO NOTHING`, so a replayed event (delivery is
-- at least once) is ignored. Every type maps one to one to MySQL/MariaDB, whose
-- migration (monthly partitions on created_at) comes next; the mapping is in
-- history/README.md.

CREATE TABLE email_history (
    -- Insertion order (MySQL: BIGINT AUTO_INCREMENT). Queries order by
    -- (created_at, event_id): event time, then the time-ordered event id.
    id             INTEGER PRIMARY KEY,
    -- UUIDv7 of the event, 16 bytes big-endian (MySQL: BINARY(16)).
    event_id       BLOB    NOT NULL CHECK (length(event_id) = 16),
    -- When the event happened (DeliveryEvent::at_ms), Unix milliseconds UTC
    -- (MySQL: BIGINT, the partitioning column).
    created_at     INTEGER NOT NULL,
    -- The message's UUIDv7, 16 bytes big-endian (MySQL: BINARY(16)).
    message_id     BLOB    NOT NULL CHECK (length(message_id) = 16),
    kind           TEXT    NOT NULL
                   CHECK (kind IN ('queued', 'delivered', 'deferred', 'bounced', 'expired')),
    -- Envelope sender; '' for the null reverse-path.
    sender         TEXT    NOT NULL,
    -- Compared without regard to ASCII case, like MySQL's default collation.
    recipient      TEXT    NOT NULL COLLATE NOCASE,
    -- The recipient's domain, lowercased by the relay.
    domain         TEXT    NOT NULL,
    -- Delivery attempts so far (0 for queued).
    attempt        INTEGER NOT NULL,
    -- 'mx1.example.com [192.0.2.1]:25', when a server answered.
    remote_host    TEXT,
    -- The reply, when there was one: all three set, or all three NULL.
    -- reply_code is 0 for a local reason (DNS or connection failure).
    reply_code     INTEGER,
    reply_enhanced TEXT,
    reply_text     TEXT,
    tenant         TEXT,
    campaign       TEXT
);

-- Idempotency: a replayed event is the same event_id.
CREATE UNIQUE INDEX email_history_event_id ON email_history (event_id);
-- `postroad history --recipient X`.
CREATE INDEX email_history_recipient ON email_history (recipient, created_at);
-- `postroad history --message-id Y`, and message_status.
CREATE INDEX email_history_message ON email_history (message_id, created_at);
-- Per-domain metrics over a time range.
CREATE INDEX email_history_domain ON email_history (domain, created_at);

-- The latest state of each recipient of each message. A view: it costs nothing at
-- write time; filtered by message_id it reads only that message's rows.
CREATE VIEW message_status AS
SELECT message_id, recipient, kind, created_at, attempt, remote_host,
       reply_code, reply_enhanced, reply_text, event_id
FROM (
    SELECT h.*,
           ROW_NUMBER() OVER (
               PARTITION BY message_id, recipient
               ORDER BY created_at DESC, event_id DESC
           ) AS rn
    FROM email_history AS h
) AS latest
WHERE rn = 1;
