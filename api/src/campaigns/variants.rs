//! A/B variants of a campaign: each recipient gets one, picked by weight from a hash of
//! the campaign and the address (so a retry, a restart or another process picks the
//! same), and the variants' results are compared with a two-proportion z-test.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::problem::FieldError;
use crate::submit::check;

/// Most variants of one campaign.
pub const MAX_VARIANTS: usize = 26;
/// Largest weight of one variant.
const MAX_WEIGHT: u32 = 1000;
/// A difference is called significant below this p-value (95% confidence).
pub const SIGNIFICANCE: f64 = 0.05;

/// One variant as the request gives it: what differs from the campaign's message.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Variant {
    /// Its name (`a`, `short-subject`): carried by its messages, their events and the
    /// history.
    pub name: String,
    /// Its share, relative to the others' (1-1000, default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Another version of the campaign's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
    /// Another sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Template fields over the campaign's (a recipient's own data still wins): a
    /// subject line of its own, say.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub template_data: Map<String, Value>,
}

fn one() -> u32 {
    1
}

/// Checks the variants, naming every bad field under `/variants/N`.
pub fn check(variants: &[Variant], errors: &mut Vec<FieldError>) {
    if variants.len() == 1 || variants.len() > MAX_VARIANTS {
        errors.push(FieldError::new(
            "/variants",
            "invalid",
            format!("none, or 2 to {MAX_VARIANTS} variants"),
        ));
    }
    for (i, v) in variants.iter().enumerate() {
        let at = |field: &str| format!("/variants/{i}/{field}");
        if let Err(e) = postroad_queue::metadata::token("variant", &v.name) {
            errors.push(FieldError::new(at("name"), "invalid", e.to_string()));
        }
        if variants[..i].iter().any(|other| other.name == v.name) {
            errors.push(FieldError::new(at("name"), "invalid", "given twice"));
        }
        if v.weight == 0 || v.weight > MAX_WEIGHT {
            errors.push(FieldError::new(
                at("weight"),
                "invalid",
                format!("1 to {MAX_WEIGHT}"),
            ));
        }
        if let Some(from) = &v.from {
            check::named(from, &at("from"), errors);
        }
    }
}

/// The variant of `address` (compared lowercased) in `campaign`: by weight, from the
/// first 8 bytes of SHA-256 over both. `None` without variants.
pub fn pick<'v>(variants: &'v [Variant], campaign: &str, address: &str) -> Option<&'v Variant> {
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut at = hash(b"", campaign, address) % total;
    variants.iter().find(|v| {
        let w = u64::from(v.weight);
        if at < w {
            true
        } else {
            at -= w;
            false
        }
    })
}

/// Whether `address` is in the A/B test's sample of `campaign` (`share` of the list),
/// by another hash than the variant's, so the sample holds every variant in its
/// weights.
pub fn in_sample(campaign: &str, address: &str, share: f64) -> bool {
    (hash(b"sample\0", campaign, address) as f64 / u64::MAX as f64) < share
}

/// The first 8 bytes of SHA-256 over `salt`, the campaign, a NUL and the lowercased
/// address: the same for an address on every try, process and restart.
fn hash(salt: &[u8], campaign: &str, address: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(salt);
    hash.update(campaign.as_bytes());
    hash.update([0]);
    hash.update(address.to_lowercase().as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The variant with the best rate of `metric` (`opened` or `clicked`, per delivered,
/// by people) in `counts`; the first of the campaign's on a tie or without any
/// delivered.
pub fn winner<'v>(
    variants: &'v [Variant],
    counts: &[crate::history::CampaignStatusCount],
    metric: &str,
) -> Option<&'v Variant> {
    let rate = |v: &Variant| {
        let mine = counts
            .iter()
            .filter(|c| c.variant.as_deref() == Some(v.name.as_str()));
        let r = super::Results::of(mine);
        if metric == "clicked" {
            r.rates.clicked
        } else {
            r.rates.opened
        }
    };
    let mut best: Option<(&Variant, f64)> = None;
    for v in variants {
        let r = rate(v);
        if best.is_none_or(|(_, b)| r > b) {
            best = Some((v, r));
        }
    }
    best.map(|(v, _)| v)
}

/// Two proportions compared: `a` of `n` against `b` of `m`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// Two-sided p-value of the difference (the pooled two-proportion z-test).
    pub p_value: f64,
    /// Below [`SIGNIFICANCE`].
    pub significant: bool,
}

