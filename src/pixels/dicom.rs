//! DICOM CT slices to headers and Hounsfield units: a header-only first pass (to group and sort a
//! series before any pixel is decoded), then the pixels of the slices that are needed. Shared by
//! `prepare --source tcia` and `predict`. Only uncompressed little-endian files are read; anything
//! else is a [`DicomError`], which `prepare` records as a reject and `predict` as a skipped file.

use crate::pixels::dicom_walk::{walk, Walk, WalkError};
use crate::pixels::file_bytes::{open_nonblocking, read_regular_file};
use crate::pixels::limits::{max_file_bytes, too_large_message, too_many_pixels};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use std::io::Read;
use std::path::Path;

/// Implicit VR little endian.
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR little endian.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// The header pass reads this much of a file first; CT headers are a few KiB.
const HEADER_PREFIX: usize = 64 * 1024;
/// The 128-byte preamble and the `DICM` magic that open a DICOM file (part 10).
const PREAMBLE: usize = 128;

/// Why a file could not be read as a CT slice. The codes go to `rejects.parquet`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DicomError {
    /// Reading the file failed.
    #[error("{0}")]
    Io(String),
    /// No `DICM` magic after a 128-byte preamble: not a DICOM part-10 file, or one without file
    /// meta information.
    #[error("not a DICOM file with file meta information (no DICM magic at byte 128)")]
    NoFileMeta,
    /// The file is cut short or its data set does not parse.
    #[error("DICOM parse error: {0}")]
    Parse(String),
    /// A compressed or big-endian transfer syntax (JPEG 2000, JPEG, RLE, ...).
    #[error("transfer syntax {0} is not supported (only uncompressed little endian is read)")]
    TransferSyntax(String),
    /// A tag the slice cannot do without is missing or unreadable.
    #[error("missing or unreadable {0}")]
    MissingTag(&'static str),
    /// The header declares more pixels than `--max-pixels`.
    #[error("{0}")]
    TooLarge(String),
    /// Decoding the pixel data failed, or its size disagrees with the header.
    #[error("pixel data: {0}")]
    Pixels(String),
}

/// What the header pass keeps of one slice.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomHeader {
    /// `Modality` (0008,0060), trimmed; `CT` for the slices `prepare` uses.
    pub modality: String,
    /// `PatientID` (0010,0020), trimmed; empty when absent.
    pub patient_id: String,
    /// `StudyInstanceUID`, trimmed.
    pub study_uid: String,
    /// `SeriesInstanceUID`, trimmed.
    pub series_uid: String,
    /// `SOPInstanceUID`, trimmed.
    pub sop_uid: String,
    /// `InstanceNumber`; `None` when absent.
    pub instance_number: Option<i32>,
    /// z of `ImagePositionPatient` (mm).
    pub z: f64,
    /// `PixelSpacing` (row spacing, column spacing) in mm.
    pub pixel_spacing: (f64, f64),
    /// `SliceThickness` in mm; `None` when absent.
    pub slice_thickness: Option<f64>,
    /// `Rows`.
    pub rows: usize,
    /// `Columns`.
    pub columns: usize,
}

/// Reads the header of the DICOM file at `path` (not its pixels). Reads the first 64 KiB, and
/// the whole file (under the `max_pixels` cap) only when the pixel data does not start in them.
pub fn read_header(path: &Path, max_pixels: u64) -> Result<DicomHeader, DicomError> {
    let mut file = open_nonblocking(path).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(DicomError::Io("not a regular file; not read".into()));
    }
    let mut prefix = Vec::with_capacity(HEADER_PREFIX);
    (&mut file)
        .take(HEADER_PREFIX as u64)
        .read_to_end(&mut prefix)
        .map_err(io_error)?;
    let walked = check(&prefix, meta.len())?;
    let object = if walked.pixel_data_at.is_none() && meta.len() > prefix.len() as u64 {
        let whole = read_regular_file(path, max_file_bytes(max_pixels)).map_err(io_error)?;
        check(&whole, whole.len() as u64)?;
        parse(&whole, Some(tags::PIXEL_DATA))?
    } else {
        parse(&prefix, Some(tags::PIXEL_DATA))?
    };
    header_of(&object, max_pixels)
}

