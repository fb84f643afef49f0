//! Natural ordering of folder and file names, so `nodule-2` sorts before `nodule-10`.

use std::cmp::Ordering;

/// Compares two names treating runs of ASCII digits as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(cx), Some(cy)) if cx.is_ascii_digit() && cy.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let tx = trim_zeros(&x[..nx]);
                let ty = trim_zeros(&y[..ny]);
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if ord != Ordering::Equal {
                    return ord;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(cx), Some(cy)) => {
                if cx != cy {
                    return cx.cmp(cy);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let start = d.iter().position(|&c| c != b'0').unwrap_or(d.len());
    &d[start..]
}

/// The last run of digits in a file stem, as the slice index (`slice-12` → 12).
pub fn trailing_number(stem: &str) -> Option<i32> {
    let bytes = stem.as_bytes();
    let end = bytes.iter().rposition(|c| c.is_ascii_digit())? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|c| !c.is_ascii_digit())
        .map_or(0, |p| p + 1);
    stem[start..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_table() {
        let cases = [
            ("nodule-2", "nodule-10", Ordering::Less),
            ("nodule-10", "nodule-10", Ordering::Equal),
            ("a", "a1", Ordering::Less),
            ("slice-007", "slice-7", Ordering::Less),
            ("LIDC-IDRI-0002", "LIDC-IDRI-0010", Ordering::Less),
            ("b", "a9", Ordering::Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(natural_cmp(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn trailing_number_table() {
        assert_eq!(trailing_number("slice-12"), Some(12));
        assert_eq!(trailing_number("12"), Some(12));
        assert_eq!(trailing_number("img3_part"), Some(3));
        assert_eq!(trailing_number("slice"), None);
        assert_eq!(trailing_number("x99999999999"), None);
    }
}
