//! The transport interface: where a job's recipients can be delivered. Three kinds
//! implement it: an SMTP site ([`crate::site::Site`], direct delivery to MX hosts or a
//! route), and the HTTP providers Amazon SES and SendGrid
//! ([`crate::provider::ProviderLane`]). A message's route ([`crate::provider::routing`])
//! is a list of them: the first gets the job, and recipients it defers pass to the next
//! within the same attempt.

use std::sync::Arc;

use crate::deliver::{Context, Job};

pub trait Transport: Send + Sync {
    /// What logs, metrics and events call it (`sendgrid`, `ses`, a site key).
    fn name(&self) -> &str;
    /// Most recipients it takes in one job (one SMTP transaction, one API request).
    fn max_recipients(&self, ctx: &Context) -> usize;
    /// Takes the job; it reports through [`Job::complete`] (or [`Job::fail_all`]).
    fn submit(self: Arc<Self>, job: Job, ctx: &Arc<Context>);
}
