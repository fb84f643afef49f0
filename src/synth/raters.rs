//! Simulated rater masks: four radiologists who each outline the true nodule region a pixel or
//! two differently, and who sometimes skip a nodule, a slice, or the faint end slices — the
//! disagreement and gaps that the pipeline's mask fusion has to cope with in LIDC-IDRI.

use crate::rng::SplitMix64;

/// Number of simulated raters (`mask-0` .. `mask-3`).
pub const RATERS: usize = 4;

/// Probability that a rater's whole `mask-k` folder is absent for a nodule.
pub const P_RATER_ABSENT: f64 = 0.18;
/// Probability that one mask file of a present rater is absent.
pub const P_FILE_ABSENT: f64 = 0.04;
/// Probability, per end of a stack of 4 or more slices, that no rater marked that end slice.
pub const P_END_UNMARKED: f64 = 0.3;

/// Growth of an outline in pixels: negative erodes, positive dilates.
const GROWTH_CHOICES: [i32; 9] = [-2, -1, -1, 0, 0, 0, 1, 1, 2];

/// What one rater writes for one slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskFile {
    /// No file.
    Absent,
    /// A 0/255 mask (possibly all zero).
    Mask(Vec<u8>),
}

/// How each rater marks one nodule's stack; drawn once per nodule.
#[derive(Debug, Clone)]
pub struct RaterPlan {
    present: [bool; RATERS],
    growth: [i32; RATERS],
    offset: [(i32, i32); RATERS],
    /// Per slice, per rater: (file absent, growth jitter, write zeros rather than omit when the
    /// slice is unmarked).
    slices: Vec<[(bool, i32, bool); RATERS]>,
    unmarked: Vec<bool>,
}

impl RaterPlan {
    /// Draws the plan for a stack of `slices` slices. At least one rater is present.
    pub fn draw(rng: &mut SplitMix64, slices: usize) -> Self {
        let mut present = [false; RATERS];
        for p in &mut present {
            *p = !rng.chance(P_RATER_ABSENT);
        }
        let fallback = rng.below(RATERS);
        if !present.iter().any(|&p| p) {
            present[fallback] = true;
        }
        let mut growth = [0; RATERS];
        let mut offset = [(0, 0); RATERS];
        for k in 0..RATERS {
            growth[k] = GROWTH_CHOICES[rng.below(GROWTH_CHOICES.len())];
            offset[k] = (
                rng.range_inclusive(-1, 1) as i32,
                rng.range_inclusive(-1, 1) as i32,
            );
        }
        let per_slice = (0..slices)
            .map(|_| {
                let mut s = [(false, 0, false); RATERS];
                for e in &mut s {
                    let absent = rng.chance(P_FILE_ABSENT);
                    let jitter = if rng.chance(0.25) {
                        if rng.chance(0.5) {
                            1
                        } else {
                            -1
                        }
                    } else {
                        0
                    };
                    *e = (absent, jitter, rng.chance(0.5));
                }
                s
            })
            .collect();
        let mut unmarked = vec![false; slices];
        let first = rng.chance(P_END_UNMARKED);
        let last = rng.chance(P_END_UNMARKED);
        if slices >= 4 {
            unmarked[0] = first;
            unmarked[slices - 1] = last;
        }
        Self {
            present,
            growth,
            offset,
            slices: per_slice,
            unmarked,
        }
    }

    /// The masks of all raters for slice `z`, from the true region `truth` (`width` × `height`).
    pub fn masks(
        &self,
        z: usize,
        truth: &[bool],
        width: usize,
        height: usize,
    ) -> [MaskFile; RATERS] {
        std::array::from_fn(|k| {
            let (absent, jitter, zeros) = self.slices[z][k];
            if !self.present[k] || absent {
                return MaskFile::Absent;
            }
            if self.unmarked[z] {
                return if zeros {
                    MaskFile::Mask(vec![0; width * height])
                } else {
                    MaskFile::Absent
                };
            }
            let growth = (self.growth[k] + jitter).clamp(-2, 2);
            let region = perturb(truth, width, height, self.offset[k], growth);
            MaskFile::Mask(region.iter().map(|&m| if m { 255 } else { 0 }).collect())
        })
    }
}

