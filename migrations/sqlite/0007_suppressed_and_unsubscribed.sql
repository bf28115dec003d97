-- Two more statuses and event kinds: suppressed (not sent: the address is on the
-- suppression list) and unsubscribed. SQLite cannot change a CHECK constraint in
-- place: both tables are rebuilt with the wider lists, rows, ids and indexes kept.

CREATE TABLE email_history_new (
    id                  INTEGER PRIMARY KEY,
    sent_at             INTEGER NOT NULL,
    message_id          BLOB    NOT NULL CHECK (length(message_id) = 16),
    recipient           TEXT    NOT NULL COLLATE NOCASE,
    status              TEXT    NOT NULL
                        CHECK (status IN ('queued', 'deferred', 'delivered', 'bounced', 'expired',
                                          'opened', 'clicked', 'complained', 'suppressed',
                                          'unsubscribed')),
    status_rank         INTEGER NOT NULL,
    status_at           INTEGER NOT NULL,
    attempts            INTEGER NOT NULL,
    sender              TEXT    NOT NULL,
    domain              TEXT    NOT NULL,
    remote_host         TEXT,
    reply_code          INTEGER,
    reply_enhanced      TEXT,
    reply_text          TEXT,
    tenant              TEXT,
    campaign            TEXT,
    user_id             INTEGER,
    email_type          TEXT,
    variant             TEXT,
    priority            TEXT CHECK (priority IS NULL OR priority IN ('high', 'bulk')),
    tags                TEXT,
    provider_message_id TEXT,
    reason              TEXT
);
INSERT INTO email_history_new SELECT * FROM email_history;
DROP TABLE email_history;
ALTER TABLE email_history_new RENAME TO email_history;

CREATE TABLE email_events_new (
    id                  INTEGER PRIMARY KEY,
    event_id            BLOB    NOT NULL CHECK (length(event_id) = 16),
    sent_at             INTEGER NOT NULL,
    message_id          BLOB    NOT NULL CHECK (length(message_id) = 16),
    recipient           TEXT    NOT NULL COLLATE NOCASE,
    created_at          INTEGER NOT NULL,
    kind                TEXT    NOT NULL
                        CHECK (kind IN ('queued', 'delivered', 'deferred', 'bounced', 'expired',
                                        'opened', 'clicked', 'complained', 'suppressed',
                                        'unsubscribed')),
    attempt             INTEGER NOT NULL,
    remote_host         TEXT,
    reply_code          INTEGER,
    reply_enhanced      TEXT,
    reply_text          TEXT,
    provider_message_id TEXT,
    reason              TEXT
);
INSERT INTO email_events_new SELECT * FROM email_events;
DROP TABLE email_events;
ALTER TABLE email_events_new RENAME TO email_events;

CREATE UNIQUE INDEX email_history_message ON email_history (message_id, recipient);
CREATE INDEX email_history_user ON email_history (user_id, sent_at DESC);
CREATE INDEX email_history_status ON email_history (status, sent_at);
CREATE INDEX email_history_email_type ON email_history (email_type, sent_at);
CREATE INDEX email_history_recipient ON email_history (recipient, sent_at);
CREATE INDEX email_history_provider_message
    ON email_history (provider_message_id) WHERE provider_message_id IS NOT NULL;

CREATE UNIQUE INDEX email_events_event_id ON email_events (event_id);
CREATE INDEX email_events_message ON email_events (message_id, created_at);
