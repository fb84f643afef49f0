//! One shard row as the writer takes it: a kept slice with its ids, pixels and rater marks.

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
    /// Where in a CT series the slice lies; `None` for slices from the PNG tree.
    pub scan: Option<ScanPlace>,
}

/// Where a slice of the TCIA source lies in its CT series (the manifest's scan columns).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPlace {
    /// `SeriesInstanceUID`.
    pub series_uid: String,
    /// z of the slice (mm).
    pub z: f64,
    /// In-plane pixel spacing (mm).
    pub pixel_spacing: f64,
    /// Spacing between slices (mm): the median z step of the series.
    pub slice_spacing: f64,
}
