//! Maps stored pixel values to [0,1] intensities, and documents why the notebook's formula is
//! wrong for 8-bit PNGs.

use crate::pixels::samples::GraySamples;
use serde::{Deserialize, Serialize};

/// How intensities are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WindowMode {
    /// 8-bit PNGs are already display-windowed: v/255. 16-bit PNGs hold HU + offset: the lung
    /// window is applied to HU.
    Auto,
    /// The notebook's formula applied to the decoded 8-bit value as if it were HU:
    /// clip(v, c − w//2, c + w//2) then rescale. On 0..255 input that squeezes every pixel into
    /// [0.9, 1.0]. 16-bit input is first reduced to 8 bits (v >> 8), as `cv2.IMREAD_GRAYSCALE`
    /// does.
    SeedCompat,
}

/// The resolved intensity rules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntensityRules {
    /// Which mapping.
    pub mode: WindowMode,
    /// Lung window centre in HU (−600).
    pub center: i32,
    /// Lung window width in HU (1500).
    pub width: i32,
    /// Offset stored in 16-bit PNGs: HU = value − offset (1024).
    pub hu_offset: i32,
}

impl IntensityRules {
    /// The window's lower and upper HU bounds, with the notebook's integer halving.
    fn bounds(&self) -> (f32, f32) {
        let half = self.width / 2;
        ((self.center - half) as f32, (self.center + half) as f32)
    }

    fn window(&self, hu: f32) -> f32 {
        let (lo, hi) = self.bounds();
        (hu.clamp(lo, hi) - lo) / (hi - lo)
    }

    /// Maps a Hounsfield unit from a DICOM slice to [0,1]: the lung window in both modes (on true
    /// HU the notebook's formula is the right one).
    pub fn map_hu(&self, hu: f32) -> f32 {
        self.window(hu)
    }

    /// Maps one stored sample of a `bits`-deep PNG to [0,1].
    pub fn map(&self, sample: u16, bits: u8) -> f32 {
        match (self.mode, bits) {
            (WindowMode::Auto, 16) => self.window(f32::from(sample) - self.hu_offset as f32),
            (WindowMode::Auto, _) => f32::from(sample) / 255.0,
            (WindowMode::SeedCompat, 16) => self.window(f32::from(sample >> 8)),
            (WindowMode::SeedCompat, _) => self.window(f32::from(sample)),
        }
    }
}

/// [`IntensityRules::map`] tabulated for every 8-bit and 16-bit sample, so that mapping a slice
/// is one lookup per pixel (built once per run: 257 KiB).
#[derive(Debug, Clone)]
pub struct IntensityLut {
    eight: Box<[f32; 256]>,
    sixteen: Box<[f32; 65536]>,
}

impl IntensityLut {
    /// Tabulates `rules`.
    pub fn new(rules: &IntensityRules) -> Self {
        let mut eight = Box::new([0f32; 256]);
        for (v, slot) in (0..=255u16).zip(eight.iter_mut()) {
            *slot = rules.map(v, 8);
        }
        let mut sixteen: Box<[f32; 65536]> = vec![0f32; 65536]
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("a Vec of 65536 values"));
        for (v, slot) in (0..=u16::MAX).zip(sixteen.iter_mut()) {
            *slot = rules.map(v, 16);
        }
        Self { eight, sixteen }
    }

    /// The mapped intensities of `samples`. The tables cover every value of their sample type,
    /// so the lookups need no bounds checks.
    pub fn map(&self, samples: GraySamples<'_>) -> Vec<f32> {
        match samples {
            GraySamples::Eight(v) => v.iter().map(|&s| self.eight[usize::from(s)]).collect(),
            GraySamples::Sixteen(v) => v.iter().map(|&s| self.sixteen[usize::from(s)]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(mode: WindowMode) -> IntensityRules {
        IntensityRules {
            mode,
            center: -600,
            width: 1500,
            hu_offset: 1024,
        }
    }

    #[test]
    fn eight_bit_auto_is_v_over_255() {
        let r = rules(WindowMode::Auto);
        assert_eq!(r.map(0, 8), 0.0);
        assert_eq!(r.map(255, 8), 1.0);
        assert!((r.map(51, 8) - 0.2).abs() < 1e-7);
    }

    #[test]
    fn sixteen_bit_auto_applies_the_lung_window_to_hu() {
        // Window [-1350, 150]. Stored 1024 → 0 HU → (0 + 1350)/1500 = 0.9.
        // Stored 24 → −1000 HU → 350/1500 = 0.233333. Stored 0 → −1024 → 326/1500 = 0.217333.
        // Stored 2000 → 976 HU → clipped to 150 → 1.0.
        let r = rules(WindowMode::Auto);
        assert!((r.map(1024, 16) - 0.9).abs() < 1e-6);
        assert!((r.map(24, 16) - 0.233_333_33).abs() < 1e-6);
        assert!((r.map(0, 16) - 0.217_333_33).abs() < 1e-6);
        assert_eq!(r.map(2000, 16), 1.0);
    }

    #[test]
    fn seed_compat_reproduces_the_notebook_squeeze() {
        // numpy: ct = np.clip(v, -1350, 150); (ct + 1350) / 1500
        //   v=0 → 0.9, v=150 → 1.0, v=255 → 1.0, v=75 → 0.95
        let r = rules(WindowMode::SeedCompat);
        assert!((r.map(0, 8) - 0.9).abs() < 1e-6);
        assert!((r.map(75, 8) - 0.95).abs() < 1e-6);
        assert_eq!(r.map(150, 8), 1.0);
        assert_eq!(r.map(255, 8), 1.0);
        // 16-bit: IMREAD_GRAYSCALE keeps the high byte: 1024 >> 8 = 4 → (4 + 1350)/1500.
        assert!((r.map(1024, 16) - 1354.0 / 1500.0).abs() < 1e-6);
    }

    #[test]
    fn lut_equals_map_for_every_sample_and_mode() {
        for mode in [WindowMode::Auto, WindowMode::SeedCompat] {
            let r = rules(mode);
            let lut = IntensityLut::new(&r);
            let all16: Vec<u16> = (0..=u16::MAX).collect();
            let out = lut.map(GraySamples::Sixteen(&all16));
            assert_eq!(out.len(), all16.len());
            for (got, &v) in out.iter().zip(&all16) {
                assert_eq!(got.to_bits(), r.map(v, 16).to_bits(), "{mode:?} 16-bit {v}");
            }
            let all8: Vec<u8> = (0..=255).collect();
            let out = lut.map(GraySamples::Eight(&all8));
            assert_eq!(out.len(), 256);
            for (got, &v) in out.iter().zip(&all8) {
                assert_eq!(
                    got.to_bits(),
                    r.map(u16::from(v), 8).to_bits(),
                    "{mode:?} 8-bit {v}"
                );
            }
        }
    }
}
