//! Draws one CT-like slice (body, lungs, vessels, a nodule, noise) and its true nodule region,
//! so the synthetic tree looks enough like LIDC-IDRI for every pipeline stage to be exercised.
//!
//! Geometry is drawn once per patient ([`Anatomy`]) and once per nodule ([`Nodule`]) in a
//! 128 × 128 reference frame, then scaled per axis to the slice's actual size. Intensities are
//! drawn as fractions in [0, 1) and only mapped to grey levels or Hounsfield units by a
//! [`Palette`] at render time, so the random draws do not depend on the output format.

use crate::rng::SplitMix64;
use std::f64::consts::{LN_2, PI};

/// Side of the reference frame in which anatomy is drawn (and of default slices).
pub const REFERENCE_SIDE: f64 = 128.0;

/// Width of the soft edge of the body and lung ellipses, in pixels.
const EDGE_PX: f64 = 1.5;

/// The intensity of each tissue, as a `(low, high)` range from which a level is picked, in the
/// units of the output (8-bit grey levels or Hounsfield units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Palette {
    /// Air outside the body.
    pub air: (f64, f64),
    /// Lung parenchyma.
    pub lung: (f64, f64),
    /// Vessels inside the lungs.
    pub vessel: (f64, f64),
    /// Soft tissue of the body.
    pub body: (f64, f64),
    /// Peak of a nodule (its centre, before noise).
    pub nodule: (f64, f64),
    /// Standard deviation of the additive Gaussian noise.
    pub noise_sigma: f64,
    /// The smallest and largest value that can be stored.
    pub clamp: (f64, f64),
}

/// Levels of 8-bit grey slices.
pub const GRAY_PALETTE: Palette = Palette {
    air: (0.0, 20.0),
    lung: (30.0, 60.0),
    vessel: (90.0, 130.0),
    body: (170.0, 200.0),
    nodule: (150.0, 220.0),
    noise_sigma: 4.0,
    clamp: (0.0, 255.0),
};

/// Levels of 16-bit slices, in Hounsfield units (stored as HU + [`crate::synth::HU_OFFSET`]).
pub const HU_PALETTE: Palette = Palette {
    air: (-1010.0, -990.0),
    lung: (-870.0, -830.0),
    vessel: (-500.0, -300.0),
    body: (20.0, 60.0),
    nodule: (0.0, 100.0),
    noise_sigma: 12.0,
    clamp: (-1024.0, 3071.0),
};

impl Palette {
    fn level(range: (f64, f64), fraction: f64) -> f64 {
        range.0 + (range.1 - range.0) * fraction
    }
}

/// An ellipse with a soft edge, in pixel coordinates of some frame.
#[derive(Debug, Clone, Copy)]
struct Ellipse {
    cx: f64,
    cy: f64,
    ax: f64,
    ay: f64,
    tilt: f64,
}

impl Ellipse {
    /// Scaled per axis by `sx`, `sy` (the tilt is kept; the result is approximate for tilted
    /// ellipses, which is fine for a phantom).
    fn scaled(&self, sx: f64, sy: f64) -> Self {
        Self {
            cx: self.cx * sx,
            cy: self.cy * sy,
            ax: self.ax * sx,
            ay: self.ay * sy,
            tilt: self.tilt,
        }
    }

    /// The point at normalised polar position (`q`, `angle`) inside the ellipse.
    fn point(&self, q: f64, angle: f64) -> (f64, f64) {
        let (u, v) = (q * self.ax * angle.cos(), q * self.ay * angle.sin());
        let (s, c) = self.tilt.sin_cos();
        (self.cx + u * c - v * s, self.cy + u * s + v * c)
    }

    /// The ellipse with its trigonometry done once, for testing many pixels.
    fn edge(&self) -> Edge {
        let (sin, cos) = self.tilt.sin_cos();
        Edge {
            cx: self.cx,
            cy: self.cy,
            inv_ax: 1.0 / self.ax,
            inv_ay: 1.0 / self.ay,
            sin,
            cos,
            ramp: self.ax.min(self.ay) / EDGE_PX,
        }
    }
}

/// An [`Ellipse`] prepared for per-pixel membership tests.
#[derive(Debug, Clone, Copy)]
struct Edge {
    cx: f64,
    cy: f64,
    inv_ax: f64,
    inv_ay: f64,
    sin: f64,
    cos: f64,
    ramp: f64,
}

