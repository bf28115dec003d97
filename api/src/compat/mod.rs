//! Drop-in routes for apps written against other providers' APIs: Amazon SES v2
//! `SendEmail` and SendGrid v3 `mail/send`. Each translates its provider's JSON into a
//! Postroad form, goes through the same checks and the same durable write as
//! `/v1/messages`, and answers (errors too) in its provider's dialect.

pub(crate) mod sendgrid;
pub(crate) mod ses;
pub mod sigv4;

use axum::response::Response;

use crate::problem::Problem;

/// The answer to a request turned away before its handler ran (too many requests at
/// once), in the dialect of the route it was for.
pub(crate) fn refused(path: &str, problem: Problem) -> Response {
    if path.starts_with("/v2/email/") {
        ses::error_for(problem)
    } else if path.starts_with("/v3/") {
        sendgrid::error_for(problem)
    } else {
        axum::response::IntoResponse::into_response(problem)
    }
}

/// Field paths in a provider's terms, from our JSON Pointers.
pub(crate) mod translate {
    use crate::problem::FieldError;

    /// The provider's path of `pointer`: the longest prefix found in `table` (whose
    /// paths may hold `{i}`, replaced by `index`), then the rest of the pointer,
    /// `.name` or `[n]` (`brackets`) / `.n` for array positions.
    pub fn path(pointer: &str, table: &[(&str, &str)], index: usize, brackets: bool) -> String {
        let found = table
            .iter()
            .filter(|(ours, _)| {
                pointer == *ours
                    || pointer
                        .strip_prefix(ours)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(ours, _)| ours.len());
        let (mut out, rest) = match found {
            Some((ours, theirs)) => (
                theirs.replace("{i}", &index.to_string()),
                &pointer[ours.len()..],
            ),
            None => (String::new(), pointer),
        };
        for segment in rest.split('/').filter(|s| !s.is_empty()) {
            let segment = segment.replace("~1", "/").replace("~0", "~");
            if brackets && segment.bytes().all(|b| b.is_ascii_digit()) {
                out.push_str(&format!("[{segment}]"));
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&segment);
            }
        }
        out
    }

    /// Every error as `path: detail`, joined with `; `.
    pub fn message(errors: &[FieldError], table: &[(&str, &str)], index: usize) -> String {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let at = path(&e.pointer, table, index, true);
                if at.is_empty() {
                    e.detail.clone()
                } else {
                    format!("{at}: {}", e.detail)
                }
            })
            .collect();
        if parts.is_empty() {
            "Invalid request".into()
        } else {
            parts.join("; ")
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const TABLE: &[(&str, &str)] = &[
            ("/to", "personalizations.{i}.to"),
            ("/from", "from.email"),
            ("/headers", "Content.Simple.Headers"),
            ("", "Content.Raw.Data"),
        ];

        #[test]
        fn pointers_become_provider_paths() {
            assert_eq!(path("/to/3", TABLE, 2, false), "personalizations.2.to.3");
            assert_eq!(path("/to/3", TABLE, 2, true), "personalizations.2.to[3]");
            assert_eq!(path("/from", TABLE, 0, true), "from.email");
            assert_eq!(
                path("/headers/X-A~1b", TABLE, 0, true),
                "Content.Simple.Headers.X-A/b"
            );
            assert_eq!(path("", TABLE, 0, true), "Content.Raw.Data");
            // "/tox" is not under "/to".
            assert_eq!(path("/tox", TABLE, 0, true), "Content.Raw.Data.tox");
        }
    }
}
