-- Why a recipient was not delivered, in the bounce classifier's words (userunknown,
-- mailboxfull, ratelimited, expired, ...; for a complaint its feedback type), on each
-- event and on the recipient's status row (replaced with the status).
ALTER TABLE email_events ADD COLUMN reason VARCHAR(32) NULL;
ALTER TABLE email_history ADD COLUMN reason VARCHAR(32) NULL;
