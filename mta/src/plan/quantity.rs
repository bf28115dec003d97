//! Numbers on the command line with a suffix: counts (`10M`, `1.5k`, `250000`, `1G`)
//! and byte sizes (`20KiB`, `5MB`, `2TiB`, `4096`). Used as clap value parsers, so a
//! bad value is refused by clap with the flag named.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum QuantityError {
    #[error("{0:?} is not a number (write it as 250000, 1.5k, 10M or 1G)")]
    NotANumber(String),
    #[error(
        "{0:?} has an unknown suffix (counts: k, M, G, T; sizes: B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
    )]
    Suffix(String),
    #[error("{0:?} must be above 0")]
    NotPositive(String),
    #[error("{0:?} must be 0 or more")]
    Negative(String),
}

/// Splits `text` into its number and suffix and scales the number by the suffix's
/// factor from `suffixes`.
fn scaled(text: &str, suffixes: &[(&str, f64)]) -> Result<f64, QuantityError> {
    let t = text.trim().replace('_', "");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| QuantityError::NotANumber(text.to_string()))?;
    let factor = suffixes
        .iter()
        .find(|(s, _)| *s == suffix.trim())
        .map(|(_, f)| *f)
        .ok_or_else(|| QuantityError::Suffix(text.to_string()))?;
    let value = number * factor;
    if !value.is_finite() {
        return Err(QuantityError::NotANumber(text.to_string()));
    }
    if value < 0.0 {
        return Err(QuantityError::Negative(text.to_string()));
    }
    Ok(value)
}

const COUNT: &[(&str, f64)] = &[
    ("", 1.0),
    ("k", 1e3),
    ("K", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
];

const KIB: f64 = 1024.0;
const SIZE: &[(&str, f64)] = &[
    ("", 1.0),
    ("B", 1.0),
    ("k", 1e3),
    ("K", 1e3),
    ("kB", 1e3),
    ("KB", 1e3),
    ("M", 1e6),
    ("MB", 1e6),
    ("G", 1e9),
    ("GB", 1e9),
    ("T", 1e12),
    ("TB", 1e12),
    ("KiB", KIB),
    ("MiB", KIB * KIB),
    ("GiB", KIB * KIB * KIB),
    ("TiB", KIB * KIB * KIB * KIB),
];

/// A count, 0 or more: `10M`, `1.5k`, `250000`.
pub fn count(text: &str) -> Result<f64, QuantityError> {
    scaled(text, COUNT)
}

/// A count above 0.
pub fn positive_count(text: &str) -> Result<f64, QuantityError> {
    positive(text, count(text)?)
}

/// A size in bytes above 0: `20KiB`, `5MB`, `4096`.
pub fn size(text: &str) -> Result<f64, QuantityError> {
    positive(text, scaled(text, SIZE)?)
}

/// A plain number above 0 (a factor, hours, seconds).
pub fn positive_number(text: &str) -> Result<f64, QuantityError> {
    positive(text, scaled(text, &[("", 1.0)])?)
}

/// A share above 0 and at most 1.
pub fn share(text: &str) -> Result<f64, String> {
    let v = positive_number(text).map_err(|e| e.to_string())?;
    if v > 1.0 {
        return Err(format!("{text:?} must be at most 1"));
    }
    Ok(v)
}

fn positive(text: &str, v: f64) -> Result<f64, QuantityError> {
    if v > 0.0 {
        Ok(v)
    } else {
        Err(QuantityError::NotPositive(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_scale() {
        assert_eq!(count("10M"), Ok(10e6));
        assert_eq!(count("1.5k"), Ok(1500.0));
        assert_eq!(count("250000"), Ok(250_000.0));
        assert_eq!(count("250_000"), Ok(250_000.0));
        assert_eq!(count("1G"), Ok(1e9));
        assert_eq!(count("0"), Ok(0.0));
        assert_eq!(size("20KiB"), Ok(20480.0));
        assert_eq!(size("5MB"), Ok(5e6));
        assert_eq!(size("2TiB"), Ok(2.0 * 1024f64.powi(4)));
        assert_eq!(positive_number("0.3"), Ok(0.3));
        assert_eq!(share("0.6"), Ok(0.6));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(count("10X"), Err(QuantityError::Suffix(_))));
        assert!(matches!(count("M"), Err(QuantityError::NotANumber(_))));
        assert!(matches!(count("ten"), Err(QuantityError::NotANumber(_))));
        assert!(matches!(count("-5"), Err(QuantityError::Negative(_))));
        assert!(matches!(count("1e999"), Err(QuantityError::NotANumber(_))));
        assert!(matches!(
            positive_count("0"),
            Err(QuantityError::NotPositive(_))
        ));
        assert!(matches!(size("20KiBs"), Err(QuantityError::Suffix(_))));
        assert!(matches!(
            positive_number("3k"),
            Err(QuantityError::Suffix(_))
        ));
        assert!(share("1.5").is_err());
        assert!(share("0").is_err());
    }
}
