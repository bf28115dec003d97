//! Reading a recipient list, row by row, from an upload of any length: NDJSON (one
//! object per line: `address`, optional `userId` and `data`) or CSV (a header row
//! naming `address`, optional `userId`, every other column a field of the
//! recipient's data). A bad row is reported with its line number and skipped; only an
//! unreadable upload (a row past [`MAX_ROW_BYTES`], a broken body, a CSV without an
//! address column) stops the reading.

use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use crate::store::lists::{ListRow, RowError};

/// Longest row (a line; for CSV, a record with its quoted line breaks).
pub const MAX_ROW_BYTES: usize = 64 * 1024;

/// How the upload is written, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    /// `application/x-ndjson` (or `application/ndjson`, `application/jsonl`) and
    /// `text/csv`.
    pub fn of(media_type: &str) -> Option<Format> {
        match media_type {
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Some(Format::Ndjson),
            "text/csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// One row: accepted (its `seq` is set when stored) or refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Good(ListRow),
    Bad(RowError),
}

/// Why the reading stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct Broken {
    pub line: u64,
    pub reason: String,
}

/// Reads `input` (whose first line is line `first_line`), calling `each` with every
/// row in order; stops at the end, at a [`Broken`] upload, or when `each` says so
/// (`false`). Blocking: run it off the async threads.
pub fn read(
    format: Format,
    input: impl Read,
    first_line: u64,
    mut each: impl FnMut(Row) -> bool,
) -> Result<(), Broken> {
    match format {
        Format::Ndjson => read_ndjson(input, first_line, &mut each),
        Format::Csv => read_csv(input, first_line, &mut each),
    }
}

fn read_ndjson(
    input: impl Read,
    first_line: u64,
    each: &mut impl FnMut(Row) -> bool,
) -> Result<(), Broken> {
    let mut input = std::io::BufReader::new(input);
    let mut line = Vec::new();
    let mut number = first_line;
    loop {
        line.clear();
        let read = (&mut input)
            .take(MAX_ROW_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| broken(number, e))?;
        if read == 0 {
            return Ok(());
        }
        if line.len() > MAX_ROW_BYTES && line.last() != Some(&b'\n') {
            return Err(too_long(number));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if !text.is_empty()
            && !each(ndjson_row(text).map_or_else(|error| bad(number, error), Row::Good))
        {
            return Ok(());
        }
        number += 1;
    }
}

/// One NDJSON row.
pub fn ndjson_row(text: &str) -> Result<ListRow, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err("a row is a JSON object".into());
    };
    let address = match fields.remove("address") {
        Some(Value::String(a)) => a,
        Some(_) => return Err("address is a string".into()),
        None => return Err("address is missing".into()),
    };
    let user_id = match fields.remove("userId") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err("userId is a whole number".into()),
    };
    let data = match fields.remove("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(data)) => Some(data),
        Some(_) => return Err("data is an object".into()),
    };
    if let Some(name) = fields.keys().next() {
        return Err(format!("unknown field {name:?} (address, userId, data)"));
    }
    row(address, user_id.as_deref(), data)
}

fn read_csv(
    input: impl Read,
    first_line: u64,
    each: &mut impl FnMut(Row) -> bool,
) -> Result<(), Broken> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(RowGuard::new(input));
    let mut record = csv::StringRecord::new();
    let line_of = |r: &csv::StringRecord| first_line + r.position().map_or(0, |p| p.line() - 1);
    let header = loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) if record.iter().all(str::is_empty) => continue,
            Ok(true) => {
                break Header::of(&record).map_err(|reason| Broken {
                    line: line_of(&record),
                    reason,
                })?;
            }
            Err(e) => return Err(csv_broken(first_line, e)),
        }
    };
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) if record.iter().all(str::is_empty) => {}
            Ok(true) => {
                let line = line_of(&record);
                let row = header
                    .row(&record)
                    .map_or_else(|error| bad(line, error), Row::Good);
                if !each(row) {
                    return Ok(());
                }
            }
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                let line = e
                    .position()
                    .map_or(first_line, |p| first_line + p.line() - 1);
                if !each(bad(line, "not UTF-8".into())) {
                    return Ok(());
                }
            }
            Err(e) => return Err(csv_broken(first_line, e)),
        }
    }
}

