-- The id a provider (SES, SendGrid) gave a message it accepted, on the event that
-- recorded it and on the recipient's status row, where it stays once known: provider
-- webhooks name messages by it.
ALTER TABLE email_events ADD COLUMN provider_message_id TEXT;
ALTER TABLE email_history ADD COLUMN provider_message_id TEXT;
CREATE INDEX email_history_provider_message
    ON email_history (provider_message_id) WHERE provider_message_id IS NOT NULL;
