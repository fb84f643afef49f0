//! Turns one slice job into a `SliceRecord`: decode the image, map intensities, fuse the raters.

use crate::data::fusion::RATERS;
use crate::data::shards::SliceRecord;
use crate::pixels::decode::{DecodeFailure, PngScratch};
use crate::pixels::file_bytes::FileBytes;
use crate::pixels::intensity::IntensityLut;
use crate::pixels::limits::{max_file_bytes, DEFAULT_MAX_PIXELS};
use crate::pixels::samples::{GraySamples, GrayView};
use crate::prepare::nodule_dir::NoduleDir;
use crate::prepare::reject::{Reject, RejectReason};
use crate::prepare::walk::SliceJob;
use std::path::Path;

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
#[derive(Debug)]
pub struct SliceScratch {
    png: PngScratch,
    file: FileBytes,
    dir: NoduleDir,
    blank: BlankMask,
    /// Files longer than this are not read to the end (see [`max_file_bytes`]).
    max_bytes: u64,
}

impl SliceScratch {
    /// Empty buffers, refusing images over `max_pixels` and files over what such an image can
    /// take.
    pub fn new(max_pixels: u64) -> Self {
        Self {
            png: PngScratch::new(max_pixels),
            file: FileBytes::default(),
            dir: NoduleDir::default(),
            blank: BlankMask::default(),
            max_bytes: max_file_bytes(max_pixels),
        }
    }
}

impl Default for SliceScratch {
    /// The default cap, [`DEFAULT_MAX_PIXELS`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PIXELS)
    }
}

/// The last mask file on this worker in which no pixel was marked, kept byte for byte. Raters
/// leave many slices unmarked, and the blank masks of one size written by one tool are the same
/// file again and again (a sixth of the synthetic tree's mask files): a mask whose bytes equal
/// it is known to be blank without inflating it.
#[derive(Debug, Default)]
struct BlankMask {
    /// The whole file, as the one-shot decoder accepted it.
    bytes: Vec<u8>,
    /// Its (height, width); (0, 0) while nothing is remembered.
    size: (usize, usize),
}

impl BlankMask {
    /// The (height, width) of a blank mask whose file is exactly `bytes`.
    fn size_if_same(&self, bytes: &[u8]) -> Option<(usize, usize)> {
        (self.size != (0, 0) && self.bytes == bytes).then_some(self.size)
    }

    fn remember(&mut self, bytes: &[u8], size: (usize, usize)) {
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.size = size;
    }
}

/// Why a file could not be used: the reject reason and its detail.
type FileFailure = (RejectReason, String);

/// A failed open or read of an input file (one over the size cap is `too_large`).
fn io_failure(e: std::io::Error) -> FileFailure {
    let reason = match e.kind() {
        std::io::ErrorKind::FileTooLarge => RejectReason::TooLarge,
        _ => RejectReason::IoError,
    };
    (reason, e.to_string())
}

/// Opens `path` and reads it with one call (see [`FileBytes::read_first`]).
fn open_and_read(
    path: &Path,
    dir: &mut NoduleDir,
    file: &mut FileBytes,
) -> Result<std::fs::File, FileFailure> {
    let mut handle = dir.open(path).map_err(io_failure)?;
    file.read_first(&mut handle).map_err(io_failure)?;
    Ok(handle)
}

/// Decodes the file `open_and_read` started, or says why it is unusable. The flag is true
/// when the one-shot decoder took it, and the first read then held the whole file.
fn decode_plane<'a>(
    handle: &mut std::fs::File,
    file: &mut FileBytes,
    png: &'a mut PngScratch,
    max_bytes: u64,
) -> Result<(GrayView<'a>, bool), FileFailure> {
    // A gray PNG that the one-shot decoder accepts ends in a checked IEND chunk, so the first
    // read held the whole file and the end-of-file read can be skipped.
    if let Some((height, width)) = png.decode_plain_gray(file.bytes()) {
        return Ok((png.plain_gray_view(height, width), true));
    }
    file.read_rest(handle, max_bytes).map_err(io_failure)?;
    let plane = png.decode(file.bytes()).map_err(|f| match f {
        DecodeFailure::Corrupt(m) => (RejectReason::PngDecode, m),
        DecodeFailure::Unsupported(m) => (RejectReason::UnsupportedPixelFormat, m),
        DecodeFailure::Empty => (RejectReason::EmptyImage, f.message()),
        DecodeFailure::TooLarge { .. } => (RejectReason::TooLarge, f.message()),
    })?;
    Ok((plane, false))
}

/// Reads and decodes one PNG, or says why it is unusable.
fn read_plane<'a>(path: &Path, scratch: &'a mut SliceScratch) -> Result<GrayView<'a>, FileFailure> {
    let SliceScratch {
        png,
        file,
        dir,
        max_bytes,
        ..
    } = scratch;
    let mut handle = open_and_read(path, dir, file)?;
    decode_plane(&mut handle, file, png, *max_bytes).map(|(plane, _)| plane)
}

/// One rater's mask as fusion needs it.
struct RaterMask {
    /// (height, width).
    size: (usize, usize),
    was_colour: bool,
}

