//! Plain-text tables for terminals: left-aligned columns, two spaces apart.

/// Renders `rows` under `headers`, each column as wide as its widest cell.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn columns_line_up_under_their_headers() {
        let rows = vec![
            vec!["t_importSubject#0".to_owned(), "finished".to_owned()],
            vec!["t_a#10".to_owned(), "failed".to_owned()],
        ];
        assert_eq!(
            table(&["INSTANCE", "STATUS"], &rows),
            "INSTANCE           STATUS\n\
             t_importSubject#0  finished\n\
             t_a#10             failed\n"
        );
    }
}
