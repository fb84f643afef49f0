//! Turns one slice job into a `SliceRecord`: decode the image, map intensities, fuse the raters.

use super::decode::{decode_png, DecodeFailure, GrayPlane};
use super::intensity::IntensityRules;
use super::reject::{Reject, RejectReason};
use super::walk::{SliceJob, RATERS};
use std::path::Path;

/// One kept slice, as stored in a shard row.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRecord {
    /// `patient/nodule/file-stem`.
    pub slice_id: String,
    /// Patient folder name.
    pub patient_id: String,
    /// Nodule folder name.
    pub nodule_id: String,
    /// Image file name.
    pub slice_name: String,
    /// Number in the file stem.
    pub slice_index: Option<i32>,
    /// Native height.
    pub height: usize,
    /// Native width.
    pub width: usize,
    /// 8 or 16.
    pub source_bits: u8,
    /// Intensities in [0,1], row-major.
    pub image: Vec<f32>,
    /// Union of the present raters: 1 where any marked the pixel.
    pub mask: Vec<u8>,
    /// Bit r set where rater r marked the pixel.
    pub rater_bits: Vec<u8>,
    /// Bit r set when rater r's mask was present and usable.
    pub raters_present: u8,
    /// Number of 1s in `mask`.
    pub mask_pixels: u64,
}

/// What happened to one slice job.
#[derive(Debug)]
pub struct SliceOutcome {
    /// The decoded slice, unless the image itself was unusable.
    pub record: Option<SliceRecord>,
    /// Rejected files (the image, or single rater masks).
    pub rejects: Vec<Reject>,
    /// How many of the files read had colour channels.
    pub colour_files: usize,
}

/// Reads and decodes one PNG, or says why it is unusable.
fn read_plane(path: &Path) -> Result<GrayPlane, (RejectReason, String)> {
    let bytes = std::fs::read(path).map_err(|e| (RejectReason::IoError, e.to_string()))?;
    decode_png(&bytes).map_err(|f| match f {
        DecodeFailure::Corrupt(m) => (RejectReason::PngDecode, m),
        DecodeFailure::Unsupported(m) => (RejectReason::UnsupportedPixelFormat, m),
        DecodeFailure::Empty => (RejectReason::EmptyImage, "zero width or height".into()),
    })
}

fn mask_relative(job: &SliceJob, rater: usize) -> String {
    let base = job
        .relative
        .rsplit_once(['/', '\\'])
        .and_then(|(images_dir, _)| images_dir.rsplit_once(['/', '\\']))
        .map(|(nodule_dir, _)| nodule_dir.to_string())
        .unwrap_or_default();
    format!("{base}/mask-{rater}/{}", job.slice_name)
}

/// Decodes and fuses one slice. Image problems reject the slice; mask problems reject only that
/// rater's file, and the slice is kept with the remaining raters.
pub fn process(job: &SliceJob, rules: &IntensityRules) -> SliceOutcome {
    let mut out = SliceOutcome {
        record: None,
        rejects: Vec::new(),
        colour_files: 0,
    };
    let plane = match read_plane(&job.image) {
        Ok(p) => p,
        Err((reason, detail)) => {
            out.rejects
                .push(Reject::new(&job.relative, job.place(), reason, detail));
            return out;
        }
    };
    out.colour_files += usize::from(plane.was_colour);
    let n = plane.height * plane.width;
    let mut rater_bits = vec![0u8; n];
    let mut raters_present = 0u8;
    for (k, mask_path) in job.masks.iter().enumerate().take(RATERS) {
        let Some(mask_path) = mask_path else { continue };
        let rel = mask_relative(job, k);
        let mask = match read_plane(mask_path) {
            Ok(m) => m,
            Err((reason, detail)) => {
                out.rejects
                    .push(Reject::new(rel, job.place(), reason, detail));
                continue;
            }
        };
        out.colour_files += usize::from(mask.was_colour);
        if (mask.height, mask.width) != (plane.height, plane.width) {
            out.rejects.push(Reject::new(
                rel,
                job.place(),
                RejectReason::MaskSizeMismatch,
                format!(
                    "mask is {}x{} but its image is {}x{}; rater {k} left out of this slice",
                    mask.width, mask.height, plane.width, plane.height
                ),
            ));
            continue;
        }
        raters_present |= 1 << k;
        for (bits, &v) in rater_bits.iter_mut().zip(&mask.samples) {
            if v > 0 {
                *bits |= 1 << k;
            }
        }
    }
    let mask: Vec<u8> = rater_bits.iter().map(|&b| u8::from(b != 0)).collect();
    let mask_pixels = mask.iter().map(|&m| u64::from(m)).sum();
    let image = plane
        .samples
        .iter()
        .map(|&s| rules.map(s, plane.bits))
        .collect();
    out.record = Some(SliceRecord {
        slice_id: job.slice_id(),
        patient_id: job.patient_id.clone(),
        nodule_id: job.nodule_id.clone(),
        slice_name: job.slice_name.clone(),
        slice_index: job.slice_index,
        height: plane.height,
        width: plane.width,
        source_bits: plane.bits,
        image,
        mask,
        rater_bits,
        raters_present,
        mask_pixels,
    });
    out
}