/// Where the columns of a CSV list are.
#[derive(Debug)]
struct Header {
    address: usize,
    user_id: Option<usize>,
    /// The other columns: the recipient's data.
    data: Vec<(usize, String)>,
}

impl Header {
    fn of(record: &csv::StringRecord) -> Result<Header, String> {
        let names: Vec<&str> = record.iter().map(str::trim).collect();
        let find = |wanted: &[&str]| {
            names
                .iter()
                .position(|n| wanted.iter().any(|w| n.eq_ignore_ascii_case(w)))
        };
        let address = find(&["address", "email"])
            .ok_or("the header row has no address column (address or email)")?;
        let user_id = find(&["userId", "user_id"]);
        let data = names
            .iter()
            .enumerate()
            .filter(|&(i, n)| i != address && Some(i) != user_id && !n.is_empty())
            .map(|(i, n)| (i, n.to_string()))
            .collect();
        Ok(Header {
            address,
            user_id,
            data,
        })
    }

    fn row(&self, record: &csv::StringRecord) -> Result<ListRow, String> {
        let address = record
            .get(self.address)
            .unwrap_or_default()
            .trim()
            .to_string();
        let user_id = self
            .user_id
            .and_then(|i| record.get(i))
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let mut data = Map::new();
        for (i, name) in &self.data {
            if let Some(value) = record.get(*i) {
                data.insert(name.clone(), Value::String(value.to_string()));
            }
        }
        row(address, user_id, (!data.is_empty()).then_some(data))
    }
}

/// A row from its parts, checked.
fn row(
    address: String,
    user_id: Option<&str>,
    data: Option<Map<String, Value>>,
) -> Result<ListRow, String> {
    let address = address.trim().to_string();
    if address.is_empty() {
        return Err("address is empty".into());
    }
    smtp_wire::parse_mailbox(&address)
        .map_err(|e| format!("{:?} {e}", crate::submit::check::shown(&address)))?;
    let user_id = user_id
        .map(postroad_queue::metadata::parse_user_id)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(ListRow {
        seq: 0,
        address,
        user_id,
        data: data.map(|d| Value::Object(d).to_string()),
    })
}

fn bad(line: u64, error: String) -> Row {
    Row::Bad(RowError { line, error })
}

fn too_long(line: u64) -> Broken {
    Broken {
        line,
        reason: format!("the row is longer than {MAX_ROW_BYTES} bytes"),
    }
}

fn broken(line: u64, e: std::io::Error) -> Broken {
    if e.kind() == std::io::ErrorKind::InvalidData && e.to_string() == ROW_TOO_LONG {
        return too_long(line);
    }
    Broken {
        line,
        reason: format!("the upload broke off: {e}"),
    }
}

fn csv_broken(first_line: u64, e: csv::Error) -> Broken {
    let line = e
        .position()
        .map_or(first_line, |p| first_line + p.line() - 1);
    match e.into_kind() {
        csv::ErrorKind::Io(io) => broken(line, io),
        other => Broken {
            line,
            reason: format!("{other:?}"),
        },
    }
}

const ROW_TOO_LONG: &str = "row too long";

/// Reads a CSV upload for the parser: line ends become LF (CRLF and a lone CR too,
/// outside double quotes: the parser numbers lines by them), and the read fails when a
/// row grows past [`MAX_ROW_BYTES`]. A line break inside double quotes (in a field)
/// does not end a row, so one endless quoted field is caught too.
struct RowGuard<R> {
    inner: R,
    run: usize,
    quoted: bool,
    /// The last byte was a CR turned into LF: an LF right after it is dropped.
    after_cr: bool,
}

impl<R> RowGuard<R> {
    fn new(inner: R) -> Self {
        RowGuard {
            inner,
            run: 0,
            quoted: false,
            after_cr: false,
        }
    }
}

