//! Synthetic LIDC-IDRI-slices trees, so the pipeline can be built, tested and timed without the
//! real (licensed, very large) data set.
//!
//! [`run`] writes `OUT/LIDC-IDRI-0001/nodule-1/images/slice-0.png` with rater masks in
//! `OUT/LIDC-IDRI-0001/nodule-1/mask-0/slice-0.png` .. `mask-3/`, the layout of the real
//! LIDC-IDRI-slices tree, plus a hidden `OUT/.lungseg-synth` marker (the tree walker skips hidden
//! files). Everything is a pure function of the seed: each patient draws from
//! `SplitMix64::derive(seed, patient_id)`, each nodule and slice from its own derived stream, so the
//! tree is byte-identical for any thread count, and adding patients leaves earlier ones unchanged.
//! The `odd_sizes` and `hu16` options only change the nodules they pick; the others stay the same.
//!
//! Slices are 128 × 128 8-bit grayscale by default (levels in [`GRAY_PALETTE`]). With `hu16`,
//! about a quarter of the nodules are 16-bit PNGs holding HU + [`HU_OFFSET`] (levels in
//! [`HU_PALETTE`]: air about −1000 HU, lung about −850, soft tissue 20 to 60, nodule peak 0 to
//! 100, noise σ 12). With `odd_sizes`, about a fifth of the nodules have another size from
//! [`ODD_SIZES`]. Masks are always 8-bit 0/255 and the size of their image.

mod phantom;
mod raters;
mod tcia;
mod write;

pub use phantom::{Palette, GRAY_PALETTE, HU_PALETTE};
pub use raters::{P_END_UNMARKED, P_FILE_ABSENT, P_RATER_ABSENT, RATERS};

use crate::rng::SplitMix64;
use rayon::prelude::*;
use std::path::PathBuf;

/// Name of the marker file that identifies a folder as a synthetic tree (safe to overwrite).
pub const MARKER: &str = ".lungseg-synth";
/// Offset added to Hounsfield units in 16-bit slices: stored = HU + 1024.
pub const HU_OFFSET: i32 = 1024;
/// Largest stored 16-bit value (HU 3071).
pub const HU_STORED_MAX: u16 = 4095;
/// Side of default slices.
pub const DEFAULT_SIDE: usize = 128;
/// Sizes (width, height) of odd-sized nodules: four smaller than 128, four larger.
pub const ODD_SIZES: [(usize, usize); 8] = [
    (96, 112),
    (112, 96),
    (96, 96),
    (120, 104),
    (160, 144),
    (144, 160),
    (192, 160),
    (160, 160),
];
/// Share of nodules given an odd size when `odd_sizes` is on.
pub const P_ODD_SIZE: f64 = 0.2;
/// Share of nodules written as 16-bit HU when `hu16` is on.
pub const P_HU16: f64 = 0.25;

/// What to generate and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Root of the tree; must be missing, empty, or a previous synthetic tree.
    pub out: PathBuf,
    /// Number of patients (`LIDC-IDRI-0001` ..).
    pub patients: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Give some nodules slice sizes other than 128 × 128.
    pub odd_sizes: bool,
    /// Write some nodules as 16-bit PNGs holding HU + 1024.
    pub hu16: bool,
    /// Which layout to write.
    pub format: SynthFormat,
    /// TCIA format: slices per CT series.
    pub tcia_slices: usize,
    /// TCIA format: rows and columns of every slice.
    pub tcia_size: usize,
}

/// The layout `synth` writes.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum SynthFormat {
    /// The Kaggle LIDC-IDRI-slices tree of PNG slices and rater masks.
    #[default]
    Slices,
    /// The TCIA download: DICOM CT series with the readers' XML.
    Tcia,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            out: PathBuf::from("synth"),
            patients: 12,
            seed: 7,
            odd_sizes: false,
            hu16: false,
            format: SynthFormat::Slices,
            tcia_slices: 60,
            tcia_size: 512,
        }
    }
}

/// Counts of what was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SynthReport {
    /// Patient folders.
    pub patients: usize,
    /// Nodule folders.
    pub nodules: usize,
    /// Image files.
    pub slices: usize,
    /// Mask files.
    pub mask_files: usize,
    /// Image files whose size is not 128 × 128.
    pub odd_size_slices: usize,
    /// Image files stored as 16-bit HU.
    pub hu16_slices: usize,
    /// TCIA format: CT series.
    pub series: usize,
    /// TCIA format: readers' outlines (counted on each nodule's middle slice).
    pub outlines: usize,
}

impl SynthReport {
    fn add(&mut self, o: &SynthReport) {
        self.patients += o.patients;
        self.nodules += o.nodules;
        self.slices += o.slices;
        self.mask_files += o.mask_files;
        self.odd_size_slices += o.odd_size_slices;
        self.hu16_slices += o.hu16_slices;
        self.series += o.series;
        self.outlines += o.outlines;
    }
}

/// Why a tree could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A file-system operation failed.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Encoding a PNG failed.
    #[error("{path}: {cause}")]
    Png {
        path: PathBuf,
        cause: image::ImageError,
    },
    /// `out` is not a directory, or holds something other than a previous synthetic tree.
    #[error("{path}: refusing to write a synthetic tree here: {reason}")]
    NotSynthTree { path: PathBuf, reason: String },
    /// A setting out of range.
    #[error("{0}")]
    Invalid(String),
}