/// The slice's pixels in Hounsfield units (stored value × `RescaleSlope` + `RescaleIntercept`),
/// row-major, with its header.
pub fn read_hu(path: &Path, max_pixels: u64) -> Result<(DicomHeader, Vec<f32>), DicomError> {
    let bytes = read_regular_file(path, max_file_bytes(max_pixels)).map_err(io_error)?;
    check(&bytes, bytes.len() as u64)?;
    let object = parse(&bytes, None)?;
    let header = header_of(&object, max_pixels)?;
    let decoded = object
        .decode_pixel_data()
        .map_err(|e| DicomError::Pixels(e.to_string()))?;
    let options = ConvertOptions::new().with_modality_lut(ModalityLutOption::Default);
    let hu: Vec<f32> = decoded
        .to_vec_frame_with_options(0, &options)
        .map_err(|e| DicomError::Pixels(e.to_string()))?;
    if hu.len() != header.rows * header.columns {
        return Err(DicomError::Pixels(format!(
            "{} values for {}x{} pixels",
            hu.len(),
            header.rows,
            header.columns
        )));
    }
    if hu.iter().any(|v| !v.is_finite()) {
        return Err(DicomError::Pixels(
            "non-finite HU (a RescaleSlope or RescaleIntercept that is not a number)".into(),
        ));
    }
    Ok((header, hu))
}

/// An I/O error as a [`DicomError`]: a file over the size cap is `TooLarge`.
fn io_error(e: std::io::Error) -> DicomError {
    match e.kind() {
        std::io::ErrorKind::FileTooLarge => DicomError::TooLarge(e.to_string()),
        _ => DicomError::Io(e.to_string()),
    }
}

/// Whether `bytes` start like a DICOM part-10 file.
pub fn has_dicom_magic(bytes: &[u8]) -> bool {
    bytes.get(PREAMBLE..PREAMBLE + 4) == Some(b"DICM")
}

/// Walks the element headers of `bytes` (of a file of `file_len` bytes) before any parsing: no
/// declared length beyond the file, an uncompressed little-endian transfer syntax.
fn check(bytes: &[u8], file_len: u64) -> Result<Walk, DicomError> {
    let supported = |syntax: &str| match syntax {
        IMPLICIT_VR_LE => Some(false),
        EXPLICIT_VR_LE => Some(true),
        _ => None,
    };
    walk(bytes, file_len, supported).map_err(|e| match e {
        WalkError::NoMagic => DicomError::NoFileMeta,
        WalkError::TransferSyntax(s) => DicomError::TransferSyntax(s),
        WalkError::Overlong(m) => DicomError::Parse(m),
    })
}

/// Parses a part-10 file held in `bytes` (already [`check`]ed), stopping before `until` when
/// given.
fn parse(bytes: &[u8], until: Option<dicom_core::Tag>) -> Result<DefaultDicomObject, DicomError> {
    let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    if let Some(tag) = until {
        options = options.read_until(tag);
    }
    let object = options
        .from_reader(&bytes[PREAMBLE..])
        .map_err(|e| DicomError::Parse(error_chain(&e)))?;
    let syntax = object.meta().transfer_syntax();
    if syntax != IMPLICIT_VR_LE && syntax != EXPLICIT_VR_LE {
        return Err(DicomError::TransferSyntax(syntax.to_string()));
    }
    Ok(object)
}

