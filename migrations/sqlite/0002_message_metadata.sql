-- Message metadata on every event (postroad_queue::Metadata): who the message is for
-- in the sending application and what kind of mail it is, so the history answers
-- "what did we send to user 12345, of type welcome".
--
-- Rows written before this migration have NULL in all of them (no metadata;
-- priority NULL reads as normal).

-- The application's user id (0 to 2^63-1; MySQL: BIGINT UNSIGNED).
ALTER TABLE email_history ADD COLUMN user_id INTEGER;
ALTER TABLE email_history ADD COLUMN email_type TEXT;
-- The A/B test variant.
ALTER TABLE email_history ADD COLUMN variant TEXT;
-- 'high' or 'bulk'; NULL for normal.
ALTER TABLE email_history ADD COLUMN priority TEXT
    CHECK (priority IS NULL OR priority IN ('high', 'bulk'));
-- Tags as 'name=value' lines (names have no '=', values no control characters).
ALTER TABLE email_history ADD COLUMN tags TEXT;

-- `postroad history --user-id N [--email-type T]`, newest first.
CREATE INDEX email_history_user ON email_history (user_id, created_at);
-- Counts and ranges per email type.
CREATE INDEX email_history_email_type ON email_history (email_type, created_at);
