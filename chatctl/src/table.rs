//! Plain-text tables that fit [`WIDTH`] columns: the widest columns shrink and their cells
//! end in `…` when the whole would not fit.

/// Widest line a table prints.
pub const WIDTH: usize = 100;
/// Narrowest a column shrinks to.
const MIN_COL: usize = 4;
/// Spaces between columns.
const GAP: usize = 2;

/// A table: a header row and data rows.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The rendered lines, each at most [`WIDTH`] characters, newline-terminated.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let cell = |r: &Vec<String>, i: usize| r.get(i).map(String::as_str).unwrap_or("").replace(['\n', '\t'], " ");
        let mut widths: Vec<usize> = (0..n)
            .map(|i| std::iter::once(&self.header).chain(&self.rows).map(|r| cell(r, i).chars().count()).max().unwrap_or(0))
            .collect();
        let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * n.saturating_sub(1);
        while total(&widths) > WIDTH {
            let (i, &w) = widths.iter().enumerate().max_by_key(|(_, w)| **w).expect("a column");
            if w <= MIN_COL {
                break;
            }
            widths[i] -= 1;
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let text = fit(&cell(r, i), *w);
                if i + 1 < n {
                    line.push_str(&format!("{text:<w$}{:GAP$}", ""));
                } else {
                    line.push_str(&text);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `s` cut to `w` characters, the last one `…` when cut.
pub fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_tables_fit_100_columns() {
        let mut t = Table::new(&["KEY", "ENV", "DEFAULT"]);
        t.row(vec!["cluster.postgres_url".into(), "SWITCHBOARD_CLUSTER_POSTGRES_URL".into(), "x".repeat(200)]);
        t.row(vec!["a".into()]);
        for line in t.render().lines() {
            assert!(line.chars().count() <= WIDTH, "{line}");
        }
        assert!(t.render().contains('…'));
    }

    #[test]
    fn narrow_tables_are_aligned() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render(), "A    LONGER\nxyz  1\n");
    }
}
