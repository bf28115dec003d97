//! Plain-text tables for the command line: left-aligned columns two spaces apart, the
//! last column not padded.

/// `rows` (the header first, when there is one) as aligned lines.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A header and rows of `N` cells as one table.
pub fn with_header<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let all: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
        .chain(rows.iter().map(|r| r.to_vec()))
        .collect();
    table(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let rows = vec![
            vec!["A".to_string(), "BB".into(), "C".into()],
            vec!["long".into(), "x".into(), "tail".into()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x   tail\n");
        assert_eq!(
            with_header(["K", "V"], &[["ü".to_string(), "1".into()]]),
            "K  V\nü  1\n"
        );
    }
}
