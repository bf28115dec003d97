//! Rewriting an HTML body for tracking: the `href` of every `<a>` that leads to an
//! `http(s)` URL goes through a tracking URL, and an open pixel goes before `</body>`.
//! A scanner over the markup, not a parser: it knows tags, quoted attribute values and
//! comments, and leaves everything else byte for byte. Links in comments, links marked
//! `data-postroad-notrack`, and non-web links (`mailto:`, `tel:`, `#top`) stay as they
//! are.

/// What [`decorate`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decorated {
    pub html: String,
    /// Links rewritten.
    pub links: u16,
}

/// `html` with each web link's target replaced by `wrap(index, target)` (left as it is
/// when `wrap` gives `None`; targets are entity-decoded first), and `pixel` (an
/// `<img>` element) before the last `</body>`, or at the end without one.
pub fn decorate(
    html: &str,
    mut wrap: impl FnMut(u16, &str) -> Option<String>,
    pixel: Option<&str>,
) -> Decorated {
    let mut out = String::with_capacity(html.len() + 512);
    let mut links: u16 = 0;
    let bytes = html.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while let Some(offset) = html[i..].find('<') {
        let start = i + offset;
        let rest = &html[start..];
        if rest.starts_with("<!--") {
            i = rest.find("-->").map_or(html.len(), |end| start + end + 3);
            continue;
        }
        let Some(tag_end) = tag_end(bytes, start) else {
            break;
        };
        let is_anchor = bytes
            .get(start + 1)
            .is_some_and(|b| b.eq_ignore_ascii_case(&b'a'))
            && bytes
                .get(start + 2)
                .is_some_and(|b| b.is_ascii_whitespace());
        if is_anchor && links < u16::MAX {
            let attrs = attributes(&html[start + 2..tag_end], start + 2);
            let skip = attrs
                .iter()
                .any(|a| a.name.eq_ignore_ascii_case("data-postroad-notrack"));
            let href = attrs.iter().find(|a| a.name.eq_ignore_ascii_case("href"));
            if let (false, Some(href)) = (skip, href)
                && let Some((from, to, quoted)) = href.value
            {
                let target = decode_entities(html[from..to].trim());
                if is_web(&target)
                    && let Some(url) = wrap(links, &target)
                {
                    links += 1;
                    // The value with its quotes (if any) becomes "url".
                    let (from, to) = if quoted {
                        (from - 1, to + 1)
                    } else {
                        (from, to)
                    };
                    out.push_str(&html[copied..from]);
                    out.push('"');
                    out.push_str(&url);
                    out.push('"');
                    copied = to;
                }
            }
        }
        i = tag_end;
    }
    let body_end = pixel.and_then(|_| rfind_ignore_case(html, "</body"));
    match (pixel, body_end) {
        (Some(pixel), Some(at)) if at >= copied => {
            out.push_str(&html[copied..at]);
            out.push_str(pixel);
            out.push_str(&html[at..]);
        }
        (Some(pixel), _) => {
            out.push_str(&html[copied..]);
            out.push_str(pixel);
        }
        (None, _) => out.push_str(&html[copied..]),
    }
    Decorated { html: out, links }
}

/// The index just past the `>` closing the tag opened at `start`, quotes respected.
fn tag_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate().skip(start + 1) {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

struct Attribute<'a> {
    name: &'a str,
    /// Where the value is in the whole text (without its quotes), and whether it is
    /// quoted.
    value: Option<(usize, usize, bool)>,
}

/// The attributes of a tag's inside (`text` starts at `base` in the whole text).
fn attributes(text: &str, base: usize) -> Vec<Attribute<'_>> {
    let bytes = text.as_bytes();
    let mut attrs = Vec::new();
    let mut i = 0;
    let stop = |b: u8| b.is_ascii_whitespace() || b == b'=' || b == b'>' || b == b'/';
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && !stop(bytes[i]) {
            i += 1;
        }
        if i == name_start {
            i += 1;
            continue;
        }
        let name = &text[name_start..i];
        let mut j = i;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let mut value = None;
        if bytes.get(j) == Some(&b'=') {
            j += 1;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            match bytes.get(j) {
                Some(&q @ (b'"' | b'\'')) => {
                    let from = j + 1;
                    match text[from..].find(q as char) {
                        Some(end) => {
                            value = Some((base + from, base + from + end, true));
                            j = from + end + 1;
                        }
                        // Unclosed: malformed, left alone.
                        None => j = text.len(),
                    }
                }
                Some(_) => {
                    let from = j;
                    while j < bytes.len() && !bytes[j].is_ascii_whitespace() && bytes[j] != b'>' {
                        j += 1;
                    }
                    value = Some((base + from, base + j, false));
                }
                None => {}
            }
            i = j;
        }
        attrs.push(Attribute { name, value });
    }
    attrs
}

