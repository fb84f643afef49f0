//! Rejected inputs: why a file or folder could not be used, recorded instead of stopping the run.

use crate::error::Result;
use crate::schema::Table;
use crate::table::write_table;
use arrow_array::{ArrayRef, StringArray};
use std::path::Path;
use std::sync::Arc;

/// Stable codes for the `reason` column of `rejects.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The PNG is truncated, garbage or not a PNG.
    PngDecode,
    /// Reading the file failed.
    IoError,
    /// A rater mask's size differs from its image; that rater is left out of the slice.
    MaskSizeMismatch,
    /// A nodule folder without `images/`.
    NoImagesDir,
    /// A file stands where a folder belongs.
    NotADirectory,
    /// A folder could not be listed (permissions).
    UnreadableDir,
    /// A symbolic link that loops (to itself or to an ancestor folder).
    SymlinkLoop,
    /// A symbolic link whose target does not exist.
    BrokenLink,
    /// A PNG whose pixel format has no grayscale reading (floating point).
    UnsupportedPixelFormat,
    /// A PNG with zero width or height.
    EmptyImage,
    /// Two files map to the same slice id (e.g. `a.png` and `a.PNG`).
    DuplicateSliceId,
    /// A mask file without an image of the same name.
    OrphanMask,
    /// A FIFO, socket or device (or a link to one) where a file belongs: never opened.
    NotARegularFile,
    /// A PNG whose header declares more pixels than `--max-pixels`, or a file larger than any
    /// PNG under that cap can be: not decoded.
    TooLarge,
    /// A patient or nodule folder whose name is not valid UTF-8: its lossy reading could merge
    /// it with another folder's id.
    NonUtf8Name,
    /// TCIA: not a DICOM file with file meta information, or a data set that does not parse.
    DicomDecode,
    /// TCIA: a compressed or big-endian transfer syntax (JPEG 2000, ...).
    UnsupportedTransferSyntax,
    /// TCIA: a tag a CT slice needs (position, spacing, size, UIDs) is missing.
    DicomMissingTag,
    /// TCIA: the pixel data does not decode or does not fit the declared size.
    DicomPixels,
    /// TCIA: a second slice at the same z; the lower InstanceNumber is kept.
    DuplicateZ,
    /// TCIA: a slice whose size differs from the rest of its series.
    DicomSizeMismatch,
    /// TCIA: an XML file that is not well-formed.
    XmlMalformed,
    /// TCIA: well-formed XML that is not an LIDC reading.
    XmlNotLidc,
    /// TCIA: a reading for a series that is not in the input.
    XmlWithoutSeries,
    /// TCIA: a second reading for a series; the first by path is used.
    DuplicateXml,
    /// TCIA: a CT series without a reading: no masks, so no slices.
    SeriesWithoutXml,
    /// TCIA: a contour whose SOP UID and z match no slice of the series.
    ContourWithoutSlice,
    /// TCIA: a fifth or later reading session (the rater bits hold four readers).
    TooManyReaders,
    /// TCIA: a CT series met again in another folder (a copied folder); the first is used.
    DuplicateSeries,
    /// TCIA: a contour with no points, points outside its slice, or unreadable values.
    ContourInvalid,
}

impl From<&crate::pixels::dicom::DicomError> for RejectReason {
    fn from(e: &crate::pixels::dicom::DicomError) -> Self {
        use crate::pixels::dicom::DicomError as D;
        match e {
            D::Io(_) => RejectReason::IoError,
            D::NoFileMeta | D::Parse(_) => RejectReason::DicomDecode,
            D::TransferSyntax(_) => RejectReason::UnsupportedTransferSyntax,
            D::MissingTag(_) => RejectReason::DicomMissingTag,
            D::TooLarge(_) => RejectReason::TooLarge,
            D::Pixels(_) => RejectReason::DicomPixels,
        }
    }
}

