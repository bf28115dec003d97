//! Recipients the relay must not send to: before a claimed batch is routed, its
//! recipients are looked up in the suppression list (one lookup per tenant of the
//! batch), and each listed one is resolved `suppressed` without a connection.

use std::collections::BTreeMap;

use async_trait::async_trait;
use postroad_queue::Claimed;

/// The suppression list as the relay sees it.
#[async_trait]
pub trait SuppressionList: Send + Sync {
    /// For each of `addresses` (in order), why mail to it must not go (`hard-bounce`,
    /// `complaint`, ...), or `None`.
    async fn suppressed(
        &self,
        tenant: Option<&str>,
        addresses: &[&str],
    ) -> Vec<Option<&'static str>>;
}

/// For each claimed message, for each of its recipients, why it is suppressed, if it
/// is: one lookup per tenant for the whole batch.
pub async fn look_up(
    list: &dyn SuppressionList,
    batch: &[Claimed],
) -> Vec<Vec<Option<&'static str>>> {
    let mut by_tenant: BTreeMap<Option<&str>, Vec<(usize, usize)>> = BTreeMap::new();
    for (m, claimed) in batch.iter().enumerate() {
        let tenant = claimed.envelope.meta.tenant.as_deref();
        let slots = by_tenant.entry(tenant).or_default();
        slots.extend((0..claimed.envelope.recipients.len()).map(|r| (m, r)));
    }
    let mut found: Vec<Vec<Option<&'static str>>> = batch
        .iter()
        .map(|c| vec![None; c.envelope.recipients.len()])
        .collect();
    for (tenant, slots) in by_tenant {
        let addresses: Vec<&str> = slots
            .iter()
            .map(|&(m, r)| batch[m].envelope.recipients[r].address.as_str())
            .collect();
        let reasons = list.suppressed(tenant, &addresses).await;
        for ((m, r), reason) in slots.into_iter().zip(reasons) {
            found[m][r] = reason;
        }
    }
    found
}
