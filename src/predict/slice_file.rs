//! One input slice of `predict` to intensities in [0, 1]: an 8- or 16-bit PNG (the `prepare`
//! rules), a JPEG (8-bit, as the slice tree's PNGs), or a DICOM CT slice (true HU through the
//! lung window, with the reader `prepare --source tcia` uses). Every file is read under the
//! `--max-pixels` caps.

use crate::error::{Error, Result};
use crate::pixels::decode::PngScratch;
use crate::pixels::dicom::{has_dicom_magic, read_header, read_hu, DicomHeader};
use crate::pixels::file_bytes::read_regular_file;
use crate::pixels::intensity::{IntensityLut, IntensityRules};
use crate::pixels::limits::{max_file_bytes, too_large_message, too_many_pixels};
use crate::pixels::samples::GraySamples;
use std::io::Read;
use std::path::Path;

/// What kind of slice file an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceKind {
    /// `.png`.
    Png,
    /// `.jpg` / `.jpeg`.
    Jpeg,
    /// `.dcm`, or a file without an extension that starts like DICOM.
    Dicom,
}

impl SliceKind {
    /// The kind of the file at `path` by its extension; a file without one is sniffed for the
    /// DICOM magic (the first 132 bytes). `None`: not a slice file.
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("png") => Some(Self::Png),
            Some("jpg" | "jpeg") => Some(Self::Jpeg),
            Some("dcm" | "dicom") => Some(Self::Dicom),
            None if starts_like_dicom(path) => Some(Self::Dicom),
            _ => None,
        }
    }
}

fn starts_like_dicom(path: &Path) -> bool {
    let Ok(file) = crate::pixels::file_bytes::open_nonblocking(path) else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = Vec::with_capacity(132);
    file.take(132).read_to_end(&mut head).is_ok() && has_dicom_magic(&head)
}

/// The intensity rules for each kind: the table for PNG and JPEG samples, the rules for HU.
pub struct Intensities {
    /// Lookup for 8- and 16-bit samples.
    pub lut: IntensityLut,
    /// The lung window for HU.
    pub rules: IntensityRules,
}

/// A decoded input slice.
pub struct Slice {
    /// Intensities in [0, 1], row-major.
    pub image: Vec<f32>,
    /// (height, width).
    pub size: (usize, usize),
    /// The DICOM header, for DICOM inputs.
    pub dicom: Option<DicomHeader>,
}

/// Reads the slice at `path` of `kind`.
pub fn read_slice(
    path: &Path,
    kind: SliceKind,
    intensities: &Intensities,
    max_pixels: u64,
) -> Result<Slice> {
    match kind {
        SliceKind::Dicom => {
            let (header, hu) =
                read_hu(path, max_pixels).map_err(|e| Error::input(path, e.to_string()))?;
            Ok(Slice {
                image: hu.iter().map(|&v| intensities.rules.map_hu(v)).collect(),
                size: (header.rows, header.columns),
                dicom: Some(header),
            })
        }
        SliceKind::Png | SliceKind::Jpeg => {
            let bytes = read_regular_file(path, max_file_bytes(max_pixels))
                .map_err(|e| Error::io(path, e))?;
            let (image, size) = if kind == SliceKind::Png {
                let mut png = PngScratch::new(max_pixels);
                let plane = png
                    .decode(&bytes)
                    .map_err(|f| Error::input(path, f.message()))?;
                (
                    intensities.lut.map(plane.samples),
                    (plane.height, plane.width),
                )
            } else {
                let gray = decode_jpeg(&bytes, max_pixels).map_err(|m| Error::input(path, m))?;
                let size = (gray.height() as usize, gray.width() as usize);
                (intensities.lut.map(GraySamples::Eight(gray.as_raw())), size)
            };
            Ok(Slice {
                image,
                size,
                dicom: None,
            })
        }
    }
}

/// A JPEG as 8-bit gray; its declared size is checked against `max_pixels` before decoding.
fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> std::result::Result<image::GrayImage, String> {
    let reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Jpeg);
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("not a readable JPEG: {e}"))?;
    if too_many_pixels(u64::from(w), u64::from(h), max_pixels) {
        return Err(too_large_message(u64::from(w), u64::from(h), max_pixels));
    }
    image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
        .map(|img| img.into_luma8())
        .map_err(|e| format!("not a readable JPEG: {e}"))
}

/// The name outputs are made from: a DICOM slice's SOP instance UID (so that the masks of a
/// series are named by the slices they belong to), else the file stem.
pub fn output_stem(path: &Path, kind: SliceKind, max_pixels: u64) -> String {
    let file_stem = || {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "input".into())
    };
    match kind {
        SliceKind::Dicom => read_header(path, max_pixels)
            .ok()
            .map(|h| h.sop_uid)
            .filter(|u| !u.is_empty() && !u.contains(['/', '\\']))
            .unwrap_or_else(file_stem),
        _ => file_stem(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_extension_and_extensionless_dicom_is_sniffed() {
        let dir = tempfile::tempdir().unwrap();
        let ct = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/CT_small.dcm");
        let bare = dir.path().join("000001");
        std::fs::copy(&ct, &bare).unwrap();
        std::fs::write(dir.path().join("notes"), b"hello").unwrap();
        assert_eq!(SliceKind::of(Path::new("a.PNG")), Some(SliceKind::Png));
        assert_eq!(SliceKind::of(Path::new("a.jpeg")), Some(SliceKind::Jpeg));
        assert_eq!(SliceKind::of(Path::new("a.dcm")), Some(SliceKind::Dicom));
        assert_eq!(SliceKind::of(&bare), Some(SliceKind::Dicom));
        assert_eq!(SliceKind::of(&dir.path().join("notes")), None);
        assert_eq!(SliceKind::of(Path::new("a.txt")), None);
        assert_eq!(
            output_stem(&bare, SliceKind::Dicom, 1 << 24),
            "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
        );
    }
}