impl RejectReason {
    /// The stable code written to the table.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::PngDecode => "png_decode",
            RejectReason::IoError => "io_error",
            RejectReason::MaskSizeMismatch => "mask_size_mismatch",
            RejectReason::NoImagesDir => "no_images_dir",
            RejectReason::NotADirectory => "not_a_directory",
            RejectReason::UnreadableDir => "unreadable_dir",
            RejectReason::SymlinkLoop => "symlink_loop",
            RejectReason::BrokenLink => "broken_link",
            RejectReason::UnsupportedPixelFormat => "unsupported_pixel_format",
            RejectReason::EmptyImage => "empty_image",
            RejectReason::DuplicateSliceId => "duplicate_slice_id",
            RejectReason::OrphanMask => "orphan_mask",
            RejectReason::NotARegularFile => "not_a_regular_file",
            RejectReason::TooLarge => "too_large",
            RejectReason::NonUtf8Name => "non_utf8_name",
            RejectReason::DicomDecode => "dicom_decode",
            RejectReason::UnsupportedTransferSyntax => "unsupported_transfer_syntax",
            RejectReason::DicomMissingTag => "dicom_missing_tag",
            RejectReason::DicomPixels => "dicom_pixels",
            RejectReason::DuplicateZ => "duplicate_z",
            RejectReason::DicomSizeMismatch => "dicom_size_mismatch",
            RejectReason::XmlMalformed => "xml_malformed",
            RejectReason::XmlNotLidc => "xml_not_lidc",
            RejectReason::XmlWithoutSeries => "xml_without_series",
            RejectReason::DuplicateXml => "duplicate_xml",
            RejectReason::SeriesWithoutXml => "series_without_xml",
            RejectReason::ContourWithoutSlice => "contour_without_slice",
            RejectReason::TooManyReaders => "too_many_readers",
            RejectReason::DuplicateSeries => "duplicate_series",
            RejectReason::ContourInvalid => "contour_invalid",
        }
    }
}

/// Where in the tree a reject was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreePlace {
    /// Patient folder, when known.
    pub patient_id: Option<String>,
    /// Nodule folder, when known.
    pub nodule_id: Option<String>,
    /// Image file name, when the reject concerns one slice.
    pub slice_name: Option<String>,
}

/// One row of `rejects.parquet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Path relative to the input root.
    pub path: String,
    /// Where it was found.
    pub place: TreePlace,
    /// Why it was rejected.
    pub reason: RejectReason,
    /// A human-readable message.
    pub detail: String,
}

impl Reject {
    /// A reject, logged as a warning that names the path and the patient.
    pub fn new(
        path: impl Into<String>,
        place: TreePlace,
        reason: RejectReason,
        detail: impl Into<String>,
    ) -> Self {
        let r = Self::unlogged(path, place, reason, detail);
        r.log();
        r
    }

    /// A reject that is logged later, with [`Reject::log`], if the run goes on to use it: the
    /// walk's rejects, since a rerun into a complete directory walks the tree only to compare it.
    pub fn unlogged(
        path: impl Into<String>,
        place: TreePlace,
        reason: RejectReason,
        detail: impl Into<String>,
    ) -> Self {
        Reject {
            path: path.into(),
            place,
            reason,
            detail: detail.into(),
        }
    }

    /// Logs the reject as a warning that names the path and the patient.
    pub fn log(&self) {
        tracing::warn!(
            "{}: {} (patient {}; rejected as {})",
            self.path,
            self.detail,
            self.place.patient_id.as_deref().unwrap_or("-"),
            self.reason.code()
        );
    }
}

/// Writes `rejects.parquet` atomically, in the order given.
pub fn write_rejects(path: &Path, rejects: &[Reject]) -> Result<u64> {
    let opt = |f: fn(&TreePlace) -> &Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(
            rejects
                .iter()
                .map(|r| f(&r.place).clone())
                .collect::<Vec<_>>(),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| &r.path),
        )),
        opt(|p| &p.patient_id),
        opt(|p| &p.nodule_id),
        opt(|p| &p.slice_name),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.reason.code()),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| &r.detail),
        )),
    ];
    write_table(path, Table::Rejects.spec(), columns)
}