/// The two-proportion z-test of `a/n` against `b/m`; `None` when either side has no
/// trials or the pooled rate is 0 or 1 (no variance: nothing to tell apart).
pub fn compare(a: u64, n: u64, b: u64, m: u64) -> Option<Comparison> {
    if n == 0 || m == 0 {
        return None;
    }
    let (a, n, b, m) = (a as f64, n as f64, b as f64, m as f64);
    let pooled = (a + b) / (n + m);
    let variance = pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m);
    if variance <= 0.0 {
        return None;
    }
    let z = (a / n - b / m) / variance.sqrt();
    let p_value = erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0);
    Some(Comparison {
        p_value,
        significant: p_value < SIGNIFICANCE,
    })
}

/// The complementary error function (Numerical Recipes' `erfcc`, a Chebyshev fit with
/// a relative error below 1.2e-7 everywhere): enough for a p-value.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &str, weight: u32) -> Variant {
        Variant {
            name: name.into(),
            weight,
            template_version: None,
            from: None,
            template_data: Map::new(),
        }
    }

    #[test]
    fn a_recipient_always_gets_the_same_variant_and_the_weights_hold() {
        let variants = [variant("a", 1), variant("b", 3)];
        let mut b = 0;
        for i in 0..20_000 {
            let address = format!("reader{i}@example.com");
            let first = pick(&variants, "cmp_1", &address).unwrap();
            assert_eq!(
                first,
                pick(&variants, "cmp_1", &address.to_uppercase()).unwrap()
            );
            if first.name == "b" {
                b += 1;
            }
        }
        // 75% expected; the hash spreads 20,000 addresses within a percent of it.
        assert!((14_800..15_200).contains(&b), "{b}");
        // Another campaign draws afresh.
        let moved = (0..1000)
            .filter(|i| {
                let address = format!("reader{i}@example.com");
                pick(&variants, "cmp_1", &address) != pick(&variants, "cmp_2", &address)
            })
            .count();
        assert!(moved > 200, "{moved}");
        assert!(pick(&[], "cmp_1", "a@b.c").is_none());
    }

    #[test]
    fn the_z_test_matches_known_values() {
        // 200/1000 against 250/1000: z = -2.68, p = 0.0073.
        let c = compare(200, 1000, 250, 1000).unwrap();
        assert!((c.p_value - 0.0073).abs() < 0.0002, "{c:?}");
        assert!(c.significant);
        // 10/100 against 12/100: p = 0.65.
        let c = compare(10, 100, 12, 100).unwrap();
        assert!((c.p_value - 0.651).abs() < 0.002, "{c:?}");
        assert!(!c.significant);
        assert_eq!(compare(0, 100, 0, 100), None);
        assert_eq!(compare(5, 0, 1, 10), None);
        assert!((erfc(0.0) - 1.0).abs() < 1e-7 && (erfc(-1.0) - 1.842_700_8).abs() < 1e-6);
    }

    #[test]
    fn bad_variants_are_named() {
        let mut errors = Vec::new();
        check(&[variant("a", 1)], &mut errors);
        assert_eq!(errors[0].pointer, "/variants");
        let mut errors = Vec::new();
        check(
            &[variant("a", 0), variant("a", 1), variant("b c", 2000)],
            &mut errors,
        );
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/variants/0/weight",
                "/variants/1/name",
                "/variants/2/name",
                "/variants/2/weight"
            ]
        );
    }
}
