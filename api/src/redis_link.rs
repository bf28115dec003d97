//! Redis keys and channels of the HTTP API (the link itself is `postroad-redis-link`'s).

pub use postroad_redis_link::{RETRY_GAP, RedisError, RedisLink, TIMEOUT};

/// Where template changes are announced: `<tenant>\n<email type>`.
pub const TEMPLATE_CHANNEL: &str = "email:template:invalidate";
/// How long a template stays in the shared cache.
pub const TEMPLATE_TTL_SECS: u64 = 24 * 3600;

/// The shared cache key of the newest version of a template. A tenant's keys put `#`
/// between tenant and type: neither may contain it (email types may contain `:`, so
/// `email:template:acme:welcome` is the tenantless type `acme:welcome`).
pub fn template_key(tenant: &str, email_type: &str) -> String {
    if tenant.is_empty() {
        format!("email:template:{email_type}")
    } else {
        format!("email:template:{tenant}#{email_type}")
    }
}

/// The hash of a user's preferences (the id is the last segment, digits only, so a
/// tenant's keys cannot meet another's).
pub fn prefs_key(tenant: &str, user_id: u64) -> String {
    if tenant.is_empty() {
        format!("user:prefs:{user_id}")
    } else {
        format!("user:prefs:{tenant}:{user_id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_designs_without_a_tenant() {
        assert_eq!(template_key("", "welcome"), "email:template:welcome");
        assert_eq!(
            template_key("acme", "welcome"),
            "email:template:acme#welcome"
        );
        assert_ne!(
            template_key("acme", "welcome"),
            template_key("", "acme:welcome")
        );
        assert_eq!(prefs_key("", 12345), "user:prefs:12345");
        assert_eq!(prefs_key("acme", 7), "user:prefs:acme:7");
    }
}