fn is_web(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://"))
        && !url.chars().any(|c| c.is_control())
}

/// `&amp;`, `&quot;`, `&apos;`, `&#39;`, `&lt;`, `&gt;` and numeric references decoded;
/// anything else kept as written.
fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "lt" => Some('<'),
                "gt" => Some('>'),
                _ => {
                    let n = if let Some(hex) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                        u32::from_str_radix(hex, 16).ok()
                    } else {
                        name.strip_prefix('#').and_then(|d| d.parse().ok())
                    };
                    n.and_then(char::from_u32)
                }
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn rfind_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    let h = haystack.as_bytes();
    let n = needle.as_bytes();
    (0..=h.len().checked_sub(n.len())?)
        .rev()
        .find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(i: u16, url: &str) -> Option<String> {
        Some(format!("https://t.example/c/{i}?{}", url.len()))
    }

    #[test]
    fn web_links_are_wrapped_in_order_and_the_rest_is_kept() {
        let html = concat!(
            "<html><body><p>Hi <A class=x HREF = 'https://shop.example/a?x=1&amp;y=2'>shop</A>, ",
            "<a href=\"mailto:help@example.com\">mail us</a>, <a href=#top>top</a>, ",
            "<!-- <a href=\"https://hidden.example\">no</a> -->",
            "<a data-postroad-notrack href=\"https://keep.example\">keep</a> ",
            "<a title=\"a > b\" href=http://plain.example/p>plain</a> ",
            "<abbr href=\"https://not-a-link.example\">x</abbr></p></BODY></html>"
        );
        let mut seen = Vec::new();
        let out = decorate(
            html,
            |i, url| {
                seen.push((i, url.to_string()));
                wrap(i, url)
            },
            Some("<img src=\"https://t.example/o\">"),
        );
        assert_eq!(
            seen,
            [
                (0, "https://shop.example/a?x=1&y=2".to_string()),
                (1, "http://plain.example/p".to_string()),
            ]
        );
        assert_eq!(out.links, 2);
        assert_eq!(
            out.html,
            concat!(
                "<html><body><p>Hi <A class=x HREF = \"https://t.example/c/0?30\">shop</A>, ",
                "<a href=\"mailto:help@example.com\">mail us</a>, <a href=#top>top</a>, ",
                "<!-- <a href=\"https://hidden.example\">no</a> -->",
                "<a data-postroad-notrack href=\"https://keep.example\">keep</a> ",
                "<a title=\"a > b\" href=\"https://t.example/c/1?22\">plain</a> ",
                "<abbr href=\"https://not-a-link.example\">x</abbr></p>",
                "<img src=\"https://t.example/o\"></BODY></html>"
            )
        );
    }

    #[test]
    fn without_a_body_the_pixel_goes_last_and_broken_markup_is_kept() {
        let out = decorate("<p>hello <a href=\"https://x.example", wrap, Some("<img>"));
        assert_eq!(out.html, "<p>hello <a href=\"https://x.example<img>");
        assert_eq!(out.links, 0);
        let out = decorate("plain text", wrap, None);
        assert_eq!(out.html, "plain text");
    }

    #[test]
    fn a_quote_inside_an_unquoted_value_does_not_confuse_the_scanner() {
        // Found by the fuzzer: the tag's end and the attribute's quotes disagreed.
        let html = "<a class=x'y href=\"https://a.example\">a</a> <a href='https://b.example>b";
        let out = decorate(html, wrap, Some("<img>"));
        assert!(out.html.ends_with("<img>"), "{}", out.html);
        let fuzzed = include_str!("../../../fuzz/seeds/tracking/crash-unclosed-quote.html");
        let out = decorate(fuzzed, wrap, Some("<img>"));
        assert!(out.html.contains("<img>"));
    }

    #[test]
    fn entities_decode_as_html_says() {
        assert_eq!(
            decode_entities("a&amp;b&#38;c&#x26;d&bogus;e&"),
            "a&b&c&d&bogus;e&"
        );
    }
}
