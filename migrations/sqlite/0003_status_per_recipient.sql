-- The history becomes two tables, as on MySQL (migrations/mysql/0001):
-- `email_history`, one row per (message, recipient) with its current status, and
-- `email_events`, the event log. The rows of the old one-row-per-event table move
-- into both; the message_status view is replaced by email_history itself.
--
-- Times stay Unix milliseconds UTC (MySQL: DATETIME(3)); ids stay 16-byte blobs.

DROP VIEW message_status;
ALTER TABLE email_history RENAME TO email_events_v1;

CREATE TABLE email_history (
    id             INTEGER PRIMARY KEY,
    -- When the message was accepted (the time in its UUIDv7 id). Rows moved here
    -- from the old table have the time of the message's first event.
    sent_at        INTEGER NOT NULL,
    message_id     BLOB    NOT NULL CHECK (length(message_id) = 16),
    recipient      TEXT    NOT NULL COLLATE NOCASE,
    status         TEXT    NOT NULL
                   CHECK (status IN ('queued', 'deferred', 'delivered', 'bounced', 'expired')),
    -- Orders the statuses; a lower rank never replaces a higher one.
    status_rank    INTEGER NOT NULL,
    status_at      INTEGER NOT NULL,
    attempts       INTEGER NOT NULL,
    sender         TEXT    NOT NULL,
    domain         TEXT    NOT NULL,
    remote_host    TEXT,
    reply_code     INTEGER,
    reply_enhanced TEXT,
    reply_text     TEXT,
    tenant         TEXT,
    campaign       TEXT,
    user_id        INTEGER,
    email_type     TEXT,
    variant        TEXT,
    priority       TEXT CHECK (priority IS NULL OR priority IN ('high', 'bulk')),
    tags           TEXT
);

CREATE TABLE email_events (
    id             INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL CHECK (length(event_id) = 16),
    sent_at        INTEGER NOT NULL,
    message_id     BLOB    NOT NULL CHECK (length(message_id) = 16),
    recipient      TEXT    NOT NULL COLLATE NOCASE,
    created_at     INTEGER NOT NULL,
    kind           TEXT    NOT NULL
                   CHECK (kind IN ('queued', 'delivered', 'deferred', 'bounced', 'expired')),
    attempt        INTEGER NOT NULL,
    remote_host    TEXT,
    reply_code     INTEGER,
    reply_enhanced TEXT,
    reply_text     TEXT
);

INSERT INTO email_history (
    sent_at, message_id, recipient, status, status_rank, status_at, attempts, sender,
    domain, remote_host, reply_code, reply_enhanced, reply_text, tenant, campaign,
    user_id, email_type, variant, priority, tags)
SELECT first_at, message_id, recipient, kind, status_rank, created_at, attempts, sender,
       domain, remote_host, reply_code, reply_enhanced, reply_text, tenant, campaign,
       user_id, email_type, variant, priority, tags
FROM (
    SELECT e.*,
           MIN(created_at) OVER (PARTITION BY message_id) AS first_at,
           MAX(attempt) OVER (PARTITION BY message_id, recipient) AS attempts,
           ROW_NUMBER() OVER (
               PARTITION BY message_id, recipient
               ORDER BY status_rank DESC, created_at DESC, event_id DESC
           ) AS rn
    FROM (
        SELECT v.*,
               CASE kind WHEN 'queued' THEN 0 WHEN 'deferred' THEN 1 WHEN 'delivered' THEN 2
                         ELSE 3 END AS status_rank
        FROM email_events_v1 AS v
    ) AS e
) AS latest
WHERE rn = 1
ORDER BY first_at, message_id, recipient;

INSERT INTO email_events (
    event_id, sent_at, message_id, recipient, created_at, kind, attempt, remote_host,
    reply_code, reply_enhanced, reply_text)
SELECT v.event_id, h.sent_at, v.message_id, v.recipient, v.created_at, v.kind, v.attempt,
       v.remote_host, v.reply_code, v.reply_enhanced, v.reply_text
FROM email_events_v1 AS v
JOIN email_history AS h ON h.message_id = v.message_id AND h.recipient = v.recipient
ORDER BY v.id;

DROP TABLE email_events_v1;

CREATE UNIQUE INDEX email_history_message ON email_history (message_id, recipient);
CREATE INDEX email_history_user ON email_history (user_id, sent_at DESC);
CREATE INDEX email_history_status ON email_history (status, sent_at);
CREATE INDEX email_history_email_type ON email_history (email_type, sent_at);
CREATE INDEX email_history_recipient ON email_history (recipient, sent_at);

CREATE UNIQUE INDEX email_events_event_id ON email_events (event_id);
CREATE INDEX email_events_message ON email_events (message_id, created_at);
