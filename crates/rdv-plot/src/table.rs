//! Reading the Markdown tables rdv's benchmarks print.

/// A table: its header cells and the rows under it (separator lines and
/// repeated headers, as from several runs pasted together, are skipped).
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

impl Table {
    /// The first table in `text`, with every later row of the same width.
    pub fn parse(text: &str) -> Option<Table> {
        let mut lines = text.lines().filter_map(cells);
        let header = lines.next()?;
        let rows = lines
            .filter(|r| r.len() == header.len() && *r != header)
            .filter(|r| !r.iter().all(|c| c.chars().all(|ch| "-:".contains(ch))))
            .collect();
        Some(Table { header, rows })
    }

    /// The index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// A cell's leading number and the word after it: `"419.4 MiB"` is
/// `(419.4, "MiB")`, `"6 121 /s (p99 10.1 ms)"` is `(6121.0, "/s")`
/// (spaces between digits group thousands), `"**229.2**"` is `(229.2, "")`.
pub fn number(cell: &str) -> Option<(f64, String)> {
    let cell = cell.trim().trim_matches('*');
    let mut digits = String::new();
    let mut rest = cell;
    let mut chars = cell.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_digit = chars.peek().is_some_and(|(_, n)| n.is_ascii_digit());
        if c.is_ascii_digit() || (c == '.' && !digits.is_empty()) {
            digits.push(c);
        } else if (c == ' ' || c == '\u{202f}') && !digits.is_empty() && next_is_digit {
            // a thousands group
        } else {
            rest = &cell[i..];
            break;
        }
        rest = &cell[i + c.len_utf8()..];
    }
    let value = digits.parse().ok()?;
    let unit = rest.split_whitespace().next().unwrap_or("");
    let unit = unit.trim_matches(|c: char| c == '(' || c == ')' || c == '*');
    Some((value, unit.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_read_as_their_leading_number_and_unit() {
        assert_eq!(number("419.4 MiB"), Some((419.4, "MiB".into())));
        assert_eq!(number("95.15 ms/s"), Some((95.15, "ms/s".into())));
        assert_eq!(
            number("6 121 /s (p99 10.1 ms)"),
            Some((6121.0, "/s".into()))
        );
        assert_eq!(number("**229.2**"), Some((229.2, "".into())));
        assert_eq!(number("10000"), Some((10000.0, "".into())));
        assert_eq!(number("-"), None);
        assert_eq!(number("rdv"), None);
    }

    #[test]
    fn the_first_table_is_read_and_repeated_headers_skipped() {
        let text = "a run\n| point | peers |\n|---|---:|\n| rdv | 10 |\n| point | peers |\n|---|---:|\n| rdv | 20 |\n| odd |\n";
        let t = Table::parse(text).unwrap();
        assert_eq!(t.header, ["point", "peers"]);
        assert_eq!(t.rows, [["rdv", "10"], ["rdv", "20"]]);
        assert_eq!(t.column("peers"), Some(1));
        assert!(Table::parse("no table here").is_none());
    }
}
