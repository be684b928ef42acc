//! Plain-text tables for terminals: left-aligned columns, two spaces apart.

/// `1 task`, `2 tasks`: a count with its noun (plural `s`).
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `text` cut to at most `max` characters, ending in `…` when it was cut.
pub(super) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

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
    use super::{count, shorten, table};

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(count(0, "task"), "0 tasks");
        assert_eq!(count(1, "task"), "1 task");
        assert_eq!(count(2, "instance"), "2 instances");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("exactly 10", 10), "exactly 10");
        assert_eq!(shorten("a bit longer than that", 10), "a bit lon…");
    }

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