impl Edge {
    /// How much of the pixel centred at (`x`, `y`) lies inside: 1 inside, 0 outside, a ramp of
    /// [`EDGE_PX`] across the edge.
    fn membership(&self, x: f64, y: f64) -> f64 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = (dx * self.cos + dy * self.sin) * self.inv_ax;
        let v = (dy * self.cos - dx * self.sin) * self.inv_ay;
        let q = (u * u + v * v).sqrt();
        (0.5 + (1.0 - q) * self.ramp).clamp(0.0, 1.0)
    }
}

/// A thin vessel: a quadratic Bézier curve in reference coordinates.
#[derive(Debug, Clone, Copy)]
struct Vessel {
    p0: (f64, f64),
    p1: (f64, f64),
    p2: (f64, f64),
    radius: f64,
    level: f64,
}

/// One patient's body, lungs and vessels, shared by all its nodules.
#[derive(Debug, Clone)]
pub struct Anatomy {
    body: Ellipse,
    lungs: [Ellipse; 2],
    vessels: Vec<Vessel>,
    air_level: f64,
    body_level: f64,
    lung_level: f64,
}

impl Anatomy {
    /// Draws a patient's anatomy in the reference frame.
    pub fn draw(rng: &mut SplitMix64) -> Self {
        let half = REFERENCE_SIDE / 2.0;
        let (cx, cy) = (half + rng.uniform(-3.0, 3.0), half + rng.uniform(-3.0, 3.0));
        let (a, b) = (rng.uniform(52.0, 60.0), rng.uniform(40.0, 50.0));
        let body = Ellipse {
            cx,
            cy,
            ax: a,
            ay: b,
            tilt: rng.uniform(-0.05, 0.05),
        };
        let lung = |side: f64, rng: &mut SplitMix64| Ellipse {
            cx: cx + side * a * rng.uniform(0.44, 0.50),
            cy: cy + rng.uniform(-4.0, 2.0),
            ax: a * rng.uniform(0.28, 0.36),
            ay: b * rng.uniform(0.62, 0.75),
            tilt: side * rng.uniform(-0.2, 0.2),
        };
        let lungs = [lung(-1.0, rng), lung(1.0, rng)];
        let mut vessels = Vec::new();
        for (i, l) in lungs.iter().enumerate() {
            let medial = if i == 0 { 0.0 } else { PI };
            for _ in 0..rng.range_inclusive(2, 4) {
                let p0 = l.point(rng.uniform(0.4, 0.7), medial + rng.uniform(-0.5, 0.5));
                let p2 = l.point(rng.uniform(0.7, 0.95), rng.uniform(0.0, 2.0 * PI));
                let (mx, my) = ((p0.0 + p2.0) / 2.0, (p0.1 + p2.1) / 2.0);
                let (dx, dy) = (p2.0 - p0.0, p2.1 - p0.1);
                let len = (dx * dx + dy * dy).sqrt().max(1e-9);
                let bend = rng.uniform(-0.25, 0.25) * len;
                vessels.push(Vessel {
                    p0,
                    p1: (mx - dy / len * bend, my + dx / len * bend),
                    p2,
                    radius: rng.uniform(0.5, 1.1),
                    level: rng.next_f64(),
                });
            }
        }
        Self {
            body,
            lungs,
            vessels,
            air_level: rng.next_f64(),
            body_level: rng.next_f64(),
            lung_level: rng.next_f64(),
        }
    }
}

/// One nodule: its stack of slices, where it sits and how big and bright it is.
#[derive(Debug, Clone)]
pub struct Nodule {
    /// Number of slices in the stack.
    pub slices: usize,
    /// Diameter in pixels on the middle slice (2 to 30).
    pub diameter: f64,
    lung: usize,
    /// Normalised polar position of the centre inside the lung.
    q: f64,
    angle: f64,
    /// Drift of the centre per slice, in pixels.
    drift: (f64, f64),
    elongation: f64,
    orientation: f64,
    lobulation: f64,
    lobes: f64,
    lobe_phase: f64,
    peak_level: f64,
}

impl Nodule {
    /// Draws a nodule: 3 to 10 slices, peak diameter 2 to 30 px (small ones more likely).
    pub fn draw(rng: &mut SplitMix64) -> Self {
        let slices = rng.range_inclusive(3, 10) as usize;
        let diameter = 2.0 + 28.0 * rng.next_f64().powf(1.6);
        Self {
            slices,
            diameter,
            lung: rng.below(2),
            q: rng.next_f64().sqrt(),
            angle: rng.uniform(0.0, 2.0 * PI),
            drift: (rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)),
            elongation: rng.uniform(-0.15, 0.15),
            orientation: rng.uniform(0.0, PI),
            lobulation: rng.uniform(0.0, 0.06),
            lobes: rng.range_inclusive(3, 7) as f64,
            lobe_phase: rng.uniform(0.0, 2.0 * PI),
            peak_level: rng.next_f64(),
        }
    }

    /// Radius (half-maximum contour) on slice `z`: grows then shrinks along a sine.
    pub fn radius(&self, z: usize) -> f64 {
        let t = (z as f64 + 0.5) / self.slices as f64;
        self.diameter / 2.0 * (PI * t).sin()
    }
}