/// Shifts `truth` by `offset`, then dilates (`growth` > 0) or erodes (`growth` < 0) it with a
/// disc of radius |`growth`|. Only the bounding box of the region (plus a margin) is visited.
pub fn perturb(
    truth: &[bool],
    width: usize,
    height: usize,
    offset: (i32, i32),
    growth: i32,
) -> Vec<bool> {
    let mut out = vec![false; width * height];
    let Some((x0, y0, x1, y1)) = bounding_box(truth, width, height) else {
        return out;
    };
    let r = growth.abs();
    let disc: Vec<(i32, i32)> = (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| dx * dx + dy * dy <= r * r)
        .collect();
    let at = |x: i32, y: i32| -> bool {
        // The shifted region: pixel (x, y) is marked when (x - dx, y - dy) is true.
        let (sx, sy) = (x - offset.0, y - offset.1);
        sx >= 0
            && sy >= 0
            && (sx as usize) < width
            && (sy as usize) < height
            && truth[sy as usize * width + sx as usize]
    };
    let margin = r + 1;
    let lo_x = (x0 as i32 - margin).max(0);
    let lo_y = (y0 as i32 - margin).max(0);
    let hi_x = (x1 as i32 + margin).min(width as i32 - 1);
    let hi_y = (y1 as i32 + margin).min(height as i32 - 1);
    for y in lo_y..=hi_y {
        for x in lo_x..=hi_x {
            let marked = if growth >= 0 {
                disc.iter().any(|&(dx, dy)| at(x + dx, y + dy))
            } else {
                disc.iter().all(|&(dx, dy)| at(x + dx, y + dy))
            };
            out[y as usize * width + x as usize] = marked;
        }
    }
    out
}

/// The inclusive bounding box of the true pixels, if any.
fn bounding_box(
    mask: &[bool],
    width: usize,
    height: usize,
) -> Option<(usize, usize, usize, usize)> {
    let mut bb: Option<(usize, usize, usize, usize)> = None;
    for y in 0..height {
        for x in 0..width {
            if mask[y * width + x] {
                bb = Some(match bb {
                    None => (x, y, x, y),
                    Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
                });
            }
        }
    }
    bb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc(width: usize, cx: i32, cy: i32, r: i32) -> Vec<bool> {
        (0..width * width)
            .map(|i| {
                let (x, y) = ((i % width) as i32, (i / width) as i32);
                (x - cx).pow(2) + (y - cy).pow(2) <= r * r
            })
            .collect()
    }

    fn count(m: &[bool]) -> usize {
        m.iter().filter(|&&b| b).count()
    }

    #[test]
    fn dilation_grows_erosion_shrinks_and_shift_moves() {
        let t = disc(32, 16, 16, 5);
        assert_eq!(perturb(&t, 32, 32, (0, 0), 0), t);
        assert!(count(&perturb(&t, 32, 32, (0, 0), 2)) > count(&perturb(&t, 32, 32, (0, 0), 1)));
        assert!(count(&perturb(&t, 32, 32, (0, 0), 1)) > count(&t));
        assert!(count(&perturb(&t, 32, 32, (0, 0), -1)) < count(&t));
        assert_eq!(perturb(&t, 32, 32, (1, -1), 0), disc(32, 17, 15, 5));
        // Eroding a tiny region removes it.
        assert_eq!(count(&perturb(&disc(32, 5, 5, 1), 32, 32, (0, 0), -2)), 0);
    }

    #[test]
    fn unmarked_end_slices_give_no_marks() {
        let t = disc(16, 8, 8, 3);
        let mut rng = SplitMix64::new(3);
        let mut seen_unmarked = false;
        for _ in 0..50 {
            let plan = RaterPlan::draw(&mut rng, 6);
            assert!(plan.present.iter().any(|&p| p));
            for z in [0, 5] {
                if plan.unmarked[z] {
                    seen_unmarked = true;
                    for m in plan.masks(z, &t, 16, 16) {
                        if let MaskFile::Mask(m) = m {
                            assert!(m.iter().all(|&v| v == 0));
                        }
                    }
                }
            }
        }
        assert!(seen_unmarked);
    }
}
