//! A reader's outline of one nodule to a voxel mask, by pylidc's `Annotation.boolean_mask` rule:
//! fill each contour at integer pixel positions with matplotlib's crossing test, union the
//! inclusion contours of a slice, cut out the exclusion ones, and clear the contour points
//! themselves, which the readers drew just outside the nodule.

use std::collections::BTreeMap;

/// A contour on slice `k`, as (row, column) points in drawing order.
#[derive(Debug, Clone, PartialEq)]
pub struct Contour {
    /// Slice index in the z-sorted series.
    pub k: usize,
    /// TRUE contours add their inside, FALSE ones cut it out.
    pub inclusion: bool,
    /// (row, column) points; the XML's (x, y) reversed.
    pub points: Vec<(i32, i32)>,
}

/// The voxels of one outline: a boolean plane per slice over the outline's bounding box.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlineMask {
    /// First row of the bounding box.
    pub row0: i32,
    /// First column of the bounding box.
    pub col0: i32,
    /// Rows in the bounding box.
    pub height: usize,
    /// Columns in the bounding box.
    pub width: usize,
    /// Slice index → `height * width` plane, row-major; only slices with a contour.
    pub planes: BTreeMap<usize, Vec<bool>>,
}

impl OutlineMask {
    /// The (row, column) positions set on slice `k`, in row-major order.
    pub fn pixels(&self, k: usize) -> Vec<(i32, i32)> {
        let Some(plane) = self.planes.get(&k) else {
            return Vec::new();
        };
        plane
            .iter()
            .enumerate()
            .filter(|(_, &on)| on)
            .map(|(i, _)| {
                (
                    self.row0 + (i / self.width) as i32,
                    self.col0 + (i % self.width) as i32,
                )
            })
            .collect()
    }

    /// Voxels set over all slices.
    pub fn voxels(&self) -> usize {
        self.planes
            .values()
            .map(|p| p.iter().filter(|&&v| v).count())
            .sum()
    }

    /// Whether (row, column) on slice `k` is set.
    pub fn get(&self, k: usize, row: i32, col: i32) -> bool {
        let (r, c) = (row - self.row0, col - self.col0);
        if r < 0 || c < 0 || r as usize >= self.height || c as usize >= self.width {
            return false;
        }
        self.planes
            .get(&k)
            .is_some_and(|p| p[r as usize * self.width + c as usize])
    }
}

/// The mask of one reader's outline of one nodule (pylidc's `boolean_mask` with
/// `include_contour_points=False`). `contours` are in document order; empty input gives an empty
/// mask.
///
/// The pylidc source this follows (pylidc 0.2.3, `Annotation.boolean_mask`):
/// ```text
/// for contour in self.contours:
///     if contour.inclusion:
///         ...
///         path = mplpath.Path(C, closed=True)
///         contains_pts = path.contains_points(test_points)
///         mask[:,:,zi] = np.logical_or(mask[:,:,zi], contains_pts)
///         if not include_contour_points:
///             mask[i,j,k] = False          # the contour's own points
/// for contour in self.contours:
///     if not contour.inclusion:
///         ...
///         mask[:,:,zi] = np.logical_and(mask[:,:,zi], ~path.contains_points(test_points))
///         mask[i,j,k] = False
/// ```
pub fn outline_mask(contours: &[Contour]) -> OutlineMask {
    let all = contours.iter().flat_map(|c| c.points.iter());
    let (mut rmin, mut rmax, mut cmin, mut cmax) = (i32::MAX, i32::MIN, i32::MAX, i32::MIN);
    for &(r, c) in all {
        rmin = rmin.min(r);
        rmax = rmax.max(r);
        cmin = cmin.min(c);
        cmax = cmax.max(c);
    }
    if rmin > rmax {
        return OutlineMask {
            row0: 0,
            col0: 0,
            height: 0,
            width: 0,
            planes: BTreeMap::new(),
        };
    }
    let (height, width) = ((rmax - rmin + 1) as usize, (cmax - cmin + 1) as usize);
    let mut mask = OutlineMask {
        row0: rmin,
        col0: cmin,
        height,
        width,
        planes: BTreeMap::new(),
    };
    for inclusion in [true, false] {
        for contour in contours.iter().filter(|c| c.inclusion == inclusion) {
            let plane = mask
                .planes
                .entry(contour.k)
                .or_insert_with(|| vec![false; height * width]);
            for (i, px) in plane.iter_mut().enumerate() {
                let row = f64::from(rmin + (i / width) as i32);
                let col = f64::from(cmin + (i % width) as i32);
                let inside = contains(&contour.points, row, col);
                if inclusion {
                    *px |= inside;
                } else {
                    *px &= !inside;
                }
            }
            for &(r, c) in &contour.points {
                plane[(r - rmin) as usize * width + (c - cmin) as usize] = false;
            }
        }
    }
    mask
}

