//! Which readers' outlines are the same nodule: pylidc's `Scan.cluster_annotations` rule. The
//! distance between two outlines is the least distance between their contour points in index
//! units (row, column, slice); outlines within the slice thickness are connected, and the
//! connected groups are nodules. While a group has more than four outlines (the LIDC had four
//! readers) the tolerance shrinks by 0.9, down to 0.1.

/// The pylidc defaults.
const FACTOR: f64 = 0.9;
const MIN_TOLERANCE: f64 = 0.1;
const MAX_READERS: usize = 4;

/// One outline as the clustering sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlinePoints {
    /// Every contour point as (row, column, slice index): pylidc's `contours_matrix`.
    pub points: Vec<[i32; 3]>,
    /// The slice coordinate of the outline's centroid (the mean of its contour points), which
    /// orders the nodules.
    pub centroid_k: f64,
}

/// The result of [`cluster`].
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    /// Member indices per nodule, ordered as pylidc orders them (by the members' mean centroid
    /// slice; ties keep the components' order), members ascending.
    pub groups: Vec<Vec<usize>>,
    /// The tolerance the grouping used.
    pub tolerance: f64,
    /// True when the tolerance fell below 0.1 with a group still over four outlines.
    pub unresolved: bool,
}

/// Groups `outlines` into nodules with the tolerance `slice_thickness` (pylidc's default `tol`).
///
/// The pylidc source this follows (pylidc 0.2.3, `Scan.cluster_annotations`):
/// ```text
/// adjacency = D <= tol
/// nnods, cids = connected_components(adjacency, directed=False)
/// while any([c > 4 for c in counts]):
///     tol *= factor
///     if tol < min_tol: break
///     adjacency = D <= tol
///     nnods, cids = connected_components(adjacency, directed=False)
/// clusters = sorted(clusters, key=lambda cluster: np.mean([ann.centroid[2] for ann in cluster]))
/// ```
pub fn cluster(outlines: &[OutlinePoints], slice_thickness: f64) -> Clusters {
    let n = outlines.len();
    let mut tolerance = slice_thickness;
    // Pairs further apart than the first tolerance never connect, so only nearer pairs need their
    // exact distance (`None`: further than the first tolerance).
    let boxes: Vec<Option<BoundingBox>> = outlines
        .iter()
        .map(|o| BoundingBox::of(&o.points))
        .collect();
    let mut distance = vec![None; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let (Some(a), Some(b)) = (&boxes[i], &boxes[j]) else {
                continue;
            };
            if a.gap_squared(b) > tolerance * tolerance {
                continue;
            }
            let d = min_distance(&outlines[i].points, &outlines[j].points);
            distance[i * n + j] = Some(d);
            distance[j * n + i] = Some(d);
        }
    }
    let mut labels = components(n, |i, j| {
        distance[i * n + j].is_some_and(|d| d <= tolerance)
    });
    let mut unresolved = false;
    while largest_group(&labels) > MAX_READERS {
        tolerance *= FACTOR;
        if tolerance < MIN_TOLERANCE {
            unresolved = true;
            break;
        }
        labels = components(n, |i, j| {
            distance[i * n + j].is_some_and(|d| d <= tolerance)
        });
    }
    let groups_count = labels.iter().map(|&l| l + 1).max().unwrap_or(0);
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); groups_count];
    for (i, &l) in labels.iter().enumerate() {
        groups[l].push(i);
    }
    let mean_k =
        |g: &Vec<usize>| g.iter().map(|&i| outlines[i].centroid_k).sum::<f64>() / g.len() as f64;
    // A stable sort, as Python's `sorted`.
    groups.sort_by(|a, b| mean_k(a).total_cmp(&mean_k(b)));
    Clusters {
        groups,
        tolerance,
        unresolved,
    }
}

/// Connected components of the graph on `n` nodes with edges where `adjacent`; labels are
/// numbered in order of each component's smallest node, as SciPy's `connected_components`.
fn components(n: usize, adjacent: impl Fn(usize, usize) -> bool) -> Vec<usize> {
    let mut labels = vec![usize::MAX; n];
    let mut next = 0;
    for start in 0..n {
        if labels[start] != usize::MAX {
            continue;
        }
        labels[start] = next;
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for (j, label) in labels.iter_mut().enumerate() {
                if *label == usize::MAX && adjacent(i, j) {
                    *label = next;
                    stack.push(j);
                }
            }
        }
        next += 1;
    }
    labels
}

