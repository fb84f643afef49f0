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

#[cfg(test)]
impl SliceSample {
    /// A test slice `s{h}x{w}` of patient `P` whose pixels hold 1, 2, 3, … in row-major order
    /// (so a pixel's value tells where it came from) and an empty mask.
    pub(crate) fn numbered(h: usize, w: usize) -> Self {
        Self {
            slice_id: format!("s{h}x{w}"),
            patient_id: "P".into(),
            height: h,
            width: w,
            image: (0..h * w).map(|i| i as f32 + 1.0).collect(),
            mask: vec![0; h * w],
        }
    }
}
