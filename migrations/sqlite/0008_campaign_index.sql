-- A campaign's results are counted from the history by campaign.
CREATE INDEX email_history_campaign ON email_history (campaign, variant, status);
