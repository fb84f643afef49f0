//! 8-connected component labelling of a binary plane: pixels that touch by an edge or a corner
//! belong to the same component.

/// The components of one binary plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components {
    /// Per pixel: 0 for background, else the 1-based component label (row-major order of each
    /// component's first pixel).
    pub labels: Vec<u32>,
    /// Number of components.
    pub count: usize,
}

/// Labels the 8-connected components of `fg` (`height * width`, row-major).
///
/// # Panics
/// When `fg.len() != height * width`.
pub fn label8(fg: &[bool], height: usize, width: usize) -> Components {
    assert_eq!(fg.len(), height * width, "plane size");
    let mut labels = vec![0u32; fg.len()];
    let mut count = 0usize;
    let mut stack = Vec::new();
    for start in 0..fg.len() {
        if !fg[start] || labels[start] != 0 {
            continue;
        }
        count += 1;
        let label = count as u32;
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (y, x) = (i / width, i % width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let j = ny * width + nx;
                    if fg[j] && labels[j] == 0 {
                        labels[j] = label;
                        stack.push(j);
                    }
                }
            }
        }
    }
    Components { labels, count }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        let fg = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect();
        (fg, h, w)
    }

    #[test]
    fn diagonal_pixels_join() {
        let (fg, h, w) = plane(&["#...", ".#..", "..#.", "...."]);
        let c = label8(&fg, h, w);
        assert_eq!(c.count, 1);
        assert_eq!(c.labels[0], 1);
        assert_eq!(c.labels[5], 1);
        assert_eq!(c.labels[10], 1);
    }

    #[test]
    fn separated_blobs_are_distinct() {
        let (fg, h, w) = plane(&["##..#", "##..#", ".....", "#...."]);
        let c = label8(&fg, h, w);
        assert_eq!(c.count, 3);
        assert_eq!(c.labels[0], 1);
        assert_eq!(c.labels[4], 2);
        assert_eq!(c.labels[15], 3);
        assert_eq!(c.labels[2], 0);
    }

    #[test]
    fn empty_and_full_planes() {
        let c = label8(&[false; 6], 2, 3);
        assert_eq!(c.count, 0);
        assert!(c.labels.iter().all(|&l| l == 0));
        let c = label8(&[true; 6], 2, 3);
        assert_eq!(c.count, 1);
        assert!(c.labels.iter().all(|&l| l == 1));
        assert_eq!(label8(&[], 0, 0).count, 0);
    }

    #[test]
    fn a_ring_is_one_component_and_its_hole_is_background() {
        let (fg, h, w) = plane(&["###", "#.#", "###"]);
        let c = label8(&fg, h, w);
        assert_eq!(c.count, 1);
        assert_eq!(c.labels[4], 0);
    }
}
