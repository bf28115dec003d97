-- Template changes Redis could not take when they were made (it was down): retried
-- by the API's upkeep until Redis has the new state, also after a restart.
CREATE TABLE template_announcements (
    tenant TEXT NOT NULL,
    email_type TEXT NOT NULL,
    PRIMARY KEY (tenant, email_type)
);
