//! InfluxDB line protocol (1.x): `measurement,tag=v,... field=1i,field=0.5 <ms>`.

use std::fmt::Write;

/// A field value: counts are integers, rates and latencies floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    Int(u64),
    Float(f64),
}

/// One point. Tags are written in the order given: give them sorted by key, as
/// InfluxDB prefers.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: &'static str,
    pub tags: Vec<(&'static str, String)>,
    pub fields: Vec<(&'static str, Field)>,
    /// Unix milliseconds (the writer asks for `precision=ms`).
    pub at_ms: u64,
}

impl Point {
    /// Appends the point as one line. Non-finite floats are left out (line protocol
    /// has no NaN); a point with no field left is not written at all.
    pub fn write_line(&self, out: &mut String) {
        let fields: Vec<&(&str, Field)> = self
            .fields
            .iter()
            .filter(|(_, v)| !matches!(v, Field::Float(f) if !f.is_finite()))
            .collect();
        if fields.is_empty() {
            return;
        }
        out.push_str(self.measurement);
        for (key, value) in &self.tags {
            out.push(',');
            out.push_str(key);
            out.push('=');
            escape_tag(value, out);
        }
        for (i, (key, value)) in fields.into_iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            out.push_str(key);
            out.push('=');
            match value {
                Field::Int(n) => write!(out, "{n}i"),
                Field::Float(f) => write!(out, "{f}"),
            }
            .expect("writing to a String");
        }
        writeln!(out, " {}", self.at_ms).expect("writing to a String");
    }
}

/// Tag values escape commas, equals signs and spaces; line breaks (which line
/// protocol cannot hold) become spaces, backslashes (which InfluxDB 1.x cannot read
/// at the end of a value) slashes, and an empty value (which it refuses) `none`.
fn escape_tag(value: &str, out: &mut String) {
    if value.is_empty() {
        out.push_str(super::super::labels::NONE);
        return;
    }
    for c in value.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\\' => out.push('/'),
            c if c.is_control() => out.push_str("\\ "),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_lines_with_escaped_tags_and_typed_fields() {
        let point = Point {
            measurement: "postroad_delivery",
            tags: vec![
                ("campaign", "spring sale,2026=a".into()),
                ("email_type", "welcome".into()),
                ("host", "mx\n1\\".into()),
                ("tenant", String::new()),
            ],
            fields: vec![
                ("delivered", Field::Int(9)),
                ("delivery_rate", Field::Float(0.9)),
                ("bounce_rate", Field::Float(f64::NAN)),
                ("open_rate", Field::Float(1.0)),
            ],
            at_ms: 1_700_000_000_000,
        };
        let mut out = String::new();
        point.write_line(&mut out);
        assert_eq!(
            out,
            "postroad_delivery,campaign=spring\\ sale\\,2026\\=a,email_type=welcome,host=mx\\ 1/,\
             tenant=none delivered=9i,delivery_rate=0.9,open_rate=1 1700000000000\n"
        );
        let empty = Point {
            fields: vec![("bounce_rate", Field::Float(f64::INFINITY))],
            ..point
        };
        let mut out = String::new();
        empty.write_line(&mut out);
        assert_eq!(out, "");
    }
}
