-- User preferences (name, language, timezone...) when no Redis is configured; with
-- Redis they are the hashes user:prefs:{userId}. One row per (tenant, user).
CREATE TABLE user_prefs (
    tenant TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    -- A JSON object of string values.
    prefs TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_id)
);