/// Reads rater `rater`'s mask and sets its bit in `bits` wherever it marks a pixel (once its
/// size is known to match `size`); a blank file seen before is recognised by its bytes alone.
fn fuse_mask(
    path: &Path,
    rater: usize,
    size: (usize, usize),
    bits: &mut [u8],
    scratch: &mut SliceScratch,
) -> Result<RaterMask, FileFailure> {
    let SliceScratch {
        png,
        file,
        dir,
        blank,
        max_bytes,
    } = scratch;
    let mut handle = open_and_read(path, dir, file)?;
    if let Some(blank_size) = blank.size_if_same(file.bytes()) {
        return Ok(RaterMask {
            size: blank_size,
            was_colour: false,
        });
    }
    let (mask, one_shot) = decode_plane(&mut handle, file, png, *max_bytes)?;
    let mask_size = (mask.height, mask.width);
    if mask_size == size && !set_rater_bit(bits, mask.samples, rater) && one_shot {
        blank.remember(file.bytes(), mask_size);
    }
    Ok(RaterMask {
        size: mask_size,
        was_colour: mask.was_colour,
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

/// Sets bit `rater` of `bits[i]` wherever the mask sample `i` is above zero, and says whether
/// any was.
fn set_rater_bit(bits: &mut [u8], mask: GraySamples<'_>, rater: usize) -> bool {
    fn mark<T: Copy + Default + PartialOrd>(bits: &mut [u8], mask: &[T], bit: u8) -> bool {
        let mut any = 0u8;
        for (b, &m) in bits.iter_mut().zip(mask) {
            let marked = if m > T::default() { bit } else { 0 };
            *b |= marked;
            any |= marked;
        }
        any != 0
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
    let (height, width, bits, image) = match read_plane(&job.image, scratch) {
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
        let mask = match fuse_mask(mask_path, k, (height, width), &mut rater_bits, scratch) {
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
        if mask.size != (height, width) {
            out.rejects.push(Reject::new(
                mask_relative(job, k),
                job.place(),
                RejectReason::MaskSizeMismatch,
                format!(
                    "mask is {}x{} but its image is {}x{}; rater {k} left out of this slice",
                    mask.size.1, mask.size.0, width, height
                ),
            ));
            continue;
        }
        raters_present |= 1 << k;
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
        scan: None,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::intensity::{IntensityRules, WindowMode};
    use crate::prepare::walk::walk;

    fn write_gray(path: &Path, w: u32, h: u32, pixels: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_raw(w, h, pixels.to_vec())
            .unwrap()
            .save(path)
            .unwrap();
    }

    /// Blank masks are recognised by their bytes once one has been decoded: the outcomes of a
    /// worker that reuses one scratch (and so the remembered blank file) must equal those of
    /// fresh scratches, including a blank mask of the wrong size and marks after blanks.
    #[test]
    fn remembered_blank_masks_give_the_same_outcomes_as_decoding_them() {
        let root = tempfile::tempdir().unwrap();
        let nodule = root.path().join("p1/n1");
        let blank = [0u8; 64];
        let mut marked = [0u8; 64];
        marked[9] = 255;
        for (name, size) in [("1.png", 8), ("2.png", 8), ("3.png", 6), ("4.png", 8)] {
            let image: Vec<u8> = (0..size * size).map(|i| (i * 7) as u8).collect();
            write_gray(&nodule.join("images").join(name), size, size, &image);
        }
        for (name, rater, pixels) in [
            ("1.png", 0, &blank),
            ("1.png", 1, &blank),
            ("1.png", 2, &marked),
            ("2.png", 0, &marked),
            ("2.png", 1, &blank),
            ("3.png", 0, &blank), // 8x8 blank for a 6x6 image: a size mismatch
            ("4.png", 3, &blank),
        ] {
            let path = nodule.join(format!("mask-{rater}")).join(name);
            write_gray(&path, 8, 8, pixels);
        }
        let tree = walk(root.path());
        assert_eq!(tree.jobs.len(), 4);
        let lut = IntensityLut::new(&IntensityRules {
            mode: WindowMode::Auto,
            center: -600,
            width: 1500,
            hu_offset: 1024,
        });
        let summary = |o: SliceOutcome| (o.record, o.rejects, o.colour_files);
        let mut shared = SliceScratch::default();
        for job in &tree.jobs {
            let reused = summary(process(job, &lut, &mut shared));
            let fresh = summary(process(job, &lut, &mut SliceScratch::default()));
            assert_eq!(reused, fresh, "{}", job.relative);
        }
        assert_eq!(shared.blank.size, (8, 8), "a blank mask was remembered");
        let third = process(&tree.jobs[2], &lut, &mut shared);
        assert_eq!(third.rejects.len(), 1);
        assert_eq!(third.rejects[0].reason, RejectReason::MaskSizeMismatch);
        let first = process(&tree.jobs[0], &lut, &mut shared).record.unwrap();
        assert_eq!((first.raters_present, first.mask_pixels), (0b111, 1));
        assert_eq!(first.rater_bits[9], 0b100);
    }
}