impl SynthError {
    /// The process exit code: 2 when `out` is unusable, 1 when writing failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            SynthError::NotSynthTree { .. } | SynthError::Invalid(_) => 2,
            SynthError::Io { .. } | SynthError::Png { .. } => 1,
        }
    }
}

/// The folder name of patient number `index` (from 1).
pub fn patient_id(index: usize) -> String {
    format!("LIDC-IDRI-{index:04}")
}

/// Writes the tree described by `cfg` and returns what it wrote.
pub fn run(cfg: &SynthConfig) -> Result<SynthReport, SynthError> {
    if cfg.format == SynthFormat::Tcia
        && (!(4..=2000).contains(&cfg.tcia_slices) || !(32..=4096).contains(&cfg.tcia_size))
    {
        return Err(SynthError::Invalid(format!(
            "--slices must be 4..=2000 and --size 32..=4096 for --format tcia; got {} and {}",
            cfg.tcia_slices, cfg.tcia_size
        )));
    }
    write::prepare_out(&cfg.out)?;
    write::write_marker(
        &cfg.out,
        &format!(
            "lungseg synthetic LIDC-IDRI tree; safe to overwrite with `lungseg synth`.\n\
             format = {:?}\nseed = {}\npatients = {}\nodd_sizes = {}\nhu16 = {}\n",
            cfg.format, cfg.seed, cfg.patients, cfg.odd_sizes, cfg.hu16
        ),
    )?;
    let results: Vec<Result<SynthReport, SynthError>> = (1..=cfg.patients)
        .into_par_iter()
        .map(|i| match cfg.format {
            SynthFormat::Slices => write_patient(cfg, i),
            SynthFormat::Tcia => tcia::write_patient(cfg, i),
        })
        .collect();
    let mut report = SynthReport::default();
    for r in results {
        report.add(&r?);
    }
    tracing::info!(
        out = %cfg.out.display(),
        patients = report.patients,
        nodules = report.nodules,
        slices = report.slices,
        mask_files = report.mask_files,
        "synthetic tree written"
    );
    Ok(report)
}

/// Writes one patient's folder.
fn write_patient(cfg: &SynthConfig, index: usize) -> Result<SynthReport, SynthError> {
    let pid = patient_id(index);
    let mut rng = SplitMix64::derive(cfg.seed, &pid);
    let anatomy = phantom::Anatomy::draw(&mut rng);
    let nodules = rng.range_inclusive(1, 3) as usize;
    let mut report = SynthReport {
        patients: 1,
        nodules,
        ..SynthReport::default()
    };
    for k in 1..=nodules {
        let nid = format!("nodule-{k}");
        let stream = format!("{pid}/{nid}");
        let mut nrng = SplitMix64::derive(cfg.seed, &stream);
        // Drawn whether or not the option is on, so options only change the nodules they pick.
        let odd = nrng.chance(P_ODD_SIZE);
        let odd_size = ODD_SIZES[nrng.below(ODD_SIZES.len())];
        let hu = nrng.chance(P_HU16) && cfg.hu16;
        let (width, height) = if odd && cfg.odd_sizes {
            odd_size
        } else {
            (DEFAULT_SIDE, DEFAULT_SIDE)
        };
        let nodule = phantom::Nodule::draw(&mut nrng);
        let plan = raters::RaterPlan::draw(&mut nrng, nodule.slices);
        let palette = if hu { &HU_PALETTE } else { &GRAY_PALETTE };

        let dir = cfg.out.join(&pid).join(&nid);
        let images = dir.join("images");
        write::create_dir(&images)?;
        let mut made = [false; RATERS];
        for z in 0..nodule.slices {
            let name = format!("slice-{z}.png");
            let mut srng = SplitMix64::derive(cfg.seed, &format!("{stream}/{name}"));
            let img = phantom::render(&anatomy, &nodule, z, (width, height), palette, &mut srng);
            let path = images.join(&name);
            if hu {
                let px: Vec<u16> = img
                    .values
                    .iter()
                    .map(|v| {
                        (v + f64::from(HU_OFFSET))
                            .round()
                            .clamp(0.0, HU_STORED_MAX.into()) as u16
                    })
                    .collect();
                write::write_l16(&path, &px, width, height)?;
                report.hu16_slices += 1;
            } else {
                let px: Vec<u8> = img
                    .values
                    .iter()
                    .map(|v| v.round().clamp(0.0, 255.0) as u8)
                    .collect();
                write::write_l8(&path, &px, width, height)?;
            }
            report.slices += 1;
            if (width, height) != (DEFAULT_SIDE, DEFAULT_SIDE) {
                report.odd_size_slices += 1;
            }
            for (r, mask) in plan.masks(z, &img.truth, width, height).iter().enumerate() {
                let raters::MaskFile::Mask(m) = mask else {
                    continue;
                };
                let mdir = dir.join(format!("mask-{r}"));
                if !made[r] {
                    write::create_dir(&mdir)?;
                    made[r] = true;
                }
                write::write_l8(&mdir.join(&name), m, width, height)?;
                report.mask_files += 1;
            }
        }
    }
    tracing::debug!(patient = %pid, nodules, slices = report.slices, "synthetic patient written");
    Ok(report)
}

#[cfg(test)]
mod tests;
