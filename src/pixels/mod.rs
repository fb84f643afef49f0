//! Image files (PNG, DICOM) to gray sample planes or HU and intensities in [0, 1]: reading files under a size cap,
//! the PNG decoders with their pixel cap, and the intensity rules, shared by `prepare` and
//! `predict`.

pub mod decode;
pub mod dicom;
pub mod dicom_walk;
pub mod file_bytes;
pub mod gray_png;
pub mod intensity;
pub mod limits;
pub mod samples;