/// matplotlib's `Path.contains_points` for one closed polygon of (row, column) vertices and one
/// test point (`point_in_path_impl` in matplotlib's `_path.h`: a +x crossing count in which an
/// edge counts when its end points straddle the test row, with `>=` on both comparisons). Points
/// on the boundary follow that rule exactly, which is what makes the masks equal pylidc's.
pub fn contains(vertices: &[(i32, i32)], tx: f64, ty: f64) -> bool {
    let Some(&(sx, sy)) = vertices.first() else {
        return false;
    };
    let (sx, sy) = (f64::from(sx), f64::from(sy));
    let (mut vtx0, mut vty0) = (sx, sy);
    let mut yflag0 = vty0 >= ty;
    let mut inside = false;
    let rest = vertices[1..]
        .iter()
        .map(|&(x, y)| (f64::from(x), f64::from(y)))
        .chain(std::iter::once((sx, sy)));
    for (vtx1, vty1) in rest {
        let yflag1 = vty1 >= ty;
        if yflag0 != yflag1
            && (((vty1 - ty) * (vtx0 - vtx1) >= (vtx1 - tx) * (vty0 - vty1)) == yflag1)
        {
            inside = !inside;
        }
        yflag0 = yflag1;
        vtx0 = vtx1;
        vty0 = vty1;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(k: usize, inclusion: bool, r0: i32, c0: i32, side: i32) -> Contour {
        // Clockwise ring of integer points around the square's border.
        let mut points = Vec::new();
        for c in c0..c0 + side {
            points.push((r0, c));
        }
        for r in r0..r0 + side {
            points.push((r, c0 + side));
        }
        for c in (c0 + 1..=c0 + side).rev() {
            points.push((r0 + side, c));
        }
        for r in (r0 + 1..=r0 + side).rev() {
            points.push((r, c0));
        }
        Contour {
            k,
            inclusion,
            points,
        }
    }

    #[test]
    fn a_square_ring_fills_its_inside_and_clears_its_own_points() {
        let m = outline_mask(&[square(3, true, 10, 20, 4)]);
        // The ring occupies rows 10..=14, columns 20..=24; its inside is rows 11..=13 x 21..=23.
        assert_eq!((m.row0, m.col0, m.height, m.width), (10, 20, 5, 5));
        let mut expected = Vec::new();
        for r in 11..=13 {
            for c in 21..=23 {
                expected.push((r, c));
            }
        }
        assert_eq!(m.pixels(3), expected);
        assert_eq!(m.voxels(), 9);
        assert!(m.pixels(2).is_empty());
    }

    #[test]
    fn exclusion_contours_cut_holes_and_two_inclusions_on_a_slice_unite() {
        let m = outline_mask(&[
            square(0, true, 0, 0, 8),
            square(0, false, 2, 2, 4),
            square(0, true, 0, 20, 4),
        ]);
        // Inside of the big square: 7x7 = 49; the exclusion ring and its inside (5x5 = 25) go.
        // The second square adds 3x3 = 9.
        assert_eq!(m.voxels(), 49 - 25 + 9);
        assert!(!m.get(0, 4, 4));
        assert!(m.get(0, 1, 1));
        assert!(m.get(0, 2, 21));
    }

    #[test]
    fn crossing_rule_matches_matplotlib_on_boundary_points() {
        // Reference (matplotlib 3.11.2):
        //   from matplotlib.path import Path
        //   p = Path([(0,0),(0,4),(4,4),(4,0),(0,0)], closed=True)
        //   p.contains_points([(2,2),(0,2),(4,2),(2,0),(2,4),(0,0),(4,4),(5,2)])
        //   -> [True, False, False, False, True, False, False, False]
        let sq = [(0, 0), (0, 4), (4, 4), (4, 0), (0, 0)];
        let got: Vec<bool> = [
            (2., 2.),
            (0., 2.),
            (4., 2.),
            (2., 0.),
            (2., 4.),
            (0., 0.),
            (4., 4.),
            (5., 2.),
        ]
        .iter()
        .map(|&(x, y)| contains(&sq, x, y))
        .collect();
        assert_eq!(
            got,
            vec![true, false, false, false, true, false, false, false]
        );
        assert!(!contains(&[(3, 3)], 3.0, 3.0));
        assert!(!contains(&[], 0.0, 0.0));
    }
}
