//! Turns one slice job into a `SliceRecord`: decode the image, map intensities, fuse the raters.

use super::decode::{DecodeFailure, GraySamples, GrayView, PngScratch};
use super::file_bytes::FileBytes;
use super::intensity::IntensityLut;
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
    /// Intensities in [0,1], row-major (the shards store them as little-endian f32 bytes).
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

/// Buffers reused from slice to slice on one worker, so that steady-state decoding allocates
/// only the record's own columns.
#[derive(Debug, Default)]
pub struct SliceScratch {
    png: PngScratch,
    file: FileBytes,
}

/// Reads and decodes one PNG, or says why it is unusable.
fn read_plane<'a>(
    path: &Path,
    file: &mut FileBytes,
    png: &'a mut PngScratch,
) -> Result<GrayView<'a>, (RejectReason, String)> {
    let io_error = |e: std::io::Error| (RejectReason::IoError, e.to_string());
    let mut handle = std::fs::File::open(path).map_err(io_error)?;
    file.read_first(&mut handle).map_err(io_error)?;
    // A gray PNG that the one-shot decoder accepts ends in a checked IEND chunk, so the first
    // read held the whole file and the end-of-file read can be skipped.
    if let Some((height, width)) = png.decode_plain_gray(file.bytes()) {
        return Ok(png.plain_gray_view(height, width));
    }
    file.read_rest(&mut handle).map_err(io_error)?;
    png.decode(file.bytes()).map_err(|f| match f {
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

/// Sets bit `rater` of `bits[i]` wherever the mask sample `i` is above zero.
fn set_rater_bit(bits: &mut [u8], mask: GraySamples<'_>, rater: usize) {
    fn mark<T: Copy + Default + PartialOrd>(bits: &mut [u8], mask: &[T], bit: u8) {
        for (b, &m) in bits.iter_mut().zip(mask) {
            *b |= if m > T::default() { bit } else { 0 };
        }
    }
    let bit = 1u8 << rater;
    match mask {
        GraySamples::Eight(v) => mark(bits, v, bit),
        GraySamples::Sixteen(v) => mark(bits, v, bit),
    }
}

/// Decodes and fuses one slice. Image problems reject the slice; mask problems reject only that
/// rater's file, and the slice is kept with the remaining raters.
pub fn process(job: &SliceJob, lut: &IntensityLut, scratch: &mut SliceScratch) -> SliceOutcome {
    let mut out = SliceOutcome {
        record: None,
        rejects: Vec::new(),
        colour_files: 0,
    };
    let SliceScratch { png, file } = scratch;
    let (height, width, bits, image) = match read_plane(&job.image, file, png) {
        Ok(plane) => {
            out.colour_files += usize::from(plane.was_colour);
            let image = lut.map(plane.samples);
            (plane.height, plane.width, plane.bits(), image)
        }
        Err((reason, detail)) => {
            out.rejects
                .push(Reject::new(&job.relative, job.place(), reason, detail));
            return out;
        }
    };
    let mut rater_bits = vec![0u8; height * width];
    let mut raters_present = 0u8;
    for (k, mask_path) in job.masks.iter().enumerate().take(RATERS) {
        let Some(mask_path) = mask_path else { continue };
        let mask = match read_plane(mask_path, file, png) {
            Ok(mask) => mask,
            Err((reason, detail)) => {
                out.rejects.push(Reject::new(
                    mask_relative(job, k),
                    job.place(),
                    reason,
                    detail,
                ));
                continue;
            }
        };
        out.colour_files += usize::from(mask.was_colour);
        if (mask.height, mask.width) != (height, width) {
            out.rejects.push(Reject::new(
                mask_relative(job, k),
                job.place(),
                RejectReason::MaskSizeMismatch,
                format!(
                    "mask is {}x{} but its image is {}x{}; rater {k} left out of this slice",
                    mask.width, mask.height, width, height
                ),
            ));
            continue;
        }
        raters_present |= 1 << k;
        set_rater_bit(&mut rater_bits, mask.samples, k);
    }
    let mask: Vec<u8> = rater_bits.iter().map(|&b| u8::from(b != 0)).collect();
    // Wrapping adds (a slice holds far fewer than 2^64 pixels) let the count vectorize; a
    // checked sum compiles to one add and overflow branch per pixel, ~5% of prepare's time.
    let mask_pixels = mask.iter().fold(0u64, |n, &m| n.wrapping_add(u64::from(m)));
    out.record = Some(SliceRecord {
        slice_id: job.slice_id(),
        patient_id: job.patient_id.clone(),
        nodule_id: job.nodule_id.clone(),
        slice_name: job.slice_name.clone(),
        slice_index: job.slice_index,
        height,
        width,
        source_bits: bits,
        image,
        mask,
        rater_bits,
        raters_present,
        mask_pixels,
    });
    out
}