/// An error and its causes on one line (dicom-rs's errors keep the detail in their sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Refuses pixel formats a CT slice does not have, before the decoder sees them (it asserts on
/// some, and builds tables of 2^BitsStored entries): one sample, monochrome, 8 or 16 bits
/// allocated, 1 to BitsAllocated bits stored.
fn check_pixel_format(object: &DefaultDicomObject) -> Result<(), DicomError> {
    let int = |tag| -> Option<i64> { object.element(tag).ok()?.to_int::<i64>().ok() };
    let allocated = int(tags::BITS_ALLOCATED).unwrap_or(16);
    let stored = int(tags::BITS_STORED).unwrap_or(allocated);
    let samples = int(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let photometric = object
        .element(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "MONOCHROME2".into());
    if !matches!(allocated, 8 | 16) || !(1..=allocated).contains(&stored) {
        return Err(DicomError::Pixels(format!(
            "BitsAllocated {allocated} with BitsStored {stored}: a CT slice has 8 or 16 bits allocated and 1 to that many stored"
        )));
    }
    if samples != 1 || !photometric.starts_with("MONOCHROME") {
        return Err(DicomError::Pixels(format!(
            "{samples} samples per pixel, {photometric}: not a monochrome CT slice"
        )));
    }
    for (tag, name) in [
        (tags::RESCALE_SLOPE, "RescaleSlope"),
        (tags::RESCALE_INTERCEPT, "RescaleIntercept"),
    ] {
        if let Some(v) = object.element(tag).ok().and_then(|e| e.to_float64().ok()) {
            if !v.is_finite() {
                return Err(DicomError::Pixels(format!("{name} {v} is not a number")));
            }
        }
    }
    Ok(())
}

/// The header fields of a parsed object.
fn header_of(object: &DefaultDicomObject, max_pixels: u64) -> Result<DicomHeader, DicomError> {
    let text = |tag, name: &'static str| -> Result<String, DicomError> {
        let element = object
            .element_opt(tag)
            .map_err(|_| DicomError::MissingTag(name))?;
        Ok(match element {
            Some(e) => e
                .to_str()
                .map_err(|_| DicomError::MissingTag(name))?
                .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string(),
            None => String::new(),
        })
    };
    let required = |tag, name: &'static str| -> Result<String, DicomError> {
        let value = text(tag, name)?;
        if value.is_empty() {
            return Err(DicomError::MissingTag(name));
        }
        Ok(value)
    };
    let floats = |tag, name: &'static str| -> Result<Vec<f64>, DicomError> {
        object
            .element(tag)
            .ok()
            .and_then(|e| e.to_multi_float64().ok())
            .ok_or(DicomError::MissingTag(name))
    };
    let int = |tag| -> Option<i64> { object.element(tag).ok()?.to_int::<i64>().ok() };
    let position = floats(
        tags::IMAGE_POSITION_PATIENT,
        "ImagePositionPatient (0020,0032)",
    )?;
    let z = *position
        .get(2)
        .ok_or(DicomError::MissingTag("ImagePositionPatient (0020,0032)"))?;
    let spacing = floats(tags::PIXEL_SPACING, "PixelSpacing (0028,0030)")?;
    let pixel_spacing = match spacing.as_slice() {
        [r, c, ..] => (*r, *c),
        [s] => (*s, *s),
        [] => return Err(DicomError::MissingTag("PixelSpacing (0028,0030)")),
    };
    let dims = |tag, name| {
        int(tag)
            .filter(|&v| v > 0)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(DicomError::MissingTag(name))
    };
    let rows = dims(tags::ROWS, "Rows (0028,0010)")?;
    let columns = dims(tags::COLUMNS, "Columns (0028,0011)")?;
    check_pixel_format(object)?;
    if !z.is_finite() {
        return Err(DicomError::MissingTag("ImagePositionPatient (0020,0032)"));
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(positive(pixel_spacing.0) && positive(pixel_spacing.1)) {
        return Err(DicomError::MissingTag("PixelSpacing (0028,0030)"));
    }
    if too_many_pixels(columns as u64, rows as u64, max_pixels) {
        return Err(DicomError::TooLarge(too_large_message(
            columns as u64,
            rows as u64,
            max_pixels,
        )));
    }
    Ok(DicomHeader {
        modality: text(tags::MODALITY, "Modality (0008,0060)")?,
        patient_id: text(tags::PATIENT_ID, "PatientID (0010,0020)")?,
        study_uid: text(tags::STUDY_INSTANCE_UID, "StudyInstanceUID (0020,000D)")?,
        series_uid: required(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID (0020,000E)")?,
        sop_uid: required(tags::SOP_INSTANCE_UID, "SOPInstanceUID (0008,0018)")?,
        instance_number: int(tags::INSTANCE_NUMBER).and_then(|v| i32::try_from(v).ok()),
        z,
        pixel_spacing,
        slice_thickness: object
            .element(tags::SLICE_THICKNESS)
            .ok()
            .and_then(|e| e.to_float64().ok())
            .filter(|t| t.is_finite() && *t > 0.0),
        rows,
        columns,
    })
}