/// A rendered slice: values in palette units, and the true nodule region.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Row-major values in palette units, clamped to the palette's range.
    pub values: Vec<f64>,
    /// Row-major true nodule region: where the nodule's blob is at least half its peak.
    pub truth: Vec<bool>,
}

/// Renders slice `z` of `nodule` in a `width` × `height` frame. `rng` supplies the per-slice
/// vessel jitter and noise, and is drawn from the same number of times for any palette.
pub fn render(
    anatomy: &Anatomy,
    nodule: &Nodule,
    z: usize,
    (width, height): (usize, usize),
    palette: &Palette,
    rng: &mut SplitMix64,
) -> Rendered {
    let sx = width as f64 / REFERENCE_SIDE;
    let sy = height as f64 / REFERENCE_SIDE;
    let body = anatomy.body.scaled(sx, sy).edge();
    let lungs = anatomy.lungs.map(|l| l.scaled(sx, sy));
    let lung_edges = lungs.map(|l| l.edge());
    let air = Palette::level(palette.air, anatomy.air_level);
    let body_level = Palette::level(palette.body, anatomy.body_level);
    let lung_level = Palette::level(palette.lung, anatomy.lung_level);

    let n = width * height;
    let mut values = vec![0.0; n];
    let mut in_lung = vec![0.0; n];
    for y in 0..height {
        let py = y as f64 + 0.5;
        for x in 0..width {
            let px = x as f64 + 0.5;
            let mb = body.membership(px, py);
            let ml = lung_edges[0]
                .membership(px, py)
                .max(lung_edges[1].membership(px, py));
            let mut v = air + (body_level - air) * mb;
            v += (lung_level - v) * ml;
            values[y * width + x] = v;
            in_lung[y * width + x] = ml;
        }
    }

    // Vessels: stamp discs along each curve, then blend inside the lungs only.
    let mut weight = vec![0.0f64; n];
    let mut touched = Vec::new();
    for vessel in &anatomy.vessels {
        let mut jitter = || (0.7 * rng.normal(), 0.7 * rng.normal());
        let j = [jitter(), jitter(), jitter()];
        let pts = [vessel.p0, vessel.p1, vessel.p2];
        let p: Vec<(f64, f64)> = pts
            .iter()
            .zip(j)
            .map(|(p, d)| (p.0 * sx + d.0, p.1 * sy + d.1))
            .collect();
        let level = Palette::level(palette.vessel, vessel.level);
        let chord = ((p[2].0 - p[0].0).powi(2) + (p[2].1 - p[0].1).powi(2)).sqrt();
        let steps = (chord * 1.5 / 0.3).ceil().max(1.0) as usize;
        let reach = vessel.radius + 1.0;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
            let cx = a * p[0].0 + b * p[1].0 + c * p[2].0;
            let cy = a * p[0].1 + b * p[1].1 + c * p[2].1;
            let x0 = (cx - reach).floor().max(0.0) as usize;
            let y0 = (cy - reach).floor().max(0.0) as usize;
            let x1 = ((cx + reach).ceil().max(0.0) as usize).min(width);
            let y1 = ((cy + reach).ceil().max(0.0) as usize).min(height);
            for y in y0..y1 {
                for x in x0..x1 {
                    let d = ((x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2)).sqrt();
                    let w = (vessel.radius + 0.5 - d).clamp(0.0, 1.0);
                    if w > 0.0 {
                        let idx = y * width + x;
                        if weight[idx] == 0.0 {
                            touched.push(idx);
                        }
                        weight[idx] = f64::max(weight[idx], w);
                    }
                }
            }
        }
        for idx in touched.drain(..) {
            let w = weight[idx] * in_lung[idx];
            values[idx] += (level - values[idx]) * w;
            weight[idx] = 0.0;
        }
    }

    // The nodule: a soft blob, f = exp(-ln2 · s³), so f = 1/2 exactly on the contour s = 1.
    let mut truth = vec![false; n];
    let r = nodule.radius(z);
    if r > 0.0 {
        let lung = lungs[nodule.lung];
        // Keep the centre far enough inside the lung for most of the nodule to be in it.
        let room = (1.0 - (nodule.diameter / 2.0 + 2.0) / lung.ax.min(lung.ay)).max(0.15);
        let (mut cx, mut cy) = lung.point(nodule.q * room, nodule.angle);
        let dz = z as f64 - (nodule.slices as f64 - 1.0) / 2.0;
        cx += nodule.drift.0 * dz;
        cy += nodule.drift.1 * dz;
        let peak = Palette::level(palette.nodule, nodule.peak_level);
        let (so, co) = nodule.orientation.sin_cos();
        let reach = 2.2 * r * (1.0 + nodule.elongation.abs() + nodule.lobulation) + 1.0;
        let x0 = (cx - reach).floor().max(0.0) as usize;
        let y0 = (cy - reach).floor().max(0.0) as usize;
        let x1 = ((cx + reach).ceil().max(0.0) as usize).min(width);
        let y1 = ((cy + reach).ceil().max(0.0) as usize).min(height);
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                let u = (dx * co + dy * so) / (1.0 + nodule.elongation);
                let v = (-dx * so + dy * co) / (1.0 - nodule.elongation);
                let rho = (u * u + v * v).sqrt();
                let phi = v.atan2(u);
                let r_eff =
                    r * (1.0 + nodule.lobulation * (nodule.lobes * phi + nodule.lobe_phase).cos());
                let s = rho / r_eff;
                let f = (-LN_2 * s.powi(3)).exp();
                let idx = y * width + x;
                values[idx] += (peak - values[idx]) * f;
                truth[idx] = s <= 1.0;
            }
        }
    }

    for v in &mut values {
        *v = (*v + palette.noise_sigma * rng.normal()).clamp(palette.clamp.0, palette.clamp.1);
    }
    Rendered { values, truth }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(p: Palette) -> Palette {
        Palette {
            noise_sigma: 0.0,
            ..p
        }
    }

    fn sample() -> (Anatomy, Nodule) {
        let mut rng = SplitMix64::new(11);
        let anatomy = Anatomy::draw(&mut rng);
        let mut nodule = Nodule::draw(&mut rng);
        nodule.slices = 5;
        nodule.diameter = 12.0;
        (anatomy, nodule)
    }

    /// The middle slice (z = 2) of the sample nodule, noise-free, at `size` with `palette`.
    fn render_middle(
        anatomy: &Anatomy,
        nodule: &Nodule,
        size: (usize, usize),
        palette: Palette,
    ) -> Rendered {
        render(
            anatomy,
            nodule,
            2,
            size,
            &quiet(palette),
            &mut SplitMix64::new(1),
        )
    }

    #[test]
    fn radius_grows_then_shrinks() {
        let (_, n) = sample();
        let r: Vec<f64> = (0..5).map(|z| n.radius(z)).collect();
        assert!(r[0] < r[1] && r[1] < r[2] && r[2] > r[3] && r[3] > r[4]);
        assert!((r[0] - r[4]).abs() < 1e-9);
        assert!(r[2] <= 6.0 + 1e-9);
    }

    #[test]
    fn regions_have_their_palette_levels() {
        let (anatomy, nodule) = sample();
        let img = render_middle(&anatomy, &nodule, (128, 128), GRAY_PALETTE);
        // Corner: air. Centre column between lungs: body. Lung centres: lung, vessel or nodule.
        assert!((0.0..=20.0).contains(&img.values[0]));
        let body = anatomy.body;
        let mid = (body.cy as usize) * 128 + body.cx as usize;
        assert!(
            (170.0..=200.0).contains(&img.values[mid]),
            "{}",
            img.values[mid]
        );
        let area = img.truth.iter().filter(|&&t| t).count() as f64;
        // A 12 px disc (elongated, lobulated) is about 113 px².
        assert!((60.0..=180.0).contains(&area), "{area}");
        for (v, &t) in img.values.iter().zip(&img.truth) {
            if t {
                // At least half-way from the lung level (≤ 60) to the peak (≥ 150), at most the peak.
                assert!((90.0..=220.0).contains(v), "{v}");
            }
        }
    }

    #[test]
    fn hounsfield_palette_gives_documented_levels() {
        let (anatomy, nodule) = sample();
        let img = render_middle(&anatomy, &nodule, (160, 144), HU_PALETTE);
        assert_eq!(img.values.len(), 160 * 144);
        assert!((-1010.0..=-990.0).contains(&img.values[0]));
        let max = img
            .values
            .iter()
            .zip(&img.truth)
            .filter(|(_, &t)| t)
            .map(|(v, _)| *v)
            .fold(f64::MIN, f64::max);
        // The pixel nearest the centre is within a few HU of the peak (0 to 100).
        assert!((-30.0..=100.0).contains(&max), "{max}");
    }
}