impl<R: Read> Read for RowGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            let mut kept = 0;
            for i in 0..n {
                let mut b = buf[i];
                let after_cr = std::mem::take(&mut self.after_cr);
                match b {
                    b'\n' if after_cr => continue,
                    b'"' => self.quoted = !self.quoted,
                    b'\r' if !self.quoted => {
                        b = b'\n';
                        self.after_cr = true;
                    }
                    _ => {}
                }
                buf[kept] = b;
                kept += 1;
                if b == b'\n' && !self.quoted {
                    self.run = 0;
                    continue;
                }
                self.run += 1;
                if self.run > MAX_ROW_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        ROW_TOO_LONG,
                    ));
                }
            }
            // Only dropped LFs: read on (0 would say the upload ended).
            if kept > 0 || n == 0 {
                return Ok(kept);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(format: Format, text: &str) -> (Vec<Row>, Result<(), Broken>) {
        let mut rows = Vec::new();
        let result = read(format, text.as_bytes(), 1, |r| {
            rows.push(r);
            true
        });
        (rows, result)
    }

    fn good(rows: &[Row]) -> Vec<&str> {
        rows.iter()
            .filter_map(|r| match r {
                Row::Good(row) => Some(row.address.as_str()),
                Row::Bad(_) => None,
            })
            .collect()
    }

    fn bad_lines(rows: &[Row]) -> Vec<u64> {
        rows.iter()
            .filter_map(|r| match r {
                Row::Bad(e) => Some(e.line),
                Row::Good(_) => None,
            })
            .collect()
    }

    #[test]
    fn ndjson_rows_are_checked_one_by_one_with_their_line_numbers() {
        let text = "{\"address\":\"a@x.test\",\"userId\":7,\"data\":{\"first\":\"Ann\"}}\n\
                    \n\
                    {\"address\":\"not an address\"}\n\
                    {\"address\":\"b@x.test\",\"userId\":-1}\n\
                    [1,2]\n\
                    {\"address\":\"c@x.test\",\"color\":\"red\"}\n\
                    {\"address\":\"d@x.test\"}";
        let (rows, result) = all(Format::Ndjson, text);
        result.unwrap();
        assert_eq!(good(&rows), ["a@x.test", "d@x.test"]);
        assert_eq!(bad_lines(&rows), [3, 4, 5, 6]);
        let Row::Good(first) = &rows[0] else { panic!() };
        assert_eq!(first.user_id, Some(7));
        assert_eq!(first.data.as_deref(), Some("{\"first\":\"Ann\"}"));
    }

    #[test]
    fn csv_has_a_header_naming_the_address_and_the_rest_is_data() {
        let text = "Email,userId,first_name\r\n\
                    a@x.test,1,Ann\r\n\
                    bad,2,Bob\r\n\
                    \"c@x.test\",,\"Multi\r\nline\"\r\n\
                    d@x.test,x,Dan\rlast@x.test,9,Lee\n";
        let (rows, result) = all(Format::Csv, text);
        result.unwrap();
        assert_eq!(good(&rows), ["a@x.test", "c@x.test", "last@x.test"]);
        assert_eq!(bad_lines(&rows), [3, 6]);
        let Row::Good(c) = &rows[2] else { panic!() };
        assert_eq!(c.user_id, None);
        assert_eq!(
            c.data.as_deref(),
            Some("{\"first_name\":\"Multi\\r\\nline\"}")
        );
    }

    #[test]
    fn a_csv_without_an_address_column_is_refused_at_its_header() {
        let (_, result) = all(Format::Csv, "name,phone\nAnn,1\n");
        assert_eq!(result.unwrap_err().line, 1);
    }

    #[test]
    fn an_endless_row_stops_the_reading_instead_of_filling_memory() {
        let long = format!(
            "{{\"address\":\"a@x.test\"}}\n{}\n",
            "x".repeat(MAX_ROW_BYTES + 10)
        );
        let (rows, result) = all(Format::Ndjson, &long);
        assert_eq!(good(&rows), ["a@x.test"]);
        assert_eq!(result.unwrap_err(), too_long(2));
        let quoted = format!("address,note\na@x.test,\"{}", "y\n".repeat(MAX_ROW_BYTES));
        let (rows, result) = all(Format::Csv, &quoted);
        assert!(good(&rows).is_empty());
        assert!(result.unwrap_err().reason.contains("longer than"));
    }
}
