//! One slice as training, validation and evaluation see it: native size, intensities in [0, 1]
//! and the fused 0/1 mask.

/// One slice as the trainer sees it: native size, intensities and the fused mask.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceSample {
    /// `patient/nodule/file-stem`.
    pub slice_id: String,
    /// Patient folder name.
    pub patient_id: String,
    /// Native height.
    pub height: usize,
    /// Native width.
    pub width: usize,
    /// `height * width` intensities in [0,1], row-major.
    pub image: Vec<f32>,
    /// `height * width` 0/1 bytes, fused by the stream's [`RaterFusion`].
    pub mask: Vec<u8>,
}