fn largest_group(labels: &[usize]) -> usize {
    let mut counts = std::collections::HashMap::new();
    for &l in labels {
        *counts.entry(l).or_insert(0usize) += 1;
    }
    counts.values().copied().max().unwrap_or(0)
}

/// The least Euclidean distance between two point sets (SciPy's `cdist(a, b).min()`).
fn min_distance(a: &[[i32; 3]], b: &[[i32; 3]]) -> f64 {
    let mut best = i64::MAX;
    for p in a {
        for q in b {
            let d: i64 = (0..3).map(|i| i64::from(p[i] - q[i]).pow(2)).sum();
            best = best.min(d);
        }
    }
    (best as f64).sqrt()
}

/// The axis-aligned box around a point set.
#[derive(Debug, Clone, Copy)]
struct BoundingBox {
    lo: [i32; 3],
    hi: [i32; 3],
}

impl BoundingBox {
    fn of(points: &[[i32; 3]]) -> Option<Self> {
        let first = *points.first()?;
        let mut b = Self {
            lo: first,
            hi: first,
        };
        for p in points {
            for (i, &v) in p.iter().enumerate() {
                b.lo[i] = b.lo[i].min(v);
                b.hi[i] = b.hi[i].max(v);
            }
        }
        Some(b)
    }

    /// The squared least distance between two boxes: a lower bound of the points' distance.
    fn gap_squared(&self, other: &Self) -> f64 {
        (0..3)
            .map(|i| {
                let gap = (other.lo[i] - self.hi[i])
                    .max(self.lo[i] - other.hi[i])
                    .max(0);
                f64::from(gap).powi(2)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(row: i32, col: i32, k: i32) -> OutlinePoints {
        OutlinePoints {
            points: vec![[row, col, k], [row + 2, col, k], [row, col + 2, k]],
            centroid_k: f64::from(k),
        }
    }

    #[test]
    fn outlines_within_the_thickness_join_and_groups_are_ordered_by_slice() {
        // Two nodules: three readers near (100, 100) on slice 20, two near (300, 300) on slice 5.
        let outlines = vec![
            blob(100, 100, 20),
            blob(300, 300, 5),
            blob(101, 101, 20),
            blob(301, 302, 5),
            blob(102, 100, 21),
        ];
        let c = cluster(&outlines, 2.5);
        assert_eq!(c.groups, vec![vec![1, 3], vec![0, 2, 4]]);
        assert!(!c.unresolved);
        assert_eq!(c.tolerance, 2.5);
    }

    #[test]
    fn a_group_of_more_than_four_shrinks_the_tolerance_until_it_splits() {
        // Six outlines in a row, 2 apart, then a gap of 1 between the third and fourth: with
        // tolerance 2 all six connect; at 2 * 0.9 = 1.8 only the close pair stays together.
        let k = |r| OutlinePoints {
            points: vec![[r, 0, 0]],
            centroid_k: 0.0,
        };
        let outlines: Vec<_> = [0, 2, 4, 5, 7, 9].into_iter().map(k).collect();
        let c = cluster(&outlines, 2.0);
        assert!((c.tolerance - 1.8).abs() < 1e-12);
        assert_eq!(
            c.groups,
            vec![vec![0], vec![1], vec![2, 3], vec![4], vec![5]]
        );
        // Five outlines on one point can never split: the tolerance bottoms out.
        let same: Vec<_> = (0..5).map(|_| k(0)).collect();
        let c = cluster(&same, 2.0);
        assert!(c.unresolved);
        assert_eq!(c.groups.len(), 1);
    }

    #[test]
    fn min_distance_is_the_closest_pair() {
        let a = [[0, 0, 0], [10, 0, 0]];
        let b = [[13, 4, 0], [30, 0, 0]];
        assert_eq!(min_distance(&a, &b), 5.0);
        assert_eq!(cluster(&[], 1.0).groups, Vec::<Vec<usize>>::new());
    }
}
